"""The sandbox's HTTP server and the ``Sandbox`` object that starts and stops it.

A threaded stdlib HTTP/1.1 server (keep-alive) in front of ``api.Api``. Per request it reads the
body, waits ``latency_ms``, records the request, applies an injected fault if one matches, and
writes the reply with ``Content-Type: application/json`` and an ``x-request-id``. ``stop()``
shuts the listener, stops the jobs, closes open keep-alive connections and joins every thread.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cortex_nb.sandbox import tokens as oauth
from cortex_nb.sandbox.api import Api, Reply, Request, error_reply
from cortex_nb.sandbox.faults import Faults

REQUEST_LOG_SIZE = 10_000


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
    """ThreadingHTTPServer that joins its handler threads and can close idle connections."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:
        """Track the connection so ``stop()`` can close it."""
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        """Forget the connection once its handler is done."""
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """Wake handlers waiting on idle keep-alive connections."""
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cortex-nb-sandbox"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    # headers and body go out in separate writes: without this, Nagle + delayed ACK add 40 ms
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        """Serve any method the same way: the routes decide."""
        self._serve()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = do_GET

    def version_string(self) -> str:
        """The Server header."""
        return self.server_version

    def log_message(self, format: str, *args) -> None:
        """Stay quiet: the request log is ``Sandbox.requests``."""

    def _serve(self) -> None:
        sandbox: Sandbox = self.server.sandbox
        body = self._read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Request.parse(self.command, self.path, headers, body)
        request_id = uuid.uuid4().hex
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
        sandbox.record(request, reply.status, request_id)
        self._write(reply, request_id)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _write(self, reply: Reply, request_id: str) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("x-request-id", request_id)
        for name, value in reply.headers.items():
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
    run on ``threads`` workers (also DuckDB's thread count), and at most ``query_rate_limit``
    jobs an hour are accepted (then 429). Tables are named `` `<instance_id>.firewall.traffic` ``.
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
    ) -> None:
        if rows < 100:
            raise ValueError(f"rows must be at least 100, not {rows}")
        if latency_ms < 0:
            raise ValueError(f"latency_ms must not be negative, not {latency_ms}")
        self.host, self.rows, self.seed = host, rows, seed
        self.latency_ms, self.job_delay_ms, self.threads = latency_ms, job_delay_ms, threads
        self.query_rate_limit = query_rate_limit
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
        self.engine = self.jobs = self.api = None

    # ---- life cycle -----------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Generate the data, bind the port and serve in a background thread."""
        if self._server is not None:
            return self
        from cortex_nb.sandbox.engine import Engine
        from cortex_nb.sandbox.jobs import JobManager

        self.engine = Engine(self.rows, self.seed, self.anchor, self.instance_id, self.threads)
        self.jobs = JobManager(self.engine, self.job_delay_ms, workers=self.threads)
        self.api = Api(self.engine, self.jobs, self.tokens, self.instance_id, self.query_rate_limit)
        try:
            self._server = _Server((self.host, self._requested_port), self)
        except OSError:
            self.jobs.shutdown()
            self.engine.close()
            raise
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, stop jobs, close connections, join threads; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        self.jobs.shutdown()
        server.close_open_connections()
        server.server_close()
        self._thread.join()
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
    def token_url(self) -> str:
        """The OAuth2 token endpoint on the same server."""
        return self.url + "/api/oauth2/RequestToken"

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

    def _started(self) -> _Server:
        if self._server is None:
            raise RuntimeError("the sandbox is not running: call start() or use `with Sandbox()`")
        return self._server
