"""The sandbox's log tables beyond traffic: the story told consistently across log types, values
that investigation queries filter on, sizes, and tables made on first use.

(``test_catalog`` checks that every table has exactly the catalog's columns and wire types;
``test_sandbox_data`` checks determinism and the traffic side of the story.)
"""

from __future__ import annotations

import duckdb
import pytest

from cortex_nb import catalog
from cortex_nb.sandbox import Sandbox
from cortex_nb.sandbox.data import logs, world
from tests.conftest import sandbox_client

ANCHOR = 1_767_225_600  # 2026-01-01T00:00:00Z
STORY = [(world.SCANNER_IP, world.SCANNER_USER), (world.BEACON_IP, world.BEACON_USER)]
# log types that say which user was at which address: (table, address column, user column)
WHO_WAS_WHERE = [
    ("firewall.userid", "source_ip", "user"),
    ("firewall.auth", "source_ip", "user"),
    ("firewall.dns_security", "source_ip", "source_user"),
    ("firewall.globalprotect", "private_ip", "source_user"),
    ("firewall.hipmatch", "source_ip", "source_user"),
]
# the application sub-categories of the vendor's application catalogue
SUB_CATEGORIES = [
    "auth-service", "database", "erp-crm", "general-business", "management", "office-programs",
    "software-update", "storage-backup", "email", "instant-messaging", "internet-conferencing",
    "social-business", "social-networking", "voip-video", "web-posting", "file-sharing",
    "internet-utility", "audio-streaming", "gaming", "photo-video", "encrypted-tunnel",
    "infrastructure", "ip-protocol", "proxy", "remote-access", "routing",
]  # fmt: skip


def distinct(api, sql: str) -> set:
    """The values of the only column of ``sql``'s rows."""
    return {next(iter(row.values())) for row in api.rows(sql)}


# ---- the story across log types -------------------------------------------------------------


@pytest.mark.parametrize(("host", "user"), STORY)
@pytest.mark.parametrize(("table", "address", "who"), WHO_WAS_WHERE)
def test_the_story_hosts_have_their_one_user_in_every_log(
    sandbox_api, table, address, who, host, user
):
    sql = f"SELECT DISTINCT {who} AS who FROM `{table}` WHERE {address}.value = '{host}'"
    assert distinct(sandbox_api, sql) == {user}


@pytest.mark.parametrize(("table", "address", "who"), WHO_WAS_WHERE)
def test_users_join_to_traffic_by_address(sandbox_api, table, address, who):
    sql = (
        f"SELECT COUNT(*) AS joined, COUNTIF(l.{who} != t.source_user) AS other_user, "
        f"COUNTIF(l.{address}.value IN ('{world.SCANNER_IP}', '{world.BEACON_IP}')) AS story "
        f"FROM `{table}` l JOIN `firewall.traffic` t ON l.{address}.value = t.source_ip.value"
    )
    (row,) = sandbox_api.rows(sql)
    assert row["joined"] > 0 and row["story"] > 0
    assert row["other_user"] == 0


def test_the_intruder_logged_in_before_the_scan_and_out_after_it(sandbox_api):
    scan = sandbox_api.rows(
        "SELECT MIN(time_generated) AS first, MAX(time_generated) AS last FROM `firewall.traffic` "
        f"WHERE source_ip.value = '{world.SCANNER_IP}'"
    )[0]
    vpn = sandbox_api.rows(
        "SELECT event_id.value AS event, status.value AS status, public_ip.value AS public, "
        "time_generated AS t FROM `firewall.globalprotect` "
        "WHERE source_user LIKE '%svc-backup' ORDER BY t"
    )
    events = [(r["event"], r["status"]) for r in vpn]
    assert events[:3] == [("portal-auth", "failure")] * 3
    assert ("gateway-connected", "success") in events and events[-1][0] == "gateway-logout"
    assert {r["public"] for r in vpn} == {world.ATTACKER_PUBLIC_IP}
    connected = next(r["t"] for r in vpn if r["event"] == "gateway-connected")
    assert connected < scan["first"] and vpn[-1]["t"] > scan["last"]


