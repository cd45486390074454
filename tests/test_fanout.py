"""A query split by time (issue 23 items 2 and 3), against the sandbox over HTTP.

One job per window, the frame equal to the unsplit one, ``--split auto`` cutting full windows
again, refusals before anything is sent, a failed window tried again or reported by its range,
and the windows streamed into a dataset that an interrupted run resumes (only the missing
windows are fetched).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from cortex_nb import Credentials
from cortex_nb.cli import in_cli_words
from cortex_nb.exceptions import ConfigurationError, QueryCancelled, QueryError, ResultTooLarge
from cortex_nb.http.client import HTTPClient
from cortex_nb.options import OptionError, QueryOptions
from cortex_nb.query.fanout import FanOut, SplitResult, WindowsMissing, run_split
from cortex_nb.query.service import QueryService
from cortex_nb.query.windows import auto_step, gaps, plan_windows
from cortex_nb.results.datasets import Dataset
from cortex_nb.sql.splitting import NotSplittable

UTC = timezone.utc
COLUMNS = "session_id, time_generated, source_ip, bytes_sent, app"


@pytest.fixture()
def service(sandbox):
    svc = QueryService(HTTPClient(url=sandbox.url, credentials=Credentials(**sandbox.credentials())))
    svc.client.credentials.refresh_if_expiring()
    sandbox.clear()
    return svc


@pytest.fixture()
def traffic(sandbox) -> str:
    return f"`{sandbox.instance_id}.firewall.traffic`"


def created(sandbox) -> list:
    """The job creations the sandbox received, in order."""
    return [r for r in sandbox.requests if r.method == "POST" and r.path == "/query/v2/jobs"]


def api_requests(sandbox) -> list:
    return [r for r in sandbox.requests if r.path.startswith("/query/")]


def window_of(request) -> tuple[str, str]:
    """The ``[start, end)`` a created job's statement is bounded to."""
    found = re.findall(r"TIMESTAMP\('([^']+)'\)", request.json["params"]["query"])
    return found[0], found[1]


def sorted_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["time_generated", "session_id"]).reset_index(drop=True)


# ---- the frame ----------------------------------------------------------------------------------


def test_a_split_query_equals_the_unsplit_one_with_one_job_per_window(service, sandbox, traffic):
    sql = f"SELECT {COLUMNS} FROM {traffic} ORDER BY time_generated, session_id"
    end = datetime.now(UTC)
    between = (end - timedelta(days=7), end)
    whole = service.query(sql, between=between)
    sandbox.clear()
    split = service.query(sql, between=between, split="12h")
    assert isinstance(split, SplitResult)
    pd.testing.assert_frame_equal(split.df, whole.df)  # same rows, order, columns and dtypes
    windows = plan_windows(*between, timedelta(hours=12))
    assert split.windows == windows and len(windows) in (14, 15)
    jobs = created(sandbox)
    assert len(jobs) == len(windows) == len(split.job_ids)
    assert sorted(window_of(r) for r in jobs) == sorted((str(w.start), str(w.end)) for w in windows)


def test_an_aggregate_by_hour_split_by_day_equals_the_unsplit_one_newest_first(service, traffic):
    sql = (
        f"SELECT TIMESTAMP_TRUNC(time_generated, HOUR) AS hour, app, COUNT(*) AS n FROM "
        f"{traffic} GROUP BY hour, app ORDER BY hour DESC, app"
    )
    whole = service.query(sql, since="7d")
    split = service.query(sql, since="7d", split="1d")
    pd.testing.assert_frame_equal(split.df, whole.df)
    assert split.df["hour"].is_monotonic_decreasing and len(split.windows) >= 7


def test_the_traces_hold_every_window_job_and_the_progress_line_counts_windows(service, traffic):
    lines = []
    result = service.query(
        f"SELECT session_id, time_generated FROM {traffic}", since="2d", split="1d",
        progress=lambda p: lines.append(p.line()),
    )
    posted = [t for t in result.traces if t.method == "POST"]
    assert len(posted) == len(result.windows) == 3  # two days, whole days aligned: 3 windows
    assert re.match(r"done +windows 3/3 done, 0 running, [\d,]+ rows \([\d,]+ rows/s\)", lines[-1])
    assert any(re.search(r"windows \d/3 done, \d running", line) for line in lines[:-1])


