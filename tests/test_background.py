"""Background queries against the real sandbox: handles, turns, cancel, fetch by id, the shared
429 backoff, threads sharing one connection, and the magic's --bg / jobs / cancel / wait / fetch.

(The real-kernel behaviour, restarts included, is in test_background_kernel.py.)
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time

import pandas as pd
import pytest
import requests
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from cortex_nb import (
    BackgroundQuery,
    ConfigurationError,
    Credentials,
    HTTPClient,
    QueryCancelled,
    QueryError,
    QueryStillRunning,
)
from cortex_nb.http.transport import BackoffGate, gated_retry
from cortex_nb.notebook.connection import Connection, get_connection
from cortex_nb.query.background import BackgroundJobs
from cortex_nb.query.service import QueryService
from tests.support import bearers_seen, token_requests

RUNNING_STATES = {"WAITING", "PENDING", "RUNNING", "DOWNLOADING"}


def slow_sql(sandbox=None, inner: int | None = None) -> str:
    """A query that runs a while without spilling to disk (streamed): about ``inner`` x 20 ms on
    the test sandbox's 3000 rows, or far longer than any test when ``inner`` is None. Without a
    sandbox the tables are left for the magic to complete."""
    t = f"`{sandbox.instance_id}.firewall.traffic`" if sandbox is not None else "firewall.traffic"
    third = t if inner is None else f"(SELECT bytes_total FROM {t} LIMIT {inner})"
    return (
        f"SELECT COUNT(*) AS n FROM {t} a, {t} b, {third} c "
        "WHERE hash(a.bytes_total + b.bytes_total + c.bytes_total) = 0"
    )


def traffic(sandbox, sql: str) -> str:
    return sql.replace("{T}", f"`{sandbox.instance_id}.firewall.traffic`")


@pytest.fixture()
def jobs():
    """A session's background jobs; whatever still runs is cancelled afterwards."""
    jobs = BackgroundJobs()
    yield jobs
    for job in jobs.cancel_all():
        job.wait(15)


@pytest.fixture()
def service(sandbox, jobs) -> QueryService:
    credentials = Credentials(**sandbox.credentials(), environ={})
    client = HTTPClient(url=sandbox.url, credentials=credentials,
                        max_retries=gated_retry(jobs.gate))
    return QueryService(client=client, jobs=jobs)


def wait_until(condition, timeout: float = 30, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.02)


def server_state(sandbox, job_id: str) -> str:
    reply = requests.get(f"{sandbox.url}/query/v2/jobs/{job_id}", timeout=10,
                         headers={"Authorization": f"Bearer {sandbox.issue_access_token()}"})
    return reply.json()["state"]


def creates(sandbox) -> list[str]:
    """The job ids of the POST /query/v2/jobs the sandbox received, in order."""
    return [r.json.get("jobId") for r in sandbox.requests
            if r.method == "POST" and r.path == "/query/v2/jobs"]


# -- the handle ------------------------------------------------------------------------------------
def test_submit_query_returns_a_handle_at_once_and_the_result_later(sandbox, service):
    handle = service.submit_query(slow_sql(sandbox, 60), name="slow", timeout=60)
    assert not handle.done() and handle.state in RUNNING_STATES
    assert handle.id.startswith("cortexnb-") and handle.name == "slow"
    with pytest.raises(QueryStillRunning) as early:  # a timeout leaves the job running
        handle.result(timeout=0.01)
    assert isinstance(early.value, TimeoutError) and handle.id in str(early.value)
    result = handle.result(timeout=60)
    assert handle.done() and handle.state == "DONE" and handle.exception() is None
    assert list(result.df.columns) == ["n"] and result.job_id == handle.id
    assert handle.line().startswith("done → slow: 1 row (1 in job), 1 page") and handle.id in handle.line()


