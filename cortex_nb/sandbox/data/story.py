"""Who was where: GlobalProtect, User-ID, authentication, HIP, IP tag, DNS and agent logs.

Remote access sessions (``remote_sessions``) are the spine: each one yields GlobalProtect
events, a User-ID mapping, HIP matches, an IP tag and (for managed laptops) agent events, all at
the same times and with the same user and addresses. The story hosts of ``world`` are two of
these sessions; ordinary staff add a few more. User-ID and authentication records for the office
come from traffic sessions (same host, same owner, a little earlier), and DNS Security records
from DNS sessions, plus the beacon's lookups of its domain and the scanner's reverse lookups.
"""

from __future__ import annotations

import numpy as np

from cortex_nb.sandbox.data import flows, world
from cortex_nb.sandbox.data.columns import (
    TableData,
    const_enum,
    enum,
    fitting,
    ip,
    lit,
    lookup,
    ts,
    user_info,
)
from cortex_nb.sandbox.data.flows import C2_SITE, SITES, TRUST, UDP, app_codes, record_columns
from cortex_nb.sandbox.data.world import US, ip_int

MINUTE = 60 * US
REGIONS = ["US", "DE", "RO"]
OS = [("Windows", "10.0.22631"), ("Mac", "14.4.1")]
AUTH_METHODS = ["SAML", "LDAP"]
CONNECT_METHODS = ["user-logon", "on-demand"]
STATUS = [(0, "success"), (1, "failure")]
BAD_PASSWORD = "Authentication failed: Invalid username or password"
GP_EVENTS = [(1, "portal-auth"), (2, "gateway-auth"), (3, "gateway-connected"),
             (4, "gateway-logout")]  # fmt: skip
PORTAL_AUTH, GATEWAY_AUTH, CONNECTED, LOGOUT = range(4)
STAGES = ["login", "login", "connected", "logout"]
_CONNECTED_S = "(logout_us - connect_us) // 1000000"  # SQL: seconds a session lasted


# ---- remote access sessions --------------------------------------------------------------


