"""The sandbox's HTTP server and the ``Sandbox`` object that starts and stops it.

A threaded stdlib HTTP/1.1 server (keep-alive) in front of ``api.Api``. Per request it reads the
body, refuses what a web page could have sent (``origins``), waits ``latency_ms``, records the
request, applies an injected fault if one matches, and writes the reply with ``Content-Type:
application/json`` and an ``x-request-id``.

Edges, hardened: a listen backlog and up to ``MAX_CONNECTIONS`` connection threads, so bursts
are accepted. When all are taken, the connection that has waited longest for its request to
arrive (an idle keep-alive one, or a client trickling its request) is closed to make room, so
slow clients cannot starve the rest; only when every connection is being answered is a new one
refused (503 with Retry-After); bodies of at most ``MAX_BODY_BYTES`` (413), a
malformed ``Content-Length`` is a 400 and chunked bodies a 411; methods without a route (OPTIONS,
TRACE, any other) get a JSON 405, and every error the HTTP layer itself raises is JSON too. A
client that goes away mid-request or mid-reply ends its connection silently; any other error in
the server answers 500 and, with ``verbose``, prints one line to stderr, never a traceback.

``stop()`` shuts the listener, ends every job, closes open connections and joins every thread,
within about a second whatever is running: a thread stuck in DuckDB past that is left to end
on its own, and the database is closed once it has.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cortex_nb import wire
from cortex_nb.sandbox.faults import Faults
from cortex_nb.sandbox.limits import (
    DEFAULT_QUERY_TIMEOUT_MS,
    check_settings,
    default_memory_limit_mb,
    page_budget_bytes,
)
from cortex_nb.sandbox.origins import BrowserGuard
from cortex_nb.sandbox.service import tokens as oauth
from cortex_nb.sandbox.service.api import Api, Reply, Request, error_reply, refusal_reply

REQUEST_LOG_SIZE = 10_000
MAX_BODY_BYTES = 256 * 1024
DRAIN_BYTES = 4 * 2**20  # of a body over the limit, read this much so the client sees the 413
MAX_CONNECTIONS = 256
LISTEN_BACKLOG = 256
STOP_WAIT_S = 0.4  # stop() waits this long for job workers, then as long for connections
EVICT_WAIT_S = 1.0  # how long a new connection waits for the slot of one closed for it
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# a client that closed its end, reset it, or was cut off by stop()
CLIENT_GONE = (ConnectionError, TimeoutError, EOFError)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the sandbox received (header names lower-case; status None if dropped)."""

    method: str
    path: str
    query: dict
    headers: dict
    json: object
    status: int | None
    request_id: str
    form: dict | None = None


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with bounded connection threads that ``stop()`` can end."""

    daemon_threads = True
    block_on_close = False  # stop() joins the threads itself, with a deadline
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.open_sockets: set[socket.socket] = set()
        self.threads: list[threading.Thread] = []
        self.waiting: dict[socket.socket, float] = {}  # waiting for a request, since when
        self.sockets_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:
        """Serve the connection in its own thread, or answer 503 when all are taken."""
        if not self._take_slot():
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        with self.sockets_lock:
            self.open_sockets.add(request)
            self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()

    def _take_slot(self) -> bool:
        """A connection slot: a free one, or that of the longest-waiting connection, closed."""
        if self._slots.acquire(blocking=False):
            return True
        with self.sockets_lock:
            longest = min(self.waiting, key=self.waiting.get, default=None)
            self.waiting.pop(longest, None)
        if longest is None:
            return False
        with contextlib.suppress(OSError):
            longest.shutdown(socket.SHUT_RDWR)  # its handler ends and frees the slot
        return self._slots.acquire(timeout=EVICT_WAIT_S)

    def mark_waiting(self, sock: socket.socket, waiting: bool) -> None:
        """Note that ``sock`` waits for (or reads) a request, or that its request is in hand."""
        with self.sockets_lock:
            if not waiting:
                self.waiting.pop(sock, None)
            elif sock in self.open_sockets:
                self.waiting[sock] = time.monotonic()

    def shutdown_request(self, request) -> None:
        """Forget the connection once its handler is done, freeing its slot."""
        with self.sockets_lock:
            served = request in self.open_sockets
            self.open_sockets.discard(request)
            self.waiting.pop(request, None)
        if served:
            self._slots.release()
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """Stay quiet about clients that went away; other errors are one line when verbose."""
        error = sys.exc_info()[1]
        if not isinstance(error, CLIENT_GONE):
            self.sandbox.log(f"error serving {client_address[0]}: {_one_line(error)}")

    def close_open_connections(self) -> None:
        """Wake handlers waiting on idle keep-alive connections or on slow clients."""
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def join_threads(self, timeout: float) -> list[threading.Thread]:
        """Wait up to ``timeout`` s for the connection threads; return those still running."""
        with self.sockets_lock:
            threads = list(self.threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [thread for thread in threads if thread.is_alive()]


def _refuse_busy(request: socket.socket) -> None:
    body = error_reply(503, "The sandbox has too many open connections; retry shortly").body
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nx-request-id: {uuid.uuid4().hex}\r\n"
        "Retry-After: 1\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(OSError):
        request.settimeout(1)
        request.sendall(head.encode() + body)


def _one_line(error: BaseException | None) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


class _ClientGone(Exception):
    """The client closed its connection before its request was complete."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cortex-nb-sandbox"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    # headers and body go out in separate writes: without this, Nagle + delayed ACK add 40 ms
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        """Serve any routed method the same way: the routes decide."""
        self._serve()

    def handle_one_request(self) -> None:
        """Wait for and serve one request; until it is read, the connection may be closed to
        make room for another (see ``_Server._take_slot``)."""
        self.server.mark_waiting(self.connection, True)
        super().handle_one_request()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = do_GET

    def parse_request(self) -> bool:
        """Parse as http.server does, and answer methods without a route with a JSON 405."""
        if not super().parse_request():
            return False
        if self.command in METHODS:
            return True
        self.close_connection = True  # its body, if any, is not read
        message = f"Method {self.command} is not allowed; use one of {', '.join(METHODS)}"
        self._write(error_reply(405, message, headers={"Allow": ", ".join(METHODS)}), "")
        return False

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, headers too long...), as JSON."""
        self.close_connection = True
        text = message or explain or "Bad request"
        self.log_error("refused a malformed request: %d %s", code, text)
        with contextlib.suppress(*CLIENT_GONE, OSError):
            self._write(error_reply(code, text, headers={"Connection": "close"}), "")

    def version_string(self) -> str:
        """The Server header."""
        return self.server_version

    def log_message(self, format: str, *args) -> None:
        """Stay quiet: the request log is ``Sandbox.requests``."""

    def log_error(self, format: str, *args) -> None:
        """One line on stderr, only when the sandbox is verbose."""
        self.server.sandbox.log(format % args)

    def _serve(self) -> None:
        try:
            self._answer()
        except (_ClientGone, *CLIENT_GONE):
            self.close_connection = True
        except Exception as error:  # a bug: answer 500, keep serving
            self.close_connection = True
            self.server.sandbox.log(f"error in {self.command} {self.path}: {_one_line(error)}")
            reply = error_reply(500, f"Internal error in the sandbox: {_one_line(error)}")
            with contextlib.suppress(*CLIENT_GONE, OSError):
                self._write(reply, "")

    def _answer(self) -> None:
        sandbox: Sandbox = self.server.sandbox
        headers = {name.lower(): value for name, value in self.headers.items()}
        body, refused = self._read_body()
        self.server.mark_waiting(self.connection, False)
        request = Request.parse(self.command, self.path, headers, body)
        request_id = uuid.uuid4().hex
        problem = sandbox.guard.refusal(headers)
        if refused is None and problem is not None:
            refused = refusal_reply(request.path, 403, problem)
        if refused is not None:
            sandbox.record(request, refused.status, request_id)
            self._write(refused, request_id)
            return
        extra_ms, fault = sandbox.faults.take(request.path)
        sandbox.delay(extra_ms)
        if fault is not None and fault.drop:
            sandbox.record(request, None, request_id)
            self._drop()
            return
        if fault is not None:
            reply = error_reply(fault.status, fault.message(), headers=fault.headers())
        else:
            reply = sandbox.api.handle(request)
            request_id = reply.headers.pop("x-request-id", None) or request_id
        sandbox.record(request, reply.status, request_id)
        try:
            self._write(reply, request_id)
        finally:
            if reply.on_sent is not None:  # frees the page's share of the budget
                reply.on_sent()

    def _read_body(self) -> tuple[bytes, Reply | None]:
        """The request body, or a refusal (the connection then closes: the body stays unread)."""
        lengths = self.headers.get_all("Content-Length") or []
        if self.headers.get("Transfer-Encoding"):
            return self._refuse(411, "Send the request body with a Content-Length, not chunked")
        if not lengths:
            return b"", None
        if len(set(lengths)) > 1 or not lengths[0].strip().isdigit():
            return self._refuse(400, f"Malformed Content-Length: {', '.join(lengths)!r}")
        length = int(lengths[0])
        if length > MAX_BODY_BYTES:
            self._discard(length)
            limit = f"{MAX_BODY_BYTES // 1024} KiB"
            return self._refuse(413, f"Request body of {length:,} bytes is over the {limit} limit")
        body = self.rfile.read(length)
        if len(body) < length:
            raise _ClientGone
        return body, None

    def _discard(self, length: int) -> None:
        """Read and drop the start of an unwanted body: a client still sending it would
        otherwise meet a reset instead of the reply."""
        left = min(length, DRAIN_BYTES)
        while left > 0 and (chunk := self.rfile.read(min(left, 65536))):
            left -= len(chunk)

    def _refuse(self, status: int, message: str) -> tuple[bytes, Reply]:
        self.close_connection = True
        return b"", error_reply(status, message, headers={"Connection": "close"})

    def _write(self, reply: Reply, request_id: str) -> None:
        headers = {"Content-Type": "application/json", **reply.headers}
        self.send_response(reply.status)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("x-request-id", request_id or uuid.uuid4().hex)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def _drop(self) -> None:
        """Close the connection without a reply, as a failing proxy would."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class Sandbox:
    """An offline Cortex Data Lake (OAuth2 + Query Service v2) on a local port, in a thread.

    ``rows`` traffic rows (other tables proportional) generated from ``seed``, timestamps in
    the week before ``anchor`` (epoch seconds; default the start of the current UTC hour).
    ``latency_ms`` delays every request; ``fail_rate`` answers that fraction of API requests
    with a random 502/503/504 (reproducible for a seed). Access tokens live ``token_ttl``
    seconds. Jobs spend ``job_delay_ms`` in PENDING and RUNNING on top of the query itself,
    and with a ``scan_rate`` (rows per second; default none) ``rows / scan_rate`` seconds more
    in RUNNING for a result of ``rows`` rows, as a service's job time grows with what it scans
    (``service.jobs``; the waits of many jobs overlap, as the service runs them at once). At
    most ``query_rate_limit`` jobs an hour are accepted (then 429). Tables are named
    `` `<instance_id>.firewall.traffic` ``.

    Limits: ``workers`` jobs run at once, DuckDB on ``threads`` threads; ``memory_limit_mb``
    (default a quarter of the machine's memory) is the whole sandbox's: DuckDB's share for the
    logs, the running queries and the kept results, and a share for pages in flight
    (``limits``). A job times out after ``query_timeout_ms`` (None: no default), or its
    request's shorter ``timeoutMs``. Results are kept ``results_ttl_s``
    seconds while they total at most ``results_mb`` (default half the memory limit), oldest
    dropped first. ``verbose`` prints one line on stderr per server-side error.

    ``app``, an object whose ``handle(Request) -> Reply`` answers every request, replaces the
    sandbox's own routes (a cassette's replay is served this way): no data is generated and no
    job workers run. A reply's ``x-request-id`` or ``Content-Type`` header, if it has one, is
    sent instead of the server's own.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        rows: int = 100_000,
        seed: int = 7,
        latency_ms: float = 0,
        fail_rate: float = 0.0,
        token_ttl: int = 3600,
        instance_id: str = "sandbox0",
        job_delay_ms: float = 20,
        anchor: int | None = None,
        threads: int = 2,
        query_rate_limit: int = 5000,
        workers: int = 4,
        memory_limit_mb: int | None = None,
        query_timeout_ms: int | None = DEFAULT_QUERY_TIMEOUT_MS,
        results_ttl_s: float = 3600,
        results_mb: int | None = None,
        verbose: bool = False,
        app: object = None,
        scan_rate: float | None = None,
    ) -> None:
        check_settings(
            rows, latency_ms, threads, workers, memory_limit_mb, query_timeout_ms, scan_rate
        )
        self.scan_rate = scan_rate or None
        self.host, self.rows, self.seed = host, rows, seed
        self.latency_ms, self.job_delay_ms, self.threads = latency_ms, job_delay_ms, threads
        self.query_rate_limit, self.workers, self.verbose = query_rate_limit, workers, verbose
        self.memory_limit_mb = memory_limit_mb or default_memory_limit_mb()
        self.query_timeout_ms = query_timeout_ms
        self.results_ttl_s = results_ttl_s
        self.results_mb = results_mb or self.memory_limit_mb // 2
        self.instance_id = instance_id
        # data ends at the start of the current UTC hour unless told otherwise (see logs.py)
        self.anchor = int(time.time()) // 3600 * 3600 if anchor is None else int(anchor)
        self.faults = Faults(fail_rate, seed)
        self.tokens = oauth.TokenAuthority(instance_id, token_ttl)
        self._requested_port = port
        self._log: collections.deque[RecordedRequest] = collections.deque(maxlen=REQUEST_LOG_SIZE)
        self._log_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.engine = self.jobs = self.api = self.guard = None
        self.app = app

    # ---- life cycle -----------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Generate the data, bind the port and serve in a background thread."""
        if self._server is not None:
            return self
        self._start_engine()
        try:
            self._server = _Server((self.host, self._requested_port), self)
        except OSError:
            if self.engine is not None:
                self.jobs.shutdown(timeout=STOP_WAIT_S)
                self.engine.close()
            raise
        self.guard = BrowserGuard(self.host, self.port)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def _start_engine(self) -> None:
        """Generate the data and start the job workers and the routes (or serve ``app``)."""
        if self.app is not None:
            self.api = self.app
            return
        import duckdb

        from cortex_nb.sandbox.service.budget import PageBudget
        from cortex_nb.sandbox.service.engine import Engine
        from cortex_nb.sandbox.service.jobs import JobManager
        from cortex_nb.sandbox.service.retention import Retention

        try:
            self.engine = Engine(
                self.rows, self.seed, self.anchor, self.instance_id, self.threads,
                self.memory_limit_mb,
            )  # fmt: skip
        except duckdb.OutOfMemoryException:
            raise ValueError(
                f"{self.rows:,} rows do not fit in memory_limit_mb={self.memory_limit_mb:,}; "
                "give the sandbox more memory or fewer rows"
            ) from None
        retention = Retention(self.engine.drop, self.results_ttl_s, self.results_mb * 2**20)
        self.jobs = JobManager(
            self.engine, self.job_delay_ms, self.workers, self.query_timeout_ms, retention,
            self.log, scan_rate=self.scan_rate,
        )
        budget = PageBudget(page_budget_bytes(self.memory_limit_mb))
        self.api = Api(
            self.engine, self.jobs, self.tokens, self.instance_id, self.query_rate_limit, budget
        )

    def stop(self) -> None:
        """Stop serving, end jobs, close connections, join threads, within about a second.

        Safe to call twice. Threads still busy after that (a DuckDB call that does not heed
        interrupts) are left to finish; the database is closed when the last one has.
        """
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        workers_done = self.jobs is None or self.jobs.shutdown(timeout=STOP_WAIT_S)
        server.close_open_connections()
        server.server_close()
        busy = server.join_threads(timeout=STOP_WAIT_S)
        self._thread.join()
        if not workers_done:
            busy += [worker for worker in self.jobs.workers if worker.is_alive()]
        if self.engine is None:
            return
        if busy:
            threading.Thread(target=_close_after, args=(self.engine, busy), daemon=True).start()
        else:
            self.engine.close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server else "not started"
        return (
            f"Sandbox({where}, instance_id={self.instance_id!r}, rows={self.rows}, "
            f"seed={self.seed})"
        )

    # ---- addresses and credentials --------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (read back when started with port 0)."""
        return self._started().server_address[1]

    @property
    def url(self) -> str:
        """Base URL of the Query API, e.g. ``http://127.0.0.1:8080`` (no trailing slash)."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    @property
    def data_identity(self) -> str:
        """What its rows depend on: two sandboxes with equal identities serve the same data
        (the result cache keys a sandbox's results by it, since its port changes)."""
        return f"rows={self.rows} seed={self.seed} anchor={self.anchor}"

    @property
    def token_url(self) -> str:
        """The OAuth2 token endpoint on the same server."""
        return self.url + wire.TOKEN_PATH

    def credentials(self) -> dict[str, str]:
        """Demo credentials: ``client_id``, ``client_secret``, ``refresh_token``, ``token_url``."""
        return {
            "client_id": oauth.DEMO_CLIENT_ID,
            "client_secret": oauth.DEMO_CLIENT_SECRET,
            "refresh_token": oauth.DEMO_REFRESH_TOKEN,
            "token_url": self.token_url,
        }

    def issue_access_token(self, ttl: float | None = None) -> str:
        """A valid access token for ``ttl`` seconds (default ``token_ttl``)."""
        return self.tokens.issue(ttl)

    def issue_authorization_code(self) -> str:
        """A single-use code for the ``authorization_code`` grant."""
        return self.tokens.issue_code()

    def expire_tokens(self) -> None:
        """Every access token issued so far now answers 401."""
        self.tokens.expire_all()

    # ---- test helpers ---------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the request log (the last 10000 requests, oldest first)."""
        with self._log_lock:
            return list(self._log)

    def clear(self) -> None:
        """Forget logged requests and injected faults; re-enable the demo refresh token."""
        with self._log_lock:
            self._log.clear()
        self.faults.clear()
        self.tokens.reset()

    def inject(
        self,
        status: int | None = None,
        count: int | None = None,
        retry_after: float | None = None,
        drop: bool = False,
        path_prefix: str | None = None,
        latency_ms: float = 0,
    ) -> None:
        """Answer the next ``count`` API requests with ``status``, drop them, or delay them.

        ``count`` defaults to 1 for a status or a drop; a latency-only injection lasts until
        ``clear()``. Faults hit ``/query/`` paths unless ``path_prefix`` says otherwise.
        """
        self.faults.inject(status, count, retry_after, drop, path_prefix, latency_ms)

    def record(self, request: Request, status: int | None, request_id: str) -> None:
        """Append one request to the log (called by the HTTP handler before it replies)."""
        entry = RecordedRequest(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            request.json,
            status,
            request_id,
            request.form,
        )
        with self._log_lock:
            self._log.append(entry)

    def delay(self, extra_ms: float = 0) -> None:
        """Wait the per-request latency plus ``extra_ms`` (cut short by ``stop()``)."""
        total = self.latency_ms + extra_ms
        if total > 0:
            self._stopping.wait(total / 1000)

    def log(self, line: str) -> None:
        """Print one line about a server-side problem on stderr, when verbose."""
        if self.verbose:
            print(f"cortex-nb sandbox: {line}", file=sys.stderr, flush=True)

    def _started(self) -> _Server:
        if self._server is None:
            raise RuntimeError("the sandbox is not running: call start() or use `with Sandbox()`")
        return self._server


def _close_after(engine, threads: list[threading.Thread]) -> None:
    """Close ``engine`` once ``threads`` (still using it after stop()) have ended."""
    for thread in threads:
        thread.join()
    engine.close()
