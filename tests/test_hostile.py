"""Hostile or broken servers: every reply bounded, every query ends, every payload checked.

Each test talks to a small server on 127.0.0.1 (pytest-httpserver, a raw socket server for
replies that trickle in) or to the sandbox, and each is bounded in time: work that might never
end runs in a thread that is joined with a timeout.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Callable

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cortex_nb import (
    ConfigurationError,
    CortexError,
    Credentials,
    HTTPClient,
    QueryError,
    TransportError,
)
from cortex_nb.notebook.connection import get_connection
from cortex_nb.query.service import QueryService

from .support import make_jwt, sandbox_credentials, statuses_at_once, token_requests

JOB = "j1"
RESULTS = f"/query/v2/jobResults/{JOB}"


def bounded(work: Callable[[], object], seconds: float = 20) -> BaseException | None:
    """Run ``work`` in a thread; what it raised (None if it returned). Fails if still running."""
    box: dict[str, BaseException] = {}

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: it would never end"
    return box.get("error")


class TrickleServer:
    """Answers each request with ``head`` at once, then ``tail`` a byte every ``gap`` seconds.

    A connection is given up after ``limit`` seconds, so a client that waits for the whole
    reply (as a per-read timeout lets it) is held about that long, and no longer.
    """

    def __init__(self, head: bytes, tail: bytes, gap: float = 0.2, limit: float = 15) -> None:
        self.head, self.tail, self.gap, self.limit = head, tail, gap, limit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.connections = 0
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.connections += 1
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        end = time.monotonic() + self.limit
        with conn:
            try:
                conn.settimeout(5)
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 65536:
                    request += conn.recv(4096) or b"\r\n\r\n"
                conn.sendall(self.head)
                for byte in self.tail:
                    if self.stopping.wait(self.gap) or time.monotonic() > end:
                        return
                    conn.sendall(bytes([byte]))
            except OSError:  # the client hung up: what a bounded client does
                return

    def __enter__(self) -> TrickleServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(timeout=5)


def slow_client(port: int, **kwargs) -> HTTPClient:
    return HTTPClient(url="http://127.0.0.1", port=port, timeout=(2, 1), **kwargs)


# -- replies that trickle in ------------------------------------------------------------------
def test_a_body_that_trickles_in_cannot_hold_a_read_past_its_timeout():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n"
    with TrickleServer(head, b"[" + b"0," * 199 + b"0") as server:
        started = time.monotonic()
        with pytest.raises(TransportError, match=r"did not arrive in full within 1 s"):
            slow_client(server.port, max_retries=0).request(method="GET", path="/slow")
        assert time.monotonic() - started < 5  # each byte came within the 1 s read timeout


def test_headers_that_trickle_in_are_cut_too_even_with_retries():
    head = b"HTTP/1.1 200 OK\r\n"
    with TrickleServer(head, b"X-Pad: " + b"a" * 400 + b"\r\n\r\n") as server:
        started = time.monotonic()
        with pytest.raises(TransportError, match="did not arrive in full"):
            slow_client(server.port).request(method="GET", path="/slow")
        # cut at 1 s: a cut mid-header is retried twice (read retries) or looks complete;
        # either way it is refused, after three attempts at most
        assert time.monotonic() - started < 10
        assert 1 <= server.connections <= 3


def test_a_token_reply_that_trickles_in_is_bounded_too():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 300\r\n\r\n"
    with TrickleServer(head, b"{" + b" " * 299) as server:
        credentials = Credentials(
            client_id="cid", client_secret="cs-x1", refresh_token="rt-x1", environ={}, timeout=(2, 1),
            token_url=f"http://127.0.0.1:{server.port}",
        )
        started = time.monotonic()
        with pytest.raises(CortexError, match="did not arrive in full within 1 s"):
            credentials.refresh()
        assert time.monotonic() - started < 10


# -- replies that expand without limit ---------------------------------------------------------
def gzip_bomb(size: int) -> bytes:
    """A JSON results page that is a few kB on the wire and ``size`` bytes decompressed."""
    body = b'{"jobId": "j1", "state": "DONE", "pad": "' + b"0" * size + b'"}'
    return gzip.compress(body, compresslevel=9)


def test_a_compressed_reply_cannot_expand_past_the_cap(httpserver: HTTPServer):
    bomb = gzip_bomb(20_000_000)
    assert len(bomb) < 100_000
    httpserver.expect_request("/bomb").respond_with_data(
        bomb, headers={"Content-Encoding": "gzip"}, content_type="application/json"
    )
    client = HTTPClient(url="http://127.0.0.1", port=httpserver.port, max_reply_bytes=1_000_000)
    with pytest.raises(TransportError, match=r"larger than 1,000,000 bytes once decompressed"):
        client.request(method="GET", path="/bomb")
    assert HTTPClient().max_reply_bytes == 512 * 2**20  # a cap by default


def test_a_results_page_that_expands_past_the_cap_is_a_clear_error(httpserver, fake_job):
    httpserver.expect_request(RESULTS).respond_with_data(
        gzip_bomb(5_000_000), headers={"Content-Encoding": "gzip"},
        content_type="application/json",
    )
    service = QueryService(client=HTTPClient(
        url="http://127.0.0.1", port=httpserver.port, max_retries=0, max_reply_bytes=1_000_000
    ))
    with pytest.raises(CortexError, match=rf"GET .*{RESULTS}.*larger than 1,000,000 bytes"):
        service.query("SELECT 1")


# -- a query always ends -----------------------------------------------------------------------
@pytest.fixture()
def fake_job(httpserver: HTTPServer) -> QueryService:
    """A fake service with one job, j1 (results and cancels are up to the test)."""
    httpserver.expect_request("/query/v2/jobs", method="POST").respond_with_json(
        {"jobId": JOB, "uri": f"/query/v2/jobs/{JOB}"}, status=201
    )
    httpserver.expect_request(f"/query/v2/jobs/{JOB}", method="DELETE").respond_with_json({})
    client = HTTPClient(url="http://127.0.0.1", port=httpserver.port, max_retries=0)
    return QueryService(client=client)


def page(rows: int, rows_in_job: int, cursor: str | None = None, state: str = "DONE") -> dict:
    data = [{"a": i} for i in range(rows)]
    return {
        "jobId": JOB, "state": state, "rowsInJob": rows_in_job, "rowsInPage": rows,
        "page": {"pageCursor": cursor, "result": {"data": data}},
    }


def cancels(server: HTTPServer) -> int:
    return sum(1 for request, _ in server.log if request.method == "DELETE")


def by_cursor(pages: Callable[[str | None], dict]) -> Callable[[Request], Response]:
    """A results handler answering ``pages(cursor)`` (None for the first request)."""

    def handler(request: Request) -> Response:
        return Response(
            json.dumps(pages(request.args.get("pageCursor"))),
            content_type="application/json",
        )

    return handler


def test_a_cursor_seen_twice_ends_the_query_and_cancels_the_job(httpserver, fake_job):
    httpserver.expect_request(RESULTS).respond_with_handler(
        by_cursor(lambda cursor: page(2, rows_in_job=100, cursor="c1"))
    )
    error = bounded(lambda: fake_job.query("SELECT 1", parallel=1))
    assert isinstance(error, QueryError)
    assert "cursor 'c1' a second time" in str(error) and "cancelled it on the server" in str(error)
    assert cancels(httpserver) == 1


def test_pages_that_add_no_rows_end_the_query(httpserver, fake_job):
    counter = iter(range(10**6))

    def pages(cursor):  # a fresh cursor each time, and no rows after the first page
        return page(0 if cursor else 2, rows_in_job=100, cursor=f"c{next(counter)}")

    httpserver.expect_request(RESULTS).respond_with_handler(by_cursor(pages))
    error = bounded(lambda: fake_job.query("SELECT 1", parallel=1))
    assert isinstance(error, QueryError) and "added no rows (2 of 100 received)" in str(error)
    assert cancels(httpserver) == 1


def test_a_row_count_the_pages_cannot_reach_ends_the_query(httpserver, fake_job):
    # by offset: ten billion rows announced, every page after the first is empty
    httpserver.expect_request(RESULTS).respond_with_handler(
        lambda request: Response(
            json.dumps(page(0 if "offset" in request.args else 1, 10**10)),
            content_type="application/json",
        )
    )
    # (no max_rows guardrail, which would stop ten billion rows before the second page)
    error = bounded(lambda: fake_job.query("SELECT 1", parallel=4, page_size=10, max_rows=None))
    assert isinstance(error, QueryError) and "added no rows" in str(error)
    assert cancels(httpserver) == 1


def test_pages_that_end_short_of_rows_in_job_cancel_the_job(httpserver, fake_job):
    httpserver.expect_request(RESULTS).respond_with_json(page(2, rows_in_job=5))
    with pytest.raises(QueryError, match="received 2 rows but the job has 5"):
        fake_job.query("SELECT 1", parallel=1)
    assert cancels(httpserver) == 1


def test_a_job_that_never_leaves_running_ends_at_the_deadline(httpserver, fake_job):
    httpserver.expect_request(RESULTS).respond_with_json(page(0, 0, state="RUNNING"))
    started = time.monotonic()
    error = bounded(lambda: fake_job.query("SELECT 1", timeout=1))
    assert isinstance(error, QueryError)
    assert "not finished within 1 s (RUNNING, 0 rows received)" in str(error)
    assert "--timeout" in str(error) and time.monotonic() - started < 5
    assert cancels(httpserver) == 1


def test_the_deadline_holds_for_a_started_job_too(httpserver, fake_job):
    httpserver.expect_request(RESULTS).respond_with_json(page(0, 0, state="PENDING"))
    job = fake_job.start("SELECT 1", timeout=0.5)
    error = bounded(job.rows)
    assert isinstance(error, QueryError) and "not finished within 0.5 s" in str(error)
    with pytest.raises(ConfigurationError, match="timeout must be positive"):
        fake_job.start("SELECT 1", timeout=-1)


@pytest.fixture()
def shell_on_fake(httpserver, fake_job):
    """A real InteractiveShell whose shared connection points at the fake service."""
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "cortex_nb")
    credentials = Credentials(access_token=make_jwt(time.time() + 3600), environ={})
    get_connection().connect(credentials, url=f"http://127.0.0.1:{httpserver.port}")
    httpserver.expect_request(RESULTS).respond_with_json(page(0, 0, state="RUNNING"))
    yield ip
    ip.run_line_magic("config", "CortexMagics.timeout = 3600")
    get_connection().disconnect()


def failed_cell(ip, cell: str) -> str:
    with capture_output():
        result = ip.run_cell(cell)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    return str(result.error_in_exec)


def test_magic_timeout_option_and_default(shell_on_fake, httpserver):
    message = bounded_cell(shell_on_fake, "%%cortex --timeout 0.5\nSELECT 1")
    assert "not finished within 0.5 s" in message
    shell_on_fake.run_line_magic("config", "CortexMagics.timeout = 0.7")
    assert "not finished within 0.7 s" in bounded_cell(shell_on_fake, "%%cortex\nSELECT 1")
    assert "not finished within 0.5 s" in bounded_cell(
        shell_on_fake, "%%cortex --raw --timeout 0.5\nSELECT 1"
    )
    assert cancels(httpserver) == 3


def bounded_cell(ip, cell: str) -> str:
    found: list[str] = []
    assert bounded(lambda: found.append(failed_cell(ip, cell))) is None
    return found[0]


# -- malformed payloads ------------------------------------------------------------------------
def done(**changes) -> dict:
    payload = page(1, 1)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        target = payload
        for key in path:
            target = target[key]
        target[last] = value
    return payload


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (done(page=None), "page is null, not an object"),
        (done(page=[1]), "page is a list, not an object"),
        (done(page__result=None), "page.result is null, not an object"),
        (done(page__result=[]), "page.result is a list, not an object"),
        (done(page__result__data=None), "page.result.data is null, not a list"),
        (done(page__result__data={}), "page.result.data is an object, not a list"),
        (done(page__pageCursor=7), "page.pageCursor is a number, not a string"),
        (done(page__pageCursor=["c"]), "page.pageCursor is a list, not a string"),
        (done(rowsInJob=None), "rowsInJob is null, not a row count"),
        (done(rowsInJob=[1]), "rowsInJob is a list, not a row count"),
        (done(rowsInJob="1"), "rowsInJob is a string, not a row count"),
        (done(rowsInJob=-1), "rowsInJob is a negative number, not a row count"),
        (done(rowsInPage={}), "rowsInPage is an object, not a row count"),
        (done(schema=[]), "schema is a list, not an object"),
    ],
)
def test_malformed_pages_are_errors_that_name_the_field(httpserver, fake_job, payload, field):
    httpserver.expect_request(RESULTS).respond_with_json(payload)
    for run in (lambda: fake_job.query("SELECT 1"), lambda: fake_job.start("SELECT 1").rows()):
        error = bounded(run)
        assert isinstance(error, CortexError), repr(error)
        assert f"Malformed results page for job j1: {field}" in str(error)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ({"jobId": "../../jobs"}, "jobId '../../jobs' is not a usable job id"),
        ({"jobId": "a/b"}, "jobId 'a/b' is not a usable job id"),
        ({"jobId": "a?pageCursor=x"}, "jobId 'a?pageCursor=x' is not a usable job id"),
        ({"jobId": ["j1"]}, "jobId ['j1'] is not a usable job id"),
        ({"jobId": 7}, "jobId 7 is not a usable job id"),
        (["j1"], "is a list, not an object with a jobId"),
        (None, "is null, not an object with a jobId"),
    ],
)
def test_a_job_id_the_service_chooses_is_checked(httpserver, reply, expected):
    httpserver.expect_request("/query/v2/jobs", method="POST").respond_with_json(reply, 201)
    service = QueryService(client=HTTPClient(url="http://127.0.0.1", port=httpserver.port))
    with pytest.raises(QueryError, match="Submitting the query") as info:
        service.query("SELECT 1")
    assert expected in str(info.value)
    assert [r.method for r, _ in httpserver.log] == ["POST"]  # nothing sent to a crafted path


def test_job_ids_are_escaped_in_paths(httpserver):
    # the service chose an id with a '%' in it; our own ids may hold anything but '.', '..'
    httpserver.expect_request("/query/v2/jobs", method="POST").respond_with_json(
        {"jobId": "j%2F1"}, 201
    )
    httpserver.expect_request("/query/v2/jobResults/j%2F1").respond_with_json(page(1, 1))
    httpserver.expect_request("/query/v2/jobs/x?y=1", method="GET").respond_with_json({})
    service = QueryService(client=HTTPClient(url="http://127.0.0.1", port=httpserver.port))
    assert service.query("SELECT 1").df["a"].tolist() == [0]
    assert service.get_job("x?y=1").status_code == 200
    request, _ = httpserver.log[-1]
    assert request.args.to_dict() == {}  # '?' stayed in the id, it started no query string
    for bad in ("", ".", ".."):
        with pytest.raises(QueryError, match="is not a job id"):
            service.cancel_job(bad)


# -- the token endpoint gets the API's retries ------------------------------------------------
@pytest.mark.parametrize(
    "fault",
    [
        {"status": 503, "count": 2},
        {"status": 502},
        {"drop": True},
        {"status": 429, "retry_after": 1},
    ],
)
def test_token_requests_are_retried_on_transient_failures(sandbox, fault):
    sandbox.inject(path_prefix="/api/oauth2", **fault)
    credentials = sandbox_credentials(sandbox)
    started = time.monotonic()
    token = credentials.refresh()
    assert token and credentials.refresh_count == 1
    assert len(token_requests(sandbox)) == fault.get("count", 1) + 1
    if "retry_after" in fault:
        assert time.monotonic() - started >= 0.9


def test_retried_token_requests_are_still_one_refresh_in_flight(sandbox):
    sandbox.inject(path_prefix="/api/oauth2", status=503, count=2)
    sandbox.inject(path_prefix="/api/oauth2", latency_ms=200)
    client = HTTPClient(url=sandbox.url, credentials=sandbox_credentials(sandbox), pool_maxsize=16)
    assert statuses_at_once(client, 16) == [200] * 16
    assert client.credentials.refresh_count == 1
    assert [r.status for r in token_requests(sandbox)] == [503, 503, 200]
