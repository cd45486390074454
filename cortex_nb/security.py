"""Keeping secrets secret: masking, scrubbing text, and refusing tokens over plain http.

Every place that shows or stores something a user might read (reprs, error messages, traces)
goes through these helpers, so the rules live in one module.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from cortex_nb.exceptions import ConfigurationError

__all__ = [
    "MASK",
    "SECRET_FIELDS",
    "SENSITIVE_HEADERS",
    "SENSITIVE_KEYS",
    "check_secure_url",
    "is_loopback",
    "redact_headers",
    "redact_json",
    "scrub",
]

MASK = "******"
# the secret fields of credentials and profiles, in the order they are shown
SECRET_FIELDS = ("client_secret", "refresh_token", "access_token")
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
SENSITIVE_KEYS = frozenset(
    {"access_token", "refresh_token", "client_secret", "token", "id_token", "code", "password"}
)
# key=value pairs in query strings and form bodies whose value is a secret
_KEYS = "|".join(sorted(SENSITIVE_KEYS))
_PAIR = re.compile(rf"((?:^|[?&;\s])(?:{_KEYS})=)[^&;\s]*")
# "key": "value" pairs in JSON text that may be cut short (truncated bodies cannot be parsed)
_JSON_PAIR = re.compile(rf'("(?:{_KEYS})"\s*:\s*")(?:[^"\\]|\\.)*("?)', re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def is_loopback(host: str | None) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_secure_url(url: str, what: str) -> None:
    """Raise ``ConfigurationError`` if a secret would travel to ``url`` over plain http."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname)):
        return
    raise ConfigurationError(
        f"Refusing to send credentials to {what} over {parts.scheme or 'an unknown scheme'}: "
        f"{parts.scheme}://{parts.netloc}. Use an https:// URL (plain http is allowed only "
        "for localhost, e.g. the sandbox)."
    )


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with known secret values, bearer tokens and secret key=value pairs masked."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    text = _JSON_PAIR.sub(lambda m: m.group(1) + MASK + m.group(2), text)
    return _PAIR.sub(lambda m: m.group(1) + MASK, text)


def redact_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """Copy ``headers`` with every sensitive header's value masked."""
    return {
        k: (MASK if k.lower() in SENSITIVE_HEADERS else str(v)) for k, v in headers.items()
    }


def redact_json(value: Any) -> Any:
    """Copy a decoded JSON value with every sensitive key's value masked, at any depth."""
    if isinstance(value, dict):
        return {
            k: (MASK if str(k).lower() in SENSITIVE_KEYS else redact_json(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    return value
