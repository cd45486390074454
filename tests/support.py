"""Helpers for tests that need tokens or a tiny token-checking server (pytest-httpserver)."""

from __future__ import annotations

import base64
import json
import threading
import time

from werkzeug import Request, Response

from cortex_nb import Credentials

CLIENT_ID = "test-client"
CLIENT_SECRET = "cs-SECRET-4f1d9e"
REFRESH_TOKEN = "rt-SECRET-77aa01"


def make_jwt(exp: float, **claims: object) -> str:
    """A JWT-shaped token (unsigned) whose payload carries ``exp``, URL-safe base64 encoded."""

    def seg(obj: object) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{seg({'alg': 'none'})}.{seg({'exp': int(exp), **claims})}.sig"


class TokenAuthority:
    """Issues access tokens from a refresh grant and checks bearer tokens on API routes."""

    def __init__(self, ttl: float = 3600, delay: float = 0.0) -> None:
        self.ttl = ttl
        self.delay = delay
        self.refreshes = 0
        self.valid: set[str] = set()
        self.seen_auth: list[str | None] = []
        self._lock = threading.Lock()

    def token_handler(self, request: Request) -> Response:
        """OAuth2 RequestToken: refresh grant in JSON."""
        body = request.get_json(silent=True) or {}
        ok = (
            body.get("grant_type") == "refresh_token"
            and body.get("client_id") == CLIENT_ID
            and body.get("client_secret") == CLIENT_SECRET
            and body.get("refresh_token") == REFRESH_TOKEN
        )
        if not ok:
            return _json(
                {"error": "invalid_grant", "error_description": "unknown, invalid, or expired refresh token"},
                400,
            )
        time.sleep(self.delay)  # widen the race window for concurrency tests
        with self._lock:
            self.refreshes += 1
            token = make_jwt(time.time() + self.ttl, n=self.refreshes)
            self.valid.add(token)
        return _json({"access_token": token, "token_type": "Bearer", "expires_in": str(int(self.ttl))})

    def api_handler(self, request: Request) -> Response:
        """Any API route: 401 unless the bearer token was issued here; echoes what it saw."""
        auth = request.headers.get("Authorization")
        with self._lock:
            self.seen_auth.append(auth)
        token = (auth or "").removeprefix("Bearer ")
        if token not in self.valid:
            return _json({"errors": [{"errorCode": 401, "message": "invalid token"}]}, 401)
        return _json({"ok": True, "path": request.path, "args": dict(request.args)})


def _json(body: object, status: int = 200, headers: dict | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, headers=headers or {}, content_type="application/json"
    )


def json_response(body: object, status: int = 200, headers: dict | None = None) -> Response:
    """A werkzeug JSON response with an x-request-id header."""
    return _json(body, status, {"x-request-id": "req-123", **(headers or {})})


def refresh_credentials(server, **overrides: object) -> Credentials:
    """Credentials that refresh against ``server``'s token endpoint (no PAN_* leaks in)."""
    values = dict(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH_TOKEN)
    values.update(overrides)
    return Credentials(token_url=server.url_for("/"), environ={}, **values)