def test_progress_and_the_status_line_follow_the_job(sandbox, service):
    seen: list[str] = []
    handle = service.submit_query(traffic(sandbox, "SELECT * FROM {T}"), page_size=500,
                                  on_update=lambda job: seen.append(job.state))
    result = handle.result(timeout=60)
    assert len(result.df) == 3000 and handle.progress.rows == 3000 and handle.progress.pages == 6
    assert seen[0] == "PENDING" and "DOWNLOADING" in seen and seen[-1] == "DONE"
    assert seen.count("DONE") == 1  # the end is told once, with the result in place


def test_a_failed_job_keeps_its_error_on_the_handle(sandbox, service):
    handle = service.submit_query(traffic(sandbox, "SELECT CAST(app AS INT64) AS x FROM {T}"))
    assert handle.wait(60)
    error = handle.exception()
    assert handle.state == "FAILED" and isinstance(error, QueryError)
    with pytest.raises(QueryError) as raised:
        handle.result()
    assert raised.value is error
    assert handle.line().startswith(f"failed: Job {handle.id} failed: ") and "\n" not in handle.line()


def test_bad_options_fail_in_the_caller_s_thread(sandbox, service):
    with pytest.raises(ConfigurationError, match="page_size"):
        service.submit_query("SELECT 1", page_size=0)
    with pytest.raises(QueryError, match="not a job id"):
        service.submit_fetch("..")
    assert len(service.background) == 0 and creates(sandbox) == []


# -- turns -------------------------------------------------------------------------------------------
def test_beyond_max_running_jobs_wait_their_turn(sandbox, service, jobs):
    jobs.max_running = 1
    first = service.submit_query(slow_sql(sandbox, 60), timeout=60)
    second = service.submit_query(traffic(sandbox, "SELECT COUNT(*) AS n FROM {T}"))
    wait_until(lambda: first.id in creates(sandbox), what="the first job being created")
    assert second.state == "WAITING" and second.line().startswith("waiting")
    assert creates(sandbox) == [first.id]  # the second is not even created yet
    second.result(timeout=60)
    assert first.done() and creates(sandbox) == [first.id, second.id]


def test_raising_the_limit_starts_waiting_jobs(sandbox, service, jobs):
    jobs.max_running = 1
    first = service.submit_query(slow_sql(sandbox), timeout=60)
    second = service.submit_query(traffic(sandbox, "SELECT COUNT(*) AS n FROM {T}"))
    wait_until(lambda: first.id in creates(sandbox), what="the first job being created")
    jobs.max_running = 2
    second.result(timeout=30)
    assert not first.done()


def test_cancel_stops_a_running_job_on_the_service_and_in_its_thread(sandbox, service):
    handle = service.submit_query(slow_sql(sandbox), timeout=120)
    wait_until(lambda: handle.id in creates(sandbox), what="the job being created")
    assert handle.cancel()
    assert handle.wait(15), "the worker did not stop"
    assert handle.state == "CANCELLED" and isinstance(handle.exception(), QueryCancelled)
    assert server_state(sandbox, handle.id) == "CANCELLED"
    assert not handle.cancel()  # already ended


def test_a_job_cancelled_while_waiting_sends_nothing(sandbox, service, jobs):
    jobs.max_running = 1
    first = service.submit_query(slow_sql(sandbox), timeout=120)
    second = service.submit_query("SELECT 1")
    assert second.cancel() and second.wait(5)
    assert second.state == "CANCELLED" and "before it started" in second.line()
    assert [job.id for job in jobs.cancel_all()] == [first.id]
    assert first.wait(15) and second.id not in creates(sandbox)


# -- fetching a job by id ----------------------------------------------------------------------
def test_fetch_takes_up_an_existing_job_from_another_client(sandbox, service):
    sql = traffic(sandbox, "SELECT app, COUNT(*) AS n FROM {T} GROUP BY app ORDER BY n DESC, app")
    original = service.submit_query(sql).result(timeout=60)
    elsewhere = QueryService(client=HTTPClient(url=sandbox.url, credentials=Credentials(
        **sandbox.credentials(), environ={})))  # as after a kernel restart: nothing shared
    fetched = elsewhere.fetch(original.job_id)
    pd.testing.assert_frame_equal(fetched.df, original.df)
    in_background = elsewhere.submit_fetch(original.job_id, name="again").result(timeout=60)
    pd.testing.assert_frame_equal(in_background.df, original.df)
    assert in_background.job_id == original.job_id
    assert creates(sandbox) == [original.job_id]  # fetching created no job


