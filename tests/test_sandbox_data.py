"""Sandbox data: determinism for a seed, table sizes, time window, and the story SQL can find."""

from __future__ import annotations

import duckdb
import pytest

from cortex_nb.sandbox.data import logs
from tests.conftest import SANDBOX_ROWS

ANCHOR = 1_767_225_600  # 2026-01-01T00:00:00Z


def build(rows: int, seed: int, anchor: int = ANCHOR) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    logs.build(con, rows, seed, anchor)
    return con


def snapshot(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple]:
    return con.execute(f"SELECT * FROM {table}").fetchall()


def test_same_seed_gives_identical_tables():
    a, b = build(500, seed=3), build(500, seed=3)
    for table in logs.TABLES:
        assert snapshot(a, table) == snapshot(b, table)


def test_another_seed_gives_other_data():
    assert snapshot(build(500, seed=3), "firewall.traffic") != snapshot(
        build(500, seed=4), "firewall.traffic"
    )


def test_another_anchor_only_shifts_the_timestamps():
    a, b = build(300, seed=3), build(300, seed=3, anchor=ANCHOR + 86400)
    sql = "SELECT epoch_us(time_generated), app, session_id FROM firewall.traffic"
    rows_a, rows_b = a.execute(sql).fetchall(), b.execute(sql).fetchall()
    assert [(t + 86_400_000_000, app, s) for t, app, s in rows_a] == rows_b


def test_table_sizes_follow_rows():
    counts = logs.build(duckdb.connect(), 2000, 1, ANCHOR)
    assert counts["firewall.traffic"] == 2000
    assert 20 <= counts["firewall.threat"] <= 200
    assert 300 <= counts["firewall.url"] <= 600
    assert counts["log.system"] >= 50


def test_every_row_lies_in_the_last_week_before_the_anchor():
    con = build(1000, seed=5)
    low, high = con.execute(
        "SELECT min(epoch(time_generated)), max(epoch(time_generated)) FROM firewall.traffic"
    ).fetchone()
    assert ANCHOR - logs.SPAN_DAYS * 86400 <= low < high <= ANCHOR


def test_last_day_queries_find_part_of_the_data(sandbox_api):
    sql = (
        f"SELECT COUNT(*) AS n FROM {sandbox_api.traffic} "
        "WHERE time_generated > TIMESTAMP_SUB(CURRENT_TIMESTAMP, INTERVAL 1 DAY)"
    )
    assert 0 < sandbox_api.rows(sql)[0]["n"] < SANDBOX_ROWS


def test_the_scanner_stands_out_by_distinct_ports_and_denials(sandbox_api):
    sql = (
        "SELECT source_ip.value AS src, COUNT(DISTINCT dest_port) AS ports, "
        "COUNT(DISTINCT dest_ip.value) AS hosts, "
        "COUNTIF(action.value != 'allow') / COUNT(*) AS refused "
        f"FROM {sandbox_api.traffic} GROUP BY src ORDER BY ports DESC LIMIT 2"
    )
    top, runner_up = sandbox_api.rows(sql)
    assert top["src"] == logs.SCANNER_IP
    assert top["ports"] > 5 * runner_up["ports"] and top["hosts"] > 20
    assert top["refused"] > 0.6


def test_the_beacon_has_a_regular_interval_to_one_destination(sandbox_api):
    sql = (
        "SELECT dest_ip.value AS dst, COUNT(*) AS n, "
        "STDDEV(bytes_sent) AS spread, "
        "(MAX(UNIX_SECONDS(time_generated)) - MIN(UNIX_SECONDS(time_generated))) / (COUNT(*) - 1) "
        "AS gap "
        f"FROM {sandbox_api.traffic} WHERE source_ip.value = '{logs.BEACON_IP}' "
        "GROUP BY dst ORDER BY n DESC LIMIT 1"
    )
    (beacon,) = sandbox_api.rows(sql)
    assert beacon["dst"] == logs.C2_IP and beacon["n"] >= 24
    assert abs(beacon["gap"] - logs.BEACON_INTERVAL_S) < 5
    assert beacon["spread"] < 10


def test_the_beacon_domain_is_in_the_url_logs(sandbox_api):
    sql = (
        "SELECT DISTINCT source_ip.value AS src FROM `firewall.url` "
        f"WHERE url_domain = '{logs.C2_DOMAIN}'"
    )
    assert sandbox_api.rows(sql) == [{"src": logs.BEACON_IP}]


def test_every_threat_joins_its_traffic_session(sandbox_api):
    sql = (
        "SELECT COUNT(*) AS threats, COUNT(f.session_id) AS joined, "
        "COUNTIF(f.source_ip.value = t.source_ip.value AND f.dest_ip.value = t.dest_ip.value) "
        "AS same_ips "
        "FROM `firewall.threat` t LEFT JOIN `firewall.traffic` f ON t.session_id = f.session_id"
    )
    (row,) = sandbox_api.rows(sql)
    assert row["threats"] == row["joined"] == row["same_ips"] > 0


@pytest.mark.parametrize(
    ("src", "category"),
    [(logs.SCANNER_IP, "scan"), (logs.BEACON_IP, "spyware")],
)
def test_the_story_hosts_raised_threats(sandbox_api, src, category):
    sql = (
        "SELECT DISTINCT threat_category.value AS category FROM `firewall.threat` "
        f"WHERE source_ip.value = '{src}'"
    )
    assert sandbox_api.rows(sql) == [{"category": category}]


def test_system_log_is_queryable_by_event_time(sandbox_api):
    sql = (
        "SELECT COUNT(*) AS n FROM `log.system` "
        "WHERE event_time > TIMESTAMP_SUB(CURRENT_TIMESTAMP, INTERVAL 7 DAY)"
    )
    assert sandbox_api.rows(sql)[0]["n"] > 0