def test_a_limit_applies_to_the_total(service, traffic):
    sql = f"SELECT session_id, time_generated FROM {traffic} ORDER BY time_generated"
    result = service.query(sql, since="7d", split="1d", limit=25)
    assert len(result.df) == 25 and result.df["time_generated"].is_monotonic_increasing


# ---- refused before anything is sent ----------------------------------------------------------


@pytest.mark.parametrize(("select", "reason"), [
    ("SELECT COUNT(*) AS n FROM {t}", "aggregate not grouped by a time bucket"),
    ("SELECT app, COUNT(*) AS n FROM {t} GROUP BY app", "aggregate not grouped by a time bucket"),
    ("SELECT DISTINCT app FROM {t}", "DISTINCT"),
    ("SELECT app, bytes_sent FROM {t} ORDER BY bytes_sent DESC LIMIT 10", "ORDER BY ... LIMIT"),
    ("SELECT app FROM {t} LIMIT 10", "LIMIT would apply to each window"),
    ("SELECT app, ROW_NUMBER() OVER (ORDER BY time_generated) AS k FROM {t}", "window function"),
    ("SELECT app, bytes_sent FROM {t} ORDER BY bytes_sent", "ORDER BY bytes_sent"),
    ("WITH a AS (SELECT app, COUNT(*) AS n FROM {t} GROUP BY app) SELECT * FROM a",
     "aggregate not grouped"),
    ("SELECT app FROM {t} UNION DISTINCT SELECT app FROM {t}", "UNION DISTINCT"),
])
def test_a_statement_that_cannot_be_concatenated_is_refused_before_sending(
    service, sandbox, traffic, select, reason
):
    with pytest.raises(NotSplittable, match=re.escape(reason)) as refused:
        service.query(select.format(t=traffic), since="1d", split="1h")
    assert "\n" not in str(refused.value) and "--split" in str(refused.value)
    assert api_requests(sandbox) == []


def test_split_needs_a_window_and_a_bucket_it_does_not_cut(service, sandbox, traffic):
    with pytest.raises(OptionError, match=r"give the window too.*--since"):
        service.query(f"SELECT app FROM {traffic}", split="1h")
    hourly = f"SELECT TIMESTAMP_TRUNC(time_generated, HOUR) AS h, COUNT(*) AS n FROM {traffic} GROUP BY h"
    with pytest.raises(NotSplittable, match="would cut the query's time buckets"):
        service.query(hourly, since="1d", split="30m")
    with pytest.raises(OptionError, match="window length"):
        QueryOptions(since="1d", split="hourly")
    assert api_requests(sandbox) == []


# ---- --split auto, and the guardrail ----------------------------------------------------------


def test_auto_cuts_full_windows_again_and_brings_every_row(service, sandbox, traffic):
    sql = f"SELECT {COLUMNS} FROM {traffic} ORDER BY time_generated, session_id"
    end = datetime.now(UTC)
    between = (end - timedelta(days=7), end)
    whole = service.query(sql, between=between)
    sandbox.clear()
    first_guess = plan_windows(*between, auto_step(*between))
    result = run_split(service, sql, QueryOptions(between=between, split="auto"), window_rows=150)
    assert len(result.windows) > len(first_guess)
    assert min(w.length for w in result.windows) < auto_step(*between)  # busy hours, cut
    pd.testing.assert_frame_equal(result.df, whole.df)
    # every window over the budget was cancelled after its first page and cut in two
    assert len(created(sandbox)) > len(result.windows)


def test_auto_into_a_dataset_cuts_by_max_rows(service, sandbox, traffic, tmp_path):
    # 3000 rows in at most 15 first windows: one holds at least 200, over the budget of 150,
    # wherever the clock puts the window edges (300 let every window fit on some days)
    sql = f"SELECT {COLUMNS} FROM {traffic}"
    dataset = service.query(sql, since="7d", split="auto", max_rows=150, to=tmp_path / "ds")
    assert dataset.rows == 3000 and dataset.verify().rows == 3000
    windows = dataset.manifest["windows"]
    start, end = (datetime.fromisoformat(t) for t in dataset.manifest["span"])
    assert len(windows) > len(plan_windows(start, end, auto_step(start, end)))
    assert max(w["rows"] for w in windows) <= 150 and len(created(sandbox)) > len(windows)
    assert dataset.partitioning == ["date", "hour"]
    assert f"{len(windows)} windows sized by their rows (auto) from " in dataset.summary()


