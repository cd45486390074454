"""Sandbox fault injection: statuses, 429 Retry-After, dropped connections, latency, fail rate."""

from __future__ import annotations

import time

import pytest
import requests

from cortex_nb.sandbox import Sandbox


def jobs_url(sandbox) -> str:
    return f"{sandbox.url}/query/v2/jobs"


def test_injected_status_answers_the_next_n_requests(sandbox, sandbox_http):
    sandbox.inject(status=503, count=2)
    statuses = [sandbox_http.get(jobs_url(sandbox)).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert [r.status for r in sandbox.requests] == [503, 503, 200]


def test_injected_error_has_the_documented_body(sandbox, sandbox_http):
    sandbox.inject(status=502)
    r = sandbox_http.get(jobs_url(sandbox))
    assert r.headers["Content-Type"] == "application/json" and r.headers["x-request-id"]
    assert r.json()["errors"][0]["errorCode"] == 502


def test_429_carries_retry_after(sandbox, sandbox_http):
    sandbox.inject(status=429, retry_after=1)
    r = sandbox_http.get(jobs_url(sandbox))
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"


def test_dropped_connection_gets_no_reply(sandbox, sandbox_http):
    sandbox.inject(drop=True)
    with pytest.raises(requests.ConnectionError):
        sandbox_http.get(jobs_url(sandbox))
    assert sandbox_http.get(jobs_url(sandbox)).status_code == 200
    assert [r.status for r in sandbox.requests] == [None, 200]


def test_path_prefix_limits_where_faults_hit(sandbox, sandbox_api):
    sandbox.inject(status=503, path_prefix="/query/v2/jobResults")
    job_id = sandbox_api.create("SELECT 1 AS x").json()["jobId"]  # not hit
    assert sandbox_api.results(job_id, maxWait=2000).status_code == 503
    assert sandbox_api.results(job_id, maxWait=2000).status_code == 200


def test_faults_spare_the_token_endpoint_unless_asked(sandbox):
    creds = sandbox.credentials()
    body = {**creds, "grant_type": "refresh_token"}
    sandbox.inject(status=503)
    assert requests.post(sandbox.token_url, json=body).status_code == 200
    sandbox.inject(status=503, path_prefix="/api/oauth2")
    assert requests.post(sandbox.token_url, json=body).status_code == 503


def test_latency_injection_delays_matching_requests_until_clear(sandbox, sandbox_http):
    sandbox.inject(latency_ms=250)
    for _ in range(2):
        started = time.monotonic()
        assert sandbox_http.get(jobs_url(sandbox)).status_code == 200
        assert time.monotonic() - started >= 0.25
    sandbox.clear()
    started = time.monotonic()
    sandbox_http.get(jobs_url(sandbox))
    assert time.monotonic() - started < 0.25


def test_clear_forgets_faults_and_the_request_log(sandbox, sandbox_http):
    sandbox.inject(status=500, count=5)
    sandbox_http.get(jobs_url(sandbox))
    sandbox.clear()
    assert sandbox.requests == []
    assert sandbox_http.get(jobs_url(sandbox)).status_code == 200


def test_request_log_records_what_was_sent(sandbox, sandbox_api):
    sandbox_api.create("SELECT 1 AS x", jobId="logged-job")
    sandbox_api.results("logged-job", maxWait=2000, pageSize=5)
    create, results = sandbox.requests
    assert (create.method, create.path, create.status) == ("POST", "/query/v2/jobs", 201)
    assert (
        create.json["jobId"] == "logged-job" and create.json["params"]["query"] == "SELECT 1 AS x"
    )
    assert create.headers["authorization"].startswith("Bearer ")
    assert results.query == {"maxWait": "2000", "pageSize": "5"} and results.json is None


@pytest.mark.parametrize("kwargs", [{}, {"status": 99}, {"status": 503, "count": 0}])
def test_bad_injections_raise(sandbox, kwargs):
    with pytest.raises(ValueError):
        sandbox.inject(**kwargs)


def statuses_with_fail_rate(seed: int) -> list[int]:
    with Sandbox(rows=100, seed=seed, fail_rate=0.5) as sb, requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {sb.issue_access_token()}"
        return [http.get(f"{sb.url}/query/v2/jobs").status_code for _ in range(30)]


def test_fail_rate_answers_random_5xx_deterministically_by_seed():
    first, again = statuses_with_fail_rate(11), statuses_with_fail_rate(11)
    assert first == again
    assert set(first) <= {200, 502, 503, 504} and 5 < first.count(200) < 25


def test_constructor_latency_applies_to_every_request():
    with Sandbox(rows=100, latency_ms=100) as sb:
        started = time.monotonic()
        requests.get(f"{sb.url}/query/v2/jobs")
        assert time.monotonic() - started >= 0.1
