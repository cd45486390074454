"""The wire under ``HTTPClient`` and ``Credentials``: every hop checked, every reply bounded.

``SecureSession`` is a ``requests.Session`` that applies the https-or-loopback rule
(``security.check_route``) to each hop it sends, the first request, every redirect and the
proxy in between, whenever the request carries credentials: a credential header
(``Authorization``, ``Cookie``, ``X-Api-Key``) or, in a session made for token requests, its
body. On a redirect to another origin it drops every credential header, where requests drops
only ``Authorization``.

``RetryingAdapter`` is an ``HTTPAdapter`` whose urllib3 ``Retry`` (a ``BoundedRetry``) resends
idempotent requests on connection failures, 429 (honouring ``Retry-After``, a number of
seconds capped at ``MAX_RETRY_AFTER``; anything else counts as absent) and 502/503/504, with
backoff and a bounded number of attempts; requests marked ``cortex_idempotent`` (job creation
with a client-chosen ``jobId``) are resent too. A request marked ``cortex_deadline`` (a
``time.monotonic()`` value: a query's timeout) is bounded whole by it: no reply is awaited
and no retry waited for past it. It also bounds each reply: the whole of it (status line,
headers and body) must arrive within the read timeout, however slowly it trickles in
(requests' read timeout is per socket read), and its body may not expand past
``max_reply_bytes`` (or the lower ``cortex_max_reply_bytes`` a request is marked with) once
decompressed.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.utils import resolve_proxies, select_proxy
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import InvalidHeader, MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from cortex_nb._version import __version__
from cortex_nb.http.security import CREDENTIAL_HEADERS, carries_credentials, check_route

__all__ = [
    "CLIENT_HEADERS",
    "DEFAULT_MAX_REPLY_BYTES",
    "IDEMPOTENT_METHODS",
    "MAX_RETRY_AFTER",
    "RETRY_STATUSES",
    "BackoffGate",
    "BoundedRetry",
    "GatedRetry",
    "ReplyTooLarge",
    "ReplyTooSlow",
    "RetryingAdapter",
    "SecureSession",
    "allowing_post",
    "default_retry",
    "gated_retry",
    "retry_after_seconds",
    "time_left",
    "token_session",
]

# what every request of cortex_nb says about itself, API calls and token requests alike
CLIENT_HEADERS = {"Accept": "application/json", "User-Agent": f"cortex-nb/{__version__}"}
RETRY_STATUSES = (429, 502, 503, 504)
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# the largest page (100,000 rows of wide logs) is a few hundred MB of JSON
DEFAULT_MAX_REPLY_BYTES = 512 * 2**20
_CHUNK = 64 * 1024
MAX_RETRY_AFTER = 60  # seconds: the longest one Retry-After is waited for (more is capped)


def retry_after_seconds(value: str | None) -> float:
    """A ``Retry-After`` value in seconds, capped at ``MAX_RETRY_AFTER``; 0 (absent) for
    anything that is not a number of seconds or an HTTP date (negative, NaN, infinite...)."""
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:  # an HTTP date: urllib3 reads those
            seconds = Retry().parse_retry_after(value)
        except InvalidHeader:
            return 0.0
    if not math.isfinite(seconds) or seconds < 0:
        return 0.0
    return min(seconds, MAX_RETRY_AFTER)


# the reply watches and the deadline of the send running in this thread (None outside one)
_watching = threading.local()


def time_left() -> float | None:
    """Seconds left before the deadline of the send running in this thread (None: none)."""
    deadline = getattr(_watching, "deadline", None)
    return None if deadline is None else deadline - time.monotonic()


class BoundedRetry(Retry):
    """urllib3's ``Retry`` within bounds: ``Retry-After`` read by ``retry_after_seconds``, and
    no retry once its wait would end past the deadline of the send in progress (the last
    reply is then returned, or the last error raised)."""

    def parse_retry_after(self, retry_after: str) -> float:
        """Seconds to wait for a ``Retry-After`` value (0: as if there were none)."""
        return retry_after_seconds(retry_after)

    def increment(self, method: Any = None, url: Any = None, response: Any = None,
                  error: Any = None, _pool: Any = None, _stacktrace: Any = None) -> Retry:
        """The next retry state, or ``MaxRetryError`` when there is no time left to use it."""
        later = super().increment(method, url, response, error, _pool, _stacktrace)
        left = time_left()
        if left is not None and later.next_wait(response) >= left:
            reason = error or ResponseError(f"no time left to retry within the deadline ({url})")
            raise MaxRetryError(_pool, url, reason) from error
        return later

    def next_wait(self, response: Any = None) -> float:
        """Seconds the next retry waits: the reply's ``Retry-After``, else the backoff."""
        if response is not None and self.respect_retry_after_header:
            waiting = self.get_retry_after(response)
            if waiting:
                return waiting
        return self.get_backoff_time()