def test_the_guardrail_applies_to_the_total_in_memory(service, sandbox, traffic):
    with pytest.raises(ResultTooLarge, match="more than max_rows=1,000") as refused:
        service.query(f"SELECT session_id, time_generated FROM {traffic}", since="7d",
                      split="1d", max_rows=1000)
    assert "\n" not in str(refused.value)
    results = [r for r in sandbox.requests if r.path.startswith("/query/v2/jobResults")]
    assert len(results) < 20  # stopped at first pages, never downloaded the rest


# ---- failures ---------------------------------------------------------------------------------


def test_a_statement_the_service_refuses_stops_the_run_at_the_first_window(service, sandbox,
                                                                         traffic):
    sql = f"SELECT time_generated FROM {traffic} WHERE action = 'deny'"  # action is a struct
    with pytest.raises(QueryError, match="No matching signature") as refused:
        service.query(sql, since="7d", split="1h")
    assert not isinstance(refused.value, WindowsMissing)
    assert len(created(sandbox)) <= service.background.max_running  # not 169 windows x 3 tries


def test_a_window_that_fails_once_is_tried_again(service, sandbox, traffic):
    service.background.max_running = 1  # one window at a time: the fault hits the first one
    sandbox.inject(status=500, count=1)
    result = service.query(f"SELECT session_id, time_generated FROM {traffic}", since="3d",
                           split="1d")
    assert len(result.windows) == 4 and not result.missing
    assert len(created(sandbox)) == 5  # the first window twice


def test_a_window_that_keeps_failing_is_reported_and_the_others_kept(service, sandbox, traffic):
    service.background.max_running = 1
    sql = f"SELECT session_id, time_generated FROM {traffic} ORDER BY time_generated"
    end = datetime.now(UTC)
    between = (end - timedelta(days=3), end)
    whole = service.query(sql, between=between)
    sandbox.clear()
    sandbox.inject(status=500, count=3)  # the first window's three tries
    with pytest.raises(WindowsMissing) as missing:
        service.query(sql, between=between, split="1d")
    first = plan_windows(*between, timedelta(days=1))[0]
    assert list(missing.value.missing) == [first]
    message = str(missing.value)
    assert "1 window of 4 failed 3 tries" in message and first.label() in message
    partial = missing.value.result.df
    expected = whole.df[whole.df["time_generated"] >= pd.Timestamp(first.end)]
    pd.testing.assert_frame_equal(partial, expected.reset_index(drop=True))
    # the command line has no error object: it says how to keep the windows done instead
    said = in_cli_words(message)
    assert ".result" not in said and "-o variable" not in said
    assert "--output DIR" in said and "--resume" in said


# ---- into a dataset, resumable ------------------------------------------------------------------


def test_an_interrupted_split_into_a_dataset_resumes_with_only_the_missing_windows(
    service, sandbox, traffic, tmp_path
):
    sql = f"SELECT {COLUMNS} FROM {traffic}"
    target = tmp_path / "week"
    options = QueryOptions(since="7d", split="1d", to=target)
    service.background.max_running = 2

    def stop_after_three(progress):
        if progress.windows_done >= 3:
            fan_out.cancel()

    fan_out = FanOut(service, sql, options, progress=stop_after_three)
    with pytest.raises(QueryCancelled, match="continue with --resume"):
        fan_out.run()
    with pytest.raises(ConfigurationError, match="not a complete cortex_nb dataset"):
        Dataset(target)
    with pytest.raises(ConfigurationError, match=r"interrupted split run left .* --resume"):
        service.query(sql, options)  # not mixed into, not replaced, without being asked

    done = set(fan_out.sink.windows_done())
    assert 3 <= len(done) < 8
    sandbox.clear()
    dataset = service.query(sql, options.replace(resume=True))
    resumed = {window_of(r) for r in created(sandbox)}
    assert len(resumed) == 8 - len(done)  # the missing windows only
    assert not resumed & {(str(s), str(e)) for s, e in done}
    assert dataset.rows == 3000 and len(dataset.manifest["windows"]) == 8
    start, end = (datetime.fromisoformat(t) for t in dataset.manifest["span"])
    assert f"8 windows of 1d from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC" in (
        dataset.summary()
    )
    whole = service.query(sql, since="7d")
    pd.testing.assert_frame_equal(sorted_rows(dataset.to_pandas()), sorted_rows(whole.df))