def test_fetching_an_unknown_job_is_one_clear_error(sandbox, service):
    with pytest.raises(QueryError, match="Job not found: cortexnb-nope"):
        service.fetch("cortexnb-nope")
    handle = service.submit_fetch("cortexnb-nope")
    assert handle.wait(30) and handle.state == "FAILED"
    assert "Job not found: cortexnb-nope" in handle.line()


def test_recent_jobs_come_from_the_list_endpoint_newest_first(sandbox, service):
    older = service.query("SELECT 1 AS x").job_id
    newer = service.query("SELECT 2 AS x").job_id
    listed = [job["jobId"] for job in service.recent_jobs(max_jobs=50)]
    assert listed.index(newer) < listed.index(older)
    assert [j["jobId"] for j in service.recent_jobs(max_jobs=1)] == [listed[0]]


# -- one backoff for everyone ------------------------------------------------------------------
def test_a_429_holds_every_background_job_back(sandbox, service, jobs):
    sandbox.inject(status=429, retry_after=2, path_prefix="/query/v2/jobResults")
    first = service.submit_query("SELECT 1 AS x")
    wait_until(lambda: jobs.gate.remaining() > 0, what="the 429 holding the gate")
    held = jobs.gate.remaining()
    second = service.submit_query("SELECT 2 AS x")  # instant, were it not held back
    second.result(timeout=30)
    first.result(timeout=30)
    assert second.elapsed >= held - 0.2, (second.elapsed, held)
    assert [r.status for r in sandbox.requests].count(429) == 1



def test_a_jobs_pace_waits_on_a_held_gate_only_until_its_deadline_or_its_stop():
    gate, stop = BackoffGate(), threading.Event()
    pace = gate.pacer(stop)
    gate.hold(60)  # another job's 429: everyone waits a minute

    def paced(deadline: float | None) -> bool:
        """Whether ``pace(deadline)`` returned (not waiting out the minute's hold)."""
        waiting = threading.Thread(target=pace, args=(deadline,), daemon=True)
        waiting.start()
        waiting.join(timeout=30)
        return not waiting.is_alive()

    assert paced(time.monotonic() + 0.05), "the pace waited past the job's deadline"
    assert gate.remaining() > 30  # the deadline ended the wait; the gate is still held
    stop.set()  # the job is cancelled: no deadline, yet no wait either
    assert paced(None), "the pace ignored the job's stop"


# -- threads sharing one connection ----------------------------------------------------------------
def test_concurrent_jobs_refresh_the_token_once(sandbox, jobs):
    service = QueryService(client=HTTPClient(url=sandbox.url, credentials=Credentials(
        **sandbox.credentials(), environ={})), jobs=jobs)  # no access token yet
    jobs.max_running = 6
    handles = [service.submit_query(f"SELECT {i} AS x") for i in range(6)]
    assert [int(h.result(timeout=60).df["x"][0]) for h in handles] == list(range(6))
    assert len(token_requests(sandbox)) == 1
    assert all(b and b.startswith("Bearer ey") for b in bearers_seen(sandbox))


def test_concurrent_jobs_each_keep_their_own_traces_and_the_history_keeps_all(sandbox, service):
    sql = traffic(sandbox, "SELECT * FROM {T} LIMIT {n}")
    handles = [service.submit_query(sql.replace("{n}", str(3000 - i)), page_size=400)
               for i in range(4)]
    results = [h.result(timeout=60) for h in handles]
    api = [r for r in sandbox.requests if r.path.startswith("/query/")]
    assert len(service.traces) == len(api)
    for result in results:
        own = [r for r in api if result.job_id in r.path or (r.json or {}).get("jobId") == result.job_id]
        assert len(result.traces) == len(own) == 1 + 1 + 7  # create, first page, 7 more pages
        assert all(result.job_id in t.url or result.job_id in (t.request_body or "")
                   for t in result.traces)