def default_retry(total: int = 4, retry_class: Callable[..., Retry] = BoundedRetry) -> Retry:
    """The transport retry policy: idempotent methods, transient statuses, bounded backoff.

    ``retry_class`` builds it (a ``Retry`` subclass that does more when it sleeps, say).
    """
    kwargs: dict[str, Any] = {
        "total": total,
        "connect": total,
        "read": 2,
        "status": total,
        "other": 0,
        "backoff_factor": 0.25,
        "backoff_max": 8,
        "status_forcelist": RETRY_STATUSES,
        "allowed_methods": IDEMPOTENT_METHODS,
        "respect_retry_after_header": True,
        "raise_on_status": False,  # the last reply is returned; raise_for_status decides
    }
    if "retry_after_max" in inspect.signature(Retry).parameters:
        kwargs["retry_after_max"] = MAX_RETRY_AFTER  # a hostile Retry-After must not stall us
    return retry_class(**kwargs)


def allowing_post(retry: Retry) -> Retry:
    """``retry``, resending POSTs too (for requests that are safe to repeat)."""
    methods = retry.allowed_methods
    return retry.new(allowed_methods=None if methods is None else set(methods) | {"POST"})


# -- bounded replies -------------------------------------------------------------------------
class ReplyTooSlow(requests.exceptions.ReadTimeout):
    """The whole reply did not arrive within the read timeout (it trickled in)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the reply did not arrive in full within {seconds:g} s (it came in too slowly). "
            "Try again later; if the link is slow, raise the read timeout (timeout=)."
        )


class ReplyTooLarge(requests.RequestException):
    """The reply's body, decompressed, is larger than the client accepts."""

    def __init__(self, limit: int, encoding: str | None) -> None:
        how = f" once decompressed ({encoding})" if encoding else ""
        super().__init__(
            f"the reply is larger than {limit:,} bytes{how}; refusing to read more. Ask for "
            "smaller pages (page_size=), or raise max_reply_bytes= if it is expected."
        )


class _ReplyWatch:
    """Shuts a connection's socket if its reply has not fully arrived by the deadline."""

    def __init__(self, sock: Any, seconds: float) -> None:
        self.seconds, self.expired = seconds, False
        self._timer = threading.Timer(seconds, self._expire, (sock,))
        self._timer.daemon = True
        self._timer.start()

    def _expire(self, sock: Any) -> None:
        self.expired = True
        raw = sock if isinstance(sock, socket.socket) else getattr(sock, "socket", None)
        with contextlib.suppress(OSError, TypeError):
            # the plain socket's shutdown, also under TLS: the blocked read sees end of file
            socket.socket.shutdown(raw, socket.SHUT_RDWR)

    def stop(self) -> None:
        """The reply is in (or given up): no shutdown."""
        self._timer.cancel()


class _WatchedConnection:
    """urllib3 connection mixin: in a watched send, a reply gets a deadline when it starts."""

    def getresponse(self) -> Any:
        watches = getattr(_watching, "watches", None)
        seconds = self.timeout  # urllib3 sets it to the read timeout just before this call
        seconds = float(seconds) if isinstance(seconds, int | float) else None
        left = time_left()  # a retry has less time than the first attempt had
        if left is not None:
            seconds = max(0.0, left if seconds is None else min(seconds, left))
        if watches is not None and seconds is not None and self.sock is not None:
            watches.append(_ReplyWatch(self.sock, seconds))
        return super().getresponse()


class _HTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _HTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_WATCHED_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """HTTPAdapter whose connections (direct or through an http(s) proxy) can be watched."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """Create the pool manager, making watched connections."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """The manager for ``proxy``, making watched connections (SOCKS ones are left as is)."""
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


class RetryingAdapter(_WatchedAdapter):
    """The client's adapter: bounded retries (POSTs when marked), reply deadline, size cap."""

    def __init__(self, max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES, **kwargs: Any):
        retries = kwargs.pop("max_retries", None)
        retry = default_retry() if retries is None else BoundedRetry.from_int(retries)
        super().__init__(max_retries=retry, **kwargs)
        self.max_reply_bytes = max_reply_bytes
        self._idempotent = _WatchedAdapter(max_retries=allowing_post(retry), **kwargs)

    def send(
        self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
        verify: Any = True, cert: Any = None, proxies: Any = None,
    ) -> requests.Response:
        """Send ``request`` (resent on transient failures) and read its reply within bounds.

        Unless the caller streams, the body is read here, so the deadline and the size cap
        cover it; a streamed reply is watched until its headers are in.
        """
        marked = getattr(request, "cortex_idempotent", False)
        send = self._idempotent.send if marked else super().send
        watches: list[_ReplyWatch] = []
        _watching.watches = watches
        _watching.deadline = getattr(request, "cortex_deadline", None)
        response = None
        try:
            response = send(
                request, stream=True, timeout=timeout, verify=verify, cert=cert, proxies=proxies
            )
            if not stream:
                self._read_body(response, getattr(request, "cortex_max_reply_bytes", None))
        except requests.RequestException:
            if not any(w.expired for w in watches):
                raise
            response = None
        finally:
            _watching.watches = _watching.deadline = None
            for watch in watches:
                watch.stop()
        # A reply whose socket was shut may even look complete (headers or body cut short).
        # Only the last attempt's reply counts: earlier ones were retried.
        if response is None or (watches and watches[-1].expired):
            raise ReplyTooSlow(watches[-1].seconds)  # outside the handler: no chained request
        return response

    def _read_body(self, response: requests.Response, lower: int | None = None) -> None:
        """Read the whole body now, decompressed, refusing more than ``max_reply_bytes`` (or
        the ``lower`` cap the request asked for)."""
        limit, size, chunks = self.max_reply_bytes, 0, []
        if lower is not None:
            limit = lower if limit is None else min(limit, lower)
        for chunk in response.iter_content(_CHUNK):
            size += len(chunk)
            if limit is not None and size > limit:
                response.close()
                raise ReplyTooLarge(limit, response.headers.get("Content-Encoding"))
            chunks.append(chunk)
        response._content = b"".join(chunks)  # requests' own cache behind Response.content

    def close(self) -> None:
        """Close both connection pools."""
        super().close()
        self._idempotent.close()


