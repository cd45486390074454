"""Sandbox Query v2 jobs: create, detail, every state, list filters, cancel, 404/409/400."""

from __future__ import annotations

import time

import pytest
import requests

from cortex_nb.sandbox import Sandbox

SLOW_SQL = "SELECT COUNT(*) AS n FROM {t} a, {t} b, {t} c"  # billions of rows: runs until stopped


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_create_answers_201_with_job_id_and_uri(sandbox_api):
    r = sandbox_api.create(f"SELECT app FROM {sandbox_api.traffic} LIMIT 1")
    assert r.status_code == 201
    job_id = r.json()["jobId"]
    assert r.json()["uri"] == f"/query/v2/jobs/{job_id}"


def test_client_job_id_is_kept_and_a_resubmit_is_409(sandbox_api):
    job_id = "my-job-" + "7" * 900
    sql = f"SELECT 1 AS one FROM {sandbox_api.traffic} LIMIT 1"
    first = sandbox_api.create(sql, jobId=job_id)
    assert first.status_code == 201 and first.json()["jobId"] == job_id
    again = sandbox_api.create(sql, jobId=job_id)
    assert again.status_code == 409
    assert again.json()["errors"][0]["errorCode"] == 409


@pytest.mark.parametrize("job_id", ["has space", "under_score", "x" * 1001, "", 42])
def test_invalid_client_job_id_is_400(sandbox_api, job_id):
    r = sandbox_api.create("SELECT 1", jobId=job_id)
    assert r.status_code == 400
    assert "jobId" in r.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELEKT * FROM `firewall.traffic`", "Syntax error"),
        ("SELECT * FROM `sandbox0.firewall.nothing`", "Table not found"),
        ("SELECT * FROM `other0.firewall.traffic`", "Unknown instance 'other0'"),
        ("SELECT no_such_column FROM `firewall.traffic`", "no_such_column"),
        ("DELETE FROM `firewall.traffic` WHERE true", "Only SELECT"),
        ("SELECT 1; SELECT 2", "exactly one"),
        ("SELECT * FROM read_csv('/etc/passwd')", "not supported"),
    ],
)
def test_bad_queries_are_refused_at_creation_with_an_errors_body(sandbox_api, sql, message):
    r = sandbox_api.create(sql)
    assert r.status_code == 400
    error = r.json()["errors"][0]
    assert error["errorCode"] == 400
    assert message in error["message"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"params": {}},
        {"params": {"query": "  "}},
        {"params": {"query": "SELECT 1", "dialect": "sql"}},
    ],
)
def test_create_without_a_usable_query_is_400(sandbox, sandbox_http, body):
    r = sandbox_http.post(f"{sandbox.url}/query/v2/jobs", json=body)
    assert r.status_code == 400 and r.json()["errors"][0]["message"]


def test_language_is_accepted_for_dialect_and_unknown_keys_ignored(sandbox, sandbox_http):
    body = {"params": {"query": "SELECT 1 AS x", "language": "csql", "other": 1}, "clientType": "t"}
    assert sandbox_http.post(f"{sandbox.url}/query/v2/jobs", json=body).status_code == 201


def test_job_passes_through_pending_and_running_before_done(sandbox_api):
    job_id = sandbox_api.create(f"SELECT app FROM {sandbox_api.traffic} LIMIT 5").json()["jobId"]
    first = sandbox_api.job(job_id).json()
    assert first["state"] == "PENDING" and first["jobId"] == job_id
    assert first["params"]["query"].startswith("SELECT app")
    states = [first["state"]]
    while states[-1] != "DONE":
        states.append(sandbox_api.job(job_id).json()["state"])
        assert len(states) < 500
    distinct = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert distinct == ["PENDING", "RUNNING", "DONE"]  # never skipped, whatever the timing
    done = sandbox_api.job(job_id).json()
    assert done["endTime"] >= done["startTime"] >= done["submitTime"]
    assert done["progress"] == {"completionPct": 100}
    assert done["statistics"]["runTimeMs"] >= 0


def test_results_without_max_wait_show_pending_then_running_pages(sandbox_api):
    job_id = sandbox_api.create(f"SELECT app FROM {sandbox_api.traffic} LIMIT 5").json()["jobId"]
    pending = sandbox_api.results(job_id).json()
    assert pending["state"] == "PENDING"
    assert pending["page"] == {"pageCursor": None, "result": {"data": None}}
    running = sandbox_api.results(job_id).json()
    assert running["state"] in ("PENDING", "RUNNING") and running["page"]["result"]["data"] is None


def test_max_wait_holds_the_request_until_done(sandbox_api):
    job_id = sandbox_api.create(f"SELECT app FROM {sandbox_api.traffic} LIMIT 5").json()["jobId"]
    page = sandbox_api.results(job_id, maxWait=2000).json()
    assert page["state"] == "DONE" and page["rowsInJob"] == 5
    assert sandbox_api.job(job_id).json()["state"] == "DONE"


def test_runtime_error_makes_the_job_failed_with_errors(sandbox_api):
    sql = f"SELECT CAST(app AS INT64) AS n FROM {sandbox_api.traffic}"
    job_id = sandbox_api.create(sql).json()["jobId"]
    page = sandbox_api.results(job_id, maxWait=2000).json()
    assert page["state"] == "FAILED"
    assert page["errors"][0]["message"]
    detail = sandbox_api.job(job_id).json()
    assert detail["state"] == "FAILED" and detail["errors"] == page["errors"]


