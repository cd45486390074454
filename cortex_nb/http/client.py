"""HTTPClient: the seed document's HTTP client for the Cortex Data Lake REST API.

A ``transport.SecureSession`` with a ``transport.RetryingAdapter``: urllib3's ``Retry`` resends
idempotent requests on connection failures, 429 (honouring ``Retry-After``) and 502/503/504,
with backoff and a bounded number of attempts; requests marked ``idempotent=True`` (job creation
with a client-chosen ``jobId``) are resent too, even when they are POSTs. Every hop (redirects
and proxies included) obeys the https-or-loopback rule for credentials, and every reply must
arrive within the read timeout and ``max_reply_bytes``.

``request()`` reads top to bottom: resolve settings (method-level values override the
client's) -> prepare -> authorize (refresh first when the token is missing or expiring) ->
send -> on 401, refresh once and resend once -> mask the credentials the reply's request
kept (errors carry the reply) -> check status / JSON. Observers (tracing) attach to the
session's response hooks; nothing here knows about them, beyond announcing the credentials'
secrets on the session (``security.announce_secrets``) so that observers mask them wherever a
server echoes them. ``repr`` masks every secret option: credentials, auth, cookies, credential
headers, proxy passwords and secret-named params.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from cortex_nb.exceptions import (
    ConfigurationError,
    CredentialsError,
    HTTPError,
    InvalidJSONError,
    TransportError,
)
from cortex_nb.http.credentials import Credentials
from cortex_nb.http.endpoints import DEFAULT_URL, check_url
from cortex_nb.http.security import (
    MASK,
    SENSITIVE_KEYS,
    announce_secrets,
    check_secure_url,
    mask_credential_headers,
    mask_url,
    mask_values,
    redact_headers,
    redact_json,
    scrub,
    unsendable_character,
)
from cortex_nb.http.transport import (
    CLIENT_HEADERS,
    DEFAULT_MAX_REPLY_BYTES,
    ReplyTooLarge,
    ReplyTooSlow,
    RetryingAdapter,
    SecureSession,
    default_retry,
)

__all__ = [
    "DEFAULT_URL",
    "USE_CLIENT_DEFAULT",
    "HTTPClient",
    "build_url",
    "default_retry",
    "http_error_message",
    "service_message",
]

DEFAULT_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds; requests has no default at all
Timeout = float | tuple[float, float] | None
# the client options a request may override, in the seed document's order (plus timeout)
CLIENT_OPTIONS = (
    "auto_refresh", "auto_retry", "credentials", "enforce_json", "force_trace", "port",
    "raise_for_status", "url", "timeout",
)
SESSION_ATTRS = (
    "auth", "cert", "cookies", "headers", "params", "proxies", "stream", "trust_env", "verify",
)
ADAPTER_PARAMS = ("pool_connections", "pool_maxsize", "pool_block", "max_retries")
REQUEST_ARGS = frozenset({
    "params", "json", "data", "files", "headers", "cookies", "auth",
    "allow_redirects", "proxies", "stream", "verify", "cert", "hooks",
})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HINTS = {
    400: "the request was rejected; check the SQL or the parameters",
    401: "the token was refused; check the credentials (or reconnect)",
    403: "the token has no access to this resource or tenant",
    404: "nothing at that path; check the path or the job id",
    409: "it already exists (a resent job id?)",
    429: "rate limited; wait a little and try again",
}


def build_url(url: str, port: int | None, path: str = "") -> str:
    """Join ``url``, ``:port`` (unless the URL names one or it is the default) and ``path``."""
    base = check_url(url, "url")
    parts = urlsplit(base)
    if path and not path.startswith("/"):
        if urlsplit(path).scheme:
            raise ConfigurationError(f"path {path!r} is a URL; pass the base as url= instead")
        path = "/" + path
    if parts.port is None and port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        base = f"{parts.scheme}://{parts.netloc}:{int(port)}{parts.path}"
    return base + path


def _named_port(url: str) -> int | None:
    """The port ``url`` names, or None (also for a URL that cannot be read)."""
    try:
        return urlsplit(url).port
    except ValueError:
        return None


class _UseClientDefault:
    """The type of ``USE_CLIENT_DEFAULT``: "not given here, use the client's value"."""

    def __repr__(self) -> str:
        return "USE_CLIENT_DEFAULT"


# distinct from None, which is a real value for some options (credentials=None, timeout=None)
USE_CLIENT_DEFAULT: Any = _UseClientDefault()


@dataclass
class _Call:
    """One request's settings after method-level values were laid over the client's."""

    method: str
    url: str
    options: dict[str, Any]
    request_args: dict[str, Any]
    idempotent: bool
    deadline: float | None = None
    max_reply_bytes: int | None = None


class HTTPClient:
    """HTTP client for the Cortex Data Lake REST API (the seed document's ``HTTPClient``).

    Keywords are the seed's (``auto_refresh``, ``auto_retry``, ``credentials``,
    ``enforce_json``, ``force_trace``, ``port``, ``raise_for_status``, ``url``) plus
    ``timeout`` and ``max_reply_bytes`` (the most a reply's body may hold, decompressed);
    ``options`` takes the requests ``Session`` attributes (auth, cert, cookies,
    headers, params, proxies, stream, trust_env, verify) and the ``HTTPAdapter`` parameters
    (pool_connections, pool_maxsize, pool_block, max_retries). Anything else is refused.
    """

    def __init__(
        self,
        *,
        auto_refresh: bool = True,
        auto_retry: bool = True,
        credentials: Credentials | None = None,
        enforce_json: bool = False,
        force_trace: bool = False,
        port: int = 443,
        raise_for_status: bool = False,
        url: str = DEFAULT_URL,
        timeout: Timeout = DEFAULT_TIMEOUT,
        max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES,
        **options: Any,
    ) -> None:
        _reject_unknown(options, _CLIENT_KEYWORDS, "HTTPClient()")
        self.auto_refresh, self.auto_retry = auto_refresh, auto_retry
        self.credentials = credentials
        self.enforce_json, self.force_trace = enforce_json, force_trace
        self.port, self.raise_for_status, self.url = port, raise_for_status, url
        self.timeout, self.max_reply_bytes = timeout, max_reply_bytes
        self._options = dict(options)
        self.session = self._build_session(options)
        build_url(self.url, self.port)  # fail now, not at the first request

    def _build_session(self, options: Mapping[str, Any]) -> requests.Session:
        session = SecureSession()
        session.headers.update(CLIENT_HEADERS)
        for name in SESSION_ATTRS:
            if name == "headers" and options.get("headers"):
                session.headers.update(options["headers"])
            elif name == "cookies" and isinstance(options.get("cookies"), Mapping):
                # requests keeps a session's cookies in a jar; a plain dict breaks every reply
                session.cookies = requests.cookies.cookiejar_from_dict(dict(options["cookies"]))
            elif name in options and name != "headers":
                setattr(session, name, options[name])
        announce_secrets(session, self._credential_secrets)
        adapter = RetryingAdapter(
            max_reply_bytes=self.max_reply_bytes,
            **{k: options[k] for k in ADAPTER_PARAMS if k in options},
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        self.adapter = adapter
        return session

    # -- the request path -------------------------------------------------------------------
    def request(
        self,
        *,
        method: str | None = None,
        path: str | None = None,
        endpoint: str | None = None,
        auto_refresh: bool = USE_CLIENT_DEFAULT,
        auto_retry: bool = USE_CLIENT_DEFAULT,
        credentials: Credentials | None = USE_CLIENT_DEFAULT,
        enforce_json: bool = USE_CLIENT_DEFAULT,
        force_trace: bool = USE_CLIENT_DEFAULT,
        port: int = USE_CLIENT_DEFAULT,
        raise_for_status: bool = USE_CLIENT_DEFAULT,
        url: str = USE_CLIENT_DEFAULT,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        idempotent: bool = False,
        deadline: float | None = None,
        max_reply_bytes: int | None = None,
        **request_args: Any,
    ) -> requests.Response:
        """Send one request and return the ``requests.Response``.

        ``method`` is required; ``path`` (or ``endpoint``, the SDK's old name) is appended to
        ``url:port``. Every client option may be overridden for this request; ``idempotent``
        lets a POST be resent on transient failures; ``deadline`` (a ``time.monotonic()``
        value) bounds the whole request, retries and their waits included (a query's
        timeout); ``max_reply_bytes`` lowers the client's cap on the reply's body for this
        request (a results page of the size asked); the rest are requests' own keywords
        (``params``, ``json``, ``data``, ``headers``, ``allow_redirects``, ...).
        """
        given = {
            "auto_refresh": auto_refresh, "auto_retry": auto_retry, "credentials": credentials,
            "enforce_json": enforce_json, "force_trace": force_trace, "port": port,
            "raise_for_status": raise_for_status, "url": url, "timeout": timeout,
        }
        call = self._resolve(method, _one_path(path, endpoint), given, idempotent, request_args)
        call.deadline, call.max_reply_bytes = deadline, max_reply_bytes
        prepared = self._prepare(call)
        response = self._send_handling_auth(prepared, call)
        for hop in (*response.history, response):  # the reply outlives the call, in errors too
            mask_credential_headers(hop.request.headers)
        self._check_response(response, call)
        return response

    def _resolve(
        self, method: str | None, path: str, given: dict[str, Any], idempotent: bool,
        request_args: dict[str, Any],
    ) -> _Call:
        if not method or not isinstance(method, str):
            raise ConfigurationError("request() needs method=, e.g. method='GET'")
        _reject_unknown(request_args, _REQUEST_KEYWORDS, "request()")
        options = {
            name: getattr(self, name) if value is USE_CLIENT_DEFAULT else value
            for name, value in given.items()
        }
        url = build_url(options["url"], options["port"], path)
        return _Call(method.upper(), url, options, request_args, bool(idempotent))

    def _prepare(self, call: _Call) -> requests.PreparedRequest:
        args = {k: v for k, v in call.request_args.items() if k in _PREPARE_ARGS}
        if call.options["force_trace"]:
            args["headers"] = {**(args.get("headers") or {}), "x-envoy-force-trace": ""}
        prepared = self.session.prepare_request(
            requests.Request(method=call.method, url=call.url, **args)
        )
        prepared.cortex_idempotent = call.idempotent  # read by RetryingAdapter
        prepared.cortex_deadline = call.deadline
        prepared.cortex_max_reply_bytes = call.max_reply_bytes
        return prepared

    def _send_handling_auth(
        self, prepared: requests.PreparedRequest, call: _Call
    ) -> requests.Response:
        credentials: Credentials | None = call.options["credentials"]
        if credentials is None:
            return self._send(prepared, call)  # the session checks credential headers per hop
        token = self._current_token(credentials, call.options["auto_refresh"])
        _authorize(prepared, token)
        response = self._send(prepared, call)
        if response.status_code == 401 and call.options["auto_retry"] and credentials.can_refresh:
            # One refresh and one resend, never a loop (requests' num_401_calls idea).
            fresh = credentials.refresh(stale=token)
            retry = prepared.copy()
            retry.cortex_idempotent = call.idempotent
            retry.cortex_deadline = call.deadline
            retry.cortex_max_reply_bytes = call.max_reply_bytes
            retry.cortex_note = "resent after 401 with a refreshed token"
            _authorize(retry, fresh)
            response.close()
            response = self._send(retry, call)
        return response

    @staticmethod
    def _current_token(credentials: Credentials, auto_refresh: bool) -> str:
        if auto_refresh:
            return credentials.refresh_if_expiring()
        if not credentials.access_token:
            raise CredentialsError(
                "No access token and auto_refresh=False: call credentials.refresh() first, or "
                "let the client refresh (auto_refresh=True)."
            )
        return credentials.access_token

    def _send(self, prepared: requests.PreparedRequest, call: _Call) -> requests.Response:
        args = call.request_args
        settings = self.session.merge_environment_settings(
            prepared.url, args.get("proxies", {}), args.get("stream"), args.get("verify"),
            args.get("cert"),
        )
        try:
            return self.session.send(
                prepared,
                timeout=_within(call.options["timeout"], call.deadline, call),
                allow_redirects=args.get("allow_redirects", True),
                **settings,
            )
        except requests.RequestException as exc:
            message = _transport_message(call, exc, self._secrets(call))
        # raised outside the handler: requests' exception (and its request, with the
        # credentials in it) must not ride along as __context__
        raise TransportError(message)

    def _check_response(self, response: requests.Response, call: _Call) -> None:
        if call.options["raise_for_status"] and not response.ok:
            raise HTTPError(http_error_message(response, self._secrets(call)), response)
        if call.options["enforce_json"] and response.status_code != 204:
            try:
                response.json()
            except ValueError:
                raise InvalidJSONError(
                    _invalid_json_message(response, self._secrets(call)), response
                ) from None

    @staticmethod
    def _secrets(call: _Call) -> list[str]:
        credentials = call.options["credentials"]
        return credentials.secrets() if credentials is not None else []

    def _credential_secrets(self) -> list[str]:
        """The secret values of the client's credentials (what its session announces)."""
        return self.credentials.secrets() if self.credentials is not None else []

    # -- lifecycle and display ---------------------------------------------------------------
    def close(self) -> None:
        """Close the connection pools."""
        self.session.close()

    def __enter__(self) -> HTTPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        shown = [f"url={mask_url(self.url)!r}"]
        # a URL that names its port is where requests go: ``port`` would contradict it
        shown += [f"port={self.port!r}"] if _named_port(self.url) is None else []
        shown += [f"credentials={self.credentials!r}"] if self.credentials is not None else []
        shown += [f"{key}={_shown_option(key, value)!r}" for key, value in self._options.items()]
        return mask_values(f"HTTPClient({', '.join(shown)})", self._credential_secrets())


# every keyword each call takes (named in the error for an unknown one)
_CLIENT_KEYWORDS = frozenset(
    {*CLIENT_OPTIONS, *SESSION_ATTRS, *ADAPTER_PARAMS, "max_reply_bytes"}
)
_REQUEST_KEYWORDS = frozenset(
    {*REQUEST_ARGS, *CLIENT_OPTIONS, "method", "path", "endpoint", "idempotent"}
)
_PREPARE_ARGS = frozenset(
    {"params", "json", "data", "files", "headers", "cookies", "auth", "hooks"}
)


def _one_path(path: str | None, endpoint: str | None) -> str:
    """``path``, or ``endpoint`` (the official SDK's name for it), not two different ones."""
    if path is not None and endpoint is not None and path != endpoint:
        raise ConfigurationError("give path= or endpoint= (its old name), not both")
    return path if path is not None else (endpoint or "")


def _reject_unknown(kwargs: Mapping[str, Any], known: Collection[str], where: str) -> None:
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ConfigurationError(
            f"{where} got unexpected keyword argument(s): {', '.join(unknown)}. "
            f"Known: {', '.join(sorted(known))}."
        )


def _shown_option(key: str, value: Any) -> Any:
    """A client option as ``repr`` shows it: secrets masked (headers, proxies and params by
    name; auth and cookies whole)."""
    if key in ("auth", "cookies"):
        return MASK
    if key == "headers" and isinstance(value, Mapping):
        return redact_headers(value)
    if key == "proxies" and isinstance(value, Mapping):
        return {scheme: _masked_proxy(str(proxy)) for scheme, proxy in value.items()}
    if key == "params":
        return _masked_params(value)
    return value


def _masked_proxy(proxy: str) -> str:
    """A proxy URL with its password masked, with or without a scheme (``user:pw@host:3128``,
    which requests reads as http)."""
    if "://" in proxy:
        return mask_url(proxy)
    return mask_url(f"http://{proxy}").removeprefix("http://")


def _masked_params(params: Any) -> Any:
    """Query parameters with the values of secret-named keys (``token``...) masked."""
    if isinstance(params, Mapping):
        return redact_json(dict(params))
    if isinstance(params, str):
        return scrub(params)
    if isinstance(params, list | tuple):
        return [
            (pair[0], MASK if str(pair[0]).lower() in SENSITIVE_KEYS else pair[1])
            if isinstance(pair, list | tuple) and len(pair) == 2 else pair
            for pair in params
        ]
    return params


def _within(timeout: Timeout, deadline: float | None, call: _Call) -> Timeout:
    """``timeout`` (connect, read), each cut to the time left before ``deadline``; a
    ``TransportError`` when none is left (nothing is sent)."""
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise TransportError(f"{call.method} {call.url} was not sent: its time ran out.")
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    return tuple(left if t is None else min(t, left) for t in (connect, read))


def _authorize(prepared: requests.PreparedRequest, token: str) -> None:
    check_secure_url(prepared.url or "", "the API")
    problem = unsendable_character(token)
    if problem is not None:  # http.client would raise with the whole header in its message
        raise CredentialsError(
            f"The access token cannot be sent in an HTTP header: it holds {problem}. Check where "
            "it came from (PAN_ACCESS_TOKEN, a file read with its line break?)."
        )
    prepared.headers["Authorization"] = f"Bearer {token}"


def service_message(body: Any) -> str:
    """The service's own explanation in a decoded error body (``errors`` items or IdP keys)."""
    items = body.get("errors") if isinstance(body, dict) else body
    if isinstance(items, list):
        return "; ".join(str(i.get("message") or i) for i in items if isinstance(i, dict))
    if isinstance(body, dict):
        return str(body.get("error_description") or body.get("message") or body.get("error") or "")
    return ""


def http_error_message(
    response: requests.Response,
    secrets: list[str],
    doing: str = "",
    explain: Callable[[str], Any] | None = None,
) -> str:
    """The service's explanation first, then a hint, then what was sent and the request id.

    ``doing`` names the step (``Submitting the query``) for the part in parentheses.
    ``explain(detail)``, given, returns a lesson about the service's explanation: its ``hint``
    replaces the generic one and its ``excerpt`` (lines of the SQL) goes before the request
    id. Scrubbed.
    """
    request = response.request
    method = request.method if request is not None else "?"
    status, reason = response.status_code, (response.reason or "").strip()
    rid = response.headers.get("x-request-id") or "none"
    try:
        detail = service_message(response.json())
    except ValueError:  # not JSON: a glimpse of what came back instead
        detail = " ".join(response.text[:200].split())
    text = detail[:500] or f"HTTP {status} {reason}".rstrip()
    hint = _HINTS.get(status) or ("service error; try again later" if status >= 500 else "")
    lesson = explain(detail) if explain is not None and detail else None
    if lesson is not None and lesson.hint:
        hint = lesson.hint
    if hint:
        text += f" — {hint}"
    where = f"HTTP {status} {reason}".rstrip() + f" from {method} {response.url}"
    if doing:
        where = f"{doing}: {where}"
    between = f"\n{lesson.excerpt}\n" if lesson is not None and lesson.excerpt else " "
    return scrub(f"{text}{between}({where}; request id {rid})", secrets)


def _invalid_json_message(response: requests.Response, secrets: list[str]) -> str:
    request = response.request
    snippet = response.text[:80].replace("\n", " ")
    ctype = response.headers.get("Content-Type", "none")
    text = (
        f"Expected JSON from {request.method if request else '?'} {response.url} "
        f"(HTTP {response.status_code}, Content-Type {ctype}, "
        f"x-request-id: {response.headers.get('x-request-id') or 'none'}), got {snippet!r}. "
        "Check the URL points at the Cortex API."
    )
    return scrub(text, secrets)


def _transport_message(call: _Call, exc: requests.RequestException, secrets: list[str]) -> str:
    if isinstance(exc, ReplyTooSlow | ReplyTooLarge):  # a reply came, but not within bounds
        return scrub(f"{call.method} {call.url}: {exc}", secrets)
    kind = type(exc).__name__
    inner = exc.args[0] if exc.args else exc
    reason = str(getattr(inner, "reason", inner))  # urllib3's MaxRetryError wraps the cause
    text = f"{call.method} {call.url} got no reply ({kind}: {reason[:300]})."
    if isinstance(exc, requests.exceptions.SSLError):
        text += " TLS verification failed; check the URL, or pass verify= a CA bundle path."
    else:
        text += " Check the URL and port, the network, and that the service is up."
    return scrub(text, secrets)
