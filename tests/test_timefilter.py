"""Time windows: times and durations as analysts write them, the statement bounded on each log
table's time column (parsed, so CTEs, joins and WHERE clauses keep their meaning), and the
rows that come back from the real sandbox (its week of logs is busy by day, quiet at night).
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from IPython.utils.capture import capture_output

from cortex_nb import Credentials, HTTPClient, QueryService
from cortex_nb.cli import main
from cortex_nb.exceptions import ConfigurationError
from cortex_nb.options import OptionError, QueryOptions
from cortex_nb.results.cache import CACHE_ENV, ResultCache
from cortex_nb.sql.timefilter import (
    naive_note,
    parse_duration,
    parse_instant,
    resolve_window,
    restrict,
)
from cortex_nb.times import moves_with_now

UTC = timezone.utc
NOW = datetime(2026, 12, 5, 12, 30, tzinfo=UTC)
START, END = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)
A, B = "TIMESTAMP('2026-12-01 00:00:00+00:00')", "TIMESTAMP('2026-12-02 00:00:00+00:00')"


def window(column: str) -> str:
    return f"{column} >= {A} AND {column} < {B}"


# ---- times and durations ---------------------------------------------------------------------


@pytest.mark.parametrize(("given", "moment"), [
    ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),  # naive: UTC
    ("2026-12-01T10:00", datetime(2026, 12, 1, 10, tzinfo=UTC)),
    ("2026-12-01 10:00:00+02:00", datetime(2026, 12, 1, 8, tzinfo=UTC)),
    ("2026-12-01T10:00Z", datetime(2026, 12, 1, 10, tzinfo=UTC)),
    (datetime(2026, 12, 1, 10), datetime(2026, 12, 1, 10, tzinfo=UTC)),
    (datetime(2026, 12, 1, 10, tzinfo=timezone(timedelta(hours=-5))),
     datetime(2026, 12, 1, 15, tzinfo=UTC)),
    (pd.Timestamp("2026-12-01 10:00:00.000000001", tz="Europe/Paris"),
     datetime(2026, 12, 1, 9, tzinfo=UTC)),
    (date(2026, 12, 1), datetime(2026, 12, 1, tzinfo=UTC)),
    ("now", NOW),
    ("now-2h", NOW - timedelta(hours=2)),
    (" NOW - 7d ", NOW - timedelta(days=7)),
    ("now+15m", NOW + timedelta(minutes=15)),
])
def test_instants_are_read_as_aware_utc_datetimes(given, moment):
    read = parse_instant(given, now=NOW)
    assert read == moment and read.utcoffset() == timedelta(0)


@pytest.mark.parametrize("given", ["yesterday", "2026-13-01", "now-2", "", 1733050000, None])
def test_an_unreadable_time_says_which_forms_are_accepted(given):
    with pytest.raises(ConfigurationError, match=r"Cannot read .* as a time.*'now-2h'") as caught:
        parse_instant(given, now=NOW)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("given", "span"), [
    ("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)), ("24h", timedelta(days=1)),
    ("7d", timedelta(days=7)), ("1w", timedelta(days=7)), ("1.5H", timedelta(minutes=90)),
    (timedelta(hours=3), timedelta(hours=3)),
])
def test_durations(given, span):
    assert parse_duration(given) == span


@pytest.mark.parametrize("given", ["24", "h", "1y", "-1h", "0h", timedelta(0), 3600, None,
                                   "99999999999w", "36526d", timedelta(days=40_000)])
def test_a_bad_or_empty_duration_is_refused(given):
    with pytest.raises(ConfigurationError, match="duration"):
        parse_duration(given)


# ---- the window --------------------------------------------------------------------------


def test_the_window_from_between_since_and_until():
    assert resolve_window() is None
    assert resolve_window(between=("2026-12-01", END), now=NOW) == (START, END)
    assert resolve_window(since="24h", now=NOW) == (NOW - timedelta(days=1), NOW)
    assert resolve_window(since="1d", until="2026-12-02", now=NOW) == (START, END)
    # relative ends are read against the same moment
    assert resolve_window(between=("now-3h", "now-1h"), now=NOW) == (
        NOW - timedelta(hours=3), NOW - timedelta(hours=1)
    )


@pytest.mark.parametrize(("given", "said"), [
    ({"between": (END, START)}, "empty.*the start must come first"),
    ({"between": (START, START)}, "empty"),
    ({"between": (START, END), "since": "1h"}, "not both"),
    ({"between": (START, END), "until": END}, "not both"),
    ({"until": END}, "give since=.24h. \\(--since 24h\\) too"),
    ({"between": ("2026-12-01",)}, "two times"),
    ({"between": "2026-12-01 2026-12-02"}, "two times"),
    ({"since": "36000d", "until": "0002-01-01"}, "outside the years 1 to 9999"),
])
def test_contradictory_or_empty_windows_are_refused_in_one_line(given, said):
    with pytest.raises(ConfigurationError, match=said) as caught:
        resolve_window(**given, now=NOW)
    assert "\n" not in str(caught.value)
    with pytest.raises(OptionError, match=said):  # and as options, before anything is sent
        QueryOptions(**given)


def test_the_note_names_the_times_read_as_utc():
    assert naive_note(("2026-12-01", "now-2h")) == (
        "Time window: 2026-12-01 read as UTC (no offset given)."
    )
    assert naive_note(("2026-12-01T00:00+01:00", "now"), until=None) is None
    assert "2026-12-02 00:00:00" in naive_note(until=datetime(2026, 12, 2))
    assert QueryOptions(since="2h").window_note() is None


# ---- the statement -------------------------------------------------------------------------

T = "SELECT * FROM `firewall.traffic`"


@pytest.mark.parametrize(("sql", "bounded"), [
    pytest.param(T, f"{T} WHERE {window('time_generated')}", id="plain"),
    pytest.param("SELECT * FROM firewall.traffic", f"SELECT * FROM firewall.traffic WHERE "
                 f"{window('time_generated')}", id="short name unquoted"),
    pytest.param("SELECT * FROM `1234.log.system`",
                 f"SELECT * FROM `1234.log.system` WHERE {window('event_time')}",
                 id="qualified name, log table's own column"),
    pytest.param("SELECT t.session_id FROM `1234.firewall.traffic` t",
                 f"SELECT t.session_id FROM `1234.firewall.traffic` AS t WHERE "
                 f"{window('t.time_generated')}", id="alias"),
    pytest.param(f"{T} WHERE action.value = 'deny' OR source_port = 22",
                 f"{T} WHERE (action.value = 'deny' OR source_port = 22) AND "
                 f"{window('time_generated')}", id="existing WHERE with OR"),
    pytest.param(f"{T} WHERE (a = 1 OR b = 2)",
                 f"{T} WHERE (a = 1 OR b = 2) AND {window('time_generated')}",
                 id="already parenthesised"),
    pytest.param(
        "SELECT * FROM firewall.traffic AS t JOIN firewall.threat AS h ON t.session_id = "
        "h.session_id WHERE t.x = 1",
        "SELECT * FROM firewall.traffic AS t JOIN firewall.threat AS h ON t.session_id = "
        f"h.session_id WHERE (t.x = 1) AND {window('t.time_generated')} AND "
        f"{window('h.time_generated')}",
        id="join: each table its own filter",
    ),
    pytest.param(
        "SELECT * FROM firewall.traffic JOIN `log.system` ON traffic.x = system.y",
        f"SELECT * FROM firewall.traffic JOIN `log.system` ON traffic.x = system.y WHERE "
        f"{window('traffic.time_generated')} AND {window('system.event_time')}",
        id="join of two log types without aliases",
    ),
    pytest.param(
        "SELECT * FROM firewall.traffic AS t LEFT JOIN firewall.threat AS h "
        "ON t.session_id = h.session_id OR t.x = h.x",
        "SELECT * FROM firewall.traffic AS t LEFT JOIN firewall.threat AS h "
        f"ON (t.session_id = h.session_id OR t.x = h.x) AND {window('h.time_generated')} "
        f"WHERE {window('t.time_generated')}",
        id="left join: in its ON, so unmatched rows stay",
    ),
    pytest.param(
        "WITH s AS (SELECT source_ip FROM `firewall.threat`) SELECT * FROM s",
        f"WITH s AS (SELECT source_ip FROM `firewall.threat` WHERE {window('time_generated')}) "
        "SELECT * FROM s",
        id="CTE",
    ),
    pytest.param(
        "SELECT n FROM (SELECT COUNT(*) AS n FROM firewall.url) AS u WHERE n IN "
        "(SELECT 1 FROM log.config)",
        f"SELECT n FROM (SELECT COUNT(*) AS n FROM firewall.url WHERE "
        f"{window('time_generated')}) AS u WHERE n IN (SELECT 1 FROM log.config WHERE "
        f"{window('event_time')})",
        id="subqueries",
    ),
    pytest.param(
        "SELECT a FROM firewall.traffic UNION ALL SELECT a FROM log.system",
        f"SELECT a FROM firewall.traffic WHERE {window('time_generated')} UNION ALL SELECT a "
        f"FROM log.system WHERE {window('event_time')}",
        id="union",
    ),
])
def test_restrict_bounds_every_select_that_reads_a_log_table(sql, bounded):
    assert restrict(sql, START, END) == bounded


@pytest.mark.parametrize(("sql", "said"), [
    ("SELECT 1", "reads none"),
    ("SELECT * FROM `firewall.trafic`", "reads none"),  # misspelt: not a log table
    ("SELECT * FROM firewall.traffic AS t RIGHT JOIN log.system AS s ON t.a = s.b",
     "RIGHT JOIN"),
    ("SELECT * FROM firewall.traffic AS t FULL JOIN log.system AS s ON t.a = s.b",
     "FULL JOIN"),
    ("SELECT * FROM firewall.traffic AS t LEFT JOIN log.system USING (a)", "USING"),
    (f"{T}; {T}", "holds 2"),
    ("SELECT * FROM firewall.traffic WHERE (", "does not parse"),
])
def test_restrict_refuses_what_it_cannot_bound_in_one_line(sql, said):
    with pytest.raises(ConfigurationError, match=said) as caught:
        restrict(sql, START, END)
    assert "\n" not in str(caught.value)


# ---- against the sandbox -------------------------------------------------------------------


@pytest.fixture()
def service(sandbox) -> QueryService:
    client = HTTPClient(url=sandbox.url, credentials=Credentials(**sandbox.credentials()))
    return QueryService(client=client)


def traffic(sandbox, columns: str = "time_generated", where: str = "") -> str:
    return f"SELECT {columns} FROM `{sandbox.instance_id}.firewall.traffic` {where}"


def hour_of(sandbox, days_back: int, hour: int) -> tuple[datetime, datetime]:
    """An hour ``days_back`` days before the day the sandbox's data ends."""
    day = datetime.fromtimestamp(sandbox.anchor, UTC).replace(hour=0) - timedelta(days_back)
    return day.replace(hour=hour), day.replace(hour=hour + 1)


