"""Deterministic synthetic firewall logs for the sandbox, loaded into DuckDB.

Tables (DuckDB schema.table, the csql name without the instance id):

- ``firewall.traffic``: ``rows`` sessions, the core traffic columns of CORTEX_API.md and a few more
  (``characteristics_of_app``, ``action_flags``, ``is_*`` flags, interfaces).
- ``firewall.threat``: about 3 % of ``rows``, every row tied to a traffic session (same
  ``session_id``, addresses, ports, app and time).
- ``firewall.url``: about 25 % of ``rows``, one per web session sampled from traffic.
- ``log.system``: about 2 % of ``rows`` (at least 50), firewall system events.

Values are stored with real DuckDB types: timestamps as ``TIMESTAMP`` (UTC), IP addresses as
``STRUCT(value, hex)``, enumerations as ``STRUCT(id, value)``, arrays as ``VARCHAR[]``. The engine
serialises them the way the service does (microsecond integers, nested objects, nulls omitted).

Time: every timestamp lies in the ``SPAN_DAYS`` days before ``anchor`` (an epoch in seconds; the
sandbox uses the start of the current UTC hour), so ``TIMESTAMP_SUB(CURRENT_TIMESTAMP, INTERVAL 1
DAY)`` finds data. For a given ``seed`` and ``anchor`` the data is identical on every run; with
another anchor only the timestamps shift.

The story, findable by SQL:

- ``SCANNER_IP`` (10.1.7.23) probes many internal hosts and ports between 20 and 18 hours before
  the anchor; most attempts are denied or reset, and ``firewall.threat`` has "TCP Port Scan"
  entries for some of them.
- ``BEACON_IP`` (10.1.12.45) connects to ``C2_IP`` (198.51.100.77, ``C2_DOMAIN``) on port 443 every
  ``BEACON_INTERVAL_S`` seconds (a few seconds of jitter) with nearly constant small byte counts;
  its URL logs name the domain, and a few of its sessions raised a spyware threat.
- Inbound exploit attempts against the DMZ web server and malware downloads are threats whose
  ``session_id`` joins back to the traffic session.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

SPAN_DAYS = 7
SCANNER_IP = "10.1.7.23"
BEACON_IP = "10.1.12.45"
C2_IP = "198.51.100.77"
C2_DOMAIN = "updates.cdn-telemetry.example"
DMZ_WEB_IP = "172.16.5.10"
BEACON_INTERVAL_S = 300
CUSTOMER_ID = "117000001"
TABLES = ("firewall.traffic", "firewall.threat", "firewall.url", "log.system")

_US = 1_000_000
_FIREWALLS = [
    ("007951000012345", "fw-hq-01"),
    ("007951000012346", "fw-hq-02"),
    ("007951000098765", "fw-branch-01"),
]
# app, category, sub-category, dest port, protocol index, characteristics, weight
_APPS = [
    ("ssl", "networking", "encrypted-tunnel", 443, 0, ["used-by-malware", "evasive"], 30),
    ("web-browsing", "general-internet", "internet-utility", 80, 0, ["used-by-malware"], 14),
    ("dns", "networking", "infrastructure", 53, 1, ["tunnel-other-application"], 16),
    ("ms-office365-base", "business-systems", "office-programs", 443, 0, ["saas"], 9),
    ("google-base", "general-internet", "internet-utility", 443, 0, ["saas"], 7),
    ("youtube-base", "media", "photo-video", 443, 0, ["bandwidth-hog"], 5),
    ("slack-base", "collaboration", "instant-messaging", 443, 0, ["saas"], 4),
    ("ntp", "networking", "infrastructure", 123, 1, [], 3),
    ("ssh", "networking", "encrypted-tunnel", 22, 0, ["evasive", "tunnel-other-application"], 2),
    ("ms-rdp", "networking", "remote-access", 3389, 0, ["has-known-vulnerability"], 2),
    ("ms-ds-smb", "business-systems", "storage-backup", 445, 0, ["has-known-vulnerability"], 3),
    ("ldap", "business-systems", "auth-service", 389, 0, [], 2),
    ("ping", "networking", "ip-protocol", 0, 2, [], 2),
    ("incomplete", "unknown", "unknown", 443, 0, [], 1),
]
_WEB_APPS = {"ssl", "web-browsing", "ms-office365-base", "google-base", "youtube-base"}
_PROTOCOLS = [(6, "tcp"), (17, "udp"), (1, "icmp")]
_ACTIONS = [
    (0, "allow"),
    (1, "deny"),
    (2, "drop"),
    (3, "reset-both"),
    (4, "reset-client"),
    (5, "reset-server"),
]
_END_REASONS = [
    (1, "tcp-fin"),
    (2, "aged-out"),
    (3, "tcp-rst-from-client"),
    (4, "tcp-rst-from-server"),
    (5, "policy-deny"),
    (6, "threat"),
]
_URL_CATEGORIES = [
    (1, "business-and-economy"),
    (2, "computer-and-internet-info"),
    (3, "search-engines"),
    (4, "streaming-media"),
    (5, "social-networking"),
    (6, "news"),
    (7, "newly-registered-domain"),
    (8, "unknown"),
    (9, "private-ip-addresses"),
]
_SUB_TYPES = [(0, "end"), (1, "deny"), (2, "drop")]
_ZONES = ["trust", "untrust", "dmz"]
_USERS = [
    "acme\\alice",
    "acme\\bob",
    "acme\\carol",
    "acme\\dave",
    "acme\\erin",
    "acme\\frank",
    "acme\\grace",
    "acme\\heidi",
    "acme\\ivan",
    "acme\\judy",
    "acme\\mallory",
    "acme\\oscar",
    "acme\\peggy",
    "acme\\trent",
    "acme\\victor",
    "acme\\walter",
    "acme\\jsmith",
    "acme\\svc-backup",
]
_RULES = [
    "allow-outbound-web",
    "allow-dns-ntp",
    "allow-internal",
    "inbound-dmz-web",
    "deny-all",
    "block-known-bad",
]
_SITES = [
    "login.microsoftonline.com",
    "outlook.office365.com",
    "www.google.com",
    "www.youtube.com",
    "slack.com",
    "github.com",
    "news.example.com",
    "intranet.acme.example",
    "cdn.jsdelivr.net",
    "api.stripe.com",
    "docs.python.org",
    "en.wikipedia.org",
]
_SITE_CATEGORY = [1, 1, 3, 4, 5, 2, 6, 9, 2, 1, 2, 2]
_USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) Safari/605.1.15",
    "Microsoft Office/16.0",
    "curl/8.5.0",
]


@dataclass
class Traffic:
    """Traffic sessions as numpy columns (codes index the lookup lists above)."""

    cols: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.cols["t_us"])

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """The columns of the sessions at ``index``."""
        return {name: values[index] for name, values in self.cols.items()}


def ip_int(text: str) -> int:
    """An IPv4 address as an integer."""
    return int(ipaddress.IPv4Address(text))


def build(con, rows: int, seed: int, anchor: int) -> dict[str, int]:
    """Create and fill every table in DuckDB connection ``con``; return rows per table."""
    rng = np.random.default_rng(seed)
    traffic = _traffic(rng, rows, anchor * _US)
    threat = _threats(rng, traffic)
    url = _urls(rng, traffic)
    system = _system(rng, max(50, rows // 50), anchor * _US)
    for schema in ("firewall", "log"):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    _load(con, "firewall.traffic", traffic.cols, _traffic_select())
    threat_sub_type = _enum(
        "kind", [(1, "scan"), (2, "spyware"), (3, "vulnerability"), (4, "file")]
    )
    _load(
        con,
        "firewall.threat",
        threat,
        _traffic_select("{'id': 1, 'value': 'threat'}", threat_sub_type) + _threat_select(),
    )
    url_type = "{'id': 2, 'value': 'url'}"
    _load(con, "firewall.url", url, _traffic_select(url_type, url_type) + _url_select())
    _load(con, "log.system", system, _system_select())
    count = "SELECT count(*) FROM {}"
    return {name: con.execute(count.format(name)).fetchone()[0] for name in TABLES}


def _load(con, table: str, cols: dict[str, np.ndarray], select: list[str]) -> None:
    import pandas as pd

    order = np.argsort(cols["t_us"], kind="stable")
    frame = pd.DataFrame({name: values[order] for name, values in cols.items()})
    con.register("raw_frame", frame)
    try:
        con.execute(f"CREATE TABLE {table} AS SELECT {', '.join(select)} FROM raw_frame")  # noqa: S608
    finally:
        con.unregister("raw_frame")


# ---- generation (numpy) -------------------------------------------------------------------


def _times(rng: np.random.Generator, n: int, anchor_us: int) -> np.ndarray:
    """Session end times over the last days, busier during working hours."""
    day = rng.integers(0, SPAN_DAYS, n)
    work = rng.random(n) < 0.7
    second = np.where(work, rng.integers(8 * 3600, 19 * 3600, n), rng.integers(0, 86400, n))
    start_of_today = anchor_us - anchor_us % (86400 * _US)
    t = start_of_today - day * 86400 * _US + second * _US + rng.integers(0, _US, n)
    # anything after the anchor wraps back one day so all data lies in the past
    return np.where(t > anchor_us, t - 86400 * _US, t)


def _internal_hosts(rng: np.random.Generator, n: int) -> np.ndarray:
    base = ip_int("10.1.0.0")
    return base + rng.integers(1, 30, n) * 256 + rng.integers(10, 250, n)


def _external_hosts(rng: np.random.Generator, n: int) -> np.ndarray:
    prefixes = np.array(
        [
            ip_int(p)
            for p in (
                "13.107.0.0",
                "52.96.0.0",
                "104.16.0.0",
                "142.250.0.0",
                "151.101.0.0",
                "172.217.0.0",
                "185.199.0.0",
                "20.190.0.0",
            )
        ]
    )
    return rng.choice(prefixes, n) + rng.integers(1, 4000, n)


def _traffic(rng: np.random.Generator, rows: int, anchor_us: int) -> Traffic:
    n_scan = max(20, rows // 50)
    n_beacon = int(min(max(24, rows // 100), SPAN_DAYS * 86400 // BEACON_INTERVAL_S))
    n_base = max(rows - n_scan - n_beacon, 0)
    parts = [
        _base_sessions(rng, n_base, anchor_us),
        _scan_sessions(rng, n_scan, anchor_us),
        _beacon_sessions(rng, n_beacon, anchor_us),
    ]
    cols = {name: np.concatenate([p[name] for p in parts])[:rows] for name in parts[0]}
    _finish_sessions(rng, cols)
    order = np.argsort(cols["t_us"], kind="stable")
    cols = {name: values[order] for name, values in cols.items()}
    cols["session_id"] = 100_000 + np.arange(len(order), dtype=np.int64) * 3
    return Traffic(cols)


def _base_sessions(rng: np.random.Generator, n: int, anchor_us: int) -> dict[str, np.ndarray]:
    weights = np.array([a[6] for a in _APPS], dtype=float)
    app = rng.choice(len(_APPS), n, p=weights / weights.sum())
    inbound = rng.random(n) < 0.06
    internal_dst = ~inbound & (rng.random(n) < 0.2)
    src = np.where(inbound, _external_hosts(rng, n), _internal_hosts(rng, n))
    dst = np.where(
        inbound,
        ip_int(DMZ_WEB_IP),
        np.where(internal_dst, _internal_hosts(rng, n), _external_hosts(rng, n)),
    )
    app = np.where(inbound, 0, app)
    denied = rng.random(n) < np.where(inbound, 0.25, 0.03)
    return {
        "t_us": _times(rng, n, anchor_us),
        "app": app,
        "src": src,
        "dst": dst,
        "dport": np.array([a[3] for a in _APPS])[app],
        "from_zone": np.where(inbound, 1, 0),
        "to_zone": np.where(inbound, 2, np.where(internal_dst, 0, 1)),
        "action": np.where(denied, rng.choice([1, 2, 3], n), 0),
        "rule": np.where(
            inbound, 3, np.where(internal_dst, 2, np.where(np.isin(app, [2, 7]), 1, 0))
        ),
        "bytes_sent": rng.lognormal(7.5, 1.6, n).astype(np.int64) + 60,
        "bytes_received": rng.lognormal(9.0, 2.0, n).astype(np.int64) + 60,
    }


def _scan_sessions(rng: np.random.Generator, n: int, anchor_us: int) -> dict[str, np.ndarray]:
    start = anchor_us - 20 * 3600 * _US
    ports = np.array(
        [
            21,
            22,
            23,
            25,
            53,
            80,
            110,
            135,
            139,
            143,
            443,
            445,
            1433,
            3306,
            3389,
            5432,
            5900,
            8080,
            8443,
        ]
    )
    dport = np.where(rng.random(n) < 0.5, rng.choice(ports, n), rng.integers(1, 1025, n))
    return {
        "t_us": np.sort(start + rng.integers(0, 2 * 3600 * _US, n)),
        "app": np.full(n, len(_APPS) - 1),
        "src": np.full(n, ip_int(SCANNER_IP)),
        "dst": _internal_hosts(rng, n),
        "dport": dport,
        "from_zone": np.zeros(n, int),
        "to_zone": np.zeros(n, int),
        "action": rng.choice([0, 1, 3, 3, 1, 2], n, p=[0.1, 0.3, 0.3, 0.1, 0.1, 0.1]),
        "rule": np.full(n, 4),
        "bytes_sent": rng.integers(60, 140, n),
        "bytes_received": rng.integers(0, 120, n),
    }


def _beacon_sessions(rng: np.random.Generator, n: int, anchor_us: int) -> dict[str, np.ndarray]:
    steps = np.arange(n, 0, -1, dtype=np.int64)
    jitter = rng.integers(-3 * _US, 3 * _US, n)
    return {
        "t_us": anchor_us - steps * BEACON_INTERVAL_S * _US + jitter,
        "app": np.zeros(n, int),
        "src": np.full(n, ip_int(BEACON_IP)),
        "dst": np.full(n, ip_int(C2_IP)),
        "dport": np.full(n, 443),
        "from_zone": np.zeros(n, int),
        "to_zone": np.ones(n, int),
        "action": np.zeros(n, int),
        "rule": np.zeros(n, int),
        "bytes_sent": rng.integers(510, 530, n),
        "bytes_received": rng.integers(1180, 1220, n),
    }


def _finish_sessions(rng: np.random.Generator, c: dict[str, np.ndarray]) -> None:
    """Derive the columns every kind of session shares (ports, NAT, packets, users...)."""
    n = len(c["t_us"])
    allowed = c["action"] == 0
    proto = np.array([a[4] for a in _APPS])[c["app"]]
    c["proto"] = proto
    c["sport"] = rng.integers(1024, 65535, n)
    outbound = c["to_zone"] == 1
    c["is_nat"] = outbound
    c["nat_src"] = np.where(outbound, ip_int("203.0.113.10") + rng.integers(0, 4, n), -1)
    c["nat_dst"] = np.where(outbound, c["dst"], -1)
    c["nat_sport"] = np.where(outbound, rng.integers(1024, 65535, n), 0)
    c["nat_dport"] = np.where(outbound, c["dport"], 0)
    c["bytes_received"] = np.where(allowed, c["bytes_received"], 0)
    c["packets_sent"] = np.maximum(1, c["bytes_sent"] // 700)
    c["packets_received"] = c["bytes_received"] // 900 + allowed
    c["elapsed"] = np.where(allowed, rng.integers(0, 120, n), 0)
    c["end_reason"] = np.where(allowed, np.where(proto == 1, 1, rng.choice([0, 0, 0, 2, 3], n)), 4)
    c["sub_type"] = np.where(allowed, 0, np.where(c["action"] == 2, 2, 1))
    user = rng.integers(0, len(_USERS) - 2, n)
    user = np.where(c["src"] == ip_int(BEACON_IP), len(_USERS) - 2, user)
    user = np.where(c["src"] == ip_int(SCANNER_IP), len(_USERS) - 1, user)
    c["user"] = np.where(c["from_zone"] == 0, user, -1)
    c["url_category"] = np.where(np.isin(c["app"], [1, 2, 4, 5, 6, 7]), rng.integers(0, 6, n), -1)
    c["url_category"] = np.where(c["dst"] == ip_int(C2_IP), 6, c["url_category"])
    c["firewall"] = np.where(c["src"] % 7 == 0, 2, rng.integers(0, 2, n))
    c["log_delay_us"] = rng.integers(1 * _US, 20 * _US, n)
    c["action_flags"] = np.where(rng.random(n) < 0.5, np.iinfo(np.int64).min, 0)
    c["is_decrypted"] = (c["app"] == 0) & (rng.random(n) < 0.3)


def _threats(rng: np.random.Generator, traffic: Traffic) -> dict[str, np.ndarray]:
    c = traffic.cols
    scan = np.flatnonzero(c["src"] == ip_int(SCANNER_IP))
    beacon = np.flatnonzero(c["dst"] == ip_int(C2_IP))
    inbound = np.flatnonzero(c["dst"] == ip_int(DMZ_WEB_IP))
    web = np.flatnonzero(
        np.isin(c["app"], [0, 1]) & (c["to_zone"] == 1) & (c["dst"] != ip_int(C2_IP))
    )
    picks = [
        (rng.choice(scan, max(1, len(scan) // 10), replace=False), 0),
        (rng.choice(beacon, max(3, len(beacon) // 20), replace=False), 1),
        (rng.choice(inbound, min(len(inbound), max(5, len(traffic) // 100)), replace=False), 2),
        (rng.choice(web, min(len(web), max(5, len(traffic) // 100)), replace=False), 3),
    ]
    index = np.concatenate([p[0] for p in picks])
    kind = np.concatenate([np.full(len(p[0]), p[1]) for p in picks])
    cols = traffic.take(index)
    cols["kind"] = kind
    cols["signature"] = np.where(kind == 2, rng.integers(0, 3, len(kind)), 0)
    cols["file_pick"] = rng.integers(0, 4, len(kind))
    cols["verdict"] = np.where(kind == 3, (rng.random(len(kind)) < 0.4).astype(int), -1)
    cols["pcap_id"] = np.where(kind == 2, 9000 + np.arange(len(kind)), 0)
    cols["log_delay_us"] = cols["log_delay_us"] + _US
    return cols


def _urls(rng: np.random.Generator, traffic: Traffic) -> dict[str, np.ndarray]:
    c = traffic.cols
    web = np.isin(c["app"], [0, 1, 3, 4, 5]) & (c["action"] == 0) & (c["from_zone"] == 0)
    index = np.flatnonzero(web)
    index = np.sort(rng.choice(index, min(len(index), max(10, len(traffic) // 4)), replace=False))
    cols = traffic.take(index)
    cols["site"] = np.where(
        cols["dst"] == ip_int(C2_IP), -1, rng.integers(0, len(_SITES), len(index))
    )
    cols["method"] = (rng.random(len(index)) < 0.15).astype(int)
    cols["agent"] = np.where(cols["dst"] == ip_int(C2_IP), 3, rng.integers(0, 3, len(index)))
    cols["path_id"] = rng.integers(0, 5000, len(index))
    return cols


def _system(rng: np.random.Generator, n: int, anchor_us: int) -> dict[str, np.ndarray]:
    return {
        "t_us": _times(rng, n, anchor_us),
        "event": rng.choice(len(_SYSTEM_EVENTS), n),
        "firewall": rng.integers(0, len(_FIREWALLS), n),
        "log_delay_us": rng.integers(_US, 5 * _US, n),
        "user": rng.integers(0, 4, n),
    }


_SYSTEM_EVENTS = [
    ("general", "general", "informational", "Configuration committed by admin"),
    ("auth", "auth-success", "informational", "Administrator login succeeded"),
    ("auth", "auth-fail", "medium", "Administrator login failed: invalid password"),
    (
        "globalprotect",
        "globalprotectgateway-auth-succ",
        "informational",
        "GlobalProtect user authenticated",
    ),
    ("ha", "ha-link-change", "high", "HA link state changed"),
    ("general", "content-update", "informational", "Content update installed"),
]


# ---- DuckDB projection (numpy codes -> typed, service-shaped columns) ---------------------


def _lit(values: list) -> str:
    """A DuckDB list literal."""
    return "[" + ", ".join(_quote(v) for v in values) + "]"


def _quote(value) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, list):
        return _lit(value) + ("::VARCHAR[]" if not value else "")
    return str(value)


def _lookup(code: str, values: list) -> str:
    """``values[code]`` in SQL, NULL for a negative code."""
    return f"CASE WHEN {code} >= 0 THEN {_lit(values)}[{code} + 1] END"


def _enum(code: str, pairs: list[tuple[int, str]]) -> str:
    """An ``{id, value}`` enumeration struct from a code column."""
    ids, names = [p[0] for p in pairs], [p[1] for p in pairs]
    return (
        f"CASE WHEN {code} >= 0 THEN {{'id': {_lit(ids)}[{code} + 1], "
        f"'value': {_lit(names)}[{code} + 1]}} END"
    )


def _ip(col: str) -> str:
    """A ``{value, hex}`` address struct (IPv4-mapped hex) from an integer column."""
    dotted = " || '.' || ".join(f"(({col} >> {s}) & 255)" for s in (24, 16, 8, 0))
    hexed = f"'00000000000000000000ffff' || lpad(lower(hex({col})), 8, '0')"
    return f"CASE WHEN {col} >= 0 THEN {{'value': {dotted}, 'hex': {hexed}}} END"


def _ts(expr: str) -> str:
    return f"make_timestamp(({expr})::BIGINT)"


def _interface(side: str, port: str) -> list[str]:
    name = f"'ethernet1/' || ({port})"
    return [
        f"{{'value': {name}, 'hex': (1138183110656 + ({port}))::BIGINT}} AS {side}_interface",
        f"{{'unit': 0, 'type': {{'id': 1, 'value': 'ethernet'}}, 'slot': 1, "
        f"'port': ({port})::INTEGER}} AS {side}_if_details",
    ]


def _traffic_select(
    log_type: str = "{'id': 0, 'value': 'traffic'}", sub_type: str = _enum("sub_type", _SUB_TYPES)
) -> list[str]:
    """Columns shared by traffic, threat and url logs (the session they belong to)."""
    apps = [a[0] for a in _APPS]
    return [
        f"{_ts('t_us')} AS time_generated",
        f"{_ts('t_us + log_delay_us')} AS log_time",
        f"{log_type} AS log_type",
        f"{sub_type} AS sub_type",
        f"{_ip('src')} AS source_ip",
        f"{_ip('dst')} AS dest_ip",
        f"{_ip('nat_src')} AS nat_source",
        f"{_ip('nat_dst')} AS nat_dest",
        "sport::INTEGER AS source_port",
        "dport::INTEGER AS dest_port",
        "nat_sport::INTEGER AS nat_source_port",
        "nat_dport::INTEGER AS nat_dest_port",
        f"{_enum('proto', _PROTOCOLS)} AS protocol",
        f"{_enum('action', _ACTIONS)} AS action",
        f"{_lookup('app', apps)} AS app",
        f"{_lookup('app', [a[1] for a in _APPS])} AS app_category",
        f"{_lookup('app', [a[2] for a in _APPS])} AS app_sub_category",
        f"{_lookup('app', [a[5] for a in _APPS])} AS characteristics_of_app",
        f"{_lookup('rule', _RULES)} AS rule_matched",
        f"{_lookup('from_zone', _ZONES)} AS from_zone",
        f"{_lookup('to_zone', _ZONES)} AS to_zone",
        f"{_lookup('user', _USERS)} AS source_user",
        "NULL::VARCHAR AS dest_user",
        "CASE WHEN from_zone = 1 THEN 'US' ELSE '10.0.0.0-10.255.255.255' END AS source_location",
        "CASE WHEN to_zone = 1 THEN 'US' ELSE '10.0.0.0-10.255.255.255' END AS dest_location",
        "bytes_sent::BIGINT AS bytes_sent",
        "bytes_received::BIGINT AS bytes_received",
        "(bytes_sent + bytes_received)::BIGINT AS bytes_total",
        "packets_sent::BIGINT AS packets_sent",
        "packets_received::BIGINT AS packets_received",
        "(packets_sent + packets_received)::BIGINT AS packets_total",
        "session_id::BIGINT AS session_id",
        f"{_ts('t_us - elapsed * 1000000')} AS session_start_time",
        "elapsed::BIGINT AS total_time_elapsed",
        f"{_enum('end_reason', _END_REASONS)} AS session_end_reason",
        f"{_enum('url_category', _URL_CATEGORIES)} AS url_category",
        f"{_lookup('firewall', [f[0] for f in _FIREWALLS])} AS log_source_id",
        f"{_lookup('firewall', [f[1] for f in _FIREWALLS])} AS log_source_name",
        "'vsys1' AS vsys",
        f"'{CUSTOMER_ID}' AS customer_id",
        "is_nat::BOOLEAN AS is_nat",
        "is_decrypted::BOOLEAN AS is_decrypted",
        "false AS is_packet_capture",
        "false AS is_proxy",
        "(from_zone = 1) AS is_inbound",
        "action_flags::BIGINT AS action_flags",
        *_interface("inbound", "from_zone + 1"),
        *_interface("outbound", "to_zone + 1"),
    ]


# threat kinds: 0 port scan, 1 C2 beacon, 2 inbound exploit, 3 file download
_THREAT_NAMES = [
    ["TCP Port Scan"],
    ["Generic C2 Beacon Traffic"],
    [
        "Apache Log4j Remote Code Execution Vulnerability",
        "Microsoft Exchange Server SSRF Vulnerability",
        "HTTP Directory Traversal Request Attempt",
    ],
    ["Windows Executable (EXE)"],
]
_THREAT_IDS = [[8001], [86001], [91991, 91368, 30844], [52020]]
_THREAT_CATEGORIES = [(1, "scan"), (2, "spyware"), (3, "code-execution"), (4, "file")]
_SEVERITIES = [(1, "Low"), (2, "High"), (3, "Critical"), (0, "Informational")]
_DIRECTIONS = [
    (0, "client-to-server"),
    (0, "client-to-server"),
    (0, "client-to-server"),
    (1, "server-to-client"),
]
_FILES = ["setup.exe", "invoice_0423.exe", "update.exe", "report.pdf"]


def _threat_select() -> list[str]:
    names = [n for group in _THREAT_NAMES for n in group]
    ids = [i for group in _THREAT_IDS for i in group]
    flat = "(CASE kind WHEN 0 THEN 0 WHEN 1 THEN 1 WHEN 2 THEN 2 + signature ELSE 5 END)"
    file_cond = "kind = 3"
    return [
        f"{_lookup(flat, ids)}::BIGINT AS threat_id",
        f"{_lookup(flat, names)} AS threat_name",
        f"{_enum('kind', _THREAT_CATEGORIES)} AS threat_category",
        f"{_enum('kind', _SEVERITIES)} AS vendor_severity",
        f"{_lookup('kind', [s[1] for s in _SEVERITIES])} AS severity",
        f"{{'id': {_lit([d[0] for d in _DIRECTIONS])}[kind + 1], "
        f"'value': {_lit([d[1] for d in _DIRECTIONS])}[kind + 1]}} AS direction_of_attack",
        f"CASE WHEN {file_cond} THEN {_lookup('file_pick', _FILES)} END AS file_name",
        f"CASE WHEN {file_cond} THEN sha256(session_id::VARCHAR) END AS file_sha_256",
        f"CASE WHEN {file_cond} THEN 'pe' END AS file_type",
        f"CASE WHEN kind = 1 THEN '{C2_DOMAIN}' END AS url_domain",
        f"{_enum('verdict', [(0, 'benign'), (1, 'malware')])} AS verdict",
        "CASE WHEN pcap_id > 0 THEN pcap_id::BIGINT END AS pcap_id",
        "'8801-8600' AS content_version",
    ]


def _url_select() -> list[str]:
    domain = f"CASE WHEN site < 0 THEN '{C2_DOMAIN}' ELSE {_lookup('site', _SITES)} END"
    return [
        f"{domain} AS url_domain",
        "'/' || CASE WHEN site < 0 THEN 'api/v2/check' ELSE 'p/' || path_id END AS uri",
        f"{_lit(['GET', 'POST'])}[method + 1] AS http_method",
        f"{_lookup('agent', _USER_AGENTS)} AS user_agent",
        "CASE WHEN agent = 0 THEN 'https://www.google.com/' END AS referer",
        "'text/html' AS content_type",
    ]


def _system_select() -> list[str]:
    ev = _SYSTEM_EVENTS
    return [
        f"{_ts('t_us')} AS event_time",
        f"{_ts('t_us')} AS time_generated",
        f"{_ts('t_us + log_delay_us')} AS log_time",
        "{'id': 4, 'value': 'system'} AS log_type",
        f"{{'id': event::INTEGER, 'value': {_lit([e[0] for e in ev])}[event + 1]}} AS sub_type",
        f"{_lookup('event', [e[1] for e in ev])} AS event_id",
        f"{_lookup('event', [e[2] for e in ev])} AS severity",
        f"{_lookup('event', [e[3] for e in ev])} AS event_description",
        f"CASE WHEN event IN (1, 2) THEN {_lookup('user', ['admin', 'netops', 'root', 'jsmith'])}"
        " END AS admin_user",
        f"{_lookup('firewall', [f[0] for f in _FIREWALLS])} AS log_source_id",
        f"{_lookup('firewall', [f[1] for f in _FIREWALLS])} AS log_source_name",
        f"'{CUSTOMER_ID}' AS customer_id",
        "'vsys1' AS vsys",
    ]
