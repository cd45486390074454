"""The sandbox's job-time model: with a scan rate a job stays RUNNING rows / rate seconds, and the
jobs of a split run their times side by side, as the service runs them."""

from __future__ import annotations

import time

import pytest

from cortex_nb.cli import main
from cortex_nb.sandbox import Sandbox
from cortex_nb.sandbox.process import SandboxProcess
from tests.conftest import sandbox_client

ROWS, RATE = 3_000, 2_000  # a job of 3,000 rows at 2,000 rows/s: 1.5 s of job time
SCAN_S = ROWS / RATE


@pytest.fixture(scope="module")
def timed() -> Sandbox:
    """One worker only: a job's time must not hold it, or the jobs below could not overlap."""
    with Sandbox(rows=5_000, scan_rate=RATE, workers=1, job_delay_ms=0) as sb:
        yield sb


def rows_sql(api) -> str:
    return f"SELECT * FROM {api.traffic} LIMIT {ROWS}"


def done(api, job_id: str) -> dict:
    """The job's first results page once it is DONE (maxWait holds each request up to 2 s)."""
    for _ in range(3):
        page = api.results(job_id, maxWait=2000, pageSize=10_000).json()
        if page["state"] != "RUNNING":
            return page
    return page


def test_a_job_stays_running_for_its_rows_over_the_rate_then_is_done(timed):
    with sandbox_client(timed) as api:
        started = time.monotonic()
        job_id = api.create(rows_sql(api)).json()["jobId"]
        time.sleep(SCAN_S / 3)
        states = [api.job(job_id).json()["state"] for _ in range(2)]  # a first read says PENDING
        assert states[-1] == "RUNNING" and time.monotonic() - started < SCAN_S
        page = done(api, job_id)
        assert page["state"] == "DONE" and time.monotonic() - started >= SCAN_S
        assert page["rowsInJob"] == ROWS and len(page["page"]["result"]["data"]) == ROWS
        detail = api.job(job_id).json()
        assert detail["endTime"] - detail["startTime"] >= SCAN_S * 1000


def test_a_job_s_progress_grows_with_its_scan_time(timed):
    with sandbox_client(timed) as api:
        job_id = api.create(rows_sql(api)).json()["jobId"]
        deadline = time.monotonic() + SCAN_S
        while not (first := api.job(job_id).json())["statistics"]["etaMs"]:  # queued, DuckDB
            assert time.monotonic() < deadline, first
            time.sleep(0.01)
        time.sleep(SCAN_S / 3)
        second = api.job(job_id).json()
        assert first["state"] == second["state"] == "RUNNING"
        assert 50 <= first["progress"]["completionPct"] < second["progress"]["completionPct"] < 100
        assert second["statistics"]["etaMs"] < first["statistics"]["etaMs"] <= SCAN_S * 1000
        assert done(api, job_id)["state"] == "DONE"
        assert api.job(job_id).json()["progress"]["completionPct"] == 100


def test_two_jobs_started_together_run_their_times_side_by_side(timed):
    with sandbox_client(timed) as api:
        first, second = (api.create(rows_sql(api)).json()["jobId"] for _ in range(2))
        assert done(api, first)["state"] == "DONE"
        assert done(api, second)["rowsInJob"] == ROWS
        a, b = api.job(first).json(), api.job(second).json()
        assert b["startTime"] < a["endTime"]  # the one worker took it while the first ran
        assert b["endTime"] - a["endTime"] < SCAN_S * 1000 / 2  # not the first's time added


def test_timeout_and_cancel_end_a_job_in_its_job_time(timed):
    with sandbox_client(timed) as api:
        timing_out = api.create(rows_sql(api), params={"properties": {"timeoutMs": 300}})
        cancelled = api.create(rows_sql(api)).json()["jobId"]
        assert done(api, timing_out.json()["jobId"])["state"] == "TIMEDOUT"
        assert api.http.delete(f"{timed.url}/query/v2/jobs/{cancelled}").status_code == 200
        assert api.results(cancelled).json()["state"] == "CANCELLED"


def test_a_negative_scan_rate_is_refused_by_the_sandbox_its_process_and_the_cli(capsys):
    with pytest.raises(ValueError, match="scan_rate must be rows per second"):
        Sandbox(rows=100, scan_rate=-1)
    with pytest.raises(ValueError, match="scan_rate must be rows per second"):
        SandboxProcess(rows=100, scan_rate=-1).start()
    assert main(["sandbox", "--port", "0", "--rows", "100", "--scan-rate", "-5"]) == 2
    err = capsys.readouterr().err  # the command line names the flag typed, not Python's name
    assert err == "cortex-nb: error: --scan-rate must be rows per second, 0 or more (0: no job " \
        "time), not -5.0\n"