# -- every hop checked ----------------------------------------------------------------------
class SecureSession(requests.Session):
    """A requests Session that keeps credentials on allowed routes at every hop.

    ``secret_bodies``: every request body holds secrets (a session for token requests), so
    every request is checked, credential headers or not. ``what`` names the peer in errors.
    """

    def __init__(self, secret_bodies: bool = False, what: str = "the API") -> None:
        super().__init__()
        self.secret_bodies, self.what = secret_bodies, what

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """Send one hop, refused when its credentials would travel in clear (proxy included)."""
        if "proxies" not in kwargs:
            kwargs["proxies"] = resolve_proxies(request, self.proxies, self.trust_env)
        if self.secret_bodies or carries_credentials(request.headers):
            url = request.url or ""
            check_route(url, select_proxy(url, kwargs["proxies"]), self.what)
        return super().send(request, **kwargs)

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: Any) -> None:
        """On a redirect to another origin, drop every credential header, not only the bearer."""
        if self.should_strip_auth(response.request.url, prepared_request.url):
            for name in CREDENTIAL_HEADERS:
                prepared_request.headers.pop(name, None)
        super().rebuild_auth(prepared_request, response)


def token_session() -> SecureSession:
    """A session for OAuth2 token requests: secret bodies, POSTs retried like the API's GETs."""
    session = SecureSession(secret_bodies=True, what="the token endpoint")
    session.headers.update(CLIENT_HEADERS)  # the identity API calls send
    adapter = RetryingAdapter(max_retries=allowing_post(default_retry()))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


MAX_HOLD = 60.0  # seconds: the longest one Retry-After holds every job back


# -- one backoff for everyone ------------------------------------------------------------------
class BackoffGate:
    """A shared "not before" time: a 429's ``Retry-After`` holds every background job back."""

    def __init__(self) -> None:
        self._until = 0.0
        self._lock = threading.Lock()

    def hold(self, seconds: float) -> None:
        """Keep everyone waiting ``seconds`` from now (a longer hold already set stays)."""
        until = time.monotonic() + min(max(float(seconds), 0.0), MAX_HOLD)
        with self._lock:
            self._until = max(self._until, until)

    def remaining(self) -> float:
        """Seconds until the gate opens; 0 when it is open."""
        return max(0.0, self._until - time.monotonic())

    def wait(self, stop: threading.Event | None = None, until: float | None = None) -> None:
        """Return once the gate is open, as soon as ``stop`` is set, or at ``until`` (a
        ``time.monotonic()`` deadline) if it comes first."""
        stop = stop or threading.Event()
        while (left := self._left(until)) > 0 and not stop.wait(left):
            pass  # held again meanwhile: wait for the new time

    def pacer(self, stop: threading.Event) -> Callable[[float | None], None]:
        """A job's ``pace`` hook (``QueryJob(pace=...)``): before each request, wait while the
        gate is held, until ``stop`` is set or the job's deadline (its argument) comes."""
        return lambda deadline: self.wait(stop, until=deadline)

    def _left(self, until: float | None) -> float:
        """Seconds to wait: until the gate opens, or until ``until`` when that is sooner."""
        left = self.remaining()
        return left if until is None else min(left, until - time.monotonic())


class GatedRetry(BoundedRetry):
    """urllib3's ``Retry`` that, when it honours a ``Retry-After``, holds the shared gate too."""

    def __init__(self, *args: Any, gate: BackoffGate | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate if gate is not None else BackoffGate()

    def new(self, **kw: Any) -> GatedRetry:
        """The next retry state (urllib3 makes one per attempt), on the same gate."""
        kw.setdefault("gate", self.gate)
        return super().new(**kw)

    def sleep_for_retry(self, response: Any) -> bool:
        """Sleep the reply's ``Retry-After``, holding every job on the gate as long."""
        seconds = self.get_retry_after(response)
        if not seconds:
            return False
        self.gate.hold(seconds)
        left = time_left()  # another job's longer hold must not keep this send past its end
        self.gate.wait(until=None if left is None else time.monotonic() + left)
        return True


def gated_retry(gate: BackoffGate) -> GatedRetry:
    """The client's usual retry policy (``transport.default_retry``) on ``gate``."""
    return default_retry(retry_class=functools.partial(GatedRetry, gate=gate))