def remote_sessions(ctx) -> dict[str, np.ndarray]:
    """Every GlobalProtect session: the beacon laptop's daily ones, the intruder's, staff's."""
    parts = [_beacon_laptop(ctx), _intruder(ctx.anchor_us), _staff(ctx)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _session(n: int, **values) -> dict[str, np.ndarray]:
    """``n`` sessions: each value is a constant or an array of ``n``."""
    return {name: _column(n, value) for name, value in values.items()}


def _column(n: int, value) -> np.ndarray:
    """An integer column of ``n`` from a constant or an array of ``n``."""
    return np.broadcast_to(np.asarray(value, dtype=np.int64), (n,)).copy()


def _beacon_laptop(ctx) -> dict[str, np.ndarray]:
    """The beacon user's managed laptop: always on VPN, re-authenticating every morning.

    Reconnections fall between two calls of the beacon (which are ``BEACON_INTERVAL_S`` apart
    counting back from the anchor, a few seconds either way), and the first session begins
    before the first call, so the laptop is connected whenever it calls.
    """
    anchor_us, interval = ctx.anchor_us, world.BEACON_INTERVAL_S * US
    connect = world.day_starts(anchor_us) + (7 * 60 + 40) * MINUTE
    connect += 120 * US - (connect - anchor_us) % interval  # two minutes after a call
    first_call = anchor_us - flows.beacon_calls(ctx.rows) * interval
    if first_call < connect[0] + MINUTE:
        connect = np.insert(connect, 0, first_call - 10 * MINUTE)
    connect = connect[connect < anchor_us]
    logout = np.append(connect[1:] - 30 * US, -1)  # the last session is still connected
    user = world.USERS.index(world.BEACON_USER)
    return _session(
        len(connect), user=user, private=ip_int(world.BEACON_IP), public=_home(user), gateway=0,
        connect_us=connect, logout_us=logout, failures=0, managed=1, region=0, os=0, auth=0,
        method=0,
    )  # fmt: skip


def _intruder(anchor_us: int) -> dict[str, np.ndarray]:
    """The scanner: the service account's guessed password, from an unmanaged device abroad."""
    start, end = world.scan_window(anchor_us)
    return _session(
        1, user=world.USERS.index(world.SCANNER_USER), private=ip_int(world.SCANNER_IP),
        public=ip_int(world.ATTACKER_PUBLIC_IP), gateway=1, connect_us=start - 28 * MINUTE,
        logout_us=end + 10 * MINUTE, failures=3, managed=0, region=2, os=0, auth=1, method=1,
    )  # fmt: skip


def _staff(ctx) -> dict[str, np.ndarray]:
    """Ordinary staff working remotely now and then (addresses .50-.249 of the pools)."""
    rng, n = ctx.rng("remote-sessions"), max(6, ctx.rows // 400)
    gateway = rng.choice(2, n, p=[0.7, 0.3])
    pools = np.array([ip_int(pool) for _, pool in world.GATEWAYS])
    private = pools[gateway] + rng.integers(50, 250, n)
    connect = world.times(rng, n, ctx.anchor_us)
    logout = connect + rng.integers(60, 9 * 60, n) * MINUTE
    user = world.owner(private)
    return _session(
        n, user=user, private=private, public=_home(user), gateway=gateway, connect_us=connect,
        logout_us=np.where(logout < ctx.anchor_us, logout, -1),
        failures=(rng.random(n) < 0.1).astype(int), managed=1, region=gateway,
        os=rng.integers(0, 2, n), auth=0, method=1,
    )  # fmt: skip


def _home(user) -> np.ndarray:
    """The home address each user connects from."""
    return ip_int("192.0.2.100") + np.asarray(user)


def _events(s: dict[str, np.ndarray], offsets_us: dict[int, int], logout: int | None = None):
    """Events of each session: its session columns plus ``t_us`` and the ``event`` code.

    For each ``code: offset`` one event per session, at its connection plus the offset; with
    ``logout``, one event of that code for each session that ended, at its end.
    """
    every = np.arange(len(s["connect_us"]))
    picks = [(every, np.full(len(every), code), s["connect_us"] + off)
             for code, off in offsets_us.items()]  # fmt: skip
    if logout is not None:
        ended = every[s["logout_us"] >= 0]
        picks.append((ended, np.full(len(ended), logout), s["logout_us"][ended]))
    index = np.concatenate([p[0] for p in picks])
    cols = {name: values[index] for name, values in s.items()}
    cols["event"] = np.concatenate([p[1] for p in picks])
    cols["t_us"] = np.concatenate([p[2] for p in picks])
    return cols


def _failures(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The failed portal logins before each session (three minutes apart)."""
    index = np.repeat(np.arange(len(s["failures"])), s["failures"])
    nth = np.arange(len(index)) - np.repeat(np.cumsum(s["failures"]) - s["failures"], s["failures"])
    cols = {name: values[index] for name, values in s.items()}
    cols["t_us"] = cols["connect_us"] - 12 * MINUTE + nth * 3 * MINUTE
    cols["event"] = np.full(len(index), PORTAL_AUTH)
    return cols


def _merge(*parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keys = set.intersection(*(set(p) for p in parts))
    return {k: np.concatenate([p[k] for p in parts]) for k in sorted(keys)}


def _with_header(rng: np.random.Generator, cols: dict[str, np.ndarray]) -> dict:
    """Add the record header's raw columns: a write delay, and the gateway's firewall."""
    cols["log_delay_us"] = rng.integers(US, 10 * US, len(cols["t_us"]))
    cols["firewall"] = np.where(cols["gateway"] == 1, 2, 0)
    return cols


def _endpoint_columns() -> dict[str, str]:
    """Columns about the remote endpoint of a session (user, device, addresses, gateway)."""
    name = "split_part(" + lookup("user", world.USERS) + ", '\\', 2)"
    return {
        "source_user": lookup("user", world.USERS),
        "endpoint_device_name": f"CASE WHEN managed = 1 THEN 'LT-' || upper({name}) "
        "ELSE 'DESKTOP-7QK2M1R' END",
        "endpoint_os_type": lookup("os", [o[0] for o in OS]),
        "endpoint_os_version": lookup("os", [o[1] for o in OS]),
        "host_id": f"substr(sha256(CASE WHEN managed = 1 THEN {name} ELSE 'unmanaged' END), 1, 32)",
        "public_ip": ip("public"),
        "gateway": lookup("gateway", [g[0] for g in world.GATEWAYS]),
        "portal": lit(world.PORTAL),
        "source_region": lookup("region", REGIONS),
        "auth_method": lookup("auth", AUTH_METHODS),
        "connect_method": lookup("method", CONNECT_METHODS),
    }


# ---- GlobalProtect, HIP, agent -------------------------------------------------------------


def globalprotect_table(ctx) -> TableData:
    """``firewall.globalprotect``: logins (failed ones too), connections and logouts."""
    s = ctx.once(remote_sessions)
    offsets = {PORTAL_AUTH: -20 * US, GATEWAY_AUTH: -10 * US, CONNECTED: 0}
    cols = _merge(_failures(s), _events(s, offsets, LOGOUT))
    cols = _with_header(ctx.rng("firewall.globalprotect"), cols)
    cols["failed"] = (cols["t_us"] < cols["connect_us"] - MINUTE).astype(int)
    stored = fitting("firewall.globalprotect", _endpoint_columns()) | {
        **record_columns("firewall.globalprotect", const_enum((0, "globalprotect"))),
        "event_id": enum("event", GP_EVENTS),
        "status": enum("failed", STATUS),
        "stage": lookup("event", STAGES),
        "private_ip": f"CASE WHEN event >= {CONNECTED} THEN {ip('private')} END",
        "connection_error": f"CASE WHEN failed = 1 THEN {const_enum((1, BAD_PASSWORD))} END",
        "login_duration": f"CASE WHEN event = {LOGOUT} THEN {_CONNECTED_S} END",
        "tunnel": f"CASE WHEN event >= {CONNECTED} THEN "
        "CASE WHEN managed = 1 THEN 'IPSec' ELSE 'SSL' END END",
    }
    derived = {"source_user_info": user_info("source_user"), "gateway_selection_type": "'auto'"}
    return TableData(cols, stored, derived)


def hipmatch_table(ctx) -> TableData:
    """``firewall.hipmatch``: the HIP profile each connected endpoint matched (and an object)."""
    s = ctx.once(remote_sessions)
    cols = _events(s, {0: 3 * US, 1: 3 * US})
    keep = (cols["event"] == 0) | (cols["managed"] == 1)  # the unmanaged one matches no object
    cols = _with_header(ctx.rng("firewall.hipmatch"), {k: v[keep] for k, v in cols.items()})
    profile = "CASE WHEN managed = 1 THEN 'corp-managed-endpoint' ELSE 'unmanaged-endpoint' END"
    stored = fitting("firewall.hipmatch", _endpoint_columns()) | {
        **record_columns("firewall.hipmatch", const_enum((0, "hipmatch"))),
        "source_ip": ip("private"),
        "hip_match_name": f"CASE WHEN event = 0 THEN {profile} ELSE 'disk-encryption-on' END",
        "hip_match_type": f"CASE WHEN event = 0 THEN {const_enum((1, 'profile'))} "
        f"ELSE {const_enum((0, 'object'))} END",
    }
    return TableData(cols, stored, {"source_user_info": user_info("source_user")})


AGENT_EVENTS = [(1, "tunnel-connected"), (2, "hip-report-sent"), (3, "tunnel-disconnected")]


def agent_table(ctx) -> TableData:
    """``endpoint.agent``: the agent on managed laptops (the intruder's device has none)."""
    s = ctx.once(remote_sessions)
    managed = {k: v[s["managed"] == 1] for k, v in s.items()}
    cols = _with_header(ctx.rng("endpoint.agent"), _events(managed, {0: 2 * US, 1: 5 * US}, 2))
    stored = fitting("endpoint.agent", _endpoint_columns()) | {
        **record_columns("endpoint.agent", const_enum((0, "agent"))),
        "event_id": enum("event", AGENT_EVENTS),
        "private_ip": ip("private"),
        "login_duration": f"CASE WHEN event = 2 THEN {_CONNECTED_S} END",
    }
    derived = {
        "status": const_enum(STATUS[0]),
        "severity": const_enum((1, "informational")),
        "action": lit("allowed"),
        "tunnel": lit("IPSec"),
        "log_source": lit("agent"),
        "source_user_info": user_info("source_user"),
    }
    return TableData(cols, stored, derived)


# ---- User-ID, authentication, IP tags -----------------------------------------------------

MAPPING_SOURCES = [(1, "event-log"), (2, "globalprotect")]
MAPPING_SOURCE_TYPES = [(1, "AD"), (2, "GP")]


def _office_sessions(ctx, name: str, share: int) -> dict[str, np.ndarray]:
    """A sample (one in ``share``, at least 20) of sessions from staff hosts in the office."""
    c = ctx.traffic.cols
    staff = (c["from_zone"] == TRUST) & ~np.isin(c["src"], world.STORY_HOSTS)
    index = world.spread(ctx.rng(name), np.flatnonzero(staff), max(20, ctx.rows // share))
    return {"t_us": c["t_us"][index], "src": c["src"][index], "user": c["user"][index],
            "session_id": c["session_id"][index], "firewall": c["firewall"][index]}  # fmt: skip


def userid_table(ctx) -> TableData:
    """``firewall.userid``: who is at which address, from domain logons and GlobalProtect."""
    rng = ctx.rng("firewall.userid")
    office = _office_sessions(ctx, "userid-office", 40)
    n = len(office["t_us"])
    office |= {"t_us": office["t_us"] - rng.integers(1, 60, n) * MINUTE, "event": np.zeros(n, int),
               "source": np.zeros(n, int), "gateway": np.full(n, -1)}  # fmt: skip
    s = ctx.once(remote_sessions)
    remote = _events(s, {0: US}, 1)
    remote |= {"src": remote["private"], "source": np.ones(len(remote["t_us"]), int)}
    cols = _with_header(rng, _merge(office, remote))
    gateway = lookup("gateway", [g[0] for g in world.GATEWAYS])
    stored = {
        **record_columns("firewall.userid", enum("event", [(0, "login"), (1, "logout")])),
        "source_ip": ip("src"),
        "user": lookup("user", world.USERS),
        "event_id": lookup("event", ["login", "logout"]),
        "mapping_data_source": enum("source", MAPPING_SOURCES),
        "mapping_data_source_type": enum("source", MAPPING_SOURCE_TYPES),
        "mapping_data_source_name": f"CASE WHEN source = 0 THEN 'dc01.acme.example' "
        f"ELSE {gateway} END",
        "mapping_timeout": "CASE WHEN source = 0 THEN 2700 ELSE 0 END",
    }
    derived = {
        "authenticated_user_info": user_info("user"),
        "user_identified_by_source_as": "user",
        "user_group_found": "true",
        "is_duplicate_user": "false",
    }
    return TableData(cols, stored, derived)


CLIENTS = [(1, "Authentication Portal"), (2, "GlobalProtect")]
PROFILES = ["corp-mfa", "corp-saml", "corp-ldap"]
AUTH_EVENTS = [(0, "auth-success"), (1, "auth-fail")]


def auth_table(ctx) -> TableData:
    """``firewall.auth``: portal logins, the office's MFA prompts, the scanner's failed tries."""
    rng = ctx.rng("firewall.auth")
    s = ctx.once(remote_sessions)
    # GlobalProtect portal logins, from the home (or attacker's) address
    vpn = _merge(_failures(s), _events(s, {PORTAL_AUTH: -20 * US}))
    n = len(vpn["t_us"])
    vpn |= {
        "src": vpn["public"],
        "client": np.ones(n, int),
        "profile": np.where(vpn["auth"] == 1, 2, 1),  # the service account is not on SSO
        "session_id": np.full(n, -1),
        "ok": (vpn["t_us"] >= vpn["connect_us"] - MINUTE).astype(int),
        "firewall": np.where(vpn["gateway"] == 1, 2, 0),
    }
    cols = _merge(vpn, _portal_prompts(ctx, rng, s))
    cols["log_delay_us"] = rng.integers(US, 10 * US, len(cols["t_us"]))
    stored = {
        **record_columns("firewall.auth", const_enum((0, "auth"))),
        "source_ip": ip("src"),
        "user": lookup("user", world.USERS),
        "normalize_user": lookup("user", world.USERS),
        "auth_event_name": enum("1 - ok", AUTH_EVENTS),
        "client_type_name": enum("client", CLIENTS),
        "client_type": lookup("client", [c[0] for c in CLIENTS]),
        "auth_server_profile": lookup("profile", PROFILES),
        "auth_policy": "CASE WHEN client = 0 THEN 'mfa-internal-apps' END",
        "rule_matched": "CASE WHEN client = 0 THEN 'mfa-internal-apps' END",
        "auth_factor_num": "CASE WHEN client = 0 AND ok = 1 THEN 2 ELSE 1 END",
        "mfa_vendor": "CASE WHEN client = 0 THEN 'Okta' END",
        "object": f"CASE WHEN client = 0 THEN 'intranet.acme.example' ELSE {lit(world.PORTAL)} END",
        "auth_description": "CASE WHEN ok = 1 THEN 'authenticated' WHEN client = 0 "
        f"THEN 'MFA challenge failed' ELSE {lit(BAD_PASSWORD)} END",
        "user_agent": "CASE WHEN client = 0 THEN 'Mozilla/5.0 (Windows NT 10.0; Win64; x64)' "
        "ELSE 'PAN GlobalProtect/6.2.3' END",
        "session_id": "CASE WHEN session_id >= 0 THEN session_id END",
    }
    return TableData(cols, stored, {"authenticated_user_info": user_info("user")})


def _portal_prompts(ctx, rng: np.random.Generator, s: dict) -> dict[str, np.ndarray]:
    """Authentication Portal (MFA) prompts: the office's, the beacon user's, the scanner's."""
    office = _office_sessions(ctx, "auth-office", 60)
    n = len(office["t_us"])
    office |= {"t_us": office["t_us"] - 5 * US, "ok": (rng.random(n) < 0.9).astype(int)}
    laptop = s["private"] == ip_int(world.BEACON_IP)
    daily = {"t_us": s["connect_us"][laptop] + 10 * MINUTE, "src": s["private"][laptop],
             "user": s["user"][laptop], "ok": np.ones(laptop.sum(), int)}  # fmt: skip
    start, _ = world.scan_window(ctx.anchor_us)
    tries = 8
    scanner = {"t_us": start + np.sort(rng.integers(15, 45, tries)) * MINUTE,
               "src": np.full(tries, ip_int(world.SCANNER_IP)),
               "user": np.full(tries, world.USERS.index(world.SCANNER_USER)),
               "ok": np.zeros(tries, int)}  # fmt: skip
    for part in (daily, scanner):
        m = len(part["t_us"])
        part |= {"session_id": np.full(m, -1), "firewall": np.zeros(m, int)}
    prompts = _merge(office, daily, scanner)
    m = len(prompts["t_us"])
    return prompts | {"client": np.zeros(m, int), "profile": np.zeros(m, int)}


TAG_EVENTS = [(1, "register"), (2, "unregister")]
TAG_SOURCES = [(1, "xml-api"), (2, "auto-tag")]
TAGS = ["dmz-web-servers", "domain-controllers", "quarantine", "gp-users", "patch-pending"]


def iptag_table(ctx) -> TableData:
    """``firewall.iptag``: server tags, remote users' tags, patch reminders, the quarantine."""
    rng = ctx.rng("firewall.iptag")
    first = world.day_starts(ctx.anchor_us)[0] + 3600 * US
    servers = {"t_us": np.array([first, first + US]), "tag": np.array([0, 1]),
               "src": np.array([ip_int(world.DMZ_WEB_IP), ip_int(world.DOMAIN_CONTROLLER_IP)]),
               "event": np.zeros(2, int)}  # fmt: skip
    start, _ = world.scan_window(ctx.anchor_us)
    s = ctx.once(remote_sessions)
    remote = _events(s, {0: 2 * US}, 1)
    intruder = remote["private"] == ip_int(world.SCANNER_IP)
    tagged = [start + 10 * MINUTE, remote["t_us"][intruder].max() + 5 * MINUTE]  # until logout
    scanner = np.full(2, ip_int(world.SCANNER_IP))
    quarantine = {"t_us": np.array(tagged), "tag": np.array([2, 2]), "src": scanner,
                  "event": np.array([0, 1])}  # fmt: skip
    remote = {"t_us": remote["t_us"], "tag": np.full(len(remote["t_us"]), 3),
              "src": remote["private"], "event": remote["event"]}  # fmt: skip
    n = max(5, ctx.rows // 600)
    patch = {"t_us": world.times(rng, n, ctx.anchor_us), "tag": np.full(n, 4),
             "src": world.internal_hosts(rng, n), "event": np.zeros(n, int)}  # fmt: skip
    cols = _merge(servers, quarantine, remote, patch)
    m = len(cols["t_us"])
    cols |= {"log_delay_us": rng.integers(US, 5 * US, m), "firewall": np.zeros(m, int)}
    auto = "tag = 2 AND event = 0"
    stored = {
        **record_columns("firewall.iptag", const_enum((0, "iptag"))),
        "source_ip": ip("src"),
        "tag_name": lookup("tag", TAGS),
        "event_id": enum("event", TAG_EVENTS),
        "mapping_data_source_type": enum(f"CASE WHEN {auto} THEN 1 ELSE 0 END", TAG_SOURCES),
        "mapping_data_source_name": f"CASE WHEN {auto} THEN 'log-forwarding' ELSE 'panorama' END",
        "mapping_timeout": f"CASE WHEN {auto} THEN 3600 ELSE 0 END",
        "rule_matched": f"CASE WHEN {auto} THEN 'block-known-bad' END",
    }
    return TableData(cols, stored)


# ---- DNS Security --------------------------------------------------------------------------

DNS_VERDICTS = [
    (0, "benign"), (1, "malware"), (2, "grayware"), (4, "phishing"), (5, "command-and-control"),
    (6, "dynamic-dns"), (7, "newly-registered-domain"), (8, "proxy-avoidance-and-anonymizers"),
    (9, "parked"),
]  # fmt: skip
DNS_ACTIONS = [(0, "allow"), (1, "alert"), (2, "sinkhole"), (3, "block")]
RECORD_TYPES = ["A", "AAAA", "PTR", "TXT", "MX"]
_VERDICT = {v[1]: code for code, v in enumerate(DNS_VERDICTS)}
# what DNS Security does with each verdict: sinkhole the worst, alert on the doubtful
_ACTION = [0, 2, 1, 2, 2, 1, 1, 1, 1]
SITE_VERDICTS = np.array([_VERDICT.get(s[1], 0) for s in SITES])
SITE_ACTIONS = np.array(_ACTION)[SITE_VERDICTS]
# the beacon's domain is known command-and-control, but only alerted on: the calls go on
SITE_VERDICTS[C2_SITE], SITE_ACTIONS[C2_SITE] = _VERDICT["command-and-control"], 1


def dns_security_table(ctx) -> TableData:
    """``firewall.dns_security``: office lookups, the beacon's C2 domain, the scanner's PTRs."""
    rng = ctx.rng("firewall.dns_security")
    parts = [_office_lookups(ctx, rng), _beacon_lookups(ctx), _scanner_lookups(ctx, rng)]
    cols = _merge(*parts)
    m = len(cols["t_us"])
    cols |= {"log_delay_us": rng.integers(US, 5 * US, m), "elapsed": rng.integers(0, 3, m)}
    named = cols["site"] >= 0  # reverse lookups name no site
    cols["verdict"] = np.where(named, SITE_VERDICTS[cols["site"]], 0)
    cols["dns_action"] = np.where(named, SITE_ACTIONS[cols["site"]], 0)
    fqdn = (
        "CASE WHEN ptr >= 0 THEN (ptr & 255) || '.' || ((ptr >> 8) & 255) || '.' || "
        "((ptr >> 16) & 255) || '.' || ((ptr >> 24) & 255) || '.in-addr.arpa' "
        f"ELSE {lookup('site', [s[0] for s in SITES])} END"
    )
    answer = f"CASE WHEN site = {C2_SITE} THEN {lit(world.C2_IP)} ELSE "
    answer += "'104.18.' || (site * 7 % 250) || '.' || (site * 13 % 250) END"
    stored = {
        "time_generated": ts("t_us"),
        "log_time": ts("t_us + log_delay_us"),
        "log_type": const_enum(world.LOG_TYPES["firewall.dns_security"]),
        "sub_type": const_enum((0, "dns")),
        "log_source_id": lookup("firewall", [f[0] for f in world.FIREWALLS]),
        "source_ip": ip("src"),
        "dest_ip": ip("dst"),
        "source_user": lookup("user", world.USERS),
        "fqdn": fqdn,
        "dns_parse_fqdn": fqdn,
        "record_type": lookup("rtype", RECORD_TYPES),
        "dns_response_code": "CASE WHEN ptr >= 0 THEN 'NXDOMAIN' ELSE 'NOERROR' END",
        "dns_response": f"CASE WHEN ptr < 0 AND rtype = 0 THEN [{answer}] END",
        "verdict": enum("verdict", DNS_VERDICTS),
        "action": enum("dns_action", DNS_ACTIONS),
        "threat_name": f"CASE WHEN verdict > 0 THEN 'generic:' || ({fqdn}) END",
        "gtid": "CASE WHEN verdict > 0 THEN 109000000 + site END",
        "total_time_elapsed": "elapsed",
    }
    derived = {"from_zone": "'trust'", "dst_zone": "'untrust'", "protocol": "2"}
    return TableData(cols, stored, derived)


def _lookups(t_us, src, dst, site, ptr, rtype, firewall) -> dict[str, np.ndarray]:
    """DNS lookups: times, and per lookup or for all of them the other raw columns."""
    n = len(t_us)
    cols = dict(src=src, dst=dst, site=site, ptr=ptr, rtype=rtype, firewall=firewall)
    cols = {name: _column(n, value) for name, value in cols.items()}
    return {"t_us": t_us, **cols, "user": world.owner(cols["src"])}


def _office_lookups(ctx, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Lookups carried by DNS sessions from the office (same time, client and resolver)."""
    c = ctx.traffic.cols
    dns = np.flatnonzero(np.isin(c["app"], app_codes("dns")) & (c["from_zone"] == TRUST)
                         & (c["proto"] == UDP))  # fmt: skip
    index = world.spread(rng, dns, max(20, ctx.rows // 10))
    n = len(index)
    weights = np.array([max(s[2], 1) for s in SITES], dtype=float)
    weights[C2_SITE] = 0  # only the beacon host asks for that one
    site = rng.choice(len(SITES), n, p=weights / weights.sum())
    rtype = rng.choice([0, 1, 3, 4], n, p=[0.7, 0.2, 0.05, 0.05])
    return _lookups(c["t_us"][index], c["src"][index], c["dst"][index], site, -1, rtype,
                    c["firewall"][index])  # fmt: skip


def _beacon_lookups(ctx) -> dict[str, np.ndarray]:
    """The beacon host resolves its C2 domain before its first call of each hour (TTL 3600)."""
    c = ctx.traffic.cols
    calls = c["t_us"][c["dst"] == ip_int(world.C2_IP)]
    _, first = np.unique(calls // (3600 * US), return_index=True)
    t_us = calls[first] - 2 * US
    return _lookups(t_us, ip_int(world.BEACON_IP), ip_int(world.DNS_SERVER_IP), C2_SITE, -1, 0, 0)


def _scanner_lookups(ctx, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Reverse lookups of some of the hosts the scanner probed, just before each probe."""
    c = ctx.traffic.cols
    probes = np.flatnonzero(c["src"] == ip_int(world.SCANNER_IP))
    index = world.spread(rng, probes, max(5, len(probes) // 4))
    return _lookups(c["t_us"][index] - US, ip_int(world.SCANNER_IP), ip_int(world.DNS_SERVER_IP),
                    -1, c["dst"][index], 2, 0)  # fmt: skip