def posted_statements(sandbox) -> list[str]:
    return [r.json["params"]["query"] for r in sandbox.requests
            if r.method == "POST" and r.path == "/query/v2/jobs"]


def test_since_24h_returns_the_rows_of_the_last_24_hours(sandbox, service):
    before = datetime.now(UTC)
    times = service.query(traffic(sandbox), since="24h").df["time_generated"]
    everything = service.query(traffic(sandbox)).df["time_generated"]
    assert len(times) > 0  # the sandbox's logs reach up to the current hour
    assert times.min() >= before - timedelta(days=1) - timedelta(minutes=5)
    recent = everything[everything >= datetime.now(UTC) - timedelta(days=1)]
    assert len(recent) <= len(times) < len(everything)


def test_quiet_night_hours_hold_fewer_rows_than_busy_working_hours(sandbox, service):
    counts = {}
    for name, hour in (("night", 1), ("day", 10)):  # four hours from 01:00, and from 10:00
        start, end = hour_of(sandbox, 2, hour)[0], hour_of(sandbox, 2, hour + 3)[1]
        frame = service.query(traffic(sandbox), between=(start, end)).df
        assert frame["time_generated"].between(start, end, inclusive="left").all()
        counts[name] = len(frame)
    assert 0 < counts["night"] * 3 < counts["day"]


