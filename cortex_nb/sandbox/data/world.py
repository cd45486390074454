"""The synthetic network behind the sandbox's logs: its hosts, users, firewalls and story.

Every log table is generated from these facts, so the tables agree with one another: a host
has one owner (``owner``) in traffic, User-ID, authentication and DNS logs alike, and the story
hosts keep their users and times everywhere.

The story (times relative to the anchor, the end of the data):

- ``SCANNER_IP`` (10.1.7.23) is a GlobalProtect address. Someone guessed the password of the
  service account ``SCANNER_USER`` from ``ATTACKER_PUBLIC_IP`` (failed logins, then success,
  from an unmanaged device), connected about half an hour before ``SCAN_START_H`` hours before
  the anchor, probed many internal hosts and ports for ``SCAN_HOURS`` hours (reverse DNS
  lookups and failed authentications along the way), was tagged for quarantine and blocked by
  an administrator, and logged out.
- ``BEACON_IP`` (10.1.12.45) is the GlobalProtect address of ``BEACON_USER``'s laptop, connected
  every day. It calls ``C2_IP`` (``C2_DOMAIN``) on port 443 every ``BEACON_INTERVAL_S`` seconds
  and looks the domain up about once an hour (DNS Security flags it as command-and-control).
"""

from __future__ import annotations

import ipaddress
import zlib

import numpy as np

US = 1_000_000  # microseconds in a second
DAY_US = 86_400 * US
SPAN_DAYS = 7
CUSTOMER_ID = "117000001"

SCANNER_IP = "10.1.7.23"
BEACON_IP = "10.1.12.45"
C2_IP = "198.51.100.77"
C2_DOMAIN = "updates.cdn-telemetry.example"
DMZ_WEB_IP = "172.16.5.10"
ATTACKER_PUBLIC_IP = "192.0.2.66"
BEACON_INTERVAL_S = 300
SCAN_START_H = 20  # hours before the anchor
SCAN_HOURS = 2

# (serial, name) of the firewalls that write the logs
FIREWALLS = [
    ("007951000012345", "fw-hq-01"),
    ("007951000012346", "fw-hq-02"),
    ("007951000098765", "fw-branch-01"),
]
DOMAIN = "acme"
# staff first; the two story accounts last (no other host belongs to them)
USERS = [
    f"{DOMAIN}\\{name}"
    for name in (
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
        "mallory", "oscar", "peggy", "trent", "victor", "walter", "jsmith", "svc-backup",
    )
]  # fmt: skip
BEACON_USER, SCANNER_USER = USERS[-2], USERS[-1]
STAFF = len(USERS) - 2
# GlobalProtect gateways and the address pools they hand out (a /24 each)
GATEWAYS = [("gw-us-east", "10.1.12.0"), ("gw-eu-west", "10.1.7.0")]
DNS_SERVER_IP = "10.1.0.53"
PORTAL = "vpn.acme.example"
# the log_type enumeration of each table
LOG_TYPES = {
    "firewall.traffic": (0, "traffic"), "firewall.threat": (1, "threat"),
    "firewall.url": (2, "url"), "firewall.file_data": (3, "file_data"),
    "log.system": (4, "system"), "log.config": (5, "config"),
    "firewall.decryption": (6, "decryption"), "firewall.auth": (7, "auth"),
    "firewall.globalprotect": (8, "globalprotect"), "firewall.hipmatch": (9, "hipmatch"),
    "firewall.iptag": (10, "iptag"), "firewall.sctp": (11, "sctp"),
    "firewall.tunnel": (12, "tunnel"), "firewall.userid": (13, "userid"),
    "firewall.dns_security": (14, "dns_security"), "endpoint.agent": (15, "agent"),
}  # fmt: skip
DOMAIN_CONTROLLER_IP = "10.1.0.10"


def ip_int(text: str) -> int:
    """An IPv4 address as an integer."""
    return int(ipaddress.IPv4Address(text))


STORY_HOSTS = np.array([ip_int(SCANNER_IP), ip_int(BEACON_IP)])


def rng_for(seed: int, name: str) -> np.random.Generator:
    """The random stream of one table (or one shared part of the story), fixed by the seed.

    Each table has a stream of its own, so a table's rows do not depend on which tables were
    generated before it.
    """
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def times(rng: np.random.Generator, n: int, anchor_us: int) -> np.ndarray:
    """Event times over the ``SPAN_DAYS`` days before the anchor, busier in working hours."""
    day = rng.integers(0, SPAN_DAYS, n)
    work = rng.random(n) < 0.7
    second = np.where(work, rng.integers(8 * 3600, 19 * 3600, n), rng.integers(0, 86400, n))
    start_of_today = anchor_us - anchor_us % DAY_US
    t = start_of_today - day * DAY_US + second * US + rng.integers(0, US, n)
    # anything after the anchor wraps back one day so all data lies in the past
    return np.where(t > anchor_us, t - DAY_US, t)


def internal_hosts(rng: np.random.Generator, n: int) -> np.ndarray:
    """Addresses of ordinary internal hosts (10.1.1-29.x), never one of the story hosts."""
    base = ip_int("10.1.0.0")
    hosts = base + rng.integers(1, 30, n) * 256 + rng.integers(10, 250, n)
    # the story hosts belong to the story alone: one step aside
    return np.where(np.isin(hosts, STORY_HOSTS), hosts + 1, hosts)


def external_hosts(rng: np.random.Generator, n: int) -> np.ndarray:
    """Addresses of internet hosts in a few large providers' ranges."""
    prefixes = [
        "13.107.0.0", "52.96.0.0", "104.16.0.0", "142.250.0.0", "151.101.0.0", "172.217.0.0",
        "185.199.0.0", "20.190.0.0",
    ]  # fmt: skip
    return rng.choice(np.array([ip_int(p) for p in prefixes]), n) + rng.integers(1, 4000, n)


def owner(hosts: np.ndarray) -> np.ndarray:
    """The user code (index into ``USERS``) of each internal host: the same in every log."""
    hosts = np.asarray(hosts, dtype=np.int64)
    staff = ((hosts % 65521) * 40503 + hosts // 65521) % STAFF
    story = np.where(hosts == ip_int(BEACON_IP), USERS.index(BEACON_USER), -1)
    story = np.where(hosts == ip_int(SCANNER_IP), USERS.index(SCANNER_USER), story)
    return np.where(story >= 0, story, staff)


def scan_window(anchor_us: int) -> tuple[int, int]:
    """Start and end (microseconds) of the scanner's probing."""
    start = anchor_us - SCAN_START_H * 3600 * US
    return start, start + SCAN_HOURS * 3600 * US


def day_starts(anchor_us: int) -> np.ndarray:
    """Midnight (UTC) of each day of the data, oldest first."""
    today = anchor_us - anchor_us % DAY_US
    return today - np.arange(SPAN_DAYS - 1, -1, -1, dtype=np.int64) * DAY_US


def spread(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` picks from ``pool``, without repeats, in pool order."""
    if len(pool) == 0 or n <= 0:
        return pool[:0]
    return np.sort(rng.choice(pool, min(n, len(pool)), replace=False))
