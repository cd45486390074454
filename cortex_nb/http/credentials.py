"""OAuth2 credentials for the Cortex Data Lake: tokens, JWT expiry, single-flight refresh.

Values are found, field by field, in the constructor's arguments, then the ``PAN_*`` environment
variables, then a stored profile (``cortex_nb.http.profiles``, when one is named). Nothing is
written to disk. Secrets (client secret, refresh token, access token) live in private attributes as
``Secret`` strings, shown as ``******`` by ``repr``/``str`` and by tracebacks that show local
variables; error messages are scrubbed of them.

Token requests go through their own ``transport.token_session()``: every request there carries
secrets in its body, so each is checked against the https-or-loopback rule (proxy included),
none follows a redirect, and transient failures are retried as for the API. The session
announces these credentials' secrets (``security.announce_secrets``), so a trace or a cassette
of the very first token request, made while connecting, masks an IdP reply that quotes them.
A token reply is reduced at once to the fields used, with every known secret masked in the
rest: no frame that a traceback with local variables shows holds a quoted secret. An access
token that no HTTP header can carry (a line break, non-ASCII) is a ``CredentialsError``.

Refresh is single-flight: callers pass the token they saw as ``stale``; under one lock, the first
caller refreshes and the others find a different token already in place and use it. So 32
threads starting at once cause exactly one call to the token endpoint, and no thread ever sends
a request without a token (the official SDK's ``Bearer None``).

One refresh per expiry, even when this computer's clock is ahead of the token endpoint's: a
fresh token whose JWT ``exp`` has already passed (or is within the leeway) by the local clock is
trusted for the lifetime the endpoint gave it (``expires_in``, counted from receipt); with no
such lifetime, the refresh is a ``ConfigurationError`` about the clock, not a token refreshed
again at every request.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import threading
import time
import warnings
from typing import Any

import requests

from cortex_nb.exceptions import ConfigurationError, CredentialsError
from cortex_nb.http.endpoints import DEFAULT_TOKEN_URL, TOKEN_PATH, normalize_token_url
from cortex_nb.http.security import (
    MASK,
    SECRET_FIELDS,
    Secret,
    announce_secrets,
    check_secure_url,
    mask_url,
    mask_values,
    scrub,
    secret,
    unsendable_character,
)
from cortex_nb.http.transport import token_session

__all__ = ["DEFAULT_TOKEN_URL", "ENV_VARS", "TOKEN_PATH", "Credentials", "jwt_expiry"]

# field -> environment variable, in the order the official SDKs read them
ENV_VARS = {
    "access_token": "PAN_ACCESS_TOKEN",
    "client_id": "PAN_CLIENT_ID",
    "client_secret": "PAN_CLIENT_SECRET",
    "refresh_token": "PAN_REFRESH_TOKEN",
    "token_url": "PAN_TOKEN_URL",
}
# Refresh this many seconds before the token's ``exp`` so a request never lands with a dead token.
DEFAULT_LEEWAY = 60.0
TOKEN_TIMEOUT = (10.0, 30.0)


def jwt_expiry(token: str | None) -> float | None:
    """Return the ``exp`` claim (epoch seconds) of a JWT, or None for an opaque token."""
    if not token or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        # URL-safe alphabet, padding restored: the standard alphabet breaks on '-' and '_'.
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        exp = json.loads(raw).get("exp")
    except (binascii.Error, ValueError, UnicodeDecodeError, AttributeError):
        return None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class Credentials:
    """OAuth2 credentials that keep a valid access token for the Cortex Data Lake."""

    def __init__(
        self,
        access_token: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        refresh_token: str | None = None,
        token_url: str | None = None,
        profile: str | None = None,
        region: str | None = None,
        *,
        leeway: float = DEFAULT_LEEWAY,
        verify: bool | str = True,
        timeout: float | tuple[float, float] = TOKEN_TIMEOUT,
        environ: dict[str, str] | None = None,
    ) -> None:
        given = {
            "access_token": access_token,
            "client_id": client_id,
            "client_secret": client_secret,
            "refresh_token": refresh_token,
            "token_url": token_url,
        }
        if region is not None:
            _warn_region_is_not_credentials()
        values = _resolve(given, _environment(os.environ if environ is None else environ), profile)
        self.profile = profile
        self.client_id: str | None = values["client_id"]
        # None until chosen (argument, PAN_TOKEN_URL, profile): a connection may then set it
        self._token_url = normalize_token_url(values["token_url"]) if values["token_url"] else None
        self._access_token = secret(values["access_token"])
        self._client_secret = secret(values["client_secret"])
        self._refresh_token = secret(values["refresh_token"])
        self.leeway = leeway
        self.verify = verify
        self.timeout = timeout
        self.refresh_count = 0
        # (token, time.monotonic() it is trusted until) when its exp is wrong by our clock
        self._trusted: tuple[str, float] | None = None
        self._lock = threading.Lock()
        self.http = token_session()  # its own session, so response hooks can trace refreshes
        announce_secrets(self.http, self.secrets)

    @property
    def token_url(self) -> str:
        """The OAuth2 token endpoint these credentials refresh against."""
        return self._token_url or DEFAULT_TOKEN_URL

    def adopt_token_url(self, url: str) -> None:
        """Refresh against ``url`` unless a token URL was chosen (argument, environment, profile).

        A connection calls this with its endpoint's token URL, so that credentials built
        without one follow the place they connect to.
        """
        if self._token_url is None:
            self._token_url = normalize_token_url(url)

    # -- secrets: readable by code, never shown -------------------------------------------
    @property
    def access_token(self) -> str | None:
        """The current access token (may be None before the first refresh)."""
        return self._access_token

    @property
    def client_secret(self) -> str | None:
        """The OAuth2 client secret."""
        return self._client_secret

    @property
    def refresh_token(self) -> str | None:
        """The OAuth2 refresh token (replaced when the token endpoint rolls it)."""
        return self._refresh_token

    def secrets(self) -> list[str]:
        """Every secret value held, for scrubbing text before it is shown."""
        return [s for s in (self._access_token, self._client_secret, self._refresh_token) if s]

    @property
    def can_refresh(self) -> bool:
        """True when client id, client secret and refresh token are all known."""
        return bool(self.client_id and self._client_secret and self._refresh_token)

    @property
    def expires_at(self) -> float | None:
        """Epoch seconds at which the access token expires (None if unknown)."""
        return jwt_expiry(self._access_token)

    def is_expiring(self, token: str | None = None, leeway: float | None = None) -> bool:
        """True when ``token`` (default: the current one) is absent or expires within the leeway."""
        token = self._access_token if token is None else token
        if not token:
            return True
        margin = self.leeway if leeway is None else leeway
        if self._trusted is not None and self._trusted[0] == token:  # counted from receipt
            return self._trusted[1] - margin <= time.monotonic()
        exp = jwt_expiry(token)
        return exp is not None and exp - margin <= time.time()

    # -- refresh ----------------------------------------------------------------------------
    def refresh_if_expiring(self) -> str:
        """Return a usable access token, refreshing first when it is missing or about to expire."""
        token = self._access_token
        if token and not self.is_expiring(token):
            return token
        if not self.can_refresh:
            return self._token_without_refresh(token)
        return self.refresh(stale=token)

    def _token_without_refresh(self, token: str | None) -> str:
        if not token:
            raise CredentialsError(
                "No access token, and no client id + client secret + refresh token to get one. "
                "Pass them to Credentials(...) or set PAN_ACCESS_TOKEN, or PAN_CLIENT_ID, "
                "PAN_CLIENT_SECRET and PAN_REFRESH_TOKEN."
            )
        if self.is_expiring(token, leeway=0):
            raise CredentialsError(
                "The access token has expired and cannot be renewed without client id, client "
                "secret and refresh token. Get a new access token, or give refresh credentials."
            )
        return token  # expiring soon but still valid: use it while it lasts

    def refresh(self, stale: str | None = None) -> str:
        """Get a new access token from the token endpoint (single-flight) and return it.

        ``stale`` is the token the caller found wanting. If another thread replaced it while
        this one waited for the lock, the new token is returned without a second refresh.
        """
        with self._lock:
            current = self._access_token
            if current and current != stale and not self.is_expiring(current, leeway=0):
                return current
            if not self.can_refresh:
                raise CredentialsError(
                    "Cannot refresh the access token: client id, client secret and refresh "
                    "token are all needed (arguments or PAN_CLIENT_ID, PAN_CLIENT_SECRET, "
                    "PAN_REFRESH_TOKEN)."
                )
            access, rolled, lifetime = self._request_token()
            self._trusted = self._trust(access, lifetime)
            self._access_token = access
            self._refresh_token = rolled or self._refresh_token
            self.refresh_count += 1
            return access

    def _trust(self, access: str, lifetime: float | None) -> tuple[str, float] | None:
        """How long to trust a fresh token whose ``exp`` this computer's clock says has passed
        (or is within the leeway): its ``lifetime`` from now; None when its ``exp`` holds.

        A token already expired by our clock and no lifetime to go by is a clock problem the
        client cannot work around: a ``ConfigurationError`` rather than a refresh per request.
        """
        exp, now = jwt_expiry(access), time.time()
        if exp is None or exp - self.leeway > now:
            return None
        if lifetime is not None and lifetime > self.leeway:
            return access, time.monotonic() + lifetime
        if exp > now:
            return None  # a short-lived token, still valid: used while it lasts
        raise ConfigurationError(
            f"The token endpoint {mask_url(self.token_url)} issued an access token that had "
            f"already expired by this computer's clock ({now - exp:,.0f} s ago) and said no "
            "lifetime (expires_in) to go by instead: this computer's clock is probably ahead. "
            "Set the clock right (NTP) and connect again."
        )

    def _request_token(self) -> tuple[Secret, Secret | None, float | None]:
        """POST the refresh grant; the new access token, the rolled refresh token (if any) and
        the lifetime the endpoint gave the token (``expires_in`` seconds, if it said)."""
        check_secure_url(self.token_url, "the token endpoint")
        body = {
            "client_id": self.client_id,
            "client_secret": self._client_secret,
            "refresh_token": self._refresh_token,
            "grant_type": "refresh_token",
        }
        try:
            # a redirect would re-post the secrets to wherever it points: never follow one
            response = self.http.post(
                self.token_url, json=body, timeout=self.timeout, verify=self.verify,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            failure = scrub(str(exc), self.secrets()).rstrip(".")
        else:
            return self._token_reply(response)
        # raised outside the handler: requests' exception holds the request body (the secrets)
        raise CredentialsError(
            f"Could not reach the token endpoint {mask_url(self.token_url)}: {failure}. "
            "Check the network and token_url."
        )

    def _token_reply(
        self, response: requests.Response
    ) -> tuple[Secret, Secret | None, float | None]:
        if response.is_redirect:
            where = mask_url(response.headers.get("Location", "?"))
            raise CredentialsError(
                f"The token endpoint {mask_url(self.token_url)} answered HTTP "
                f"{response.status_code}, redirecting to {where}; credentials are never re-sent "
                "to a redirect. Set token_url to the address that answers."
            )
        reply = _token_fields(response, self.secrets())
        ok = response.ok and reply is not None and "error" not in reply
        if ok and reply.get("access_token"):
            access = self._sendable(reply["access_token"])
            return access, reply.get("refresh_token"), reply.get("expires_in")
        detail = scrub(_token_error_detail(reply, response), self.secrets())
        raise CredentialsError(
            f"Token refresh failed at {mask_url(self.token_url)}: {detail}. Check the client "
            "id, client secret and refresh token (they may be revoked or expired)."
        )

    def _sendable(self, access: Secret) -> Secret:
        """``access`` if an HTTP header can carry it, else a ``CredentialsError`` (no token)."""
        problem = unsendable_character(access)
        if problem is not None:
            raise CredentialsError(
                f"The token endpoint {mask_url(self.token_url)} answered an access token that "
                f"cannot be sent in an HTTP header ({problem}). Check token_url points at the "
                "Cortex token endpoint."
            )
        return access

    # -- display ------------------------------------------------------------------------------
    def __repr__(self) -> str:
        shown = {
            "client_id": self.client_id,
            "client_secret": self._client_secret,
            "refresh_token": self._refresh_token,
            "access_token": self._access_token,
            "token_url": mask_url(self.token_url),
            "profile": self.profile,
        }
        parts = [
            f"{k}={MASK!r}" if k in SECRET_FIELDS else f"{k}={v!r}"
            for k, v in shown.items()
            if v is not None
        ]
        return f"Credentials({', '.join(parts)})"

    __str__ = __repr__

    # -- storage ------------------------------------------------------------------------------
    def save_profile(self, name: str, **extra: str | None) -> os.PathLike[str]:
        """Store these credentials as profile ``name``; secrets go to the OS keyring if usable.

        ``extra`` adds or overrides profile fields (``url``, ``instance_id``, ...). The access
        token is stored only when no refresh token can replace it. Returns the profiles file.
        """
        from cortex_nb.http import profiles

        fields: dict[str, str | None] = {
            "client_id": self.client_id,
            "token_url": self._token_url,
            "client_secret": self._client_secret,
            "refresh_token": self._refresh_token,
            "access_token": None if self.can_refresh else self._access_token,
        }
        fields.update(extra)
        path = profiles.save_profile(name, **fields)
        self.profile = name
        return path


def _resolve(
    given: dict[str, str | None], environ: dict[str, str | None], profile: str | None
) -> dict[str, str | None]:
    """Fill each field from arguments, then ``PAN_*`` environment, then the named profile."""
    stored = _profile_values(profile) if profile else {}
    values: dict[str, str | None] = {}
    for field, value in given.items():
        if value is None:
            value = environ.get(field) or stored.get(field)
        values[field] = value or None
    return values


def _environment(environ: Any) -> dict[str, str | None]:
    """The ``PAN_*`` values by field, secrets as ``Secret`` (no frame holds the whole environ)."""
    values = {field: environ.get(name) for field, name in ENV_VARS.items()}
    return {k: secret(v) if k in SECRET_FIELDS else v for k, v in values.items()}


def _token_fields(response: requests.Response, secrets: list[str]) -> dict[str, Any] | None:
    """The fields of a token reply that are used: the tokens (non-empty strings, as
    ``Secret``), and ``error``/``error_description`` as text with every known secret masked;
    None when the reply is not a JSON object."""
    try:
        reply = response.json()
    except (ValueError, RecursionError):  # not JSON, or nested past what the parser takes
        return None
    if not isinstance(reply, dict):
        return None
    fields: dict[str, Any] = {}
    for key in ("access_token", "refresh_token"):
        if isinstance(reply.get(key), str) and reply[key]:
            fields[key] = secret(reply[key])
    for key in ("error", "error_description"):
        if key in reply:
            fields[key] = mask_values(str(reply[key])[:500], secrets)
    fields["expires_in"] = _seconds(reply.get("expires_in"))
    return fields


def _seconds(value: Any) -> float | None:
    """A token lifetime (``expires_in``, a number or a numeric string) in seconds; None when
    absent or not a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def _warn_region_is_not_credentials() -> None:
    # every region shares one token endpoint, so the region never changed what credentials do
    warnings.warn(
        "Credentials(region=...) is deprecated and ignored: credentials do not choose the API. "
        "Give the region to the connection (`%cortex connect --region R`, "
        "Connection.connect(endpoint=Endpoint.for_region(R))).",
        DeprecationWarning,
        stacklevel=3,
    )


def _profile_values(name: str) -> dict[str, str]:
    try:
        from cortex_nb.http import profiles
    except ImportError:  # profiles are an optional layer; say so rather than crash
        raise ConfigurationError(
            f"Profile {name!r} was asked for, but profiles are not available in this install."
        ) from None
    return profiles.load_profile(name)


def _token_error_detail(reply: Any, response: requests.Response) -> str:
    status = f"HTTP {response.status_code} {response.reason or ''}".strip()
    if isinstance(reply, dict) and reply.get("error"):
        description = reply.get("error_description") or ""
        return f"{status}: {reply['error']} {description}".strip()
    if isinstance(reply, dict):
        return f"{status}: the reply has no access_token"
    return f"{status}: the reply is not JSON"