def test_the_scanner_failed_authentication_and_resolved_names_during_the_scan(sandbox_api):
    scanner = f"FROM `firewall.traffic` WHERE source_ip.value = '{world.SCANNER_IP}'"
    window = f"(SELECT MIN(time_generated) {scanner}) AND (SELECT MAX(time_generated) {scanner})"
    where = f"source_ip.value = '{world.SCANNER_IP}' AND time_generated BETWEEN {window}"
    auth = f"SELECT DISTINCT auth_event_name.value AS e FROM `firewall.auth` WHERE {where}"
    assert distinct(sandbox_api, auth) == {"auth-fail"}
    dns = f"SELECT DISTINCT record_type AS r FROM `firewall.dns_security` WHERE {where}"
    assert distinct(sandbox_api, dns) == {"PTR"}


def times_of(api, sql: str) -> list[int]:
    """The ``t`` column of ``sql``'s rows (microseconds), in order."""
    return [row["t"] for row in api.rows(sql)]


def test_the_beacon_resolves_its_domain_within_the_hour_before_each_call(sandbox_api):
    lookups = sandbox_api.rows(
        "SELECT time_generated AS t, fqdn, verdict.value AS verdict, dns_response "
        f"FROM `firewall.dns_security` WHERE source_ip.value = '{world.BEACON_IP}' ORDER BY t"
    )
    calls = times_of(
        sandbox_api,
        f"SELECT time_generated AS t FROM `firewall.traffic` WHERE dest_ip.value = '{world.C2_IP}'",
    )
    assert {(r["fqdn"], r["verdict"]) for r in lookups} == {(world.C2_DOMAIN, "command-and-control")}
    assert all(r["dns_response"] == [world.C2_IP] for r in lookups)
    looked_up = [r["t"] for r in lookups]
    hour = 3600 * world.US
    assert calls and all(any(0 < c - t <= hour for t in looked_up) for c in calls)
    assert len(lookups) <= len(calls) / 6  # cached for an hour, not asked before every call


def test_the_beacon_laptop_is_connected_to_the_vpn_at_every_call(sandbox_api):
    vpn = sandbox_api.rows(
        "SELECT time_generated AS t, event_id.value AS event FROM `firewall.globalprotect` "
        f"WHERE private_ip.value = '{world.BEACON_IP}' ORDER BY t"
    )
    calls = times_of(
        sandbox_api,
        f"SELECT time_generated AS t FROM `firewall.traffic` WHERE dest_ip.value = '{world.C2_IP}'",
    )
    last_event = [max((v for v in vpn if v["t"] <= call), key=lambda v: v["t"]) for call in calls]
    assert calls and {v["event"] for v in last_event} == {"gateway-connected"}


def test_the_scanner_was_quarantined_then_blocked_by_an_administrator(sandbox_api):
    tags = sandbox_api.rows(
        "SELECT event_id.value AS event FROM `firewall.iptag` "
        f"WHERE source_ip.value = '{world.SCANNER_IP}' AND tag_name = 'quarantine' "
        "ORDER BY time_generated"
    )
    assert [t["event"] for t in tags] == ["register", "unregister"]
    changes = sandbox_api.rows(
        "SELECT event_name.value AS command FROM `log.config` WHERE admin_user = 'netops' "
        f"AND (event_path LIKE '%{world.SCANNER_IP}%' OR event_detail LIKE '%{world.SCANNER_IP}%')"
    )
    assert changes and {c["command"] for c in changes} == {"set"}


# ---- values investigation queries filter on ---------------------------------------------------


