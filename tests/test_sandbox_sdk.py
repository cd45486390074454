"""The official SDK (pan-cortex-data-lake 2.0.0b1), unchanged, against the sandbox."""

from __future__ import annotations

import pytest
from pan_cortex_data_lake import Credentials, HTTPClient, QueryService

from tests.conftest import SANDBOX_ROWS


@pytest.fixture()
def sdk_credentials(sandbox) -> Credentials:
    creds = sandbox.credentials()
    return Credentials(
        client_id=creds["client_id"],
        client_secret=creds["client_secret"],
        refresh_token=creds["refresh_token"],
        token_url="http://127.0.0.1",  # the SDK appends its port and /api/oauth2/RequestToken
        port=sandbox.port,
        storage_params={"memory_storage": True},
    )


@pytest.fixture()
def sdk(sandbox, sdk_credentials) -> QueryService:
    client = HTTPClient(url="http://127.0.0.1", port=sandbox.port, credentials=sdk_credentials)
    return QueryService(session=client)


def traffic(sandbox) -> str:
    return f"`{sandbox.instance_id}.firewall.traffic`"


def test_sdk_refreshes_and_decodes_the_token(sdk_credentials):
    token = sdk_credentials.refresh()
    assert token and sdk_credentials.jwt_exp > 0
    assert not sdk_credentials.jwt_is_expired()


def test_sdk_create_get_and_page_through_results(sandbox, sdk):
    sql = f"SELECT * FROM {traffic(sandbox)} ORDER BY session_id"
    created = sdk.create_query(job_id="sdk-job-1", query_params={"query": sql})
    assert created.status_code == 201 and created.json()["jobId"] == "sdk-job-1"
    assert sdk.get_job("sdk-job-1").json()["state"] == "PENDING"
    pages = list(
        sdk.iter_job_results(
            job_id="sdk-job-1", result_format="valuesDictionary", page_size=1000, max_wait=2000
        )
    )
    bodies = [p.json() for p in pages]
    assert [b["rowsInPage"] for b in bodies] == [1000, 1000, 1000]
    assert sum(b["rowsInPage"] for b in bodies) == bodies[0]["rowsInJob"] == SANDBOX_ROWS
    ids = [row["session_id"] for b in bodies for row in b["page"]["result"]["data"]]
    assert ids == sorted(ids)


def test_sdk_iterates_through_pending_and_running_polls(sandbox, sdk):
    # without max_wait the SDK sees PENDING and RUNNING and sleeps a second per poll
    sql = f"SELECT app FROM {traffic(sandbox)} LIMIT 3"
    job_id = sdk.create_query(query_params={"query": sql}).json()["jobId"]
    pages = list(sdk.iter_job_results(job_id=job_id))
    assert [p.json()["state"] for p in pages] == ["DONE"]
    states = [r.status for r in sandbox.requests if r.path.endswith(job_id)]
    assert len(states) == 3  # PENDING, RUNNING, DONE


def test_sdk_failed_job_is_yielded(sandbox, sdk):
    sql = f"SELECT CAST(app AS INT64) AS n FROM {traffic(sandbox)}"
    job_id = sdk.create_query(query_params={"query": sql}).json()["jobId"]
    (page,) = sdk.iter_job_results(job_id=job_id, max_wait=2000)
    assert page.json()["state"] == "FAILED"


def test_sdk_bad_query_is_400(sandbox, sdk):
    r = sdk.create_query(query_params={"query": "SELECT * FROM `firewall.nothing`"})
    assert r.status_code == 400 and r.json()["errors"][0]["errorCode"] == 400


def test_sdk_cancel_and_list_jobs(sandbox, sdk):
    sql = f"SELECT COUNT(*) AS n FROM {traffic(sandbox)} a, {traffic(sandbox)} b, {traffic(sandbox)} c"
    job_id = sdk.create_query(query_params={"query": sql}).json()["jobId"]
    assert sdk.cancel_job(job_id).status_code == 200
    assert sdk.get_job(job_id).json()["state"] == "CANCELLED"
    listed = sdk.list_jobs(max_jobs=5, state="CANCELLED", tenant_id=sandbox.instance_id).json()
    assert job_id in [j["jobId"] for j in listed]
