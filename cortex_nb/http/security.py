"""Keeping secrets secret: masking, scrubbing text, and refusing tokens over plain http.

Every place that shows or stores something a user might read (reprs, error messages, traces)
goes through these helpers, so the rules live in one module. Secrets held in memory are
``Secret`` strings, whose repr is masked: a traceback that shows local variables (IPython's
``%xmode Verbose``, ``pytest -l``, ``traceback`` with ``capture_locals``) shows no secret.

The route rule: credentials travel only over https, or over plain http to loopback
(127.0.0.0/8, ::1 or exactly ``localhost``; no name is trusted because DNS says loopback),
proxies included (``check_route``).

Known secret values are masked wherever they appear, not only where their name says secret:
a server may echo a token in any header or body (``mask_values``, ``redact_headers``). A
``requests`` session announces the secrets its requests carry (``announce_secrets``), so the
observers on its response hooks (traces, cassettes) mask them from its very first reply, before
anyone else was told (``secrets_of``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from cortex_nb.exceptions import ConfigurationError

__all__ = [
    "CREDENTIAL_HEADERS",
    "MASK",
    "SECRET_FIELDS",
    "SENSITIVE_HEADERS",
    "SENSITIVE_KEYS",
    "Secret",
    "announce_secrets",
    "carries_credentials",
    "check_route",
    "check_secure_url",
    "is_loopback",
    "mask_credential_headers",
    "mask_url",
    "mask_values",
    "redact_headers",
    "redact_json",
    "scrub",
    "secret",
    "secrets_of",
    "unsendable_character",
]

MASK = "******"
# the secret fields of credentials and profiles, in the order they are shown
SECRET_FIELDS = ("client_secret", "refresh_token", "access_token")
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
# request headers that authenticate to the server they are sent to (Proxy-Authorization is
# for the proxy, which the route check looks at separately)
CREDENTIAL_HEADERS = ("authorization", "cookie", "x-api-key")
SENSITIVE_KEYS = frozenset(
    {"access_token", "refresh_token", "client_secret", "token", "id_token", "code", "password"}
)
# key=value pairs in query strings and form bodies whose value is a secret
_KEYS = "|".join(sorted(SENSITIVE_KEYS))
_PAIR = re.compile(rf"((?:^|[?&;\s])(?:{_KEYS})=)[^&;\s]*")
# "key": "value" pairs in JSON text that may be cut short (truncated bodies cannot be parsed)
_JSON_PAIR = re.compile(rf'("(?:{_KEYS})"\s*:\s*")(?:[^"\\]|\\.)*("?)', re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# user:password@ (or a lone token@) in a URL, wherever a URL appears in text
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@?#]+@")
# what a bearer token may hold to travel in a header: visible ASCII, no space (RFC 6750 asks less)
_UNSENDABLE = re.compile(r"[^\x21-\x7e]")
_SESSION_SECRETS = "cortex_secrets"  # the attribute a session announces its secrets by


class Secret(str):
    """A string whose repr is masked: the form every secret takes while the client holds it.

    ``str()``, formatting and comparison give the value (it is sent); ``repr()`` gives
    ``Secret('******')``, which is what debuggers and tracebacks with locals show.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"


def secret(value: str | None) -> Secret | None:
    """``value`` as a ``Secret`` (None and empty stay None)."""
    return Secret(value) if value else None


def is_loopback(host: str | None) -> bool:
    """True for exactly ``localhost`` and loopback addresses (127.0.0.0/8, ::1).

    Other names are not trusted, whatever DNS says they resolve to (``x.localhost``,
    ``127.0.0.1.nip.io``): the answer may change between this check and the connection.
    """
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost":
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
        f"{mask_url(f'{parts.scheme}://{parts.netloc}')}. Use an https:// URL (plain http is "
        "allowed only for localhost, 127.0.0.0/8 and ::1, e.g. the sandbox)."
    )


def check_route(url: str, proxy: str | None, what: str) -> None:
    """Raise ``ConfigurationError`` unless credentials may travel to ``url`` through ``proxy``.

    The proxy is a hop: a plain http request passes through it in clear, so it must be https
    or on loopback. (An https request is tunnelled through any proxy, encrypted end to end.)
    """
    check_secure_url(url, what)
    if not proxy or urlsplit(url).scheme != "http":
        return
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.scheme == "https" or is_loopback(parts.hostname):
        return
    raise ConfigurationError(
        f"Refusing to send credentials to {what} at {mask_url(url)} through the proxy "
        f"{mask_url(proxy)}: plain http would carry them in clear to the proxy. Exempt the "
        "host from the proxy (NO_PROXY=127.0.0.1,localhost) or use an https proxy."
    )


def carries_credentials(headers: Mapping[str, Any]) -> bool:
    """True when ``headers`` hold a credential header (Authorization, Cookie, X-Api-Key)."""
    return any(k.lower() in CREDENTIAL_HEADERS for k in headers)


def mask_credential_headers(headers: Any) -> None:
    """Mask, in place, the value of each credential header (``Bearer ******`` keeps the scheme)."""
    for name in [k for k in headers if k.lower() in CREDENTIAL_HEADERS]:
        scheme, space, _ = str(headers[name]).partition(" ")
        headers[name] = f"{scheme} {MASK}" if space and name.lower() == "authorization" else MASK


def mask_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``******@``."""
    return _USERINFO.sub(lambda m: m.group(1) + MASK + "@", url)


def mask_values(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret value masked, wherever it stands (longest first)."""
    for value in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with secrets masked: known values, bearers, key=value pairs, URL passwords."""
    text = mask_values(text, secrets)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    text = _JSON_PAIR.sub(lambda m: m.group(1) + MASK + m.group(2), text)
    text = mask_url(text)
    return _PAIR.sub(lambda m: m.group(1) + MASK, text)


def redact_headers(headers: Mapping[str, Any], secrets: Iterable[str] = ()) -> dict[str, str]:
    """Copy ``headers`` with every sensitive header's value masked, and every known secret
    value masked in the others (a server may echo a token in any header)."""
    secrets = list(secrets)
    return {
        k: (MASK if k.lower() in SENSITIVE_HEADERS else mask_values(str(v), secrets))
        for k, v in headers.items()
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


def announce_secrets(session: Any, secrets: Callable[[], Iterable[str]]) -> None:
    """Tell the observers of ``session`` which secret values its requests carry (asked at
    each reply, so rolled tokens count)."""
    setattr(session, _SESSION_SECRETS, secrets)


def secrets_of(session: Any) -> list[str]:
    """The secret values ``session`` announced (``announce_secrets``), or none."""
    secrets = getattr(session, _SESSION_SECRETS, None)
    return [s for s in secrets() if s] if callable(secrets) else []


def unsendable_character(value: str) -> str | None:
    """Where and what the first character of a token is that no HTTP header can carry (a line
    break, a space, a non-ASCII letter), in words without the token; None when it can go."""
    found = _UNSENDABLE.search(value)
    if found is None:
        return None
    char = found.group()
    what = {"\r": "a carriage return", "\n": "a line break", " ": "a space", "\t": "a tab"}.get(
        char, f"the character U+{ord(char):04X}"
    )
    return f"{what} at position {found.start() + 1} of {len(value)}"