def test_failed_windows_of_a_dataset_are_fetched_by_resume(service, sandbox, traffic, tmp_path):
    service.background.max_running = 1
    sql = f"SELECT session_id, time_generated FROM {traffic}"
    end = datetime.now(UTC)
    between = (end - timedelta(days=3), end)
    options = QueryOptions(between=between, split="1d", to=tmp_path / "ds")
    sandbox.inject(status=500, count=3)
    with pytest.raises(WindowsMissing, match="run it again with --resume"):
        service.query(sql, options)
    sandbox.clear()
    dataset = service.query(sql, options.replace(resume=True))
    assert len(created(sandbox)) == 1 and dataset.rows == len(
        service.query(sql, between=between).df)
    sandbox.clear()
    assert service.query(sql, options.replace(resume=True)).rows == dataset.rows
    assert created(sandbox) == []  # complete: nothing left to fetch


def test_a_split_runs_in_the_background(service, traffic, tmp_path):
    sql = f"SELECT session_id, time_generated FROM {traffic} ORDER BY time_generated"
    handle = service.submit_query(sql, since="2d", split="1d")
    result = handle.result(60)
    assert len(result.windows) == 3 and handle.state == "DONE"
    assert "from 3 windows" in handle.line()
    with pytest.raises(NotSplittable):  # refused in the caller's thread, at once
        service.submit_query(f"SELECT COUNT(*) FROM {traffic}", since="1d", split="1h")


# ---- windows, without a service ---------------------------------------------------------------


def test_windows_are_aligned_clipped_and_gaps_found():
    start = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    end = datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
    windows = plan_windows(start, end, timedelta(hours=1))
    assert [(w.start.hour, w.start.minute, w.end.hour) for w in windows] == [
        (10, 30, 11), (11, 0, 12), (12, 0, 13)]
    assert gaps(start, end, [windows[1]]) == [(start, windows[1].start), (windows[1].end, end)]
    week = (start, start + timedelta(days=7))
    assert 7 <= (week[1] - week[0]) / auto_step(*week) <= 24


def test_a_cell_with_a_window_missing_fails_and_its_variable_holds_the_others(connected, sandbox):
    from IPython.utils.capture import capture_output

    connected.run_line_magic("config", "CortexMagics.max_background_jobs = 1")
    try:
        sandbox.inject(status=500, count=3)  # the first window, three times
        with capture_output():
            outcome = connected.run_cell(
                "%%cortex -o part --split 1d --since 3d\n"
                "SELECT session_id, time_generated FROM firewall.traffic"
            )
    finally:
        connected.run_line_magic("config", "CortexMagics.max_background_jobs = 4")
    message = str(outcome.error_in_exec)
    assert not outcome.success and "1 window of 4 failed 3 tries" in message
    assert "the rows of the others are in part" in message and "\n" not in message
    assert len(connected.user_ns["part"]) > 0
    assert len(created(sandbox)) == 3 + 3  # the failed window's three tries, the three others


def test_the_readme_fan_out_example_runs_as_written(connected, sandbox):
    from IPython.utils.capture import capture_output

    from tests.test_readme import block

    cell = block("%%cortex -o week --since 7d --split 1h")
    with capture_output():
        outcome = connected.run_cell(cell)
    assert outcome.success, outcome.error_in_exec
    week = connected.user_ns["week"]
    assert len(week) > 0 and list(week.columns) == ["time_generated", "src", "dest_port"]
    assert week["time_generated"].dt.floor("h").is_monotonic_increasing  # hours in time order
    assert len(created(sandbox)) >= 7 * 24  # a week in whole hours: one job each


