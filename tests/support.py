"""Helpers for tests that need tokens, the sandbox's OAuth2 endpoint, or stub replies."""

from __future__ import annotations

import base64
import json
import threading

import requests
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from werkzeug import Response

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


# -- the sandbox as the token authority ---------------------------------------------------------
TOKEN_PATH = "/api/oauth2/RequestToken"
API_PATH = "/query/v2/jobs"  # any API route: the sandbox checks the bearer token on each


def sandbox_credentials(sandbox, **overrides: object) -> Credentials:
    """The sandbox's demo credentials (refreshing against it), with ``overrides``."""
    return Credentials(**{**sandbox.credentials(), **overrides}, environ={})


def token_requests(sandbox) -> list:
    """The requests the sandbox's token endpoint received."""
    return [r for r in sandbox.requests if r.path == TOKEN_PATH]


def bearers_seen(sandbox, path: str = API_PATH) -> list[str | None]:
    """The Authorization header of each request to ``path``, in order."""
    return [r.headers.get("authorization") for r in sandbox.requests if r.path == path]


def sandbox_accepts(sandbox, token: str) -> bool:
    """True when the sandbox's API takes ``token`` (asked with plain requests)."""
    reply = requests.get(
        sandbox.url + API_PATH, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    return reply.status_code == 200


def statuses_at_once(client, n: int, path: str = API_PATH) -> list[int]:
    """The statuses of ``n`` GETs of ``path`` by ``n`` threads released at once (bounded)."""
    barrier = threading.Barrier(n)
    statuses: list[int] = []

    def worker() -> None:
        barrier.wait(timeout=30)
        statuses.append(client.request(method="GET", path=path).status_code)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


# -- cells in an InteractiveShell -----------------------------------------------------------------
def run_cell(ip, cell: str):
    """Run a cell; return (result, captured output)."""
    with capture_output() as cap:
        result = ip.run_cell(cell)
    return result, cap


def failed_with(result, cap) -> str:
    """The one-line error a failed cell showed (asserts it failed without a traceback)."""
    assert not result.success and isinstance(result.error_in_exec, UsageError)
    text = cap.stdout + cap.stderr
    assert "Traceback" not in text
    return str(result.error_in_exec)
