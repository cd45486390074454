"""OAuth2 for the sandbox: demo client credentials, refresh tokens, authorization codes, JWTs.

Access tokens are HS256 JWTs signed with a per-instance random key. Their payload segment never
contains ``-`` or ``_`` because the official SDK decodes it with *standard* base64: in base64
of ASCII text only the fourth character of each 3-byte group can reach the values 62 and 63, and
only for the bytes ``>``, ``?``, ``~`` and DEL, which the claims never contain (``issue`` checks).

A token is valid while its ``exp`` lies ahead, it was not revoked and ``expire_all`` was not
called after it was issued. Refresh tokens do not roll on a refresh grant; the
authorization-code grant hands out a new one. The demo refresh token survives revocation: it is
printed by ``cortex-nb sandbox`` and handed to every new client, so any local process revoking
it would break every client until a restart (the revocation is answered, and ignored). Errors
are the IdP's shape: ``{"error": ..., "error_description": ...}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time

import orjson

DEMO_CLIENT_ID = "sandbox-client"
DEMO_CLIENT_SECRET = "sandbox-secret"  # demo value, printed by `cortex-nb sandbox`
DEMO_REFRESH_TOKEN = "sandbox-refresh-token"


class OAuthError(Exception):
    """A token request the IdP refuses (HTTP 400 with ``error``/``error_description``)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict:
        """The IdP-style error object."""
        return {"error": self.error, "error_description": self.description}


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWTs use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenAuthority:
    """Issues and checks the sandbox's tokens; thread-safe."""

    def __init__(self, instance_id: str, token_ttl: int = 3600) -> None:
        self.instance_id = instance_id
        self.token_ttl = token_ttl
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._serial = 0
        self._expired_below = 0  # tokens with a serial under this are expired
        self._revoked: set[str] = set()
        self._refresh_tokens = {DEMO_REFRESH_TOKEN}
        self._codes: set[str] = set()

    def grant(self, form: dict) -> dict:
        """Answer a RequestToken body (refresh_token or authorization_code grant)."""
        self._check_client(form)
        grant_type = form.get("grant_type")
        if grant_type == "refresh_token":
            self._use_refresh_token(form.get("refresh_token"))
            return self._token_reply()
        if grant_type == "authorization_code":
            self._use_code(form.get("code"))
            refresh_token = "sandbox-rt-" + secrets.token_hex(16)
            with self._lock:
                self._refresh_tokens.add(refresh_token)
            return {**self._token_reply(), "refresh_token": refresh_token}
        raise OAuthError("unsupported_grant_type", f"unsupported grant_type: {grant_type!r}")

    def revoke(self, form: dict) -> dict:
        """Answer a RevokeToken body; unknown tokens are accepted silently (RFC 7009)."""
        self._check_client(form)
        token = form.get("token")
        if not token:
            raise OAuthError("invalid_request", "missing token")
        if token == DEMO_REFRESH_TOKEN:  # shared by every client: see the module doc
            return {"revoked": True}
        with self._lock:
            self._refresh_tokens.discard(token)
            self._revoked.add(token)
        return {"revoked": True}

    def issue_code(self) -> str:
        """A single-use authorization code for the authorization_code grant."""
        code = "sandbox-code-" + secrets.token_hex(8)
        with self._lock:
            self._codes.add(code)
        return code

    def issue(self, ttl: float | None = None) -> str:
        """A signed access token valid for ``ttl`` seconds (default ``token_ttl``)."""
        with self._lock:
            self._serial += 1
            serial = self._serial
        now = int(time.time())
        claims = {
            "iss": "cortex-nb-sandbox",
            "sub": DEMO_CLIENT_ID,
            "aud": self.instance_id,
            "iat": now,
            "exp": now + int(self.token_ttl if ttl is None else ttl),
            "jti": secrets.token_hex(8),
            "n": serial,
        }
        header = b64url(b'{"alg":"HS256","typ":"JWT"}')
        payload = b64url(orjson.dumps(claims))
        if "-" in payload or "_" in payload:  # cannot happen for these claims; see module doc
            raise RuntimeError("JWT payload is not standard-base64 safe")
        signature = b64url(
            hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        )
        return f"{header}.{payload}.{signature}"

    def check(self, token: str) -> str | None:
        """Why ``token`` is not a valid access token, or None when it is."""
        claims = self._verified_claims(token)
        if claims is None:
            return "invalid access token"
        with self._lock:
            if token in self._revoked:
                return "access token revoked"
            if claims.get("n", 0) < self._expired_below:
                return "access token expired"
        if claims.get("exp", 0) <= time.time():
            return "access token expired"
        return None

    def expire_all(self) -> None:
        """Expire every access token issued so far."""
        with self._lock:
            self._expired_below = self._serial + 1

    def reset(self) -> None:
        """Make the demo refresh token usable again (it may have been revoked by a test)."""
        with self._lock:
            self._refresh_tokens.add(DEMO_REFRESH_TOKEN)
            self._revoked.discard(DEMO_REFRESH_TOKEN)

    def _verified_claims(self, token: str) -> dict | None:
        try:
            header, payload, signature = token.split(".")
            expected = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(b64url(expected), signature):
                return None
            return orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, orjson.JSONDecodeError):
            return None

    def _token_reply(self) -> dict:
        return {
            "access_token": self.issue(),
            "token_type": "Bearer",
            "expires_in": str(int(self.token_ttl) - 1),
        }

    def _check_client(self, form: dict) -> None:
        if (
            form.get("client_id") != DEMO_CLIENT_ID
            or form.get("client_secret") != DEMO_CLIENT_SECRET
        ):
            raise OAuthError("invalid_client", "unknown client or wrong client secret")

    def _use_refresh_token(self, token: str | None) -> None:
        with self._lock:
            if token not in self._refresh_tokens:
                raise OAuthError("invalid_grant", "unknown, invalid, or expired refresh token")

    def _use_code(self, code: str | None) -> None:
        with self._lock:
            if code not in self._codes:
                raise OAuthError("invalid_grant", "unknown, invalid, or expired authorization code")
            self._codes.discard(code)
