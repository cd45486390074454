"""csql as real-world queries write it, against the sandbox over HTTP: each form answers what
the service (BigQuery's SQL) answers, and what the service refuses is refused when the job is
created, with its error body.

Expected results never come from the sandbox's translation: forms over the logs are checked
against the rows of a plain ``SELECT *`` worked out in Python, constant forms against values
worked out by hand (with the reason next to them) or with Python's ``datetime``.
"""

from __future__ import annotations

import collections
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from cortex_nb import catalog
from tests.conftest import sandbox_client

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TRAFFIC = "`firewall.traffic`"


def utc(micros: int) -> datetime:
    """A wire timestamp (integer microseconds) as an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=micros)


def micros(moment: datetime) -> int:
    """An aware datetime as wire microseconds."""
    return (moment - EPOCH) // timedelta(microseconds=1)


@pytest.fixture(scope="module")
def logs(sandbox) -> list[dict]:
    """Every traffic row as the service sends it (``SELECT *``): the reference data."""
    with sandbox_client(sandbox) as api:
        return api.rows(f"SELECT * FROM {TRAFFIC}")


@dataclass(frozen=True)
class Form:
    """A csql form and what it must return: rows, or rows worked out from the reference (the
    query itself may be written from the reference too, to name times the logs hold)."""

    csql: str | Callable[[list[dict]], str]
    expected: list[dict] | Callable[[list[dict]], list[dict]]

    def query(self, logs: list[dict]) -> str:
        """The csql text for this reference data."""
        return self.csql(logs) if callable(self.csql) else self.csql

    def rows(self, logs: list[dict]) -> list[dict]:
        """The expected rows for this reference data."""
        return self.expected(logs) if callable(self.expected) else self.expected


def by_session(logs: list[dict], value: Callable[[dict], object]) -> list[dict]:
    """``{"session_id", "v"}`` for every row, in session order."""
    ordered = sorted(logs, key=lambda r: r["session_id"])
    return [{"session_id": r["session_id"], "v": value(r)} for r in ordered]


def counted(values) -> list[dict]:
    """``{"k", "n"}`` rows of a ``GROUP BY k ORDER BY k`` count."""
    return [{"k": k, "n": n} for k, n in sorted(collections.Counter(values).items())]


def count(logs: list[dict], keep: Callable[[dict], bool]) -> list[dict]:
    """The ``{"n"}`` row of ``COUNT(*)`` over the rows ``keep`` accepts."""
    return [{"n": sum(1 for r in logs if keep(r))}]


def wire_time(text: str) -> time:
    """A TIME value as sent (``HH:MM:SS`` and up to six digits of fraction)."""
    whole, _, fraction = text.partition(".")
    return time.fromisoformat(whole).replace(microsecond=int(fraction.ljust(6, "0") or 0))


def bigquery_text(micros_value: int) -> str:
    """A timestamp as BigQuery writes it as a STRING: 0, 3 or 6 digits of fraction, ``+00``."""
    moment = utc(micros_value)
    fraction = moment.microsecond
    if fraction % 1000 == 0:
        shown = f".{fraction // 1000:03d}" if fraction else ""
    else:
        shown = f".{fraction:06d}"
    return f"{moment:%Y-%m-%d %H:%M:%S}{shown}+00"


def per_session(expression: str) -> str:
    """``expression`` as ``v`` for every traffic row, in session order."""
    return f"SELECT session_id, {expression} AS v FROM {TRAFFIC} ORDER BY session_id"


def grouped(expression: str) -> str:
    """A count of the traffic rows per value of ``expression`` (``k``), in order."""
    return f"SELECT {expression} AS k, COUNT(*) AS n FROM {TRAFFIC} GROUP BY k ORDER BY k"


def where(condition: str) -> str:
    """A count of the traffic rows where ``condition`` holds."""
    return f"SELECT COUNT(*) AS n FROM {TRAFFIC} WHERE {condition}"


def window(logs: list[dict]) -> tuple[datetime, datetime]:
    """Two naive UTC datetimes inside the logs' span: a day after the first log, a day before
    the last (with microseconds, as ``str()`` writes them)."""
    first = utc(min(r["time_generated"] for r in logs)).replace(tzinfo=None)
    last = utc(max(r["time_generated"] for r in logs)).replace(tzinfo=None)
    return first + timedelta(days=1, microseconds=7), last - timedelta(days=1)


def gaps(logs: list[dict]) -> list[dict]:
    """Whole seconds from each log to the one before it (by time, then session)."""
    ordered = sorted(logs, key=lambda r: (r["time_generated"], r["session_id"]))
    seconds = {ordered[0]["session_id"]: None}
    for before, row in itertools.pairwise(ordered):
        seconds[row["session_id"]] = (row["time_generated"] - before["time_generated"]) // 10**6
    return [
        {"session_id": sid, **({} if seconds[sid] is None else {"v": seconds[sid]})}
        for sid in sorted(seconds)
    ]


NEW_YORK = ZoneInfo("America/New_York")

# ---- forms over the logs, checked against the reference rows ---------------------------------
OVER_LOGS = {
    "TIME() in BETWEEN (integration preset)": Form(
        where(
            'app_sub_category = "encrypted-tunnel" AND (TIME(time_generated) BETWEEN '
            'TIME(TIMESTAMP("2020-03-01 08:00:00")) AND TIME(TIMESTAMP("2020-03-01 18:00:00")))'
        ),
        lambda logs: count(
            logs,
            lambda r: (
                r.get("app_sub_category") == "encrypted-tunnel"
                and time(8) <= utc(r["time_generated"]).time() <= time(18)
            ),
        ),
    ),
    "TIME() compared with a time literal": Form(
        where('TIME(time_generated) >= "12:00:00"'),
        lambda logs: count(logs, lambda r: utc(r["time_generated"]).time() >= time(12)),
    ),
    "EXTRACT(HOUR)": Form(
        grouped("EXTRACT(HOUR FROM time_generated)"),
        lambda logs: counted(utc(r["time_generated"]).hour for r in logs),
    ),
    "EXTRACT(HOUR ... AT TIME ZONE)": Form(
        grouped('EXTRACT(HOUR FROM time_generated AT TIME ZONE "America/New_York")'),
        lambda logs: counted(utc(r["time_generated"]).astimezone(NEW_YORK).hour for r in logs),
    ),
    # BigQuery counts days of the week from Sunday = 1
    "EXTRACT(DAYOFWEEK)": Form(
        grouped("EXTRACT(DAYOFWEEK FROM time_generated)"),
        lambda logs: counted(utc(r["time_generated"]).isoweekday() % 7 + 1 for r in logs),
    ),
    # weeks start on Sunday (Monday for WEEK(MONDAY)); days before the first one are week 0
    "EXTRACT(WEEK)": Form(
        grouped("EXTRACT(WEEK FROM time_generated)"),
        lambda logs: counted(int(utc(r["time_generated"]).strftime("%U")) for r in logs),
    ),
    "EXTRACT(WEEK(MONDAY))": Form(
        grouped("EXTRACT(WEEK(MONDAY) FROM time_generated)"),
        lambda logs: counted(int(utc(r["time_generated"]).strftime("%W")) for r in logs),
    ),
    "EXTRACT(DATE)": Form(
        grouped("EXTRACT(DATE FROM time_generated)"),
        lambda logs: counted(utc(r["time_generated"]).date().isoformat() for r in logs),
    ),
    "DATE()": Form(
        grouped("DATE(time_generated)"),
        lambda logs: counted(utc(r["time_generated"]).date().isoformat() for r in logs),
    ),
    "FORMAT_TIMESTAMP %F %T": Form(
        per_session('FORMAT_TIMESTAMP("%F %T", time_generated)'),
        lambda logs: by_session(
            logs, lambda r: utc(r["time_generated"]).strftime("%Y-%m-%d %H:%M:%S")
        ),
    ),
    "FORMAT_TIMESTAMP in a zone": Form(
        per_session('FORMAT_TIMESTAMP("%Y-%m-%d %H:%M %Ez", time_generated, "America/New_York")'),
        lambda logs: by_session(
            logs,
            lambda r: re.sub(
                r"(\d\d)(\d\d)$",
                r"\1:\2",
                utc(r["time_generated"]).astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M %z"),
            ),
        ),
    ),
    "TIMESTAMP_ADD": Form(
        per_session("TIMESTAMP_ADD(time_generated, INTERVAL 90 MINUTE)"),
        lambda logs: by_session(logs, lambda r: r["time_generated"] + 90 * 60 * 10**6),
    ),
    "TIMESTAMP_SUB from the last log": Form(
        "SELECT COUNT(*) AS n FROM `firewall.traffic` WHERE time_generated > TIMESTAMP_SUB("
        "(SELECT MAX(time_generated) FROM `firewall.traffic`), INTERVAL 1 DAY)",
        lambda logs: count(
            logs,
            lambda r: r["time_generated"] > max(x["time_generated"] for x in logs) - 86400 * 10**6,
        ),
    ),
    # whole seconds between the two instants
    "TIMESTAMP_DIFF": Form(
        per_session("TIMESTAMP_DIFF(time_generated, session_start_time, SECOND)"),
        lambda logs: by_session(
            logs, lambda r: (r["time_generated"] - r["session_start_time"]) // 10**6
        ),
    ),
    "TIMESTAMP_TRUNC(HOUR)": Form(
        grouped("TIMESTAMP_TRUNC(time_generated, HOUR)"),
        lambda logs: counted(r["time_generated"] // 3_600_000_000 * 3_600_000_000 for r in logs),
    ),
    "UNIX_SECONDS": Form(
        per_session("UNIX_SECONDS(time_generated)"),
        lambda logs: by_session(logs, lambda r: r["time_generated"] // 10**6),
    ),
    "BETWEEN TIMESTAMP() AND CURRENT_TIMESTAMP": Form(
        where('time_generated BETWEEN TIMESTAMP("2020-03-01 00:00:00") AND CURRENT_TIMESTAMP'),
        lambda logs: [{"n": len(logs)}],
    ),
    # as an integration writes its time window: Python's str() of naive UTC datetimes
    "BETWEEN TIMESTAMP(str(datetime)) bounds": Form(
        lambda logs: where(
            f'time_generated BETWEEN TIMESTAMP("{window(logs)[0]}") '
            f'AND TIMESTAMP("{window(logs)[1]}")'
        ),
        lambda logs: count(
            logs,
            lambda r: (
                window(logs)[0] <= utc(r["time_generated"]).replace(tzinfo=None) <= window(logs)[1]
            ),
        ),
    ),
    "LAG and TIMESTAMP_DIFF over a window": Form(
        per_session(
            "TIMESTAMP_DIFF(time_generated, LAG(time_generated) OVER "
            "(ORDER BY time_generated, session_id), SECOND)"
        ),
        lambda logs: gaps(logs),
    ),
    "timestamp compared with a quoted literal": Form(
        where('time_generated >= "2020-03-01T00:00:00Z"'),
        lambda logs: [{"n": len(logs)}],
    ),
    "REGEXP_CONTAINS with a raw string": Form(
        where('REGEXP_CONTAINS(app, r"^ms-[a-z]+")'),
        lambda logs: count(logs, lambda r: re.search(r"^ms-[a-z]+", r.get("app", "")) is not None),
    ),
    "IFNULL": Form(
        per_session('IFNULL(dest_user, "nobody")'),
        lambda logs: by_session(logs, lambda r: r.get("dest_user", "nobody")),
    ),
    "COUNTIF": Form(
        f'SELECT COUNTIF(action.value = "allow") AS n FROM {TRAFFIC}',
        lambda logs: count(logs, lambda r: r["action"]["value"] == "allow"),
    ),
    "UNNEST an array column": Form(
        f"SELECT c AS k, COUNT(*) AS n FROM {TRAFFIC}, UNNEST(characteristics_of_app) AS c "
        "GROUP BY k ORDER BY k",
        lambda logs: counted(c for r in logs for c in r.get("characteristics_of_app", [])),
    ),
    "value IN UNNEST(array column)": Form(
        where('"saas" IN UNNEST(characteristics_of_app)'),
        lambda logs: count(logs, lambda r: "saas" in r.get("characteristics_of_app", [])),
    ),
    # BigQuery's offsets count from 0
    "UNNEST WITH OFFSET": Form(
        f"SELECT pos AS k, COUNT(*) AS n FROM {TRAFFIC}, "
        "UNNEST(characteristics_of_app) AS c WITH OFFSET AS pos GROUP BY k ORDER BY k",
        lambda logs: counted(
            i for r in logs for i, _ in enumerate(r.get("characteristics_of_app", []))
        ),
    ),
    "struct field paths": Form(
        "SELECT t.session_id, t.source_ip.value AS v, inbound_if_details.type.value AS kind "
        f"FROM {TRAFFIC} AS t ORDER BY t.session_id",
        lambda logs: [
            {
                "session_id": r["session_id"],
                "v": r["source_ip"]["value"],
                "kind": r["inbound_if_details"]["type"]["value"],
            }
            for r in sorted(logs, key=lambda r: r["session_id"])
        ],
    ),
    "double-quoted strings and mixed-case keywords": Form(
        'select Count(*) As n From `firewall.traffic` Where App = "ssl" aNd Dest_Port = 443',
        lambda logs: count(logs, lambda r: r.get("app") == "ssl" and r["dest_port"] == 443),
    ),
    # BigQuery's LIKE takes backslash escapes: \\_ is an underscore, _ any character
    "LIKE with _ as a wildcard": Form(
        where('app LIKE "ms_ds%"'),
        lambda logs: count(logs, lambda r: re.fullmatch(r"ms.ds.*", r.get("app", "")) is not None),
    ),
    "LIKE with an escaped _": Form(where(r'app LIKE "ms\\_ds%"'), [{"n": 0}]),
    "LIKE with an escaped backslash": Form(
        where(r'source_user LIKE "acme\\\\%"'),
        lambda logs: count(logs, lambda r: r.get("source_user", "").startswith("acme\\")),
    ),
    "ARRAY_AGG(DISTINCT ... ORDER BY ... LIMIT)": Form(
        f"SELECT ARRAY_AGG(DISTINCT app ORDER BY app LIMIT 3) AS v FROM {TRAFFIC}",
        lambda logs: [{"v": sorted({r["app"] for r in logs if "app" in r})[:3]}],
    ),
    "APPROX_TOP_COUNT": Form(
        f"SELECT APPROX_TOP_COUNT(app, 2) AS v FROM {TRAFFIC}",
        lambda logs: [
            {
                "v": [
                    {"value": v, "count": n}
                    for v, n in collections.Counter(r["app"] for r in logs).most_common(2)
                ]
            }
        ],
    ),
    # NULL fits any type (and a null column is left out of the row)
    "IF and IFNULL with NULL": Form(
        per_session('IF(is_nat, NULL, "routed") || IFNULL(dest_user, "-")'),
        lambda logs: [
            {
                "session_id": r["session_id"],
                **({} if r["is_nat"] else {"v": "routed" + r.get("dest_user", "-")}),
            }
            for r in sorted(logs, key=lambda r: r["session_id"])
        ],
    ),
    "SAFE_CAST of a column": Form(
        f"SELECT COUNT(SAFE_CAST(app AS INT64)) AS n FROM {TRAFFIC}", [{"n": 0}]
    ),
    "CAST of a timestamp to STRING": Form(
        per_session("CAST(time_generated AS STRING)"),
        lambda logs: by_session(logs, lambda r: bigquery_text(r["time_generated"])),
    ),
}

# ---- constant forms ------------------------------------------------------------------------
# 2020-03-01 is a Sunday; 2020 is a leap year; Los Angeles is 8 hours behind UTC in March
# (before the switch to summer time on March 8th).
CONSTANT = {
    "TIME(TIMESTAMP(...))": Form(
        'SELECT TIME(TIMESTAMP("2020-03-01 12:34:56")) AS v', [{"v": "12:34:56"}]
    ),
    "TIME(timestamp, zone)": Form(
        'SELECT TIME(TIMESTAMP "2020-03-01 12:00:00", "America/Los_Angeles") AS v',
        [{"v": "04:00:00"}],
    ),
    "DATE(timestamp, zone)": Form(
        'SELECT DATE(TIMESTAMP "2020-03-01 03:00:00", "America/Los_Angeles") AS v',
        [{"v": "2020-02-29"}],
    ),
    "TIMESTAMP() of a string with an offset": Form(
        'SELECT TIMESTAMP("2020-03-01 00:00:00.001000+00:00") AS v',
        [{"v": micros(datetime(2020, 3, 1, 0, 0, 0, 1000, tzinfo=UTC))}],
    ),
    "TIMESTAMP(string, zone)": Form(
        'SELECT TIMESTAMP("2020-03-01 12:00:00", "America/Los_Angeles") AS v',
        [{"v": micros(datetime(2020, 3, 1, 20, tzinfo=UTC))}],
    ),
    "TIMESTAMP_SECONDS/MILLIS/MICROS": Form(
        "SELECT TIMESTAMP_SECONDS(1583020800) AS s, TIMESTAMP_MILLIS(1583020800123) AS ms, "
        "TIMESTAMP_MICROS(1583020800123456) AS us",
        [{"s": 1583020800 * 10**6, "ms": 1583020800123 * 1000, "us": 1583020800123456}],
    ),
    "EXTRACT(DAYOFWEEK) of a Sunday": Form(
        'SELECT EXTRACT(DAYOFWEEK FROM DATE "2020-03-01") AS v', [{"v": 1}]
    ),
    # MILLISECOND and MICROSECOND leave the whole seconds out
    "EXTRACT(MILLISECOND/MICROSECOND)": Form(
        'SELECT EXTRACT(MILLISECOND FROM TIMESTAMP "2020-03-01 00:00:05.123456") AS ms, '
        'EXTRACT(MICROSECOND FROM TIMESTAMP "2020-03-01 00:00:05.123456") AS us',
        [{"ms": 123, "us": 123456}],
    ),
    "EXTRACT(TIME/DATETIME)": Form(
        'SELECT EXTRACT(TIME FROM TIMESTAMP "2020-03-01 12:34:56") AS t, '
        'EXTRACT(DATE FROM TIMESTAMP "2020-03-01 12:34:56") AS d',
        [{"t": "12:34:56", "d": "2020-03-01"}],
    ),
    # BigQuery's documented example: 59 minutes 59 seconds are 0 whole hours
    "TIMESTAMP_DIFF counts whole units": Form(
        'SELECT TIMESTAMP_DIFF(TIMESTAMP "2001-02-01 01:00:00", '
        'TIMESTAMP "2001-02-01 00:00:01", HOUR) AS v',
        [{"v": 0}],
    ),
    "DATE_SUB stays a DATE": Form(
        'SELECT DATE_SUB(DATE "2020-03-01", INTERVAL 1 DAY) AS v', [{"v": "2020-02-29"}]
    ),
    "DATE_ADD a month to the 31st": Form(
        'SELECT DATE_ADD(DATE "2020-01-31", INTERVAL 1 MONTH) AS v', [{"v": "2020-02-29"}]
    ),
    "FORMAT_TIMESTAMP elements": Form(
        'SELECT FORMAT_TIMESTAMP("%e|%k|%R|%s|%Q|%E3S|%Z", '
        'TIMESTAMP "2020-03-01 04:05:06.789") AS v',
        [{"v": f" 1| 4|04:05|{1583035506}|1|06.789|UTC"}],
    ),
    # %E*S keeps the fraction without trailing zeros, and no dot for whole seconds
    "FORMAT_TIMESTAMP %E*S": Form(
        'SELECT FORMAT_TIMESTAMP("%E*S", TIMESTAMP "2020-03-01 12:00:07.120") AS a, '
        'FORMAT_TIMESTAMP("%E*S", TIMESTAMP "2020-03-01 12:00:07") AS b',
        [{"a": "07.12", "b": "07"}],
    ),
    "FORMAT_TIMESTAMP with a zone": Form(
        'SELECT FORMAT_TIMESTAMP("%F %T%Ez", TIMESTAMP "2020-03-01 12:00:00", '
        '"America/Los_Angeles") AS v',
        [{"v": "2020-03-01 04:00:00-08:00"}],
    ),
    "FORMAT_DATE and FORMAT_TIME": Form(
        'SELECT FORMAT_DATE("%A %d %B %Y", DATE "2020-03-01") AS d, '
        'FORMAT_TIME("%R", TIME "13:14:15") AS t',
        [{"d": "Sunday 01 March 2020", "t": "13:14"}],
    ),
    "PARSE_TIMESTAMP": Form(
        'SELECT PARSE_TIMESTAMP("%Y-%m-%d %H:%M:%S", "2020-03-01 12:00:00") AS v',
        [{"v": micros(datetime(2020, 3, 1, 12, tzinfo=UTC))}],
    ),
    "SAFE. prefix": Form('SELECT SAFE.PARSE_TIMESTAMP("%Y-%m-%d", "junk") AS v', [{}]),
    "SAFE_CAST": Form(
        'SELECT SAFE_CAST("abc" AS INT64) AS a, SAFE_CAST("12" AS INT64) AS b', [{"b": 12}]
    ),
    # as in ZetaSQL's compliance tests: no fraction, or 3 or 6 digits of it
    "CAST(TIMESTAMP AS STRING)": Form(
        'SELECT CAST(TIMESTAMP "2020-03-01 12:34:56" AS STRING) AS a, '
        'STRING(TIMESTAMP "2020-03-01 12:34:56.1") AS b, '
        'CAST(TIMESTAMP "2020-03-01 12:34:56.0001" AS STRING) AS c',
        [
            {
                "a": "2020-03-01 12:34:56+00",
                "b": "2020-03-01 12:34:56.100+00",
                "c": "2020-03-01 12:34:56.000100+00",
            }
        ],
    ),
    "FORMAT is printf-style": Form(
        'SELECT FORMAT("%5.1f|%d|%s|%t", 3.14159, 7, "x", 12) AS v', [{"v": "  3.1|7|x|12"}]
    ),
    "APPROX_COUNT_DISTINCT of a constant list": Form(
        "SELECT APPROX_COUNT_DISTINCT(x) AS v FROM UNNEST([1, 2, 2, 3]) AS x", [{"v": 3}]
    ),
    "triple-quoted and escaped strings, # comments": Form(
        'SELECT """a "b" c""" AS a, "d\\"e" AS b, \'f\' AS c # a comment',
        [{"a": 'a "b" c', "b": 'd"e', "c": "f"}],
    ),
}


@pytest.mark.parametrize("form", OVER_LOGS.values(), ids=OVER_LOGS.keys())
def test_forms_over_the_logs_answer_as_the_service(sandbox_api, logs, form):
    assert sandbox_api.rows(form.query(logs)) == form.rows(logs)


@pytest.mark.parametrize("form", CONSTANT.values(), ids=CONSTANT.keys())
def test_constant_forms_answer_as_the_service(sandbox_api, form):
    assert sandbox_api.rows(form.query([])) == form.rows([])


def test_time_of_a_timestamp_is_its_time_of_day_in_utc(sandbox_api, logs):
    rows = sandbox_api.rows(per_session("TIME(time_generated)"))
    served = [(r["session_id"], wire_time(r["v"])) for r in rows]
    ordered = sorted(logs, key=lambda r: r["session_id"])
    assert served == [(r["session_id"], utc(r["time_generated"]).time()) for r in ordered]


def test_approx_count_distinct_is_close_to_the_exact_count(sandbox_api, logs):
    exact = len({r["source_ip"]["value"] for r in logs})
    [row] = sandbox_api.rows(f"SELECT APPROX_COUNT_DISTINCT(source_ip.value) AS n FROM {TRAFFIC}")
    assert abs(row["n"] - exact) <= exact * 0.05


def test_time_of_current_timestamp_is_the_utc_time_of_day(sandbox_api):
    [row] = sandbox_api.rows("SELECT TIME(CURRENT_TIMESTAMP) AS t, CURRENT_DATE() AS d")
    now = datetime.now(UTC)
    served = datetime.combine(date.fromisoformat(row["d"]), time.fromisoformat(row["t"]), UTC)
    assert abs(served - now) < timedelta(minutes=1)


# ---- refusals at creation -------------------------------------------------------------------
REFUSED = {
    "struct compared with a string": (
        where('source_ip = "10.1.7.23"'),
        "No matching signature for operator = for argument types: "
        "STRUCT<value STRING, hex STRING>, STRING",
    ),
    "enumeration compared with a string": (
        where('action = "allow"'),
        "argument types: STRUCT<id INT64, value STRING>, STRING",
    ),
    "timestamp compared with an integer": (
        where("time_generated > 1583020800"),
        "for operator > for argument types: TIMESTAMP, INT64",
    ),
    "timestamp compared with a string column": (
        where("time_generated > app"),
        "for operator > for argument types: TIMESTAMP, STRING",
    ),
    "timestamp compared with a literal that is no time": (
        where('time_generated > "yesterday"'),
        'Could not cast literal "yesterday" to type TIMESTAMP',
    ),
    "timestamp compared with a DATE": (
        where("time_generated > CURRENT_DATE()"),
        "argument types: TIMESTAMP, DATE",
    ),
    "timestamp BETWEEN integers": (
        where("time_generated BETWEEN 1 AND 2"),
        "for operator BETWEEN for argument types: TIMESTAMP, INT64",
    ),
    "integer column compared with a quoted string": (
        where('dest_port = "443"'),
        "for operator = for argument types: INT64, STRING",
    ),
    "integer column IN quoted strings": (
        where('dest_port IN ("443", "80")'),
        "for operator IN for argument types: INT64, STRING",
    ),
    "string column compared with an integer": (
        where("app = 443"),
        "for operator = for argument types: STRING, INT64",
    ),
    "boolean compared with a string": (
        where('is_nat = "true"'),
        "for operator = for argument types: BOOL, STRING",
    ),
    "array compared with a string": (
        where('characteristics_of_app = "saas"'),
        "Equality is not defined for arguments of type ARRAY<STRING>",
    ),
    "unknown struct field": (
        where('source_ip.valu = "x"'),
        "Field name valu does not exist in STRUCT<value STRING, hex STRING>",
    ),
    "unknown column": (where('sourc_ip = "x"'), "Unrecognized name: sourc_ip; Did you mean"),
    "field of a string": (where('app.value = "x"'), "Cannot access field value on a value"),
    "LIKE on an integer": (where('dest_port LIKE "44%"'), "operator LIKE for argument types"),
    "REGEXP_CONTAINS on a struct": (
        where('REGEXP_CONTAINS(source_ip, r"^10\\.")'),
        "No matching signature for function REGEXP_CONTAINS",
    ),
    "TIMESTAMP_SUB of a DATE": (
        "SELECT TIMESTAMP_SUB(CURRENT_DATE(), INTERVAL 1 DAY) AS t",
        "function TIMESTAMP_SUB for argument types: DATE",
    ),
    "DATE_SUB of a TIMESTAMP": (
        where("DATE(time_generated) > DATE_SUB(CURRENT_TIMESTAMP(), INTERVAL 1 DAY)"),
        "function DATE_SUB for argument types: TIMESTAMP",
    ),
    "SUM of strings": (f"SELECT SUM(app) AS s FROM {TRAFFIC}", "function SUM"),
    "WHERE that is no condition": (where("app"), "WHERE clause should return type BOOL"),
    "timestamp minus an integer": (
        where("time_generated - 3600 > CURRENT_TIMESTAMP()"),
        "operator - for argument types: TIMESTAMP, INT64",
    ),
    "TIMESTAMP() of a string that is no time": (
        'SELECT TIMESTAMP("yesterday") AS t',
        'Could not cast literal "yesterday" to type TIMESTAMP',
    ),
    "TIMESTAMP_MICROS of a timestamp (it is one already)": (
        where("TIMESTAMP_MICROS(time_generated) > CURRENT_TIMESTAMP()"),
        "No matching signature for function TIMESTAMP_MICROS for argument types: TIMESTAMP",
    ),
    "a date part BigQuery does not have": (
        f"SELECT EXTRACT(EPOCH FROM time_generated) AS e FROM {TRAFFIC}",
        "A valid date part name is required but found EPOCH",
    ),
    "IFNULL of an integer and a string": (
        f'SELECT IFNULL(dest_port, "none") AS p FROM {TRAFFIC}',
        "No matching signature for function IFNULL for argument types: INT64, STRING",
    ),
    "CASE with THEN values of no common type": (
        f'SELECT CASE WHEN is_nat THEN 1 ELSE "x" END AS p FROM {TRAFFIC}',
        "all THEN/ELSE arguments must be coercible to a common type",
    ),
    "CAST of a literal that is no number": (
        'SELECT CAST("abc" AS INT64) AS i',
        'Could not cast literal "abc" to type INT64',
    ),
}


@pytest.mark.parametrize(("csql", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_queries_the_service_refuses_are_refused_at_creation(sandbox_api, csql, message):
    r = sandbox_api.create(csql)
    assert r.status_code == 400, r.text
    [error] = r.json()["errors"]
    assert error["errorCode"] == 400
    assert message in error["message"]
    assert set(error) <= {"errorCode", "message", "context"}


def test_a_refused_query_leaves_no_job(sandbox_api):
    csql = where('dest_port = "443"') + " -- refused"
    assert sandbox_api.create(csql).status_code == 400
    listed = sandbox_api.http.get(f"{sandbox_api.sandbox.url}/query/v2/jobs").json()
    assert all(job["params"]["query"] != csql for job in listed)


def test_a_refusal_says_where_in_the_query_and_quotes_it(sandbox_api):
    csql = 'SELECT app\nFROM `firewall.traffic`\nWHERE  dest_port = "443"'
    [error] = sandbox_api.create(csql).json()["errors"]
    assert error["message"].endswith("at [3:8]")
    assert error["context"] == 'dest_port = "443"'


UNKNOWN_HEADS = {
    # a typo in the head of a dotted name is an unknown name, as for a plain one
    "struct field of a misspelt column": (
        "SELECT app FROM `firewall.traffic` WHERE sorce_ip.value = '10.1.7.23'",
        "Unrecognized name: sorce_ip; Did you mean source_ip? at [1:42]",
    ),
    "nested path of a misspelt column": (
        "SELECT sorce_ip.value.x AS v FROM `firewall.traffic`",
        "Unrecognized name: sorce_ip; Did you mean source_ip? at [1:8]",
    ),
    "misspelt column in a join": (
        "SELECT t.app FROM `firewall.traffic` AS t JOIN `firewall.threat` AS h\n"
        "  ON t.session_id = h.session_id WHERE sorce_ip.value = '10.1.7.23'",
        "Unrecognized name: sorce_ip; Did you mean source_ip? at [2:40]",
    ),
    "an alias that was never given": (
        "SELECT x.app FROM `firewall.traffic`",
        "Unrecognized name: x at [1:8]",
    ),
}


@pytest.mark.parametrize(("csql", "message"), UNKNOWN_HEADS.values(), ids=UNKNOWN_HEADS.keys())
def test_an_unknown_head_of_a_dotted_name_is_an_unrecognized_name(sandbox_api, csql, message):
    r = sandbox_api.create(csql)
    assert r.status_code == 400, r.text
    [error] = r.json()["errors"]
    assert error["message"] == message


def test_quoted_date_and_time_literals_are_coerced_as_the_service_does(sandbox_api, logs):
    first = min(r["time_generated"] for r in logs)
    day = utc(first).date().isoformat()
    rows = sandbox_api.rows(
        f'SELECT COUNTIF(time_generated >= "{day} 00:00:00") AS a, '
        f'COUNTIF(DATE(time_generated) = "{day}") AS b FROM {TRAFFIC}'
    )
    on_that_day = sum(1 for r in logs if utc(r["time_generated"]).date().isoformat() == day)
    assert rows == [{"a": len(logs), "b": on_that_day}]


def test_functions_the_sandbox_cannot_run_are_refused_by_name(sandbox_api):
    r = sandbox_api.create('SELECT NET.HOST("https://a.example/x") AS h')
    assert r.status_code == 400
    assert "NET.HOST() is not available in the sandbox" in r.json()["errors"][0]["message"]


# ---- dialect ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "named"),
    [({"dialect": "sql"}, "params.dialect"), ({"language": "bigquery"}, "params.language")],
)
def test_another_dialect_is_a_400_that_names_csql(sandbox_api, params, named):
    r = sandbox_api.create("SELECT 1 AS x", params=params)
    assert r.status_code == 400
    [error] = r.json()["errors"]
    assert error["errorCode"] == 400
    assert "only csql is supported" in error["message"] and named in error["message"]


@pytest.mark.parametrize("params", [{"dialect": "csql"}, {"dialect": "CSQL"}, {}])
def test_csql_named_in_any_case_or_left_out_is_accepted(sandbox_api, params):
    assert sandbox_api.create("SELECT 1 AS x", params=params).status_code == 201


# ---- how the engine exposes stored timestamps ------------------------------------------------


@pytest.mark.parametrize("table", [t.name for t in catalog.tables()])
def test_every_table_s_time_column_is_a_csql_timestamp(sandbox_api, table):
    """Tables are made on first use; their time columns are instants as csql means them."""
    column = catalog.table(table).time_column
    sql = (
        f"SELECT TIME({column}) AS t, CAST({column} AS STRING) AS s, "
        f"TIMESTAMP_DIFF({column}, TIMESTAMP('1970-01-01 00:00:00'), SECOND) AS secs "
        f"FROM `{table}` WHERE {column} IS NOT NULL LIMIT 1"
    )
    rows = sandbox_api.rows(sql)
    assert rows, f"{table} has no rows with {column}"
    assert rows[0]["s"].endswith("+00") and rows[0]["secs"] > 1_600_000_000
