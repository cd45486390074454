"""Sandbox life cycle and HTTP behaviour: ports, URLs, clean stop, concurrency, rate limit."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from cortex_nb.sandbox import Sandbox
from tests.conftest import SANDBOX_ROWS


def test_addresses_and_credentials(sandbox):
    assert sandbox.url == f"http://127.0.0.1:{sandbox.port}" and sandbox.port > 0
    assert sandbox.token_url == sandbox.url + "/api/oauth2/RequestToken"
    assert set(sandbox.credentials()) == {
        "client_id",
        "client_secret",
        "refresh_token",
        "token_url",
    }
    assert sandbox.credentials()["token_url"] == sandbox.token_url
    assert sandbox.instance_id == "sandbox0"


def test_not_started_sandbox_has_no_url():
    with pytest.raises(RuntimeError, match="not running"):
        Sandbox(rows=100).url


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rows": 10},
        {"fail_rate": 1.5},
        {"latency_ms": -1},
        {"workers": 0},
        {"threads": 0},
        {"memory_limit_mb": 10},
        {"query_timeout_ms": 0},
    ],
)
def test_bad_settings_raise(kwargs):
    with pytest.raises(ValueError):
        Sandbox(**kwargs)


def test_stop_is_clean_idempotent_and_closes_keep_alive_connections():
    before = set(threading.enumerate())
    sb = Sandbox(rows=100).start()
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {sb.issue_access_token()}"
    assert http.get(f"{sb.url}/query/v2/jobs").status_code == 200  # leaves a kept-alive socket
    url = sb.url
    sb.stop()
    sb.stop()
    assert set(threading.enumerate()) <= before
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/query/v2/jobs", timeout=2)


def test_two_sandboxes_get_their_own_ports(sandbox):
    with Sandbox(rows=100, instance_id="other1") as other:
        assert other.port != sandbox.port
        assert other.credentials()["token_url"].endswith(f":{other.port}/api/oauth2/RequestToken")


def test_concurrent_page_requests_each_get_their_rows(sandbox_api):
    sql = f"SELECT session_id FROM {sandbox_api.traffic} ORDER BY session_id"
    job_id = sandbox_api.create(sql, params={"properties": {"defaultPageSize": 250}}).json()[
        "jobId"
    ]
    assert sandbox_api.results(job_id, maxWait=2000).status_code == 200

    def page(number: int) -> list[int]:
        body = sandbox_api.results(job_id, pageNumber=number).json()
        return [row["session_id"] for row in body["page"]["result"]["data"]]

    with ThreadPoolExecutor(8) as pool:
        pages = list(pool.map(page, range(SANDBOX_ROWS // 250)))
    ids = [i for p in pages for i in p]
    assert len(ids) == SANDBOX_ROWS and ids == sorted(ids)


def test_query_rate_limit_answers_429_with_retry_after():
    with Sandbox(rows=100, query_rate_limit=2) as sb, requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {sb.issue_access_token()}"
        body = {"params": {"query": "SELECT 1 AS x"}}
        codes = [http.post(f"{sb.url}/query/v2/jobs", json=body) for _ in range(3)]
        assert [r.status_code for r in codes] == [201, 201, 429]
        assert int(codes[-1].headers["Retry-After"]) > 0


def test_unknown_path_and_method(sandbox, sandbox_http):
    assert sandbox_http.get(f"{sandbox.url}/query/v3/jobs").status_code == 404
    r = sandbox_http.put(f"{sandbox.url}/query/v2/jobs")
    assert r.status_code == 405 and set(r.headers["Allow"].split(", ")) == {"GET", "POST"}