def test_a_dry_run_of_a_split_cell_says_how_many_jobs_and_sends_nothing(connected, sandbox):
    from IPython.utils.capture import capture_output

    with capture_output() as shown:
        outcome = connected.run_cell(
            "%%cortex --dry-run --split 1d --between 2026-12-01T06:00 2026-12-03T06:00\n"
            "SELECT session_id, time_generated FROM firewall.traffic"
        )
    assert outcome.success, outcome.error_in_exec
    assert "--split 1d: 3 jobs, one per window" in shown.stdout
    assert "TIMESTAMP('2026-12-01 06:00:00+00:00')" in shown.stdout  # the first window's
    assert "TIMESTAMP('2026-12-02 00:00:00+00:00')" in shown.stdout
    assert api_requests(sandbox) == []


@pytest.mark.parametrize(("select", "pairs"), [
    ("SELECT t.app FROM {t} AS t JOIN {h} AS h ON t.session_id = h.session_id", True),
    ("SELECT app FROM {t} WHERE session_id IN (SELECT session_id FROM {h})", True),
    ("WITH d AS (SELECT session_id FROM {h}) SELECT t.app FROM {t} AS t JOIN d "
     "ON t.session_id = d.session_id", True),
    ("SELECT app FROM {t} UNION ALL SELECT app FROM {h}", False),
    ("SELECT app FROM {t} WHERE app = 'ssl'", False),
    ("SELECT t.app FROM {t} AS t JOIN UNNEST([1, 2]) AS k ON TRUE", False),
])
def test_a_split_that_pairs_rows_of_two_log_tables_says_pairs_across_edges_are_missed(
    select, pairs, sandbox
):
    from cortex_nb.sql.splitting import check_splittable

    i = sandbox.instance_id
    sql = select.format(t=f"`{i}.firewall.traffic`", h=f"`{i}.firewall.threat`")
    note = check_splittable(sql).note()
    assert (note is not None) == pairs
    assert note is None or "a pair whose rows fall in two windows is missed" in note


def test_the_note_on_pairs_is_said_by_the_query_and_the_dry_run(service, connected, sandbox):
    from IPython.utils.capture import capture_output

    said: list[str] = []
    i = sandbox.instance_id
    sql = (f"SELECT t.app, h.threat_id FROM `{i}.firewall.traffic` AS t JOIN "
           f"`{i}.firewall.threat` AS h ON t.session_id = h.session_id")
    service.query(sql, since="2d", split="1d", say=said.append)
    assert len(said) == 1 and said[0].startswith("Split: the query matches rows of two log tables")
    with capture_output() as shown:
        outcome = connected.run_cell(f"%%cortex --dry-run --split 1d --since 2d\n{sql}")
    assert outcome.success and said[0] in shown.stdout and "--split 1d: 3 jobs" in shown.stdout
    said.clear()
    handle = service.submit_query(sql, since="2d", split="1d", say=said.append)
    assert len(said) == 1 and said[0].startswith("Split: the query matches")  # before it runs
    assert handle.result(timeout=60).windows
    said.clear()
    service.query(f"SELECT app FROM `{i}.firewall.traffic`", since="2d", split="1d",
                  say=said.append)
    assert said == []


def test_a_429_holds_the_windows_back_and_loses_none(service, sandbox, traffic):
    sql = f"SELECT session_id, time_generated FROM {traffic} ORDER BY time_generated"
    end = datetime.now(UTC)
    between = (end - timedelta(days=3), end)
    whole = service.query(sql, between=between)
    sandbox.clear()
    sandbox.inject(status=429, retry_after=1, count=2)
    split = service.query(sql, between=between, split="1d")
    pd.testing.assert_frame_equal(split.df, whole.df)
    assert [r.status for r in sandbox.requests if r.status == 429] == [429, 429]
    assert len(split.job_ids) == len(split.windows) == 4  # retried by the transport, not lost


def test_one_job_paths_refuse_a_split(service, connected, sandbox):
    from IPython.utils.capture import capture_output

    with pytest.raises(OptionError, match=r"start\(\) makes one job"):
        service.start("SELECT 1", split="1h", since="1d")
    with capture_output():
        outcome = connected.run_cell(
            "%%cortex --raw --split 1h --since 1d\nSELECT session_id FROM firewall.traffic")
    assert "not with --split" in str(outcome.error_in_exec)
    assert api_requests(sandbox) == []