def test_every_application_sub_category_appears(sandbox_api):
    sql = "SELECT DISTINCT app_sub_category AS s FROM `firewall.traffic`"
    assert set(SUB_CATEGORIES) <= distinct(sandbox_api, sql)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT DISTINCT app_category FROM `firewall.traffic`",
            {"business-systems", "collaboration", "general-internet", "media", "networking"},
        ),
        (
            "SELECT DISTINCT action.value FROM `firewall.traffic`",
            {"allow", "deny", "drop", "reset-both"},
        ),
        (
            "SELECT DISTINCT sub_type.value FROM `firewall.traffic`",
            {"end", "drop", "deny"},
        ),
        (
            "SELECT DISTINCT sub_type.value FROM `firewall.threat`",
            {"scan", "spyware", "vulnerability", "file", "virus", "wildfire"},
        ),
        (
            "SELECT DISTINCT vendor_severity.value FROM `firewall.threat`",
            {"Informational", "Low", "Medium", "High", "Critical"},
        ),
        (
            "SELECT DISTINCT verdict.value FROM `firewall.threat` WHERE verdict IS NOT NULL",
            {"benign", "malware", "grayware", "phishing"},
        ),
        (
            "SELECT DISTINCT url_category.value FROM `firewall.url`",
            {"malware", "phishing", "social-networking", "streaming-media", "search-engines"},
        ),
        (
            "SELECT DISTINCT verdict.value FROM `firewall.dns_security`",
            {"benign", "malware", "phishing", "command-and-control", "dynamic-dns"},
        ),
        (
            "SELECT DISTINCT http_method.value FROM `firewall.url`",
            {"get", "post"},
        ),
    ],
)
def test_common_filter_values_find_rows(sandbox_api, sql, expected):
    assert expected <= distinct(sandbox_api, sql)


def test_the_integrations_preset_queries_find_rows(sandbox_api):
    """The fixed queries of the public SOAR integration (social apps, critical threats)."""
    social = "SELECT * FROM `firewall.traffic` WHERE app_sub_category = \"social-networking\" LIMIT 5"
    critical = "SELECT * FROM `firewall.threat` WHERE severity = \"Critical\" LIMIT 5"
    assert len(sandbox_api.rows(social)) == len(sandbox_api.rows(critical)) == 5


# ---- sizes, and tables made on first use -----------------------------------------------------


def test_sizes_follow_rows_and_rare_log_types_stay_small():
    small = logs.build(duckdb.connect(), 1000, 1, ANCHOR)
    large = logs.build(duckdb.connect(), 8000, 1, ANCHOR)
    assert set(small) == set(catalog.table_names())
    for name in ("firewall.threat", "firewall.url", "firewall.dns_security", "firewall.userid"):
        assert 4 < large[name] / small[name] < 11, name  # the story's own records do not grow
    for name in ("firewall.sctp", "firewall.tunnel", "log.config", "firewall.hipmatch"):
        assert large[name] < 8000 // 50, name


def test_a_table_is_made_when_first_named_and_the_same_whatever_came_first():
    with Sandbox(rows=500, seed=3, anchor=ANCHOR) as sb, sandbox_client(sb) as api:
        assert set(sb.engine.logs.rows) == {"firewall.traffic"}
        first = api.rows("SELECT * FROM `firewall.userid` ORDER BY time_generated, source_ip.value")
        assert set(sb.engine.logs.rows) == {"firewall.traffic", "firewall.userid"}
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    logs.build(con, 500, 3, ANCHOR)
    again = con.execute(
        "SELECT epoch_us(time_generated), source_ip.value, user FROM firewall.userid "
        "ORDER BY time_generated, source_ip.value"
    ).fetchall()
    assert [(r["time_generated"], r["source_ip"]["value"], r["user"]) for r in first] == again


def test_the_user_column_is_a_column_where_a_log_type_has_one(sandbox_api):
    """`user` is a field of User-ID and authentication logs, not DuckDB's function of that name."""
    sql = f"SELECT DISTINCT user FROM `firewall.userid` WHERE source_ip.value = '{world.BEACON_IP}'"
    assert distinct(sandbox_api, sql) == {world.BEACON_USER}
    refused = sandbox_api.create("SELECT user FROM `firewall.traffic` LIMIT 1")
    assert refused.status_code == 400 and "DuckDB function" in refused.text
