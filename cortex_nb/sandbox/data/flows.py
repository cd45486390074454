"""Network sessions and the firewall logs written about them: traffic, threat, URL, file, TLS.

``traffic`` generates the sessions (numpy columns); the other logs pick sessions from it and
keep their ``session_id``, addresses, ports, users, application and time, so every record joins
back to its traffic session. Value lists are module constants; codes in the numpy columns index
them, and ``columns`` turns them into wire values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cortex_nb.sandbox.data import world
from cortex_nb.sandbox.data.columns import (
    TableData,
    const_enum,
    enum,
    fitting,
    if_details,
    interface,
    ip,
    lit,
    lookup,
    ts,
    user_info,
)
from cortex_nb.sandbox.data.world import US, ip_int

PROTOCOLS = [(6, "tcp"), (17, "udp"), (1, "icmp"), (132, "sctp")]
TCP, UDP, ICMP = 0, 1, 2
# name, category, sub-category, port, protocol, technology, risk, SaaS, characteristics, weight:
# every sub-category of the application catalogue appears (preset queries filter on them)
APPS = [
    ("ssl", "networking", "encrypted-tunnel", 443, TCP, "browser-based", 4, False,
     ["used-by-malware", "evasive"], 26),
    ("web-browsing", "general-internet", "internet-utility", 80, TCP, "browser-based", 4, False,
     ["used-by-malware"], 12),
    ("dns", "networking", "infrastructure", 53, UDP, "network-protocol", 3, False,
     ["tunnel-other-application"], 14),
    ("ms-office365-base", "business-systems", "office-programs", 443, TCP, "browser-based", 2,
     True, ["saas"], 8),
    ("google-base", "general-internet", "internet-utility", 443, TCP, "browser-based", 3, True,
     ["saas"], 6),
    ("youtube-base", "media", "photo-video", 443, TCP, "browser-based", 3, True,
     ["bandwidth-hog"], 4),
    ("slack-base", "collaboration", "instant-messaging", 443, TCP, "browser-based", 2, True,
     ["saas"], 3),
    ("ntp", "networking", "infrastructure", 123, UDP, "network-protocol", 2, False, [], 3),
    ("ssh", "networking", "encrypted-tunnel", 22, TCP, "client-server", 4, False,
     ["evasive", "tunnel-other-application"], 2),
    ("ms-rdp", "networking", "remote-access", 3389, TCP, "client-server", 4, False,
     ["has-known-vulnerability"], 2),
    ("ms-ds-smb", "business-systems", "storage-backup", 445, TCP, "client-server", 4, False,
     ["has-known-vulnerability"], 3),
    ("ldap", "business-systems", "auth-service", 389, TCP, "client-server", 2, False, [], 2),
    ("ping", "networking", "ip-protocol", 0, ICMP, "network-protocol", 2, False, [], 2),
    ("facebook-base", "collaboration", "social-networking", 443, TCP, "browser-based", 4, True,
     ["saas", "transfers-files"], 3),
    ("twitter-base", "collaboration", "social-networking", 443, TCP, "browser-based", 3, True,
     ["saas"], 1),
    ("linkedin-base", "collaboration", "social-business", 443, TCP, "browser-based", 2, True,
     ["saas"], 1),
    ("zoom-base", "collaboration", "internet-conferencing", 443, TCP, "client-server", 2, True,
     ["saas", "bandwidth-hog"], 2),
    ("sip", "collaboration", "voip-video", 5060, UDP, "network-protocol", 3, False, [], 1),
    ("gmail-base", "collaboration", "email", 443, TCP, "browser-based", 3, True,
     ["saas", "transfers-files"], 1),
    ("smtp-base", "collaboration", "email", 25, TCP, "client-server", 5, False,
     ["used-by-malware", "transfers-files"], 1),
    ("reddit-base", "collaboration", "web-posting", 443, TCP, "browser-based", 3, True,
     ["saas"], 1),
    ("dropbox-base", "general-internet", "file-sharing", 443, TCP, "client-server", 4, True,
     ["saas", "transfers-files"], 2),
    ("bittorrent", "general-internet", "file-sharing", 6881, TCP, "peer-to-peer", 5, False,
     ["evasive", "transfers-files", "bandwidth-hog"], 1),
    ("ftp", "general-internet", "file-sharing", 21, TCP, "client-server", 5, False,
     ["transfers-files", "has-known-vulnerability"], 1),
    ("spotify-base", "media", "audio-streaming", 443, TCP, "client-server", 2, True,
     ["bandwidth-hog"], 1),
    ("steam", "media", "gaming", 27015, UDP, "client-server", 3, False, ["bandwidth-hog"], 1),
    ("salesforce-base", "business-systems", "erp-crm", 443, TCP, "browser-based", 2, True,
     ["saas"], 1),
    ("mssql-db", "business-systems", "database", 1433, TCP, "client-server", 3, False,
     ["has-known-vulnerability"], 1),
    ("snmp-base", "business-systems", "management", 161, UDP, "network-protocol", 3, False,
     [], 1),
    ("ms-update", "business-systems", "software-update", 443, TCP, "client-server", 1, False,
     [], 2),
    ("docusign", "business-systems", "general-business", 443, TCP, "browser-based", 2, True,
     ["saas"], 1),
    ("teamviewer-base", "networking", "remote-access", 5938, TCP, "client-server", 4, False,
     ["evasive"], 1),
    ("tor", "networking", "proxy", 9001, TCP, "client-server", 5, False,
     ["evasive", "used-by-malware", "tunnel-other-application"], 1),
    ("bgp", "networking", "routing", 179, TCP, "network-protocol", 2, False, [], 1),
    ("incomplete", "unknown", "unknown", 443, TCP, "network-protocol", 1, False, [], 1),
]  # fmt: skip
APP = {a[0]: code for code, a in enumerate(APPS)}
UNKNOWN_APP = APP["incomplete"]

# URL categories (id, name); the sites below use them, and traffic without a site is "any"
URL_CATEGORIES = [
    (0, "any"), (1, "business-and-economy"), (2, "computer-and-internet-info"),
    (3, "search-engines"), (4, "streaming-media"), (5, "social-networking"), (6, "news"),
    (7, "newly-registered-domain"), (8, "unknown"), (9, "private-ip-addresses"),
    (10, "web-based-email"), (11, "online-storage-and-backup"), (12, "shopping"),
    (13, "financial-services"), (14, "travel"), (15, "games"), (16, "music"),
    (17, "content-delivery-networks"), (18, "internet-communications-and-telephony"),
    (19, "reference-and-research"), (20, "health-and-medicine"), (21, "government"),
    (22, "educational-institutions"), (23, "sports"), (24, "malware"), (25, "phishing"),
    (26, "grayware"), (27, "dynamic-dns"), (28, "proxy-avoidance-and-anonymizers"),
    (29, "parked"), (30, "command-and-control"), (31, "high-risk"),
]  # fmt: skip
_CATEGORY = {name: code for code, (_, name) in enumerate(URL_CATEGORIES)}
BLOCKED_CATEGORIES = ("malware", "phishing", "command-and-control")
# domain, URL category, weight among general browsing (0: only through its own application)
SITES = [
    ("www.google.com", "search-engines", 10), ("login.microsoftonline.com",
     "computer-and-internet-info", 6), ("outlook.office365.com", "web-based-email", 0),
    ("www.youtube.com", "streaming-media", 0), ("slack.com",
     "internet-communications-and-telephony", 0), ("github.com", "computer-and-internet-info", 6),
    ("news.example.com", "news", 5), ("intranet.acme.example", "private-ip-addresses", 5),
    ("cdn.jsdelivr.net", "content-delivery-networks", 6), ("api.stripe.com",
     "financial-services", 2), ("docs.python.org", "computer-and-internet-info", 4),
    ("en.wikipedia.org", "reference-and-research", 5), ("www.facebook.com", "social-networking", 0),
    ("twitter.com", "social-networking", 0), ("www.linkedin.com", "social-networking", 0),
    ("acme.zoom.us", "internet-communications-and-telephony", 0), ("mail.google.com",
     "web-based-email", 0), ("www.reddit.com", "social-networking", 0), ("www.dropbox.com",
     "online-storage-and-backup", 0), ("open.spotify.com", "music", 0), ("store.steampowered.com",
     "games", 0), ("acme.my.salesforce.com", "business-and-economy", 0),
    ("www.docusign.net", "business-and-economy", 0), ("www.amazon.com", "shopping", 4),
    ("www.booking.com", "travel", 2), ("www.bank.example", "financial-services", 2),
    ("www.cdc.gov", "health-and-medicine", 1), ("www.irs.gov", "government", 1),
    ("www.mit.edu", "educational-institutions", 1), ("www.espn.com", "sports", 2),
    ("login-micros0ft.example", "phishing", 1), ("dl.badfiles.example", "malware", 1),
    ("toolbar-offers.example", "grayware", 1), ("myhome.ddns.example", "dynamic-dns", 1),
    ("free-vpn-proxy.example", "proxy-avoidance-and-anonymizers", 1),
    ("fresh-domain-2291.example", "newly-registered-domain", 1), ("parked-domain.example",
     "parked", 1), ("cnc.botnet-relay.example", "command-and-control", 1),
    ("cheap-deals.example", "high-risk", 1), ("unknown-host.example", "unknown", 1),
    (world.C2_DOMAIN, "newly-registered-domain", 0),
]  # fmt: skip
SITE = {s[0]: code for code, s in enumerate(SITES)}
SITE_CATEGORIES = np.array([_CATEGORY[s[1]] for s in SITES])
C2_SITE = SITE[world.C2_DOMAIN]
# the sites an application's sessions go to (general browsing picks by weight)
APP_SITES = {
    "ms-office365-base": ["outlook.office365.com", "login.microsoftonline.com"],
    "google-base": ["www.google.com", "mail.google.com"], "youtube-base": ["www.youtube.com"],
    "slack-base": ["slack.com"], "facebook-base": ["www.facebook.com"],
    "twitter-base": ["twitter.com"], "linkedin-base": ["www.linkedin.com"],
    "zoom-base": ["acme.zoom.us"], "gmail-base": ["mail.google.com"],
    "reddit-base": ["www.reddit.com"], "dropbox-base": ["www.dropbox.com"],
    "spotify-base": ["open.spotify.com"], "salesforce-base": ["acme.my.salesforce.com"],
    "docusign": ["www.docusign.net"],
}  # fmt: skip
BROWSING_APPS = ("ssl", "web-browsing")

ACTIONS = [
    (0, "allow"), (1, "deny"), (2, "drop"), (3, "reset-both"), (4, "reset-client"),
    (5, "reset-server"), (6, "alert"), (7, "block-url"), (8, "block"), (9, "sinkhole"),
]  # fmt: skip
ALLOW, DENY, DROP, RESET_BOTH, ALERT, BLOCK_URL, BLOCK = 0, 1, 2, 3, 6, 7, 8
END_REASONS = [
    (1, "tcp-fin"), (2, "aged-out"), (3, "tcp-rst-from-client"), (4, "tcp-rst-from-server"),
    (5, "policy-deny"), (6, "threat"),
]  # fmt: skip
TRAFFIC_SUB_TYPES = [(0, "start"), (1, "end"), (2, "drop"), (3, "deny")]
ZONES = ["trust", "untrust", "dmz"]
TRUST, UNTRUST, DMZ = 0, 1, 2
RULES = [
    ("allow-outbound-web", "5b1c9a0e-1f1e-4c53-9a53-2c1f6c0e0a01"),
    ("allow-dns-ntp", "5b1c9a0e-1f1e-4c53-9a53-2c1f6c0e0a02"),
    ("allow-internal", "5b1c9a0e-1f1e-4c53-9a53-2c1f6c0e0a03"),
    ("inbound-dmz-web", "5b1c9a0e-1f1e-4c53-9a53-2c1f6c0e0a04"),
    ("deny-all", "5b1c9a0e-1f1e-4c53-9a53-2c1f6c0e0a05"),
    ("block-known-bad", "5b1c9a0e-1f1e-4c53-9a53-2c1f6c0e0a06"),
]
OUTBOUND_WEB, DNS_NTP, INTERNAL, INBOUND_DMZ, DENY_ALL = range(5)
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) Safari/605.1.15",
    "Microsoft Office/16.0",
    "curl/8.5.0",
]
HTTP_METHODS = [(1, "get"), (2, "post"), (3, "put"), (4, "head"), (5, "options")]
NAT_POOL_IP = "203.0.113.10"


@dataclass
class Traffic:
    """Traffic sessions as numpy columns (codes index the lists above), ordered by time."""

    cols: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.cols["t_us"])

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """The columns of the sessions at ``index``."""
        return {name: values[index] for name, values in self.cols.items()}


def app_codes(*names: str) -> np.ndarray:
    """The codes of the named applications."""
    return np.array([APP[n] for n in names])


# ---- traffic -------------------------------------------------------------------------------


def traffic(rng: np.random.Generator, rows: int, anchor_us: int) -> Traffic:
    """``rows`` sessions: everyday traffic plus the scanner's probes and the beacon's calls."""
    n_scan, n_beacon = max(20, rows // 50), beacon_calls(rows)
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


def beacon_calls(rows: int) -> int:
    """How many times the beacon calls: the last ones before the anchor, ``rows`` // 100."""
    return int(min(max(24, rows // 100), world.SPAN_DAYS * 86400 // world.BEACON_INTERVAL_S))


def _base_sessions(rng: np.random.Generator, n: int, anchor_us: int) -> dict[str, np.ndarray]:
    weights = np.array([a[-1] for a in APPS], dtype=float)
    app = rng.choice(len(APPS), n, p=weights / weights.sum())
    inbound = rng.random(n) < 0.06
    internal_dst = ~inbound & (rng.random(n) < 0.2)
    src = np.where(inbound, world.external_hosts(rng, n), world.internal_hosts(rng, n))
    dst = np.where(
        inbound,
        ip_int(world.DMZ_WEB_IP),
        np.where(internal_dst, world.internal_hosts(rng, n), world.external_hosts(rng, n)),
    )
    app = np.where(inbound, APP["ssl"], app)
    denied = rng.random(n) < np.where(inbound, 0.25, 0.03)
    infra = np.isin(app, app_codes("dns", "ntp"))
    return {
        "t_us": world.times(rng, n, anchor_us),
        "app": app,
        "src": src,
        "dst": dst,
        "dport": np.array([a[3] for a in APPS])[app],
        "from_zone": np.where(inbound, UNTRUST, TRUST),
        "to_zone": np.where(inbound, DMZ, np.where(internal_dst, TRUST, UNTRUST)),
        "action": np.where(denied, rng.choice([DENY, DROP, RESET_BOTH], n), ALLOW),
        "rule": np.where(
            inbound,
            INBOUND_DMZ,
            np.where(internal_dst, INTERNAL, np.where(infra, DNS_NTP, OUTBOUND_WEB)),
        ),
        "bytes_sent": rng.lognormal(7.5, 1.6, n).astype(np.int64) + 60,
        "bytes_received": rng.lognormal(9.0, 2.0, n).astype(np.int64) + 60,
    }


_SCAN_PORTS = [21, 22, 23, 25, 53, 80, 110, 135, 139, 143, 443, 445, 1433, 3306, 3389, 5432,
               5900, 8080, 8443]  # fmt: skip


def _scan_sessions(rng: np.random.Generator, n: int, anchor_us: int) -> dict[str, np.ndarray]:
    start, end = world.scan_window(anchor_us)
    ports = np.array(_SCAN_PORTS)
    dport = np.where(rng.random(n) < 0.5, rng.choice(ports, n), rng.integers(1, 1025, n))
    return {
        "t_us": np.sort(start + rng.integers(0, end - start, n)),
        "app": np.full(n, UNKNOWN_APP),
        "src": np.full(n, ip_int(world.SCANNER_IP)),
        "dst": world.internal_hosts(rng, n),
        "dport": dport,
        "from_zone": np.full(n, TRUST),
        "to_zone": np.full(n, TRUST),
        "action": rng.choice([ALLOW, DENY, RESET_BOTH, DROP], n, p=[0.1, 0.4, 0.4, 0.1]),
        "rule": np.full(n, DENY_ALL),
        "bytes_sent": rng.integers(60, 140, n),
        "bytes_received": rng.integers(0, 120, n),
    }


def _beacon_sessions(rng: np.random.Generator, n: int, anchor_us: int) -> dict[str, np.ndarray]:
    steps = np.arange(n, 0, -1, dtype=np.int64)
    jitter = rng.integers(-3 * US, 3 * US, n)
    return {
        "t_us": anchor_us - steps * world.BEACON_INTERVAL_S * US + jitter,
        "app": np.full(n, APP["ssl"]),
        "src": np.full(n, ip_int(world.BEACON_IP)),
        "dst": np.full(n, ip_int(world.C2_IP)),
        "dport": np.full(n, 443),
        "from_zone": np.full(n, TRUST),
        "to_zone": np.full(n, UNTRUST),
        "action": np.full(n, ALLOW),
        "rule": np.full(n, OUTBOUND_WEB),
        "bytes_sent": rng.integers(510, 530, n),
        "bytes_received": rng.integers(1180, 1220, n),
    }


def _finish_sessions(rng: np.random.Generator, c: dict[str, np.ndarray]) -> None:
    """Derive the columns every kind of session shares (ports, NAT, packets, users...)."""
    n = len(c["t_us"])
    allowed = c["action"] == ALLOW
    proto = np.array([a[4] for a in APPS])[c["app"]]
    c["proto"] = proto
    c["sport"] = rng.integers(1024, 65535, n)
    outbound = c["to_zone"] == UNTRUST
    c["is_nat"] = outbound
    c["nat_src"] = np.where(outbound, ip_int(NAT_POOL_IP) + rng.integers(0, 4, n), -1)
    c["nat_dst"] = np.where(outbound, c["dst"], -1)
    c["nat_sport"] = np.where(outbound, rng.integers(1024, 65535, n), 0)
    c["nat_dport"] = np.where(outbound, c["dport"], 0)
    c["bytes_received"] = np.where(allowed, c["bytes_received"], 0)
    c["packets_sent"] = np.maximum(1, c["bytes_sent"] // 700)
    c["packets_received"] = c["bytes_received"] // 900 + allowed
    c["elapsed"] = np.where(allowed, rng.integers(0, 120, n), 0)
    c["end_reason"] = np.where(
        allowed, np.where(proto == UDP, 1, rng.choice([0, 0, 0, 2, 3], n)), 4
    )
    c["sub_type"] = np.where(allowed, 1, np.where(c["action"] == DROP, 2, 3))
    c["user"] = np.where(c["from_zone"] == TRUST, world.owner(c["src"]), -1)
    c["site"] = _sites(rng, c["app"])
    c["site"] = np.where(c["dst"] == ip_int(world.C2_IP), C2_SITE, c["site"])
    c["url_cat"] = np.where(c["site"] >= 0, SITE_CATEGORIES[c["site"]], 0)  # 0: any
    c["firewall"] = np.where(c["src"] % 7 == 0, 2, rng.integers(0, 2, n))
    c["log_delay_us"] = rng.integers(1 * US, 20 * US, n)
    c["action_flags"] = np.where(rng.random(n) < 0.5, np.iinfo(np.int64).min, 0)
    c["is_decrypted"] = (c["app"] == APP["ssl"]) & (rng.random(n) < 0.3)
    c["is_decrypted"] &= c["dst"] != ip_int(world.C2_IP)  # its certificate is not trusted


def _sites(rng: np.random.Generator, app: np.ndarray) -> np.ndarray:
    """The site each web session went to (-1: not a web session)."""
    site = np.full(len(app), -1)
    weights = np.array([s[2] for s in SITES], dtype=float)
    browsing = np.isin(app, app_codes(*BROWSING_APPS))
    site[browsing] = rng.choice(len(SITES), browsing.sum(), p=weights / weights.sum())
    for name, domains in APP_SITES.items():
        mask = app == APP[name]
        site[mask] = rng.choice([SITE[d] for d in domains], mask.sum())
    return site


# ---- the columns sessions share --------------------------------------------------------------


def session_columns(table_name: str, sub_type: str) -> dict[str, str]:
    """Stored columns of a record about a session (traffic, threat, URL, file, decryption)."""
    return {
        **record_columns(table_name, sub_type),
        "source_ip": ip("src"),
        "dest_ip": ip("dst"),
        "nat_source": ip("nat_src"),
        "nat_dest": ip("nat_dst"),
        "source_port": "sport",
        "dest_port": "dport",
        "nat_source_port": "nat_sport",
        "nat_dest_port": "nat_dport",
        "protocol": enum("proto", PROTOCOLS),
        "action": enum("action", ACTIONS),
        "app": lookup("app", [a[0] for a in APPS]),
        "app_category": lookup("app", [a[1] for a in APPS]),
        "app_sub_category": lookup("app", [a[2] for a in APPS]),
        "technology_of_app": lookup("app", [a[5] for a in APPS]),
        "risk_of_app": lookup("app", [a[6] for a in APPS]),
        "is_saas_app": lookup("app", [a[7] for a in APPS]),
        "characteristics_of_app": lookup("app", [a[8] for a in APPS]),
        "rule_matched": lookup("rule", [r[0] for r in RULES]),
        "rule_matched_uuid": lookup("rule", [r[1] for r in RULES]),
        "from_zone": lookup("from_zone", ZONES),
        "to_zone": lookup("to_zone", ZONES),
        "source_user": lookup("user", world.USERS),
        "bytes_sent": "bytes_sent",
        "bytes_received": "bytes_received",
        "packets_sent": "packets_sent",
        "packets_received": "packets_received",
        "session_id": "session_id",
        "session_start_time": ts("t_us - elapsed * 1000000"),
        "total_time_elapsed": "elapsed",
        "session_end_reason": enum("end_reason", END_REASONS),
        "url_category": enum("url_cat", URL_CATEGORIES),
        "is_nat": "is_nat",
        "is_decrypted": "is_decrypted",
        "action_flags": "action_flags",
        "inbound_if": interface("from_zone + 1"),
        "inbound_if_details": if_details("from_zone + 1"),
        "outbound_if": interface("to_zone + 1"),
        "outbound_if_details": if_details("to_zone + 1"),
    }


def session_derived() -> dict[str, str]:
    """View columns of a session record that follow from its stored ones."""
    return {
        "bytes_total": "bytes_sent + bytes_received",
        "packets_total": "packets_sent + packets_received",
        "source_location": "CASE WHEN from_zone = 'untrust' THEN 'US' "
        "ELSE '10.0.0.0-10.255.255.255' END",
        "dest_location": "CASE WHEN to_zone = 'untrust' THEN 'US' "
        "ELSE '10.0.0.0-10.255.255.255' END",
        "users": "coalesce(source_user, source_ip.value)",
        "source_user_info": user_info("source_user"),
        "is_inbound": "from_zone = 'untrust'",
        "is_packet_capture": "false",
        "is_proxy": "false",
        "is_phishing": "false",
        "is_url_denied": "false",
        "sanctioned_state_of_app": "is_saas_app",
        "action_source": f"{const_enum((1, 'from-policy'))}",
        "tunnel": const_enum((0, "N/A")),
        "tunneled_app": lit("untunneled"),
        "tunnelid_imsi": "0",
        "non_standard_dest_port": "0",
        "parent_session_id": "0",
        "http2_connection": "0",
        "chunks_sent": "0",
        "chunks_received": "0",
        "chunks_total": "0",
        "traffic_flags": "0",
        "ep_assoc_id": "0",
        "time_generated_high_res": "time_generated",
    }


def device_columns(code: str) -> dict[str, str]:
    """The log source (firewall serial and name) of each record, from a firewall code column."""
    return {
        "log_source_id": lookup(code, [f[0] for f in world.FIREWALLS]),
        "log_source_name": lookup(code, [f[1] for f in world.FIREWALLS]),
    }


def record_columns(table_name: str, sub_type: str) -> dict[str, str]:
    """Stored header of a record: time, log type, sub-type, log source.

    From the raw columns ``t_us``, ``log_delay_us`` and ``firewall``.
    """
    return {
        "time_generated": ts("t_us"),
        "log_time": ts("t_us + log_delay_us"),
        "log_type": const_enum(world.LOG_TYPES[table_name]),
        "sub_type": sub_type,
        **device_columns("firewall"),
    }


def session_table(table_name: str, cols: dict, extra: dict[str, str], sub_type: str) -> TableData:
    """A session record table: the shared session columns the catalog lists, plus ``extra``."""
    stored = fitting(table_name, session_columns(table_name, sub_type)) | extra
    derived = fitting(table_name, session_derived())
    return TableData(cols, stored, derived)


def traffic_table(ctx) -> TableData:
    """``firewall.traffic``: every session."""
    return session_table(
        "firewall.traffic",
        ctx.traffic.cols,
        {},
        enum("sub_type", TRAFFIC_SUB_TYPES),
    )


# ---- threat --------------------------------------------------------------------------------

# threat kinds: 0 port scan, 1 C2 beacon, 2 inbound exploit, 3 file download, 4 virus in a
# download, 5 WildFire verdict on a file; per kind: sub-type, severity, direction
THREAT_SUB_TYPES = [
    (1, "scan"), (2, "spyware"), (3, "vulnerability"), (4, "file"), (5, "virus"), (6, "wildfire"),
]  # fmt: skip
SEVERITIES = [(1, "Informational"), (2, "Low"), (3, "Medium"), (4, "High"), (5, "Critical")]
_KIND_SEVERITY = [1, 3, 4, 0, 2, 3]
_KIND_DIRECTION = [0, 1, 0, 1, 1, 1]
DIRECTIONS = [(0, "client-to-server"), (1, "server-to-client")]
# signatures: name, id, category; kinds point at a range of them
SIGNATURES = [
    ("TCP Port Scan", 8001, "scan"),
    ("Generic C2 Beacon Traffic", 86001, "spyware"),
    ("Apache Log4j Remote Code Execution Vulnerability", 91991, "code-execution"),
    ("Microsoft Exchange Server SSRF Vulnerability", 91368, "code-execution"),
    ("HTTP Directory Traversal Request Attempt", 30844, "info-leak"),
    ("Windows Executable (EXE)", 52020, "file"),
    ("Trojan/Win32.agent.dwnldr", 293101877, "trojan"),
    ("WildFire Analysis", 52040, "wildfire"),
]
_KIND_FIRST_SIGNATURE = [0, 1, 2, 5, 6, 7]
THREAT_CATEGORIES = sorted({s[2] for s in SIGNATURES})
VERDICTS = [(0, "benign"), (1, "malware"), (2, "grayware"), (4, "phishing"),
            (5, "command-and-control")]  # fmt: skip
FILES = [("setup.exe", "pe"), ("invoice_0423.exe", "pe"), ("update.exe", "pe"),
         ("report.pdf", "pdf"), ("budget.xlsx", "xlsx"), ("slides.pptx", "pptx"),
         ("archive.zip", "zip"), ("notes.docx", "docx")]  # fmt: skip


def threat_table(ctx) -> TableData:
    """``firewall.threat``: threats, each on a traffic session (same ``session_id``)."""
    rng, c = ctx.rng("firewall.threat"), ctx.traffic.cols
    scan = np.flatnonzero(c["src"] == ip_int(world.SCANNER_IP))
    beacon = np.flatnonzero(c["dst"] == ip_int(world.C2_IP))
    inbound = np.flatnonzero(c["dst"] == ip_int(world.DMZ_WEB_IP))
    downloads = np.flatnonzero(
        np.isin(c["app"], app_codes("web-browsing", "ssl", "dropbox-base", "ftp"))
        & (c["to_zone"] == UNTRUST) & (c["site"] != C2_SITE)
    )  # fmt: skip
    few = max(5, len(c["t_us"]) // 100)
    picks = [
        world.spread(rng, scan, max(1, len(scan) // 10)),
        world.spread(rng, beacon, max(3, len(beacon) // 20)),
        world.spread(rng, inbound, few),
        world.spread(rng, downloads, few),
        world.spread(rng, downloads, few // 2),
        world.spread(rng, downloads, few // 2),
    ]
    cols = ctx.traffic.take(np.concatenate(picks))
    kind = np.concatenate([np.full(len(p), k) for k, p in enumerate(picks)])
    n = len(kind)
    variant = np.where(kind == 2, rng.integers(0, 3, n), 0)
    signature = np.array(_KIND_FIRST_SIGNATURE)[kind] + variant
    cols |= {
        "kind": kind,
        "signature": signature,
        "category": np.array([THREAT_CATEGORIES.index(s[2]) for s in SIGNATURES])[signature],
        "level": np.array(_KIND_SEVERITY)[kind],
        "direction": np.array(_KIND_DIRECTION)[kind],
        "file_pick": np.where(kind == 3, rng.integers(0, 3, n), rng.integers(0, len(FILES), n)),
        "verdict": np.select(
            [kind == 3, kind == 5], [rng.choice([0, 1], n, p=[0.6, 0.4]), rng.choice(4, n)], -1
        ),
        "pcap_id": np.where(kind == 2, 9000 + np.arange(n), 0),
        "log_delay_us": cols["log_delay_us"] + US,
        # scans keep the session's action; exploits and viruses are reset, the rest alerted
        "action": np.select(
            [kind == 0, np.isin(kind, [2, 4])], [cols["action"], RESET_BOTH], ALERT
        ),
    }
    return session_table(
        "firewall.threat", cols, _threat_columns(), enum("kind", THREAT_SUB_TYPES)
    )


def _threat_columns() -> dict[str, str]:
    has_file = "kind IN (3, 4, 5)"
    return {
        "threat_id": lookup("signature", [s[1] for s in SIGNATURES]),
        "threat_name": lookup("signature", [s[0] for s in SIGNATURES]),
        "threat_name_firewall": lookup("signature", [s[0] for s in SIGNATURES]),
        "threat_category": enum("category", list(enumerate(THREAT_CATEGORIES))),
        "vendor_severity": enum("level", SEVERITIES),
        "severity": lookup("level", [s[1] for s in SEVERITIES]),
        "direction_of_attack": enum("direction", DIRECTIONS),
        "file_name": f"CASE WHEN {has_file} THEN {lookup('file_pick', [f[0] for f in FILES])} END",
        "file_type": f"CASE WHEN {has_file} THEN {lookup('file_pick', [f[1] for f in FILES])} END",
        "file_sha_256": f"CASE WHEN {has_file} THEN sha256(file_pick::VARCHAR || "
        "CASE WHEN verdict = 1 OR kind = 4 THEN '-bad' ELSE '' END) END",
        "url_domain": f"CASE WHEN site >= 0 THEN {lookup('site', [s[0] for s in SITES])} END",
        "verdict": enum("verdict", VERDICTS),
        "pcap_id": "CASE WHEN pcap_id > 0 THEN pcap_id END",
        "content_version": lit("8801-8600"),
    }


# ---- URL -----------------------------------------------------------------------------------


def url_table(ctx) -> TableData:
    """``firewall.url``: about a quarter of the sessions, the allowed web requests from inside."""
    rng, c = ctx.rng("firewall.url"), ctx.traffic.cols
    web = (c["site"] >= 0) & (c["action"] == ALLOW) & (c["from_zone"] == TRUST)
    index = world.spread(rng, np.flatnonzero(web), max(10, len(c["t_us"]) // 4))
    cols = ctx.traffic.take(index)
    n, c2 = len(index), cols["site"] == C2_SITE
    blocked = np.isin(cols["site"], [i for i, s in enumerate(SITES) if s[1] in BLOCKED_CATEGORIES])
    cols |= {
        "method": np.where(c2, 1, np.where(rng.random(n) < 0.15, 1, 0)),
        "agent": np.where(c2, 3, rng.integers(0, 3, n)),
        "path_id": rng.integers(0, 5000, n),
        "action": np.where(blocked, BLOCK_URL, ALERT),
    }
    sub_type = const_enum((0, "url"))
    return session_table("firewall.url", cols, _url_columns(), sub_type)


def _url_columns() -> dict[str, str]:
    c2 = f"site = {C2_SITE}"
    return {
        "url_domain": lookup("site", [s[0] for s in SITES]),
        "uri": f"'/' || CASE WHEN {c2} THEN 'api/v2/check' ELSE 'p/' || path_id END",
        "http_method": enum("method", HTTP_METHODS),
        "user_agent": lookup("agent", USER_AGENTS),
        "referer": "CASE WHEN agent = 0 THEN 'https://www.google.com/' END",
        "content_type": f"CASE WHEN {c2} THEN 'application/json' ELSE 'text/html' END",
    }


# ---- file data -----------------------------------------------------------------------------

FILE_SUB_TYPES = [(0, "file"), (1, "data")]


def file_data_table(ctx) -> TableData:
    """``firewall.file_data``: files moved by web and file-sharing sessions, a few data matches."""
    rng, c = ctx.rng("firewall.file_data"), ctx.traffic.cols
    movers = app_codes("web-browsing", "ssl", "dropbox-base", "ftp", "gmail-base", "smtp-base")
    moved = np.isin(c["app"], movers) & (c["action"] == ALLOW) & (c["site"] != C2_SITE)
    pool = np.flatnonzero(moved)
    index = world.spread(rng, pool, max(10, len(c["t_us"]) // 50))
    cols = ctx.traffic.take(index)
    n = len(index)
    data = rng.random(n) < 0.1
    cols |= {
        "file_sub_type": data.astype(int),
        "file_pick": rng.integers(0, len(FILES), n),
        "upload": (rng.random(n) < 0.3) | data,
        "action": np.where(data, ALERT, np.where(rng.random(n) < 0.1, BLOCK, ALERT)),
    }
    extra = {
        "file_name": lookup("file_pick", [f[0] for f in FILES]),
        "file_type": lookup("file_pick", [f[1] for f in FILES]),
        "file_sha_256": "sha256(file_pick::VARCHAR)",
        "file_url": f"CASE WHEN site >= 0 THEN {lookup('site', [s[0] for s in SITES])} "
        f"|| '/files/' || {lookup('file_pick', [f[0] for f in FILES])} END",
        "url_domain": f"CASE WHEN site >= 0 THEN {lookup('site', [s[0] for s in SITES])} END",
        "direction_of_attack": enum("upload::INTEGER", [DIRECTIONS[1], DIRECTIONS[0]]),
        "profile_name": "CASE WHEN file_sub_type = 1 THEN 'pci-data' ELSE 'corp-file-blocking' END",
        "reason_data_filtering": "CASE WHEN file_sub_type = 1 THEN 'credit card numbers' END",
        "severity": "CASE WHEN file_sub_type = 1 THEN 'Medium' ELSE 'Informational' END",
    }
    return session_table(
        "firewall.file_data", cols, extra, enum("file_sub_type", FILE_SUB_TYPES)
    )


# ---- decryption ----------------------------------------------------------------------------

TLS_VERSIONS = [(3, "TLS1.2"), (4, "TLS1.3")]
CHAIN_STATUS = [(0, "trusted"), (1, "untrusted"), (2, "incomplete")]


def decryption_table(ctx) -> TableData:
    """``firewall.decryption``: the decrypted TLS sessions, and the beacon's refused ones."""
    c = ctx.traffic.cols
    index = np.flatnonzero(c["is_decrypted"] | (c["dst"] == ip_int(world.C2_IP)))
    cols = ctx.traffic.take(index)
    rng, n = ctx.rng("firewall.decryption"), len(index)
    c2 = cols["site"] == C2_SITE
    cols |= {
        "site": np.where(cols["site"] >= 0, cols["site"], SITE["www.google.com"]),
        "tls": np.where(c2, 0, rng.integers(0, 2, n)),
        "chain": np.where(c2, 1, np.where(rng.random(n) < 0.03, 2, 0)),
        "issued_us": cols["t_us"] - rng.integers(10, 300, n) * 86400 * US,
    }
    sni = lookup("site", [s[0] for s in SITES])
    extra = {
        "sni": sni,
        "cn": sni,
        "issuer_cn": f"CASE WHEN chain = 1 THEN {sni} ELSE 'DigiCert Global G2 TLS RSA CA' END",
        "root_cn": f"CASE WHEN chain = 1 THEN {sni} ELSE 'DigiCert Global Root G2' END",
        "tls_version": enum("tls", TLS_VERSIONS),
        "tls_enc_algorithm": const_enum((6, "AES_256_GCM")),
        "tls_keyxchange": const_enum((4, "ECDHE")),
        "tls_auth": const_enum((1, "RSA")),
        "elliptic_curve": const_enum((29, "x25519")),
        "chain_status": enum("chain", CHAIN_STATUS),
        "root_status": enum("chain", CHAIN_STATUS),
        "not_before": ts("issued_us"),
        "not_after": ts("issued_us + 397 * 86400 * 1000000::BIGINT"),
        "cert_serial": "upper(substr(sha256(site::VARCHAR), 1, 32))",
        "fingerprint": "sha256('cert' || site::VARCHAR)",
        "proxy_type": const_enum((1, "forward")),
        "policy_name": lit("decrypt-outbound"),
        "error_message": "CASE WHEN chain = 1 THEN 'Certificate signed by an untrusted issuer' END",
    }
    sub_type = const_enum((0, "decryption"))
    return session_table("firewall.decryption", cols, extra, sub_type)
