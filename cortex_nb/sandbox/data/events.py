"""Logs apart from user traffic: system events, configuration changes, SCTP and tunnels.

They are small (a few per hundred traffic sessions). The configuration log carries one part of
the story: an administrator blocks the scanner soon after the scan ends.
"""

from __future__ import annotations

import numpy as np

from cortex_nb.sandbox.data import world
from cortex_nb.sandbox.data.columns import TableData, const_enum, enum, ip, lit, lookup, ts
from cortex_nb.sandbox.data.flows import (
    ACTIONS,
    END_REASONS,
    SEVERITIES,
    device_columns,
    record_columns,
)
from cortex_nb.sandbox.data.world import US, ip_int

MINUTE = 60 * US
_SEVERITY = {s[1].lower(): code for code, s in enumerate(SEVERITIES)}


def _severity_columns(code: str) -> dict[str, str]:
    """``severity`` (a name) and ``vendor_severity`` (an enumeration) from a severity code."""
    return {
        "severity": lookup(code, [s[1].lower() for s in SEVERITIES]),
        "vendor_severity": enum(code, SEVERITIES),
    }


# ---- log.system ----------------------------------------------------------------------------

SYSTEM_SUB_TYPES = [(0, "general"), (1, "auth"), (2, "globalprotect"), (3, "ha")]
# sub-type, event id, severity, description
SYSTEM_EVENTS = [
    (0, "general", "informational", "Configuration committed by admin"),
    (1, "auth-success", "informational", "Administrator login succeeded"),
    (1, "auth-fail", "medium", "Administrator login failed: invalid password"),
    (2, "globalprotectgateway-auth-succ", "informational", "GlobalProtect user authenticated"),
    (3, "ha-link-change", "high", "HA link state changed"),
    (0, "content-update", "informational", "Content update installed"),
]
ADMINS = ["admin", "netops", "root", "secops"]