def test_the_shared_connection_has_room_for_every_job_s_pages(sandbox, caplog):
    connection = Connection()
    connection.connect(Credentials(**sandbox.credentials(), environ={}), url=sandbox.url,
                       instance_id=sandbox.instance_id)
    sandbox.latency_ms = 200  # every page in flight at once: 4 jobs x 4 pages
    try:
        service = connection.require()
        handles = [service.submit_query(traffic(sandbox, f"SELECT * FROM {{T}} LIMIT {3000 - i}"),
                                        page_size=300, parallel=4) for i in range(4)]
        with caplog.at_level(logging.WARNING, logger="urllib3"):
            for handle in handles:
                handle.result(timeout=60)
    finally:
        sandbox.latency_ms = 0
        connection.disconnect()
    assert "Connection pool is full" not in caplog.text


def test_a_job_keeps_running_when_the_notebook_reconnects(sandbox):
    connection = Connection()
    credentials = Credentials(**sandbox.credentials(), environ={})
    connection.connect(credentials, url=sandbox.url, instance_id=sandbox.instance_id)
    try:
        handle = connection.require().submit_query(slow_sql(sandbox, 40), timeout=60)
        wait_until(lambda: handle.id in creates(sandbox), what="the job being created")
        connection.connect(credentials, url=sandbox.url, instance_id=sandbox.instance_id)
        assert handle.result(timeout=60).df.columns.tolist() == ["n"]
        assert connection.jobs.find(handle.id) is handle  # the session's jobs outlive a connect
    finally:
        connection.disconnect()


def test_finished_jobs_beyond_the_kept_number_are_forgotten(sandbox, service, jobs):
    handles = [service.submit_query(f"SELECT {i} AS x") for i in range(4)]
    for handle in handles:
        handle.wait(30)
    running = service.submit_query(slow_sql(sandbox), timeout=60)
    jobs.forget_old(keep=2)
    assert list(jobs) == [*handles[2:], running]


# -- the end of the process ---------------------------------------------------------------------
EXIT_SCRIPT = """
import sys, time
from cortex_nb import Credentials, HTTPClient, QueryService
service = QueryService(client=HTTPClient(url=sys.argv[1], credentials=Credentials(
    client_id=sys.argv[2], client_secret=sys.argv[3], refresh_token=sys.argv[4],
    token_url=sys.argv[1] + "/api/oauth2/RequestToken", environ={})))
service.background.cancel_at_exit = sys.argv[6] == "cancel"
job = service.submit_query(sys.argv[5], timeout=120)
deadline = time.monotonic() + 30
while job.state != "RUNNING" and time.monotonic() < deadline:
    time.sleep(0.02)
print(job.id, job.state, flush=True)
"""


@pytest.mark.parametrize(("choice", "after"), [("cancel", "CANCELLED"), ("keep", "RUNNING")])
def test_at_exit_running_jobs_are_cancelled_unless_told_not_to(sandbox, choice, after):
    creds = sandbox.credentials()
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EXIT_SCRIPT), sandbox.url, creds["client_id"],
         creds["client_secret"], creds["refresh_token"], slow_sql(sandbox), choice],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    job_id, state = done.stdout.split()
    assert state == "RUNNING"  # it ran when the process exited
    try:
        assert server_state(sandbox, job_id) == after
    finally:
        requests.delete(f"{sandbox.url}/query/v2/jobs/{job_id}", timeout=10,
                        headers={"Authorization": f"Bearer {sandbox.issue_access_token()}"})


# -- the magic ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ip():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "cortex_nb")
    yield shell
    get_connection().disconnect()


