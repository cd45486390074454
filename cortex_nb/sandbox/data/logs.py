"""Deterministic synthetic logs for the sandbox: every log type of the catalog, in DuckDB.

Each table (DuckDB ``schema.table``, the csql name without the instance id) has exactly the
catalog's columns, valued the way the service sends them (``columns``). Sizes follow ``rows``,
the number of traffic sessions:

=========================== =========================================================
``firewall.traffic``        ``rows`` sessions (``sessions``)
``firewall.threat``         about 3 %, each on a traffic session (same ``session_id``)
``firewall.url``            about 25 %: allowed web sessions from inside
``firewall.file_data``      about 2 %: files moved by web and file-sharing sessions
``firewall.decryption``     about 10 %: decrypted TLS sessions and the beacon's
``firewall.dns_security``   about 10 %: lookups of DNS sessions, the beacon's, the scanner's
``firewall.userid``         about 3 %: domain logons and GlobalProtect mappings (``story``)
``firewall.auth``           about 2 %: portal logins and MFA prompts
``firewall.globalprotect``  a few per remote session (one in 400 rows, plus the story's)
``firewall.hipmatch``       one or two per remote session
``endpoint.agent``          two or three per managed remote session
``firewall.iptag``          tags of servers, remote users, patch reminders, the quarantine
``log.system``              about 2 %, at least 50 (``events``)
``log.config``              one in 300, at least 20
``firewall.sctp``           one in 150, at least 20: signalling in the mobile core
``firewall.tunnel``         one in 150, at least 20: the branch's IPSec and a GRE link
=========================== =========================================================

The story (``world``): the scanning host ``SCANNER_IP`` and the beaconing host ``BEACON_IP``
(calling ``C2_IP``, ``C2_DOMAIN``) have one user each in every log, and appear in traffic,
threat, URL, DNS Security, User-ID, authentication, GlobalProtect, HIP and IP-tag logs at
consistent times; threats of inbound exploits and malware downloads join their sessions.

Time: every timestamp lies in the ``SPAN_DAYS`` days before ``anchor`` (an epoch in seconds; the
sandbox uses the start of the current UTC hour), so ``TIMESTAMP_SUB(CURRENT_TIMESTAMP, INTERVAL 1
DAY)`` finds data. For a given ``seed`` and ``anchor`` the data is identical on every run; with
another anchor only the timestamps shift. Each table draws from a random stream of its own, so
its rows do not depend on which tables were made before it.

``LogTables`` makes ``firewall.traffic`` at once and every other table the first time a query
names it (a few milliseconds each at the default sizes), so a sandbox starts fast.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cached_property

from cortex_nb import catalog
from cortex_nb.sandbox.data import columns, events, flows, story, world
from cortex_nb.sandbox.data.columns import TableData
from cortex_nb.sandbox.data.world import (  # noqa: F401 (the story's facts, named from here too)
    BEACON_INTERVAL_S,
    BEACON_IP,
    C2_DOMAIN,
    C2_IP,
    DMZ_WEB_IP,
    SCANNER_IP,
    SPAN_DAYS,
    US,
)

TABLES = catalog.table_names()
GENERATORS: dict[str, Callable[[Context], TableData]] = {
    "firewall.traffic": flows.traffic_table,
    "firewall.threat": flows.threat_table,
    "firewall.url": flows.url_table,
    "firewall.file_data": flows.file_data_table,
    "firewall.auth": story.auth_table,
    "firewall.decryption": flows.decryption_table,
    "firewall.dns_security": story.dns_security_table,
    "firewall.globalprotect": story.globalprotect_table,
    "firewall.hipmatch": story.hipmatch_table,
    "firewall.iptag": story.iptag_table,
    "firewall.sctp": events.sctp_table,
    "firewall.tunnel": events.tunnel_table,
    "firewall.userid": story.userid_table,
    "log.system": events.system_table,
    "log.config": events.config_table,
    "endpoint.agent": story.agent_table,
}
# values every record of this tenant's firewalls carries (where its log type has the field)
COMMON = {
    "vendor_name": columns.lit("Palo Alto Networks"),
    "log_source": columns.lit("firewall"),
    "customer_id": columns.lit(world.CUSTOMER_ID),
    "vsys": columns.lit("vsys1"),
    "vsys_id": "1",
    "log_set": columns.lit("LCaaS"),
    "count_of_repeats": "1",
    "dg_hier_level_1": "16",
    "dg_hier_level_2": "0",
    "dg_hier_level_3": "0",
    "dg_hier_level_4": "0",
    "is_exported": "false",
    "is_forwarded": "true",
    "is_dup_log": "false",
    "is_prisma_branch": "false",
    "is_prisma_mobile": "false",
    "time_generated_high_res": "time_generated",
}


class Context:
    """What a table generator may use: sizes, time, random streams and the traffic sessions."""

    def __init__(self, rows: int, seed: int, anchor: int) -> None:
        self.rows, self.seed, self.anchor_us = rows, seed, anchor * US
        self._made: dict[Callable, object] = {}

    def rng(self, name: str):
        """The random stream named ``name`` (a table's, or a shared part of the story's)."""
        return world.rng_for(self.seed, name)

    @cached_property
    def traffic(self) -> flows.Traffic:
        """The traffic sessions every session log picks from."""
        return flows.traffic(self.rng("firewall.traffic"), self.rows, self.anchor_us)

    def once(self, make: Callable[[Context], object]):
        """``make(self)``, computed once per context (parts of the story several tables share)."""
        if make not in self._made:
            self._made[make] = make(self)
        return self._made[make]


class LogTables:
    """The log tables of one DuckDB database: traffic made at once, the rest on first use.

    ``database`` qualifies every name (the engine's attached database), so tables can be made
    from any thread's cursor; ``ensure`` is safe to call from several threads.
    """

    def __init__(
        self, con, rows: int, seed: int, anchor: int, database: str | None = None
    ) -> None:
        self._con, self._database = con, database
        self._settings = (rows, seed, anchor)
        self._lock = threading.Lock()
        self.rows: dict[str, int] = {}  # rows of each table made so far
        self.names = frozenset(TABLES)
        self.ensure("firewall.traffic")

    def ensure(self, name: str) -> None:
        """Make the table ``name`` (``schema.table``) unless it exists."""
        if name in self.rows:
            return
        with self._lock:
            if name not in self.rows:
                self.rows[name] = self._make(name, Context(*self._settings))

    def ensure_all(self) -> dict[str, int]:
        """Make every table; the rows of each."""
        context = Context(*self._settings)  # one traffic generation for them all
        with self._lock:
            for name in TABLES:
                if name not in self.rows:
                    self.rows[name] = self._make(name, context)
        return dict(self.rows)

    def _make(self, name: str, context: Context) -> int:
        data = GENERATORS[name](context)
        data.derived = {**columns.fitting(name, COMMON), **data.derived}
        with self._con.cursor() as cur:
            return columns.create(cur, name, data, self._database)


def build(con, rows: int, seed: int, anchor: int) -> dict[str, int]:
    """Make every table in DuckDB connection ``con`` now; the rows of each."""
    return LogTables(con, rows, seed, anchor).ensure_all()