def test_an_existing_or_keeps_its_meaning_and_a_join_bounds_both_tables(sandbox, service):
    start, end = hour_of(sandbox, 1, 10)
    where = "WHERE source_port < 30000 OR dest_port = 443"
    bounded = service.query(traffic(sandbox, "time_generated, session_id", where),
                            between=(start, end)).df
    every = service.query(traffic(sandbox, "time_generated, session_id", where)).df
    inside = every[every["time_generated"].between(start, end, inclusive="left")]
    assert 0 < len(bounded) == len(inside) < len(every)
    threat = f"`{sandbox.instance_id}.firewall.threat`"
    joined = service.query(
        f"SELECT t.time_generated AS a, h.time_generated AS b FROM "
        f"`{sandbox.instance_id}.firewall.traffic` AS t JOIN {threat} AS h "
        "ON t.source_ip.value = h.source_ip.value", since="3d", limit=500,
    ).df
    assert len(joined) > 0
    lower = datetime.now(UTC) - timedelta(days=3, minutes=5)
    assert (joined["a"] >= lower).all() and (joined["b"] >= lower).all()


def test_every_path_sends_the_same_bounded_statement(sandbox, service, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    start, end = hour_of(sandbox, 2, 14)
    sql = traffic(sandbox, "session_id")
    result = service.query(sql, between=(start, end))
    started = service.start(sql, between=(start, end))
    background = service.submit_query(sql, between=(start, end)).result(timeout=60)
    dataset = service.query(sql, between=(start, end), to=tmp_path / "ds")
    sent = posted_statements(sandbox)
    assert len(sent) == 4 and len(set(sent)) == 1 and "TIMESTAMP('" in sent[0]
    assert len(result.df) == len(background.df) == dataset.rows == len(started.rows())
    manifest = json.loads((tmp_path / "ds" / "_manifest.json").read_text())
    assert manifest["sql"] == sent[0]
    trace_bodies = [t.request_body or "" for t in result.traces]
    assert any("time_generated >= TIMESTAMP(" in body for body in trace_bodies)


def test_the_cache_key_is_the_absolute_window(sandbox, service, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    night, day = hour_of(sandbox, 2, 3), hour_of(sandbox, 2, 14)
    sql = traffic(sandbox, "session_id")
    first = service.query(sql, between=night, cache=True).df
    sandbox.clear()
    assert len(service.query(sql, between=night, cache=True).df) == len(first)
    assert posted_statements(sandbox) == []  # the same window: from the cache
    other = service.query(sql, between=day, cache=True).df
    assert len(posted_statements(sandbox)) == 1 and len(other) > len(first)
    later = service.query(sql, since="1h", until=day[1], cache=True).df  # the same rows...
    assert len(posted_statements(sandbox)) == 1 and len(later) == len(other)  # ...cached


def test_a_job_taken_up_by_id_refuses_a_window(sandbox, service):
    job_id = service.submit(traffic(sandbox))
    with pytest.raises(OptionError, match="drop between/since/until"):
        service.fetch(job_id, since="1h")


def test_a_window_on_a_statement_with_no_log_table_sends_nothing(sandbox, service):
    with pytest.raises(ConfigurationError, match="reads none"):
        service.query("SELECT 1 AS x", since="1h")
    assert posted_statements(sandbox) == []


# ---- the magic and the command line -----------------------------------------------------------


def test_the_cell_says_when_a_time_was_read_as_utc_unless_quiet(connected, sandbox):
    start, end = hour_of(sandbox, 2, 14)
    cell = "SELECT session_id FROM firewall.traffic"
    line = f"-o rows --between {start:%Y-%m-%dT%H:%M} {end.isoformat()}"
    with capture_output() as shown:
        connected.run_cell_magic("cortex", line, cell)
    assert f"Time window: {start:%Y-%m-%dT%H:%M} read as UTC (no offset given)." in shown.stdout
    assert end.isoformat() not in shown.stdout  # it had an offset
    with capture_output() as quiet:
        connected.run_cell_magic("cortex", f"-q {line}", cell)
    assert "read as UTC" not in quiet.stdout
    assert len(connected.user_ns["rows"]) > 0


def test_a_background_cell_says_so_too(connected, sandbox):
    start, end = hour_of(sandbox, 2, 14)
    with capture_output() as shown:
        connected.run_cell_magic("cortex", f"--bg -o later --between {start:%Y-%m-%dT%H:%M} "
                                 f"{end:%Y-%m-%dT%H:%M}", "SELECT session_id FROM firewall.traffic")
        connected.run_line_magic("cortex", "wait later")
    assert f"Time window: {start:%Y-%m-%dT%H:%M}, {end:%Y-%m-%dT%H:%M} read as UTC" in (
        shown.stdout
    )
    assert len(connected.user_ns["later"]) > 0


def test_the_notebook_cache_keeps_fixed_windows_not_moving_ones(connected, sandbox, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    connected.run_line_magic("config", "CortexMagics.cache = True")
    try:
        start, end = hour_of(sandbox, 2, 14)
        fixed = f"--between {start.isoformat()} {end.isoformat()}"
        for flags in (fixed, fixed, "--since 1h", "--between now-2d now-1d"):
            with capture_output() as shown:
                connected.run_cell_magic("cortex", f"-o n {flags}",
                                         "SELECT COUNT(*) AS n FROM firewall.traffic")
        statements = posted_statements(sandbox)
        assert len(statements) == 3  # the fixed window's second run came from the cache
        assert "Not cached: the query uses a time window relative to now" in shown.stdout
        assert len(ResultCache().entries()) == 1
    finally:
        connected.run_line_magic("config", "CortexMagics.cache = False")


def test_moving_windows():
    assert moves_with_now(since="1h") and moves_with_now(between=("now-2h", "2026-12-01"))
    assert moves_with_now(since="1h", until="now-1d")
    assert not moves_with_now(since="1h", until="2026-12-01")
    assert not moves_with_now(between=(START, END)) and not moves_with_now()


def test_the_dry_run_shows_the_statement_that_would_be_sent(connected, sandbox):
    with capture_output() as shown:
        connected.run_cell_magic(
            "cortex", "--dry-run --since 1d --until 2026-12-02T00:00+00:00",
            "SELECT COUNT(*) AS n FROM firewall.traffic WHERE action.value = 'deny'",
        )
    assert f"WHERE (action.value = 'deny') AND {window('time_generated')}" in (
        shown.stdout.replace('\\"', '"')
    )
    assert posted_statements(sandbox) == []


def test_the_command_line_takes_the_window_flags(tmp_path, capsys):
    target = tmp_path / "rows.csv"
    sql = "SELECT time_generated FROM firewall.traffic"
    before = datetime.now(UTC)
    assert main(["query", "--sandbox", "--since", "24h", "--output", str(target), sql]) == 0
    times = pd.to_datetime(pd.read_csv(target)["time_generated"], utc=True)
    assert len(times) > 0 and times.min() >= before - timedelta(days=1, minutes=5)
    assert main(["query", "--sandbox", "--between", "2026-12-01", "2026-12-01T00:00+00:00",
                 sql]) == 2
    assert "The time window is empty" in capsys.readouterr().err


def test_the_readme_example_runs(connected, sandbox):
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    example = readme.split("## Time windows")[1].split("```\n")[1]
    line, _, cell = example.partition("\n")
    with capture_output():
        connected.run_cell_magic("cortex", line.removeprefix("%%cortex "), cell)
    recent = connected.user_ns["recent"]
    assert list(recent.columns) == ["src", "n"] and recent["n"].sum() > 0
    assert "time_generated >= TIMESTAMP(" in posted_statements(sandbox)[0]
