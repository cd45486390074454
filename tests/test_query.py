"""QueryService against the real sandbox over HTTP: states, paging, row counts, cancel, types."""

from __future__ import annotations

import _thread
import gc
import threading

import pandas as pd
import pytest
from pytest_httpserver import HTTPServer

from cortex_nb import ConfigurationError, Credentials, HTTPClient, QueryCancelled, QueryError
from cortex_nb.query.service import Progress, QueryJob, QueryService

TRAFFIC = "`{i}.firewall.traffic`"


@pytest.fixture()
def slow(sandbox):
    """Make every sandbox reply take a while (restored afterwards)."""

    def set_latency(ms: float) -> None:
        sandbox.latency_ms = ms

    yield set_latency
    sandbox.latency_ms = 0


@pytest.fixture()
def service(sandbox) -> QueryService:
    client = HTTPClient(url=sandbox.url, credentials=Credentials(**sandbox.credentials()))
    return QueryService(client=client)


def q(sandbox, sql: str) -> str:
    return sql.replace("{T}", TRAFFIC.format(i=sandbox.instance_id))


def count(service: QueryService, sql: str) -> int:
    return int(service.query(sql).df.iloc[0, 0])


def test_query_returns_a_typed_frame_with_every_row(sandbox, service):
    total = count(service, q(sandbox, "SELECT COUNT(*) AS n FROM {T}"))
    result = service.query(q(sandbox, "SELECT * FROM {T}"), page_size=1000)
    df = result.df
    assert len(df) == total == result.rows_in_job
    assert result.pages == -(-total // 1000)
    assert str(df["time_generated"].dtype) == "datetime64[us, UTC]"
    assert df["dest_port"].dtype == "Int64"
    assert df["is_nat"].dtype == "boolean"
    assert df["source_ip"].map(type).eq(str).all()  # {value, hex} -> value
    assert df["source_ip"].str.match(r"^\d+\.\d+\.\d+\.\d+$").all()
    assert result.job_id.startswith("cortexnb-") and result.elapsed > 0


def test_cursor_and_parallel_offset_paging_agree_in_order(sandbox, service):
    sql = q(sandbox, "SELECT session_id, time_generated FROM {T} ORDER BY time_generated, session_id")
    by_cursor = service.query(sql, page_size=700, parallel=1).df
    by_offset = service.query(sql, page_size=700, parallel=4).df
    pd.testing.assert_frame_equal(by_cursor, by_offset)
    assert by_offset["time_generated"].is_monotonic_increasing
    offsets = [
        r for r in sandbox.requests if "offset" in r.query and r.path.startswith("/query/v2/jobResults")
    ]
    assert offsets, "parallel paging should fetch by offset"


def test_parallel_fetch_keeps_order_when_pages_arrive_out_of_order(sandbox, service, slow):
    sql = q(sandbox, "SELECT session_id FROM {T} ORDER BY session_id")
    slow(30)
    df = service.query(sql, page_size=500, parallel=6).df
    assert df["session_id"].is_monotonic_increasing


def test_progress_reports_states_rows_and_pages(sandbox, service):
    seen: list[tuple] = []

    def progress(p: Progress) -> None:
        seen.append((p.state, p.rows, p.pages, p.done))

    result = service.query(q(sandbox, "SELECT * FROM {T} LIMIT 2500"), page_size=1000, progress=progress)
    states = [s for s, *_ in seen]
    assert states[0] == "PENDING" and states[-1] == "DONE"
    assert seen[-1] == ("DONE", 2500, 3, True)
    assert [r for _, r, _, _ in seen if _ == "DONE"] == sorted(r for _, r, _, _ in seen if _ == "DONE")
    assert result.rows_in_job == 2500


def test_empty_result_keeps_its_columns(sandbox, service):
    df = service.query(q(sandbox, "SELECT source_ip, dest_port FROM {T} WHERE 1 = 0")).df
    assert list(df.columns) == ["source_ip", "dest_port"] and len(df) == 0


def test_bad_sql_is_a_clear_query_error(sandbox, service):
    with pytest.raises(QueryError, match="HTTP 400") as info:
        service.query(q(sandbox, "SELEKT * FROM {T}"))
    assert "(submitting the query: HTTP 400" in str(info.value)
    with pytest.raises(QueryError, match=r"no_such_table|not found|unknown|does not exist"):
        service.query("SELECT * FROM `firewall.no_such_table`")


def test_failed_job_raises_with_the_service_message(sandbox, service):
    with pytest.raises(QueryError, match="failed") as info:
        service.query(q(sandbox, "SELECT CAST(app AS INT64) AS n FROM {T}"))
    assert info.value.job_id


def test_iter_job_results_pages_and_states(sandbox, service):
    job = service.submit(q(sandbox, "SELECT * FROM {T} LIMIT 2100"))
    pages = list(service.iter_job_results(job, page_size=1000))
    payloads = [p.json() for p in pages]
    assert [len(p["page"]["result"]["data"]) for p in payloads] == [1000, 1000, 100]
    assert all(p["state"] == "DONE" for p in payloads)
    assert sum(p["rowsInPage"] for p in payloads) == payloads[0]["rowsInJob"] == 2100


def test_iter_job_results_raises_on_cancelled(sandbox, service):
    job = service.submit(q(sandbox, "SELECT * FROM {T}"))
    assert service.cancel_job(job).status_code == 200
    with pytest.raises(QueryCancelled, match="cancelled"):
        list(service.iter_job_results(job))


def test_timed_out_job_is_a_clear_error(sandbox, service):
    with pytest.raises(QueryError, match="timed out"):
        service.query(q(sandbox, "SELECT COUNT(*) FROM {T} a, {T} b"), properties={"timeoutMs": 1})


def interrupt_after(seconds: float) -> threading.Timer:
    """Send KeyboardInterrupt to the main thread after ``seconds`` (as Ctrl-C would)."""
    timer = threading.Timer(seconds, _thread.interrupt_main)
    timer.start()
    return timer


def test_interrupt_while_running_cancels_the_job_on_the_server(sandbox, service):
    timer = interrupt_after(0.5)
    try:
        with pytest.raises(QueryCancelled, match="cancelled on the server") as info:
            service.query(q(sandbox, "SELECT COUNT(*) FROM {T} a, {T} b, {T} c"))
    finally:
        timer.cancel()
    job = info.value.job_id
    deletes = [r.path for r in sandbox.requests if r.method == "DELETE"]
    assert deletes == [f"/query/v2/jobs/{job}"]
    assert service.get_job(job).json()["state"] == "CANCELLED"


def test_interrupt_while_paging_sends_the_cancel(sandbox, service, slow):
    slow(100)
    timer = interrupt_after(0.6)
    try:
        with pytest.raises(QueryCancelled, match=r"rows had arrived") as info:
            service.query(q(sandbox, "SELECT * FROM {T}"), page_size=100, parallel=1)
    finally:
        timer.cancel()
    deletes = [r.path for r in sandbox.requests if r.method == "DELETE"]
    assert deletes == [f"/query/v2/jobs/{info.value.job_id}"]


def test_limit_stops_early_without_a_truncation_error(sandbox, service):
    df = service.query(q(sandbox, "SELECT * FROM {T}"), page_size=100, limit=250).df
    assert len(df) == 250


def test_result_traces_belong_to_the_job_and_hold_no_secret(sandbox, service):
    result = service.query(q(sandbox, "SELECT * FROM {T} LIMIT 10"))
    kinds = {(t.method, t.url.split("?")[0].rsplit("/", 1)[0].rsplit("/", 1)[-1]) for t in result.traces}
    assert ("POST", "v2") in kinds and ("GET", "jobResults") in kinds
    assert all(result.job_id in t.url or result.job_id in (t.request_body or "") for t in result.traces)
    text = "".join(str(t) + t.to_curl() for t in result.traces)
    creds = service.session.credentials
    for secret in creds.secrets():
        assert secret not in text


def test_transient_failures_on_pages_are_retried(sandbox, service):
    sandbox.inject(status=503, count=2, path_prefix="/query/v2/jobResults")
    df = service.query(q(sandbox, "SELECT * FROM {T} LIMIT 300"), page_size=100).df
    assert len(df) == 300


# -- the query job --------------------------------------------------------------------------------
def test_client_is_the_service_s_name_and_session_the_sdk_s(sandbox):
    client = HTTPClient(url=sandbox.url)
    assert QueryService(client=client).client is client
    assert QueryService(session=client).client is client  # the official SDK's keyword
    assert QueryService(client).session is client
    with pytest.raises(ConfigurationError, match="not both"):
        QueryService(client=client, session=HTTPClient(url=sandbox.url))
    with pytest.raises(ConfigurationError, match="client keywords"):
        QueryService(client=client, url=sandbox.url)


def test_a_started_job_reports_its_state_and_pages(sandbox, service):
    seen: list[str] = []
    job = service.start(q(sandbox, "SELECT * FROM {T} LIMIT 2500"), page_size=1000, parallel=1,
                        progress=lambda p: seen.append(p.state))
    assert isinstance(job, QueryJob) and job.id.startswith("cortexnb-")
    assert job.state == "PENDING" and job.pages == 0
    rows = job.rows()
    assert len(rows) == 2500 and all(isinstance(r, dict) for r in rows)
    assert (job.state, job.pages, job.rows_in_job, job.progress.done) == ("DONE", 3, 2500, True)
    assert seen[0] == "PENDING" and seen[-1] == "DONE"
    with pytest.raises(QueryError, match="already read"):
        job.rows()


def test_an_existing_job_can_be_fetched_by_id(sandbox, service):
    job_id = service.submit(q(sandbox, "SELECT session_id FROM {T} ORDER BY session_id LIMIT 1200"))
    fetched = service.job(job_id, page_size=500).result()
    assert fetched.job_id == job_id and fetched.pages == 3
    again = service.query(q(sandbox, "SELECT session_id FROM {T} ORDER BY session_id LIMIT 1200"))
    pd.testing.assert_frame_equal(fetched.df, again.df)


def test_job_rows_and_frame_honour_the_limit(sandbox, service):
    job = service.start(q(sandbox, "SELECT * FROM {T}"), page_size=1000, limit=150)
    assert job.page_size == 150
    assert len(job.rows()) == 150
    requests_for_pages = [
        r for r in sandbox.requests if r.path == f"/query/v2/jobResults/{job.id}"
    ]
    assert all(r.query.get("pageSize") == "150" for r in requests_for_pages)


def test_cancel_on_interrupt_cancels_once_and_says_so(sandbox, service):
    job = service.start(q(sandbox, "SELECT COUNT(*) FROM {T} a, {T} b, {T} c"))
    with pytest.raises(QueryCancelled, match="was cancelled on the server"), job.cancel_on_interrupt():
        raise KeyboardInterrupt
    assert [r.path for r in sandbox.requests if r.method == "DELETE"] == [f"/query/v2/jobs/{job.id}"]
    assert job.state == "CANCELLED" and job.progress.done


def test_a_cancel_that_fails_is_said_and_raises_nothing_else(sandbox, service):
    job = service.start(q(sandbox, "SELECT 1 AS n"))
    sandbox.inject(status=500, count=10, path_prefix="/query/v2/jobs/")
    with pytest.raises(QueryCancelled, match="could not be cancelled"), job.cancel_on_interrupt():
        raise KeyboardInterrupt
    assert job.cancel() is False


# -- replies the sandbox never gives: a small fake server --------------------------------------
@pytest.fixture()
def fake(httpserver: HTTPServer) -> QueryService:
    httpserver.expect_request("/query/v2/jobs", method="POST").respond_with_json(
        {"jobId": "j1", "uri": "/query/v2/jobs/j1"}, status=201
    )
    client = HTTPClient(url="http://127.0.0.1", port=httpserver.port, max_retries=0)
    return QueryService(session=client)


def done_page(rows, rows_in_job, cursor=None, rows_in_page=None):
    return {
        "jobId": "j1", "state": "DONE", "rowsInJob": rows_in_job,
        "rowsInPage": len(rows) if rows_in_page is None else rows_in_page,
        "page": {"pageCursor": cursor, "result": {"data": rows}},
    }


def test_fewer_rows_than_rows_in_job_is_an_error(httpserver, fake):
    httpserver.expect_request("/query/v2/jobResults/j1").respond_with_json(
        done_page([{"a": 1}, {"a": 2}], rows_in_job=5)
    )
    with pytest.raises(QueryError, match="received 2 rows but the job has 5"):
        fake.query("SELECT 1", parallel=1)


@pytest.mark.parametrize(
    "page",
    [
        {"jobId": "j1"},
        {"jobId": "j1", "state": "DONE", "page": {"result": {"data": "nope"}}},
        done_page([{"a": 1}], rows_in_job=1, rows_in_page=3),
    ],
)
def test_malformed_pages_are_clear_errors(httpserver, fake, page):
    httpserver.expect_request("/query/v2/jobResults/j1").respond_with_json(page)
    with pytest.raises(QueryError, match="Malformed results page for job j1"):
        fake.query("SELECT 1")


def test_non_json_page_is_a_clear_error(httpserver, fake):
    httpserver.expect_request("/query/v2/jobResults/j1").respond_with_data("<html>", status=200)
    with pytest.raises(QueryError, match="not JSON"):
        fake.query("SELECT 1")


def test_409_on_resubmit_counts_as_created(httpserver):
    httpserver.expect_request("/query/v2/jobs", method="POST").respond_with_json(
        {"errors": [{"message": "duplicate jobId"}]}, status=409
    )
    client = HTTPClient(url="http://127.0.0.1", port=httpserver.port)
    assert QueryService(session=client).submit("SELECT 1", job_id="mine-1") == "mine-1"
    body = httpserver.log[-1][0].get_json()
    assert body["jobId"] == "mine-1" and body["params"]["query"] == "SELECT 1"


def test_unknown_state_is_an_error(httpserver, fake):
    httpserver.expect_request("/query/v2/jobResults/j1").respond_with_json({"jobId": "j1", "state": "WEIRD"})
    with pytest.raises(QueryError, match="unknown state 'WEIRD'"):
        fake.query("SELECT 1")


def test_page_size_out_of_range_is_refused(httpserver, fake):
    with pytest.raises(ConfigurationError, match="page_size"):
        fake.query("SELECT 1", page_size=0)
    assert httpserver.log == []  # refused before anything was sent


def test_pages_parsed_by_arrow_match_the_strict_path(sandbox, service):
    from cortex_nb.results.frames import to_dataframe

    sql = q(sandbox, "SELECT * FROM {T} ORDER BY session_id")
    fast = service.query(sql, page_size=400, parallel=3)
    job = service.submit(sql)
    rows = [r for page in service.iter_job_results(job, page_size=400)
            for r in page.json()["page"]["result"]["data"]]
    strict = to_dataframe(rows, schema=fast.schema)
    pd.testing.assert_frame_equal(fast.df, strict)
    assert fast.pages > 2


@pytest.mark.parametrize(
    ("progress", "line"),
    [
        (Progress("j", "PENDING"), "queued      0 rows, 0 pages, 0.0 s (job j) · interrupt"),
        (Progress("j", "RUNNING", elapsed=1.25), "running     0 rows, 0 pages, 1.2 s (job j)"),
        (Progress("j", "DONE", 10_000, 1_000_000, 1), "downloading 10,000/1,000,000 rows, 1 page,"),
        (Progress("j", "DONE", 1, 1, 1, done=True), "done        1/1 rows, 1 page, 0.0 s (job j)"),
        (Progress("j", "CANCELLED", 5, None, 2, done=True), "cancelled   5 rows, 2 pages"),
    ],
)
def test_progress_line_says_what_happens_and_how_to_stop(progress, line):
    text = progress.line()
    assert text.startswith(line)
    assert text.endswith("interrupt the kernel to stop") != progress.done


# -- lists and structs built as pages come ----------------------------------------------------
NESTED = "SELECT session_id, characteristics_of_app, source_user_info FROM {T} ORDER BY session_id"


def test_lists_and_structs_are_built_as_pages_come_then_given_back_to_the_collector(
    sandbox, sandbox_api, service
):
    frozen: list[int] = []
    result = service.query(
        q(sandbox, NESTED + " LIMIT 2000"), page_size=400,
        progress=lambda p: frozen.append(gc.get_freeze_count()),
    )
    assert max(frozen) > 0  # earlier pages' objects kept out of the collector's scans
    assert gc.get_freeze_count() == 0  # and handed back with the frame
    rows = sandbox_api.rows(q(sandbox, NESTED + " LIMIT 2000"))
    df = result.df
    # the service leaves null fields out of a row
    assert df["characteristics_of_app"].tolist() == [r.get("characteristics_of_app") for r in rows]
    assert df["source_user_info"].tolist() == [r.get("source_user_info") for r in rows]
    assert any(isinstance(v, dict) for v in df["source_user_info"])


def test_a_query_failing_midway_gives_its_objects_back_to_the_collector(sandbox, service):
    def fail_later_pages(p: Progress) -> None:
        if p.pages == 2:
            sandbox.inject(status=400, count=100, path_prefix="/query/v2/jobResults")

    with pytest.raises(QueryError):
        service.query(
            q(sandbox, NESTED + " LIMIT 2000"), page_size=200, parallel=1,
            progress=fail_later_pages,
        )
    assert gc.get_freeze_count() == 0


def test_objects_someone_else_froze_stay_frozen(sandbox, service):
    theirs = [["frozen by the notebook's own code"]]
    gc.freeze()
    try:
        df = service.query(q(sandbox, NESTED + " LIMIT 1000"), page_size=200).df
        # frozen objects are out of the collector's generations: still out, not handed back
        assert not any(o is theirs for o in gc.get_objects())
        assert df["characteristics_of_app"].map(type).eq(list).any()
    finally:
        gc.unfreeze()
    assert any(o is theirs for o in gc.get_objects())


def test_equal_strings_in_lists_and_structs_are_one_object_across_pages(sandbox, service):
    df = service.query(q(sandbox, NESTED + " LIMIT 2000"), page_size=200).df
    first_page, last_page = df["source_user_info"][:200], df["source_user_info"][1800:]
    domains = {id(v["domain"]) for v in first_page if v} | {
        id(v["domain"]) for v in last_page if v
    }
    names = {v["domain"] for v in first_page if v} | {v["domain"] for v in last_page if v}
    assert len(domains) == len(names)  # one str object per distinct domain, whichever page