def system_table(ctx) -> TableData:
    """``log.system``: firewall system events (logins, commits, updates, HA)."""
    rng, n = ctx.rng("log.system"), max(50, ctx.rows // 50)
    cols = {
        "t_us": world.times(rng, n, ctx.anchor_us),
        "event": rng.choice(len(SYSTEM_EVENTS), n),
        "firewall": rng.integers(0, len(world.FIREWALLS), n),
        "log_delay_us": rng.integers(US, 5 * US, n),
        "admin": rng.integers(0, len(ADMINS), n),
    }
    cols["sub"] = np.array([e[0] for e in SYSTEM_EVENTS])[cols["event"]]
    cols["level"] = np.array([_SEVERITY[e[2]] for e in SYSTEM_EVENTS])[cols["event"]]
    stored = {
        **record_columns("log.system", enum("sub", SYSTEM_SUB_TYPES)),
        "event_time": ts("t_us"),
        "event_id": lookup("event", [e[1] for e in SYSTEM_EVENTS]),
        "event_name": enum("event", list(enumerate(e[1] for e in SYSTEM_EVENTS))),
        "event_description": lookup("event", [e[3] for e in SYSTEM_EVENTS]),
        "admin_user": f"CASE WHEN event IN (1, 2) THEN {lookup('admin', ADMINS)} END",
        **_severity_columns("level"),
    }
    return TableData(cols, stored, {"time_generated_high_res": "event_time"})


# ---- log.config ----------------------------------------------------------------------------

COMMANDS = [(1, "set"), (2, "edit"), (3, "delete"), (4, "move"), (5, "commit"), (6, "rename")]
SET, COMMIT = 0, 4
CLIENTS = [(1, "web"), (2, "cli"), (3, "api")]
RESULTS = [(0, "Succeeded"), (1, "Failed")]
RULEBASE = "/config/devices/entry/vsys/entry[@name='vsys1']/rulebase/security/rules/entry"
ADDRESSES = "/config/shared/address/entry"
PATHS = [
    f"{RULEBASE}[@name='allow-outbound-web']",
    f"{RULEBASE}[@name='allow-internal']",
    f"{RULEBASE}[@name='inbound-dmz-web']",
    f"{ADDRESSES}[@name='dmz-web-01']",
    "/config/shared/profiles/url-filtering/entry[@name='corp-url']",
    "/config/devices/entry/network/interface/ethernet/entry[@name='ethernet1/3']",
    "",
    f"{ADDRESSES}[@name='quarantine-{world.SCANNER_IP}']",
    f"{RULEBASE}[@name='block-scanner']",
]
_STORY_PATHS = [7, 8, 6]
ADMIN_WORKSTATIONS = ["10.1.0.20", "10.1.0.21", "10.1.0.22"]


def config_table(ctx) -> TableData:
    """``log.config``: administrators' changes, among them blocking the scanner after the scan."""
    rng, n = ctx.rng("log.config"), max(20, ctx.rows // 300)
    command = rng.choice(len(COMMANDS), n, p=[0.35, 0.3, 0.1, 0.05, 0.15, 0.05])
    path = np.where(command == COMMIT, 6, rng.integers(0, 6, n))
    _, end = world.scan_window(ctx.anchor_us)
    story_t = end + np.array([50, 52, 53]) * MINUTE  # netops blocks the scanner
    cols = {
        "t_us": np.concatenate([world.times(rng, n, ctx.anchor_us), story_t]),
        "command": np.concatenate([command, [SET, SET, COMMIT]]),
        "path": np.concatenate([path, _STORY_PATHS]),
        "admin": np.concatenate([rng.integers(0, len(ADMINS), n), [1, 1, 1]]),
        "client": np.concatenate([rng.choice(3, n, p=[0.6, 0.3, 0.1]), [0, 0, 0]]),
        "failed": np.concatenate([(rng.random(n) < 0.05).astype(int), [0, 0, 0]]),
        "firewall": np.concatenate([rng.integers(0, len(world.FIREWALLS), n), [0, 0, 0]]),
    }
    cols["log_delay_us"] = rng.integers(US, 5 * US, len(cols["t_us"]))
    workstations = [ip_int(a) for a in ADMIN_WORKSTATIONS]
    stored = {
        "event_time": ts("t_us"),
        "log_time": ts("t_us + log_delay_us"),
        "log_type": const_enum(world.LOG_TYPES["log.config"]),
        "sub_type": const_enum((0, "config")),
        **device_columns("firewall"),
        "admin_user": lookup("admin", ADMINS),
        "client": enum("client", CLIENTS),
        "event_name": enum("command", COMMANDS),
        "event_path": f"nullif({lookup('path', PATHS)}, '')",
        "event_result": enum("failed", RESULTS),
        "event_client_ip": ip(lookup("admin % 3", workstations)),
        "event_description": lookup("command", [f"{c[1]} by administrator" for c in COMMANDS]),
        "event_detail": f"CASE WHEN command = {SET} AND path = 7 THEN "
        f"'ip-netmask: {world.SCANNER_IP}/32' END",
    }
    derived = {
        "admin_user_info": "{'name': admin_user, 'domain': 'local', "
        "'uuid': hash(admin_user) % 1000}",
        "severity": lit("informational"),
        "vendor_severity": const_enum(SEVERITIES[0]),
        "time_generated_high_res": "event_time",
    }
    return TableData(cols, stored, derived)


# ---- SCTP and tunnels ----------------------------------------------------------------------

SCTP_APPS = [("diameter", 3868, 46), ("m3ua", 2905, 3)]  # name, port, payload protocol id
SCTP_EVENTS = [(1, "association-up"), (2, "data-chunk"), (3, "association-down")]
SCTP_END_REASONS = [(1, "abort"), (2, "shutdown")]


def sctp_table(ctx) -> TableData:
    """``firewall.sctp``: mobile-core signalling (Diameter, M3UA) between four peers."""
    rng, n = ctx.rng("firewall.sctp"), max(20, ctx.rows // 150)
    app = rng.integers(0, len(SCTP_APPS), n)
    event = rng.choice(3, n, p=[0.1, 0.8, 0.1])
    cols = {
        "t_us": world.times(rng, n, ctx.anchor_us),
        "log_delay_us": rng.integers(US, 5 * US, n),
        "firewall": np.zeros(n, int),
        "src": ip_int("10.20.0.10") + rng.integers(0, 2, n),
        "dst": ip_int("10.20.1.20") + rng.integers(0, 2, n),
        "app": app,
        "port": np.array([a[1] for a in SCTP_APPS])[app],
        "event": event,
        "end_reason": np.where(event == 2, rng.integers(0, 2, n), -1),
        "session_id": 700_000 + np.arange(n) * 2,
        "chunks": rng.integers(1, 40, n),
        "stream": rng.integers(0, 16, n),
        "vtag": rng.integers(1, 2**31, n),
    }
    stored = {
        **record_columns("firewall.sctp", enum("(event = 1)::INTEGER", [(1, "sctp-event"),
                                                                      (2, "sctp-chunk")])),
        "source_ip": ip("src"),
        "dest_ip": ip("dst"),
        "source_port": "port",
        "dest_port": "port",
        "app": lookup("app", [a[0] for a in SCTP_APPS]),
        "payload_protocol_id": lookup("app", [a[2] for a in SCTP_APPS]),
        "diam_app_id": "CASE WHEN app = 0 THEN 16777251 END",
        "diam_cmd_code": "CASE WHEN app = 0 THEN 316 END",
        "event_type": enum("event", SCTP_EVENTS),
        "association_end_reason": enum("end_reason", SCTP_END_REASONS),
        "session_id": "session_id",
        "chunks_sent": "chunks",
        "chunks_received": "chunks",
        "sctp_chunk_type": "CASE WHEN event = 1 THEN 0 END",
        "stream_id": "stream",
        "verification_tag_1": "vtag",
        "verification_tag_2": "vtag // 3",
    }
    derived = {
        "protocol": const_enum((132, "sctp")),
        "action": const_enum(ACTIONS[0]),
        "rule_matched": lit("allow-signalling"),
        "from_zone": lit("signalling"),
        "to_zone": lit("core"),
        "chunks_total": "chunks_sent + chunks_received",
        "severity": lit("informational"),
    }
    return TableData(cols, stored, derived)


TUNNELS = [(2, "IPSec"), (3, "GRE")]
# per tunnel kind: app, sub-category, protocol, port, addresses
TUNNEL_KINDS = [
    ("ipsec-esp-udp", "encrypted-tunnel", (17, "udp"), 4500, "203.0.113.1", "198.51.100.200"),
    ("gre", "ip-protocol", (47, "gre"), 0, "10.255.0.1", "10.255.0.2"),
]


def tunnel_table(ctx) -> TableData:
    """``firewall.tunnel``: the branch's IPSec tunnel and a GRE link, start and end records."""
    rng, n = ctx.rng("firewall.tunnel"), max(20, ctx.rows // 150)
    kind = rng.choice(2, n, p=[0.7, 0.3])
    ended = rng.random(n) < 0.5
    k = TUNNEL_KINDS
    cols = {
        "t_us": world.times(rng, n, ctx.anchor_us),
        "log_delay_us": rng.integers(US, 5 * US, n),
        "firewall": np.full(n, 2),
        "kind": kind,
        "ended": ended.astype(int),
        "src": np.array([ip_int(t[4]) for t in k])[kind],
        "dst": np.array([ip_int(t[5]) for t in k])[kind],
        "session_id": 800_000 + np.arange(n) * 2,
        "bytes_sent": np.where(ended, rng.lognormal(12, 1.5, n).astype(np.int64), 0),
        "bytes_received": np.where(ended, rng.lognormal(12, 1.5, n).astype(np.int64), 0),
        "elapsed": np.where(ended, rng.integers(60, 86400, n), 0),
    }
    stored = {
        **record_columns("firewall.tunnel", enum("ended", [(0, "start"), (1, "end")])),
        "source_ip": ip("src"),
        "dest_ip": ip("dst"),
        "source_port": lookup("kind", [t[3] for t in k]),
        "dest_port": lookup("kind", [t[3] for t in k]),
        "protocol": enum("kind", [t[2] for t in k]),
        "app": lookup("kind", [t[0] for t in k]),
        "app_sub_category": lookup("kind", [t[1] for t in k]),
        "tunnel": enum("kind", TUNNELS),
        "session_id": "session_id",
        "bytes_sent": "bytes_sent",
        "bytes_received": "bytes_received",
        "packets_sent": "bytes_sent // 800",
        "packets_received": "bytes_received // 800",
        "session_start_time": ts("t_us - elapsed * 1000000"),
        "total_time_elapsed": "elapsed",
        "session_end_reason": f"CASE WHEN ended = 1 THEN {const_enum(END_REASONS[1])} END",
        "tunnel_sessions_created": "CASE WHEN ended = 0 THEN 1 ELSE 0 END",
        "tunnel_sessions_closed": "ended",
    }
    derived = {
        "app_category": lit("networking"),
        "action": const_enum(ACTIONS[0]),
        "rule_matched": lit("allow-site-to-site"),
        "tunnel_inspection_rule": lit("inspect-site-to-site"),
        "from_zone": lit("untrust"),
        "to_zone": lit("untrust"),
        "bytes_total": "bytes_sent + bytes_received",
        "packets_total": "packets_sent + packets_received",
        "severity": lit("informational"),
    }
    return TableData(cols, stored, derived)
