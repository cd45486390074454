"""The result cache: %%cortex --cache against the real sandbox over HTTP; a hit sends nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from cortex_nb import Credentials
from cortex_nb.notebook.connection import get_connection
from cortex_nb.options import QueryOptions
from cortex_nb.results.cache import (
    CACHE_ENV,
    ResultCache,
    age_text,
    cache_dir,
    cache_scope,
    current_time_function,
)
from cortex_nb.sandbox.service.tokens import DEMO_CLIENT_SECRET, DEMO_REFRESH_TOKEN

WIDE = ("%%cortex -o wide --structs keep --cache\n"
        "SELECT session_id, source_ip, characteristics_of_app, time_generated, is_nat\n"
        "FROM firewall.traffic ORDER BY session_id LIMIT 40")
RECENT = ("SELECT COUNT(*) AS n FROM firewall.traffic "
          "WHERE time_generated > TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 1 DAY)")


@pytest.fixture()
def results_dir(tmp_path, monkeypatch) -> Path:
    where = tmp_path / "results"
    monkeypatch.setenv(CACHE_ENV, str(where))
    return where


@pytest.fixture(scope="module")
def ip():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "cortex_nb")
    yield shell
    shell.run_line_magic("config", "CortexMagics.cache = False")
    get_connection().disconnect()


@pytest.fixture()
def connected(ip, sandbox, results_dir):
    get_connection().connect(
        Credentials(**sandbox.credentials(), environ={}), url=sandbox.url,
        instance_id=sandbox.instance_id,
    )
    ip.run_line_magic("config", "CortexMagics.cache = False")
    sandbox.clear()
    return ip


def run(ip, source: str):
    """Run a cell; (result, everything it printed)."""
    with capture_output() as cap:
        result = ip.run_cell(source)
    assert result.success, result.error_in_exec
    return result, cap.stdout + cap.stderr


def api_requests(sandbox) -> list:
    return [r for r in sandbox.requests if r.path.startswith("/query/")]


def test_a_cache_hit_sends_no_request_and_gives_the_same_frame(connected, sandbox):
    run(connected, WIDE)
    first = connected.user_ns["wide"]
    assert api_requests(sandbox)
    sandbox.clear()
    _, out = run(connected, WIDE)
    assert sandbox.requests == []
    assert re.search(r"Cached result from (just now|\d+ s ago) \(.* UTC, job cortexnb-", out)
    assert "no request sent" in out
    pd.testing.assert_frame_equal(connected.user_ns["wide"], first)
    assert isinstance(connected.user_ns["wide"]["characteristics_of_app"][0], list)
    assert isinstance(connected.user_ns["wide"]["source_ip"][0], dict)


def test_the_same_query_laid_out_differently_is_a_hit(connected, sandbox):
    run(connected, "%%cortex --cache\nSELECT app, COUNT(*) AS n FROM firewall.traffic GROUP BY app")
    sandbox.clear()
    _, out = run(connected, "%%cortex --cache\nSELECT app,  COUNT(*) AS n\n  FROM firewall.traffic\nGROUP BY app")
    assert "Cached result" in out and sandbox.requests == []
    run(connected, "%%cortex --cache\nSELECT app, COUNT(*) AS n FROM firewall.traffic GROUP BY app LIMIT 3")
    assert api_requests(sandbox), "another query is not a hit"


def test_refresh_runs_the_query_again_and_replaces_the_entry(connected, sandbox, results_dir):
    sql = "SELECT COUNT(*) AS n FROM firewall.threat"
    run(connected, f"%%cortex --cache\n{sql}")
    [before] = ResultCache().entries()
    sandbox.clear()
    _, out = run(connected, f"%%cortex --refresh\n{sql}")
    assert api_requests(sandbox) and "Cached result" not in out
    [after] = ResultCache().entries()
    assert after.key == before.key and after.job_id != before.job_id
    assert {p.suffix for p in results_dir.iterdir()} == {".json", ".parquet"}


def test_keys_name_tenant_instance_and_sql_never_a_secret(connected, sandbox):
    run(connected, "%%cortex --cache -o a\nSELECT COUNT(*) AS n FROM firewall.url")
    tenant, instance = cache_scope(get_connection())
    assert instance == sandbox.instance_id and tenant == sandbox.url
    token_only = Credentials(access_token=sandbox.issue_access_token(), environ={})
    get_connection().connect(token_only, url=sandbox.url, instance_id=sandbox.instance_id)
    sandbox.clear()
    _, out = run(connected, "%%cortex --cache -o b\nSELECT COUNT(*) AS n FROM firewall.url")
    assert "Cached result" in out and sandbox.requests == [], "other credentials, same key"
    cache = ResultCache()
    plain = QueryOptions()
    assert cache.key("t", "i", "SELECT 1", plain) != cache.key("t", "other", "SELECT 1", plain)
    assert cache.key("t", "i", "SELECT 1", plain) != cache.key("other", "i", "SELECT 1", plain)
    everything = "".join(p.read_bytes().decode("latin-1") for p in cache.directory.iterdir())
    for secret in (DEMO_CLIENT_SECRET, DEMO_REFRESH_TOKEN, token_only.access_token):
        assert secret not in everything


def test_a_query_on_the_current_time_is_cached_only_when_asked(connected, sandbox):
    connected.run_line_magic("config", "CortexMagics.cache = True")
    _, out = run(connected, f"%%cortex\n{RECENT}")
    assert "Not cached: the query uses CURRENT_TIMESTAMP" in out and ResultCache().entries() == []
    sandbox.clear()
    _, out = run(connected, f"%%cortex --cache\n{RECENT}")
    assert api_requests(sandbox) and "uses CURRENT_TIMESTAMP: this is its result as of now" in out
    sandbox.clear()
    _, out = run(connected, f"%%cortex --cache\n{RECENT}")
    assert sandbox.requests == [] and "uses CURRENT_TIMESTAMP: this is its result as of then" in out


def test_the_config_option_caches_every_cell(connected, sandbox):
    connected.run_line_magic("config", "CortexMagics.cache = True")
    run(connected, "%%cortex\nSELECT COUNT(*) AS n FROM firewall.traffic")
    sandbox.clear()
    _, out = run(connected, "%%cortex -q\nSELECT COUNT(*) AS n FROM firewall.traffic")
    assert sandbox.requests == [] and out == ""  # -q: not even the age line


def test_cache_list_and_clear(connected, results_dir):
    run(connected, "%%cortex --cache\nSELECT COUNT(*) AS n FROM firewall.traffic")
    run(connected, "%%cortex --cache\nSELECT COUNT(*) AS n FROM firewall.threat")
    listed, _ = run(connected, "%cortex cache list")
    frame = listed.result
    assert len(frame) == 2 and set(frame["rows"]) == {1}
    assert any("firewall.threat" in sql for sql in frame["sql"]) and frame["age"][0] == "just now"
    _, out = run(connected, "%cortex cache clear")
    assert f"Removed 2 cached results from {results_dir}" in out
    assert len(run(connected, "%cortex cache list")[0].result) == 0


def test_cache_list_shows_an_empty_value_one_way(connected):
    """The current-time column is empty for most entries: <NA>, whatever the other entries."""
    run(connected, "%%cortex --cache\nSELECT COUNT(*) AS n FROM firewall.url")
    alone = run(connected, "%cortex cache list")[0].result
    run(connected, f"%%cortex --cache\n{RECENT}")
    mixed = run(connected, "%cortex cache list")[0].result
    for frame in (alone, mixed):
        empty = frame.loc[frame["sql"].str.contains("firewall.url"), "current_time"]
        assert empty.iloc[0] is pd.NA and str(frame["current_time"].dtype) == "string"
        assert "<NA>" in frame.to_string() and "None" not in frame.to_string()
        assert "NaN" not in frame.to_string()
    assert mixed["current_time"].dropna().tolist() == ["CURRENT_TIMESTAMP"]


def test_a_damaged_entry_is_a_miss(connected, sandbox, results_dir):
    run(connected, "%%cortex --cache\nSELECT COUNT(*) AS n FROM log.system")
    for path in results_dir.glob("*.parquet"):
        path.write_bytes(b"not parquet")
    sandbox.clear()
    _, out = run(connected, "%%cortex --cache -o n\nSELECT COUNT(*) AS n FROM log.system")
    assert api_requests(sandbox) and "Cached result" not in out and len(connected.user_ns["n"]) == 1


def test_raw_and_cache_do_not_go_together(connected):
    with capture_output():
        result = connected.run_cell("%%cortex --raw --cache\nSELECT 1 AS one FROM firewall.traffic")
    assert isinstance(result.error_in_exec, UsageError) and "--raw" in str(result.error_in_exec)


def test_the_cache_directory_follows_the_environment(tmp_path):
    assert cache_dir({CACHE_ENV: str(tmp_path / "x")}) == tmp_path / "x"
    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "cortex_nb" / "results"
    assert cache_dir({}) == Path.home() / ".cache" / "cortex_nb" / "results"


@pytest.mark.parametrize(("sql", "clock"), [
    ("SELECT * FROM t WHERE time_generated > TIMESTAMP_SUB(current_timestamp(), INTERVAL 1 HOUR)",
     "CURRENT_TIMESTAMP"),
    ("SELECT CURRENT_DATE AS today", "CURRENT_DATE"),
    ("SELECT * FROM t WHERE app = 'CURRENT_TIMESTAMP'", None),
    ("SELECT now_playing FROM t", None),
])
def test_queries_on_the_current_time_are_recognised(sql, clock):
    assert current_time_function(sql) == clock


def test_ages_read_naturally():
    assert [age_text(s) for s in (0.2, 42, 720, 3 * 3600, 86400, 2 * 86400)] == [
        "just now", "42 s ago", "12 min ago", "3 h ago", "1 day ago", "2 days ago"]
