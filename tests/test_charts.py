"""Charts of results (cortex_nb.results.charts): the Vega-Lite spec drawn from small frames, and
``%%cortex --plot`` in an InteractiveShell against the sandbox."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import cortex_nb
from cortex_nb.exceptions import CortexError, UnknownNameError
from cortex_nb.results.charts import (
    MAX_BUCKETS,
    TARGET_BUCKETS,
    VEGA_LITE_MIMETYPE,
    Chart,
    ChartError,
    parse_bucket,
    plot,
)
from cortex_nb.results.collect import Result

from .support import failed_with
from .support import run_cell as run


def stamps(*texts: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(texts), utc=True)).astype("datetime64[us, UTC]")


@pytest.fixture()
def logs() -> pd.DataFrame:
    """Six sessions over three hours: dns three times, web twice, one with no app."""
    return pd.DataFrame({
        "time_generated": stamps("2026-12-05 10:05:00", "2026-12-05 10:55:00",
                                 "2026-12-05 11:10:00", "2026-12-05 12:00:00",
                                 "2026-12-05 12:30:00", "2026-12-05 12:59:59"),
        "app": pd.array(["dns", "web", "dns", "dns", None, "web"], dtype="string"),
        "bytes_sent": pd.array([10, 20, 30, None, 50, 60], dtype="Int64"),
    })


def values(chart: Chart) -> list[dict]:
    return chart.spec["data"]["values"]


# ---- timeline ------------------------------------------------------------------------------


def test_a_timeline_counts_rows_per_bucket(logs):
    chart = plot(logs, "timeline", bucket="1h")
    assert [(v["start"], v["count"]) for v in values(chart)] == [
        ("2026-12-05T10:00:00Z", 2), ("2026-12-05T11:00:00Z", 1), ("2026-12-05T12:00:00Z", 3),
    ]
    end, window = chart.spec["transform"]  # each bar's end and tooltip, made in the browser
    assert end == {"calculate": "toDate(datum.start) + 3600000", "as": "end"}
    assert window["as"] == "window" and "utcFormat(datum.end, '%H:%M')" in window["calculate"]
    assert chart.summary == "timeline of 6 rows per 1h, 2026-12-05 10:05 to 2026-12-05 12:59 UTC"
    x = chart.spec["encoding"]["x"]
    assert x["type"] == "temporal" and x["scale"] == {"type": "utc"}


def test_a_timeline_zooms_on_time_and_has_tooltips(logs):
    spec = plot(logs, "timeline", by="app").spec
    zoom = next(p for p in spec["params"] if p["name"] == "zoom")
    assert zoom["bind"] == "scales" and zoom["select"]["encodings"] == ["x"]
    tooltip = [t["field"] for t in spec["encoding"]["tooltip"]]
    assert tooltip == ["window", "series", "count"]


def test_a_timeline_by_a_column_stacks_its_top_values_and_lumps_the_rest(logs):
    chart = plot(logs, "timeline", by="app", top=1, bucket="1h")
    per = {(v["start"][11:13], v["series"]): v["count"] for v in values(chart)}
    assert per == {("10", "dns"): 1, ("10", "(other)"): 1, ("11", "dns"): 1,
                   ("12", "dns"): 1, ("12", "(other)"): 2}
    stacks = [(v["series"], v["y0"], v["y1"]) for v in values(chart) if v["start"][11:13] == "12"]
    assert stacks == [("dns", 0, 1), ("(other)", 1, 3)]  # in the legend's order, from zero
    color = chart.spec["encoding"]["color"]
    assert color["title"] == "app" and color["scale"]["domain"] == ["dns", "(other)"]
    assert "by app (top 1 of 3)" in chart.summary


def test_a_timeline_names_missing_values_and_sums_a_value_column(logs):
    chart = plot(logs, "timeline", by="app", value="bytes_sent", bucket="1d")
    assert {v["series"]: v["count"] for v in values(chart)} == {"dns": 40, "web": 80, "(none)": 50}
    assert chart.spec["encoding"]["y"]["title"] == "bytes_sent"
    assert chart.spec["title"] == "bytes_sent per 1d by app"


def test_an_automatic_bucket_keeps_a_week_to_a_readable_number_of_bars():
    week = pd.DataFrame({"event_time": pd.date_range("2026-11-28", "2026-12-05", freq="7min",
                                                     tz="UTC")})
    chart = plot(week, "timeline")
    assert "per 3h" in chart.summary
    assert len(values(chart)) <= TARGET_BUCKETS
    assert sum(v["count"] for v in values(chart)) == len(week)


def test_naive_times_are_taken_as_utc():
    df = pd.DataFrame({"time_generated": pd.to_datetime(["2026-12-05 10:30:00"])})
    assert values(plot(df, "timeline", bucket="1h"))[0]["start"] == "2026-12-05T10:00:00Z"


def test_the_time_column_is_the_catalog_s_then_any_timestamp(logs):
    both = logs.assign(receive_time=logs["time_generated"] + pd.Timedelta(hours=5))
    both = both[["receive_time", "time_generated", "app"]]
    assert values(plot(both, "timeline", bucket="1d"))[0]["start"] == "2026-12-05T00:00:00Z"
    later = plot(both, "timeline", bucket="1h", time="receive_time")
    assert values(later)[0]["start"] == "2026-12-05T15:00:00Z"
    only = logs.rename(columns={"time_generated": "seen"})
    assert plot(only, "timeline").summary.startswith("timeline of 6 rows")


def test_a_frame_with_no_time_column_says_what_to_do(logs):
    with pytest.raises(ChartError, match="no time column for a timeline: select a timestamp"):
        plot(logs[["app", "bytes_sent"]], "timeline")
    with pytest.raises(ChartError, match=r"column `app` holds no timestamps"):
        plot(logs, "timeline", time="app")


@pytest.mark.parametrize("bucket", ["1x", "h", "0h", "90"])
def test_a_bucket_that_is_not_a_duration_is_refused(logs, bucket):
    with pytest.raises(ChartError, match="is not a duration; write 30s, 10min, 1h or 1d"):
        plot(logs, "timeline", bucket=bucket)


def test_a_bucket_too_small_for_the_span_names_one_that_fits():
    week = pd.DataFrame({"time_generated": stamps("2026-11-28 00:00:00", "2026-12-05 00:00:00")})
    with pytest.raises(ChartError, match=rf"1s buckets over 1w make more than {MAX_BUCKETS:,} "
                                         r"bars; use a bucket of 10min or more"):
        plot(week, "timeline", bucket="1s")
    assert len(values(plot(week, "timeline", bucket="10min"))) == 2


def test_buckets_are_read_as_an_analyst_writes_them():
    assert [parse_bucket(t) for t in ("30s", "10min", "10m", "1h", "2d", "1w")] == [
        30, 600, 600, 3600, 172_800, 604_800]


# ---- bar and hist --------------------------------------------------------------------------


def test_a_bar_chart_shows_the_top_values_largest_first(logs):
    chart = plot(logs, "bar", by="app", top=2)
    assert values(chart) == [{"series": "dns", "count": 3}, {"series": "web", "count": 2}]
    assert chart.spec["encoding"]["y"]["sort"] == "-x"
    assert chart.summary == "bar chart of rows by app: top 2 of 3 values, from 6 rows"
    assert chart.spec["title"] == "rows by app (top 2 of 3)"


def test_a_bar_chart_of_an_aggregated_frame_uses_its_values():
    talkers = pd.DataFrame({"src": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                            "sessions": [5, 90, 12]})
    chart = plot(talkers, "bar", by="src", value="sessions")
    assert [v["series"] for v in values(chart)] == ["10.0.0.2", "10.0.0.3", "10.0.0.1"]
    assert plot(talkers, "bar").spec["encoding"]["y"]["title"] == "src"  # the first text column


def test_a_histogram_bins_a_numeric_column(logs):
    chart = plot(logs, "hist", by="bytes_sent", bins=5)
    assert [(v["start"], v["end"], v["count"]) for v in values(chart)] == [
        (10, 20, 1), (20, 30, 1), (30, 40, 1), (40, 50, 0), (50, 60, 2)]
    assert chart.summary == "histogram of bytes_sent: 5 values in 5 bins, 10 to 60"
    assert plot(logs, "hist").spec["encoding"]["x"]["title"] == "bytes_sent"  # first number


def test_a_histogram_of_text_suggests_a_bar_chart(logs):
    with pytest.raises(ChartError, match=r"column `app` is not numeric \(string\); count its "
                                         r"values with a bar chart \(by='app'\)"):
        plot(logs, "hist", by="app")
    with pytest.raises(ChartError, match=r"is not numeric .*; draw a timeline"):
        plot(logs, "hist", by="time_generated")


# ---- what every chart shares ---------------------------------------------------------------


def test_an_unknown_column_suggests_the_closest(logs):
    with pytest.raises(UnknownNameError, match=r"no column `ap` in the result to split by; "
                                               r"did you mean `app`\?") as caught:
        plot(logs, "bar", by="ap")
    assert caught.value.suggestions == ("app",)
    with pytest.raises(UnknownNameError, match="no column `bytes` in the result to sum; did "
                                               "you mean `bytes_sent`"):
        plot(logs, "timeline", value="bytes")


def test_an_unknown_column_of_a_wide_result_names_a_few_not_all(logs):
    wide = logs.assign(**{f"extra_{n}": 0 for n in range(40)})
    with pytest.raises(UnknownNameError) as caught:
        plot(wide, "bar", by="qqq")
    message = str(caught.value)
    assert f"the result has {len(wide.columns)} columns (" in message
    assert "df.columns lists them" in message and "extra_39" not in message
    with pytest.raises(UnknownNameError, match=r"the columns are app, bytes_sent$"):
        plot(logs[["app", "bytes_sent"]], "bar", by="qqq")


@pytest.mark.parametrize("kind", ["timeline", "bar", "hist"])
def test_an_empty_result_is_a_chart_that_says_no_rows(logs, kind):
    chart = plot(logs.iloc[0:0], kind, by="bytes_sent" if kind == "hist" else "app")
    assert chart.summary == f"{kind}: no rows"
    assert chart.spec["mark"]["type"] == "text" and values(chart) == [{"text": "no rows"}]


def test_an_unknown_kind_or_an_option_of_another_kind_is_refused(logs):
    with pytest.raises(ChartError, match=r"no chart kind 'timelime'; did you mean `timeline`\?"):
        plot(logs, "timelime")
    with pytest.raises(ChartError, match="a hist chart takes no bucket; bucket goes with "
                                         "timeline charts"):
        plot(logs, "hist", bucket="1h")
    with pytest.raises(ChartError, match="top must be 1 or more, not 0"):
        plot(logs, "bar", by="app", top=0)
    assert issubclass(ChartError, CortexError)


def test_a_chart_is_stored_as_vega_lite_with_a_text_fallback(logs):
    chart = plot(logs, "timeline", by="app")
    bundle, metadata = chart._repr_mimebundle_()
    assert set(bundle) == {VEGA_LITE_MIMETYPE, "text/plain"}
    assert metadata == {VEGA_LITE_MIMETYPE: {"embed_options": {"renderer": "svg"}}}
    assert bundle["text/plain"] == chart.summary
    assert bundle[VEGA_LITE_MIMETYPE]["$schema"].endswith("/vega-lite/v5.json")
    again = plot(logs.copy(), "timeline", by="app")  # the same rows, the same saved output
    assert json.dumps(again.spec, sort_keys=True) == json.dumps(bundle[VEGA_LITE_MIMETYPE],
                                                                sort_keys=True)
    chart.to_dict()["title"] = "changed"  # a copy to edit: the chart keeps its own
    assert chart.spec["title"] == "rows per 5min by app"


def test_a_result_and_the_package_chart_the_same(logs):
    result = Result(df=logs, job_id="j", rows_in_job=6, pages=1, elapsed=0.1, sql="SELECT 1")
    assert result.plot("bar", by="app").spec == cortex_nb.plot(logs, "bar", by="app").spec
    assert cortex_nb.Chart is Chart and cortex_nb.ChartError is ChartError


# ---- %%cortex --plot in a shell, against the sandbox ----------------------------------------

TIMES = "%%cortex -o rows {flags}\nSELECT time_generated, app FROM firewall.traffic"


def test_a_cell_with_plot_shows_the_chart_and_keeps_the_frame(connected):
    result, _ = run(connected, TIMES.format(flags="--plot timeline --by app --top 3 --bucket 1h"))
    assert result.success, result.error_in_exec
    chart, df = result.result, connected.user_ns["rows"]
    assert isinstance(chart, Chart) and isinstance(df, pd.DataFrame)
    assert sum(v["count"] for v in values(chart)) == len(df) > 0
    series = {v["series"] for v in values(chart)}
    assert len(series - {"(other)"}) == 3 and "(other)" in series
    shown, metadata = connected.display_formatter.format(chart)  # what the notebook stores
    assert VEGA_LITE_MIMETYPE in shown and shown["text/plain"].startswith("timeline of ")
    assert metadata[VEGA_LITE_MIMETYPE]["embed_options"] == {"renderer": "svg"}


def test_a_cell_bar_chart_of_the_top_apps(connected):
    result, _ = run(connected, "%%cortex --plot bar --by app --top 5\n"
                               "SELECT app FROM firewall.traffic")
    assert result.success, result.error_in_exec
    counts = [v["count"] for v in values(result.result)]
    assert len(counts) == 5 and counts == sorted(counts, reverse=True)


def test_a_cell_with_an_unknown_column_fails_in_one_line_and_keeps_the_rows(connected):
    connected.user_ns.pop("rows", None)
    result, cap = run(connected, TIMES.format(flags="--plot bar --by ap"))
    assert "no column `ap` in the result to split by; did you mean `app`?" in failed_with(
        result, cap)
    assert len(connected.user_ns["rows"]) > 0  # the query's rows are not lost to a typo


def test_a_cell_with_no_time_column_fails_in_one_line(connected):
    result, cap = run(connected, "%%cortex --plot timeline\n"
                                 "SELECT app, COUNT(*) AS n FROM firewall.traffic GROUP BY app")
    assert "the result has no time column for a timeline" in failed_with(result, cap)


def test_a_cell_with_no_rows_draws_no_rows(connected):
    result, _ = run(connected, "%%cortex --plot timeline\nSELECT time_generated "
                               "FROM firewall.traffic WHERE app = 'no-such-app'")
    assert result.success and result.result.summary == "timeline: no rows"


@pytest.mark.parametrize(("flags", "says"), [
    ("--by app", "--by goes with --plot timeline|bar|hist"),
    ("--plot bar --raw", "--plot draws the rows of a SQL query in the cell; not with --raw"),
    ("--plot bar --bg", "not with --bg"),
    ("--plot pie", "invalid choice: 'pie'"),
])
def test_chart_flags_out_of_place_fail_before_anything_is_sent(connected, sandbox, flags, says):
    result, cap = run(connected, TIMES.format(flags=flags))
    assert says in failed_with(result, cap)
    assert not any(r.path.startswith("/query/v2/jobs") for r in sandbox.requests)


def test_plot_kinds_are_offered_by_tab_completion():
    from cortex_nb.notebook.completion import complete

    line = "%%cortex --plot "
    assert [text for text, _ in complete(line, len(line)).items] == ["timeline", "bar", "hist"]
    line = "%%cortex --plot bar --t"
    assert "--top" in [text for text, _ in complete(line, len(line)).items]


def test_the_readme_s_chart_examples_run(connected):
    from .test_readme import block

    cell, _ = run(connected, block("%%cortex -o traffic --plot"))
    assert cell.success and cell.result.kind == "timeline"
    assert "by app" in cell.result.summary and len(connected.user_ns["traffic"]) > 0
    python, _ = run(connected, block("from cortex_nb import plot"))
    assert python.success, python.error_in_exec
    assert python.result.spec["title"] == "apps, finer" and "per 10min" in python.result.summary