def test_timeout_ms_makes_the_job_timedout(sandbox_api):
    sql = SLOW_SQL.format(t=sandbox_api.traffic)
    job_id = sandbox_api.create(sql, params={"properties": {"timeoutMs": 1}}).json()["jobId"]
    page = sandbox_api.results(job_id, maxWait=2000).json()
    assert page["state"] == "TIMEDOUT"
    assert "timed out" in page["errors"][0]["message"]


def test_cancel_a_running_job(sandbox, sandbox_api):
    job_id = sandbox_api.create(SLOW_SQL.format(t=sandbox_api.traffic)).json()["jobId"]
    wait_for(lambda: sandbox.jobs.get(job_id).state == "RUNNING")
    r = sandbox_api.http.delete(f"{sandbox.url}/query/v2/jobs/{job_id}")
    assert r.status_code == 200
    assert sandbox_api.job(job_id).json()["state"] == "CANCELLED"
    assert sandbox_api.results(job_id).json()["state"] == "CANCELLED"


def test_cancel_a_pending_job():
    with Sandbox(rows=100, job_delay_ms=10_000) as sb, requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {sb.issue_access_token()}"
        body = {"params": {"query": "SELECT 1 AS x"}}
        job_id = http.post(f"{sb.url}/query/v2/jobs", json=body).json()["jobId"]
        assert http.get(f"{sb.url}/query/v2/jobs/{job_id}").json()["state"] == "PENDING"
        assert http.delete(f"{sb.url}/query/v2/jobs/{job_id}").status_code == 200
        assert http.get(f"{sb.url}/query/v2/jobs/{job_id}").json()["state"] == "CANCELLED"


def test_cancelling_a_finished_job_keeps_its_state(sandbox, sandbox_api):
    job_id = sandbox_api.create("SELECT 1 AS x").json()["jobId"]
    assert sandbox_api.results(job_id, maxWait=2000).json()["state"] == "DONE"
    assert sandbox_api.http.delete(f"{sandbox.url}/query/v2/jobs/{job_id}").status_code == 200
    assert sandbox_api.job(job_id).json()["state"] == "DONE"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_unknown_job_is_404_with_errors_body(sandbox, sandbox_http, method):
    r = sandbox_http.request(method, f"{sandbox.url}/query/v2/jobs/no-such-job")
    assert r.status_code == 404
    assert r.json()["errors"][0] == {
        "errorCode": 404,
        "message": "Job not found: no-such-job",
        "context": "no-such-job",
    }


def test_unknown_job_results_is_404(sandbox_api):
    assert sandbox_api.results("no-such-job").status_code == 404


def finished_jobs(sandbox_api, n: int) -> list[str]:
    ids = [sandbox_api.create(f"SELECT {i} AS i").json()["jobId"] for i in range(n)]
    for job_id in ids:
        assert sandbox_api.results(job_id, maxWait=2000).json()["state"] == "DONE"
    return ids


def list_jobs(sandbox, sandbox_http, **params) -> requests.Response:
    return sandbox_http.get(f"{sandbox.url}/query/v2/jobs", params=params)


def test_list_is_an_array_newest_first_and_max_jobs_limits_it(sandbox, sandbox_api):
    ids = finished_jobs(sandbox_api, 3)
    listed = list_jobs(sandbox, sandbox_api.http, maxJobs=3).json()
    assert isinstance(listed, list)
    assert [j["jobId"] for j in listed] == ids[::-1]


def test_list_filters_by_state_case_insensitively_with_canceled_spelling(sandbox, sandbox_api):
    done = finished_jobs(sandbox_api, 1)[0]
    cancelled = sandbox_api.create(SLOW_SQL.format(t=sandbox_api.traffic)).json()["jobId"]
    sandbox_api.http.delete(f"{sandbox.url}/query/v2/jobs/{cancelled}")
    by_done = [j["jobId"] for j in list_jobs(sandbox, sandbox_api.http, state="done").json()]
    by_cancel = list_jobs(sandbox, sandbox_api.http, state="canceled").json()
    assert done in by_done and cancelled not in by_done
    assert cancelled in [j["jobId"] for j in by_cancel]
    assert {j["state"] for j in by_cancel} == {"CANCELLED"}


def test_list_filters_by_created_after(sandbox, sandbox_api):
    old = finished_jobs(sandbox_api, 1)[0]
    time.sleep(0.01)
    cutoff = int(time.time() * 1000)
    time.sleep(0.01)
    new = finished_jobs(sandbox_api, 1)[0]
    listed = [j["jobId"] for j in list_jobs(sandbox, sandbox_api.http, createdAfter=cutoff).json()]
    assert new in listed and old not in listed


def test_list_with_this_tenant_works_and_another_is_403(sandbox, sandbox_http):
    assert list_jobs(sandbox, sandbox_http, tenantId=sandbox.instance_id).status_code == 200
    r = list_jobs(sandbox, sandbox_http, tenantId="someone-else")
    assert r.status_code == 403 and r.json()["errors"][0]["errorCode"] == 403


@pytest.mark.parametrize("params", [{"state": "sleeping"}, {"maxJobs": "x"}, {"maxJobs": 0}])
def test_list_with_bad_filters_is_400(sandbox, sandbox_http, params):
    assert list_jobs(sandbox, sandbox_http, **params).status_code == 400