@pytest.fixture()
def nb(ip, sandbox):
    """The shell connected to the sandbox; background jobs left running are cancelled after."""
    get_connection().connect(Credentials(**sandbox.credentials(), environ={}), url=sandbox.url,
                             instance_id=sandbox.instance_id)
    sandbox.clear()
    yield ip
    sandbox.latency_ms = 0
    for job in get_connection().jobs.cancel_all():
        job.wait(15)


def run(ip, cell: str):
    with capture_output() as cap:
        result = ip.run_cell(cell)
    return result, cap


def one_line_error(result) -> str:
    assert not result.success and isinstance(result.error_in_exec, UsageError)
    return str(result.error_in_exec)


APPS = "SELECT app, COUNT(*) AS n FROM firewall.traffic GROUP BY app ORDER BY n DESC, app"


def test_a_bg_cell_returns_before_its_job_and_the_variable_gets_the_frame(nb, sandbox):
    sandbox.latency_ms = 300  # the job needs at least two requests: 0.6 s
    result, cap = run(nb, f"%%cortex --bg -o apps\n{APPS}")
    assert result.success and isinstance(nb.user_ns["apps"], BackgroundQuery)
    assert not nb.user_ns["apps"].done()
    line = cap.outputs[-1].data["text/plain"]  # the status line, shown at once
    assert "(job cortexnb-" in line and line.endswith("%cortex cancel apps")
    sandbox.latency_ms = 0
    assert run(nb, "%cortex wait apps")[0].success
    run(nb, f"%%cortex -o fg\n{APPS}")
    pd.testing.assert_frame_equal(nb.user_ns["apps"], nb.user_ns["fg"])


def test_bg_takes_sql_into_a_variable(nb):
    assert "needs -o NAME" in one_line_error(run(nb, "%%cortex --bg\nSELECT 1")[0])
    assert "runs SQL queries" in one_line_error(run(nb, "%%cortex --bg -o x\nGET /query/v2/jobs")[0])
    assert "--raw" in one_line_error(run(nb, "%%cortex --bg --raw -o x\nSELECT 1")[0])
    assert "needs -o NAME" in one_line_error(run(nb, "%cortex fetch some-id --bg")[0])


def test_a_failed_bg_job_keeps_its_handle_and_wait_fails_with_its_line(nb):
    assert run(nb, "%%cortex --bg -o bad\nSELECT CAST(app AS INT64) AS x FROM firewall.traffic")[0].success
    message = one_line_error(run(nb, "%cortex wait bad")[0])
    handle = nb.user_ns["bad"]
    assert isinstance(handle, BackgroundQuery) and handle.state == "FAILED"
    assert message == str(handle.exception()) and "Could not convert" in message


def test_a_variable_reassigned_meanwhile_is_not_overwritten(nb, sandbox):
    sandbox.latency_ms = 300
    run(nb, f"%%cortex --bg -o mine\n{APPS}")
    nb.run_cell("mine = 'kept'")
    sandbox.latency_ms = 0
    assert run(nb, "%cortex wait mine")[0].success
    assert nb.user_ns["mine"] == "kept"
    assert get_connection().jobs.find("mine").state == "DONE"


def test_jobs_lists_this_session_s_jobs_and_the_tenant_s(nb):
    run(nb, "%%cortex --bg -o listed\nSELECT 7 AS seven")
    run(nb, "%cortex wait listed")
    handle = get_connection().jobs.find("listed")
    mine = nb.run_line_magic("cortex", "jobs")
    row = mine[mine["job_id"] == handle.id].iloc[0]
    assert (row["name"], row["state"], row["rows"]) == ("listed", "DONE", 1)
    server = nb.run_line_magic("cortex", "jobs --server --max 5")
    assert handle.id in list(server["jobId"])
    assert str(server["submitTime"].dtype).startswith("datetime64")


