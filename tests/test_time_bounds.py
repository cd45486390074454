"""A query's timeout bounds everything: each request's read, retries and the waits between them.

A small threaded server on 127.0.0.1 plays a service that holds its results replies or asks
the client to come back much later (429 ``Retry-After``); every test counts what the server
saw (results requests, cancels) and runs the query in a thread joined with a timeout, so a
client that would wait longer fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import threading
import time as _time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from werkzeug import Request, Response

from cortex_nb import ConfigurationError, HTTPClient, QueryError
from cortex_nb.http import credentials as credentials_module
from cortex_nb.http.transport import MAX_RETRY_AFTER, BoundedRetry
from cortex_nb.query.service import QueryService

from .support import (
    API_PATH,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    TOKEN_PATH,
    make_jwt,
    refresh_credentials,
    sandbox_credentials,
    token_requests,
)
from .test_hostile import bounded

DONE_PAGE = {
    "jobId": "j1", "state": "DONE", "rowsInJob": 1, "rowsInPage": 1,
    "page": {"pageCursor": None, "result": {"data": [{"a": 1}]}},
}


class SlowService:
    """A threaded fake service: job j1 is created at once; each results request is answered by
    ``results(n)`` (n counts from 1): a (status, headers) to send that, or None to hold the
    request until the test ends. Cancels answer 200."""

    def __init__(self, results: Callable[[int], tuple[int, dict] | None]) -> None:
        self.results, self.seen, self.release = results, Counter(), threading.Event()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                service.seen["POST"] += 1
                self._reply(201, {"jobId": "j1"})

            def do_DELETE(self) -> None:
                service.seen["DELETE"] += 1
                self._reply(200, {})

            def do_GET(self) -> None:
                service.seen["GET"] += 1
                answer = service.results(service.seen["GET"])
                if answer is None:
                    service.release.wait(60)
                    return
                status, headers = answer
                self._reply(status, DONE_PAGE if status == 200 else {"errors": []}, headers)

            def _reply(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def client(self, **kwargs) -> QueryService:
        port = self.server.server_address[1]
        return QueryService(client=HTTPClient(url="http://127.0.0.1", port=port, **kwargs))

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def slow() -> Iterator[Callable[..., SlowService]]:
    made: list[SlowService] = []

    def make(results: Callable[[int], tuple[int, dict] | None]) -> SlowService:
        made.append(SlowService(results))
        return made[-1]

    yield make
    for server in made:
        server.close()


def failure(run: Callable[[], object]) -> QueryError:
    error = bounded(run, seconds=25)
    assert isinstance(error, QueryError), repr(error)
    return error


def test_a_held_reply_ends_at_the_query_timeout_not_after_every_read_retry(slow):
    server = slow(lambda n: None)  # every results request is held
    service = server.client(timeout=(5, 10))  # 3 reads of 10 s each used to run for 30 s
    error = failure(lambda: service.query("SELECT 1", timeout=2))
    assert "not finished within 2 s" in str(error) and "cancelled it on the server" in str(error)
    assert "timeout" in str(error) and error.job_id == "j1"
    assert server.seen["GET"] == 1 and server.seen["DELETE"] == 1  # not read again, cancelled


@pytest.mark.parametrize("retry_after", ["1000000", "1e6"])
def test_a_retry_after_beyond_the_timeout_ends_the_query_at_once(slow, retry_after):
    server = slow(lambda n: (429, {"Retry-After": retry_after}))
    error = failure(lambda: server.client().query("SELECT 1", timeout=3))
    assert "not finished within 3 s" in str(error) and "cancelled it on the server" in str(error)
    assert "Retry-After" in str(error)
    assert server.seen["GET"] == 1 and server.seen["DELETE"] == 1


def test_a_retry_after_within_the_timeout_is_waited_for(slow):
    server = slow(lambda n: (429, {"Retry-After": "1"}) if n == 1 else (200, {}))
    result = bounded(lambda: server.client().query("SELECT 1", timeout=30))
    assert result is None and server.seen["GET"] == 2 and server.seen["DELETE"] == 0


@pytest.mark.parametrize("retry_after", ["soon", "-5", "nan", "inf", ""])
def test_a_retry_after_that_is_no_number_of_seconds_counts_as_absent(slow, retry_after):
    server = slow(lambda n: (503, {"Retry-After": retry_after}) if n == 1 else (200, {}))
    assert bounded(lambda: server.client().query("SELECT 1", timeout=30)) is None
    assert server.seen["GET"] == 2


def test_retry_after_values_are_capped():
    retry = BoundedRetry()
    assert retry.parse_retry_after("5") == 5
    assert retry.parse_retry_after("1e6") == MAX_RETRY_AFTER == 60
    assert retry.parse_retry_after("99999999999") == MAX_RETRY_AFTER
    for absent in ("soon", "-1", "nan", "inf", "-inf", "1e400"):
        assert retry.parse_retry_after(absent) == 0, absent


# -- tokens that are already expired by this computer's clock --------------------------------
class ClockAhead:
    """The ``time`` module as the credentials see it, on a computer whose clock is ahead."""

    def __init__(self, seconds: float) -> None:
        self.ahead = seconds

    def time(self) -> float:
        return _time.time() + self.ahead

    def monotonic(self) -> float:
        return _time.monotonic()


def test_a_clock_ahead_of_the_token_endpoint_costs_one_refresh_not_one_per_request(
    sandbox, monkeypatch
):
    monkeypatch.setattr(credentials_module, "time", ClockAhead(2 * 3600))
    client = HTTPClient(url=sandbox.url, credentials=sandbox_credentials(sandbox))
    statuses = [client.request(method="GET", path=API_PATH).status_code for _ in range(20)]
    assert statuses == [200] * 20
    assert len(token_requests(sandbox)) == 1 and client.credentials.refresh_count == 1


@pytest.fixture()
def idp(httpserver):
    """A token endpoint issuing tokens that expired 100 s ago by every clock, and
    an API (``/api``) that refuses them; ``idp.reply`` is the token reply's extra fields."""

    class IdP:
        reply: dict = {}

        def requests(self, path: str) -> int:
            return sum(1 for request, _ in httpserver.log if request.path == path)

    idp = IdP()

    def token(request: Request) -> Response:
        body = {"access_token": make_jwt(_time.time() - 100), **idp.reply}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request(TOKEN_PATH, method="POST").respond_with_handler(token)
    httpserver.expect_request("/api").respond_with_json({"error": "expired"}, status=401)
    return idp


def idp_client(httpserver) -> HTTPClient:
    credentials = refresh_credentials(httpserver)
    return HTTPClient(url="http://127.0.0.1", port=httpserver.port, credentials=credentials)


def test_a_fresh_token_already_expired_with_no_lifetime_is_one_clear_clock_error(
    httpserver, idp
):
    client = idp_client(httpserver)
    with pytest.raises(ConfigurationError, match="clock") as info:
        client.request(method="GET", path="/api")
    assert "already expired by this computer's clock" in str(info.value)
    assert CLIENT_SECRET not in str(info.value) and REFRESH_TOKEN not in str(info.value)
    assert idp.requests(TOKEN_PATH) == 1 and idp.requests("/api") == 0


def test_a_refused_fresh_token_is_refreshed_once_per_request_not_twice(httpserver, idp):
    idp.reply = {"expires_in": "3599"}
    client = idp_client(httpserver)
    statuses = [client.request(method="GET", path="/api").status_code for _ in range(10)]
    assert statuses == [401] * 10
    # the first request refreshes before sending; each 401 then costs one refresh, not two
    assert idp.requests(TOKEN_PATH) == 11 and idp.requests("/api") == 20
