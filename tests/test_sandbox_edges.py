"""Sandbox edges under load and abuse: connection bursts, result retention, HTTP hygiene."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from cortex_nb.sandbox import Sandbox
from tests.conftest import sandbox_client


def raw_exchange(sandbox: Sandbox, data: bytes, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """Send raw bytes on a new connection; (status, lower-case headers, body) of the reply."""
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=timeout) as sock:
        sock.sendall(data)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without a reply: {reply!r}"
            reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = [line.split(": ", 1) for line in lines[1:]]
        headers = {name.lower(): value for name, value in fields}
        while len(body) < int(headers.get("content-length", 0)):
            chunk = sock.recv(65536)
            assert chunk, "connection closed mid-body"
            body += chunk
    return int(lines[0].split()[1]), headers, body


# ---- bursts ---------------------------------------------------------------------------------


def test_a_burst_of_100_simultaneous_connections_is_served(sandbox):
    token = sandbox.issue_access_token()
    start = threading.Barrier(100)

    def one(_: int) -> int:
        start.wait(timeout=30)
        headers = {"Authorization": f"Bearer {token}"}
        return requests.get(f"{sandbox.url}/query/v2/jobs", headers=headers, timeout=10).status_code

    with ThreadPoolExecutor(100) as pool:
        statuses = list(pool.map(one, range(100)))
    assert statuses == [200] * 100


# ---- retention ------------------------------------------------------------------------------


def test_fifty_concurrent_queries_all_get_their_rows(sandbox, sandbox_api):
    def create(i: int) -> str:
        sql = f"SELECT session_id FROM {sandbox_api.traffic} WHERE MOD(session_id, 50) = {i}"
        r = sandbox_api.create(sql)
        assert r.status_code == 201, r.text
        return r.json()["jobId"]

    def rows(job_id: str) -> list[int]:
        page = sandbox_api.results(job_id, maxWait=2000, pageSize=100_000).json()
        assert page["state"] == "DONE", page
        return [row["session_id"] for row in page["page"]["result"]["data"]]

    with ThreadPoolExecutor(50) as pool:
        job_ids = list(pool.map(create, range(50)))
        for job_id in job_ids:  # every job is done before any result is read
            assert sandbox_api.results(job_id, maxWait=2000).json()["state"] == "DONE"
        results = list(pool.map(rows, job_ids))
    every = sandbox_api.rows(f"SELECT session_id FROM {sandbox_api.traffic}")
    assert sorted(i for r in results for i in r) == sorted(r["session_id"] for r in every)


def expired(api, job_id: str) -> bool:
    r = api.results(job_id)
    if r.status_code == 200:
        return False
    assert r.status_code == 404
    assert (
        r.json()["errors"][0]["message"] == f"Results of job {job_id} expired; run the query again"
    )
    return True


def test_results_beyond_the_byte_budget_expire_oldest_first_and_the_newest_stays():
    with Sandbox(rows=3000, results_mb=1) as sb, sandbox_client(sb) as api:
        # about 5 MB of JSON: over the budget alone (a filter: a plain SELECT * is read in
        # place and keeps nothing)
        big = f"SELECT * FROM {api.traffic} WHERE time_generated IS NOT NULL"
        first = api.create(big).json()["jobId"]
        assert api.results(first, maxWait=2000, pageSize=1).json()["rowsInJob"] == 3000
        second = api.create(big).json()["jobId"]
        assert api.results(second, maxWait=2000, pageSize=1).json()["rowsInJob"] == 3000
        assert expired(api, first)
        assert not expired(api, second)


def test_small_results_stay_within_the_budget_beyond_sixteen_jobs():
    with Sandbox(rows=100, job_delay_ms=0) as sb, sandbox_client(sb) as api:
        job_ids = [api.run(f"SELECT {i} AS i")["jobId"] for i in range(20)]
        assert not any(expired(api, job_id) for job_id in job_ids)


def test_results_older_than_their_age_limit_expire():
    with Sandbox(rows=100, results_ttl_s=0.2) as sb, sandbox_client(sb) as api:
        job_id = api.run("SELECT 1 AS one")["jobId"]
        time.sleep(0.5)
        assert expired(api, job_id)
        assert api.job(job_id).json()["state"] == "DONE"  # the job itself is still listed


# ---- HTTP hygiene ---------------------------------------------------------------------------


@pytest.mark.parametrize("length", ["abc", "-5", "12, 13", "1e3"])
def test_a_malformed_content_length_is_a_json_400(sandbox, length):
    request = (
        f"POST /query/v2/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n{{}}"
    )
    status, headers, body = raw_exchange(sandbox, request.encode())
    assert status == 400 and headers["content-type"] == "application/json"
    assert "Content-Length" in json.loads(body)["errors"][0]["message"]


def test_an_oversized_body_is_413_and_the_sandbox_serves_on(sandbox, sandbox_api):
    r = sandbox_api.create("SELECT 1 AS x -- " + "x" * 3_000_000)
    assert r.status_code == 413 and "limit" in r.json()["errors"][0]["message"]
    assert sandbox_api.run("SELECT 1 AS x")["page"]["result"]["data"] == [{"x": 1}]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def forged_cursors(job_id: str, issued: str) -> list[str]:
    """Cursors a client made up: unsigned, re-signed with a guess, or a real one altered."""
    payload, _, mac = issued.partition(".")
    negative = _b64(json.dumps([job_id, -5, 10]).encode())
    return [negative, f"{negative}.{mac}", f"{payload}.{_b64(b'x' * 16)}", issued + "A"]


def test_forged_or_negative_page_cursors_are_400(sandbox_api):
    sql = f"SELECT session_id FROM {sandbox_api.traffic}"
    job_id = sandbox_api.run(sql, pageSize=10)["jobId"]
    issued = sandbox_api.results(job_id, pageSize=10).json()["page"]["pageCursor"]
    assert sandbox_api.results(job_id, pageCursor=issued).json()["rowsInPage"] == 10
    for cursor in forged_cursors(job_id, issued):
        r = sandbox_api.results(job_id, pageCursor=cursor)
        assert r.status_code == 400, cursor
        assert r.json()["errors"][0]["message"] == "Invalid pageCursor"


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "PROPFIND", "CONNECT"])
def test_methods_without_a_route_are_a_json_405(sandbox, method):
    status, headers, body = raw_exchange(
        sandbox, f"{method} /query/v2/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    )
    assert status == 405 and headers["content-type"] == "application/json"
    assert "GET" in headers["allow"] and json.loads(body)["errors"][0]["errorCode"] == 405


def test_errors_of_the_http_layer_itself_are_json(sandbox):
    request = b"GET /query/v2/jobs HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n"
    status, headers, body = raw_exchange(sandbox, request)
    assert status == 431 and headers["content-type"] == "application/json"
    assert json.loads(body)["errors"][0]["errorCode"] == 431