def test_cancel_by_name_and_all_cancels_on_the_service(nb, sandbox):
    endless = slow_sql(sandbox)
    run(nb, f"%%cortex --bg -o one --timeout 60\n{endless}")
    run(nb, f"%%cortex --bg -o two --timeout 60\n{endless}")
    jobs = get_connection().jobs
    wait_until(lambda: jobs.find("two").id in creates(sandbox), what="both jobs being created")
    result, cap = run(nb, "%cortex cancel one")
    assert result.success and cap.stdout.startswith("one: cancelled: Job ")
    assert jobs.find("two").state != "CANCELLED"
    result, cap = run(nb, "%cortex cancel all")
    assert result.success and cap.stdout.startswith("two: cancelled: Job ")
    for name in ("one", "two"):
        assert server_state(sandbox, jobs.find(name).id) == "CANCELLED"
    assert "No background query was running" in run(nb, "%cortex cancel all")[1].stdout


def test_cancel_takes_a_job_id_from_elsewhere(nb, sandbox, sandbox_api):
    job_id = sandbox_api.create(slow_sql(sandbox)).json()["jobId"]
    result, cap = run(nb, f"%cortex cancel {job_id}")
    assert result.success and cap.stdout == f"Cancelled job {job_id} on the service.\n"
    assert server_state(sandbox, job_id) == "CANCELLED"
    assert "Job not found: no-such-job" in one_line_error(run(nb, "%cortex cancel no-such-job")[0])


def test_fetch_by_id_gives_the_same_frame_in_front_or_in_the_background(nb):
    run(nb, f"%%cortex --bg -o original\n{APPS}")
    run(nb, "%cortex wait original")
    job_id = get_connection().jobs.find("original").id
    result, _ = run(nb, f"%cortex fetch {job_id} -o again")
    assert result.success
    pd.testing.assert_frame_equal(nb.user_ns["again"], nb.user_ns["original"])
    run(nb, f"%cortex fetch {job_id} -o later --bg")
    assert run(nb, "%cortex wait later")[0].success
    pd.testing.assert_frame_equal(nb.user_ns["later"], nb.user_ns["original"])


def test_config_reaches_the_session_s_jobs(nb):
    jobs = get_connection().jobs
    try:
        nb.run_line_magic("config", "CortexMagics.max_background_jobs = 2")
        nb.run_line_magic("config", "CortexMagics.cancel_on_shutdown = False")
        assert (jobs.max_running, jobs.cancel_at_exit) == (2, False)
        nb.run_cell("%config CortexMagics.max_background_jobs = 0")  # refused by the trait
        assert jobs.max_running == 2
    finally:
        nb.run_line_magic("config", "CortexMagics.max_background_jobs = 4")
        nb.run_line_magic("config", "CortexMagics.cancel_on_shutdown = True")


def test_a_bg_cell_over_the_guardrail_says_the_cell_s_flags_on_its_status_line(nb):
    with capture_output() as cap:  # the line is updated in place until the job ends
        result = nb.run_cell("%%cortex --bg -o big --max-rows 100\nSELECT * FROM firewall.traffic")
        handle = nb.user_ns["big"]
        assert result.success and handle.wait(30) and handle.state == "FAILED"
    line = cap.outputs[-1].data["text/plain"]
    assert "more than max_rows=100" in line
    assert "--limit N" in line and "--max-rows N" in line and "limit=N" not in line
    assert "--limit N" in one_line_error(run(nb, "%cortex wait big")[0])


def test_a_held_gate_does_not_hold_a_query_past_its_timeout(sandbox, service, jobs):
    query = service.submit_query(slow_sql(sandbox), timeout=3)
    wait_until(lambda: query.id in creates(sandbox), what="the job being created")
    jobs.gate.hold(120)  # another job's 429 asked every job to wait two minutes
    assert query.wait(30), "the query waited out the hold instead of its 3 s timeout"
    assert query.state == "FAILED" and "not finished within 3 s" in str(query.exception())
    wait_until(lambda: server_state(sandbox, query.id) == "CANCELLED", what="the job cancelled")
