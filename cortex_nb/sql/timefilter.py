"""Time windows: a query bounded to ``[start, end)`` on each log table's own time column.

An analyst says when (``between=(start, end)``, ``since="24h"``, ``until=...``) and this module
writes the filter: ``parse_instant`` and ``parse_duration`` read the times and durations people
write, ``resolve_window`` turns the options into one absolute half-open window, and ``restrict``
adds ``col >= TIMESTAMP('start') AND col < TIMESTAMP('end')`` to the WHERE of every SELECT that
reads a log table, on that table's time column from the catalog (``time_generated`` for the
firewall tables, ``event_time`` for ``log.*``).

The statement is parsed with sqlglot (BigQuery, the dialect csql follows) and written back, not
pasted into: CTEs, subqueries and UNIONs are bounded where they read a log table, each table of
a join gets its own filter (in the ON of a LEFT JOIN, so unmatched rows stay), and an existing
WHERE keeps its meaning (parenthesised, then ANDed). Naive times mean UTC; ``naive_note`` says
which were read so, for the notebook to show.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, Any

from cortex_nb import catalog
from cortex_nb.exceptions import ConfigurationError

if TYPE_CHECKING:
    from sqlglot import exp

__all__ = [
    "INSTANT_FORMS",
    "apply_window",
    "naive_note",
    "parse_duration",
    "parse_instant",
    "resolve_window",
    "restrict",
    "timestamp_literal",
]

INSTANT_FORMS = (
    "an ISO time ('2026-12-01', '2026-12-01T10:00', '2026-12-01T10:00+02:00'), a datetime or "
    "pandas Timestamp, 'now', or 'now-2h'"
)
DURATION_FORMS = "a number and a unit: '90s', '15m', '24h', '7d', '1w' (or a timedelta)"
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_RELATIVE = re.compile(r"now\s*(?:([+-])\s*(.+))?", re.IGNORECASE)


# ---- reading times and durations ----------------------------------------------------------


def parse_duration(value: Any) -> timedelta:
    """A positive span of time from ``'90s'``, ``'15m'``, ``'24h'``, ``'7d'``, ``'1w'`` or a
    ``timedelta``; anything else is a ``ConfigurationError`` naming the accepted forms."""
    if isinstance(value, timedelta):
        span = value
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        span = timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2].lower()])
    else:
        raise ConfigurationError(f"Cannot read {value!r} as a duration: use {DURATION_FORMS}.")
    if span <= timedelta(0):
        raise ConfigurationError(f"A duration must be positive, not {value!r}: e.g. '24h'.")
    return span


def parse_instant(value: Any, now: datetime | None = None) -> datetime:
    """The moment ``value`` names, as an aware UTC datetime: an ISO string, a ``datetime``,
    ``date`` or pandas ``Timestamp``, ``'now'`` or ``'now-2h'`` (from ``now``, default the
    current time); a time without an offset is UTC."""
    if isinstance(value, str) and (match := _RELATIVE.fullmatch(value.strip())):
        moment = _utc(now) if now is not None else datetime.now(timezone.utc)
        if match[1] is None:
            return moment
        span = parse_duration(match[2])
        return moment - span if match[1] == "-" else moment + span
    return _utc(_as_datetime(value))


def _as_datetime(value: Any) -> datetime:
    """``value`` as a datetime (maybe naive), or a ``ConfigurationError`` naming the forms."""
    if hasattr(value, "to_pydatetime"):  # a pandas Timestamp: drop the nanoseconds quietly
        value = value.to_pydatetime(warn=False)
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, time())
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ConfigurationError(f"Cannot read {value!r} as a time: use {INSTANT_FORMS}.")


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive one is taken to be UTC already."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _is_naive(value: Any) -> bool:
    """Whether ``value`` is a time given without an offset (read as UTC)."""
    if isinstance(value, str) and _RELATIVE.fullmatch(value.strip()):
        return False
    try:
        moment = _as_datetime(value)
    except ConfigurationError:
        return False
    return moment.tzinfo is None or moment.utcoffset() is None


def naive_note(between: Iterable[Any] | None = None, until: Any = None) -> str | None:
    """One line saying which of the given times had no offset and were read as UTC (None
    when every time was explicit)."""
    given = [*(between or ()), *([] if until is None else [until])]
    naive = [str(value) for value in given if _is_naive(value)]
    if not naive:
        return None
    return f"Time window: {', '.join(naive)} read as UTC (no offset given)."


# ---- the window --------------------------------------------------------------------------


def resolve_window(
    between: Iterable[Any] | None = None, since: Any = None, until: Any = None,
    now: datetime | None = None,
) -> tuple[datetime, datetime] | None:
    """The half-open window ``[start, end)`` the options name, in UTC (None: no window).

    ``between=(start, end)``, or ``since=DURATION`` reaching back from ``until`` (default now);
    relative times (``'now-2h'``) are read against the same ``now``. Contradictory or empty
    windows are a one-line ``ConfigurationError``.
    """
    if between is None and since is None:
        if until is not None:
            raise ConfigurationError(
                "until= ends a window that since= starts: give since too (e.g. since='24h')."
            )
        return None
    if between is not None and (since is not None or until is not None):
        raise ConfigurationError(
            "Give between=(start, end) or since= (with until=), not both."
        )
    now = _utc(now) if now is not None else datetime.now(timezone.utc)
    start, end = _ends(between, since, until, now)
    if start >= end:
        raise ConfigurationError(
            f"The time window is empty: it starts at {start.isoformat()} and ends at "
            f"{end.isoformat()}; the start must come first."
        )
    return start, end


def _ends(between: Any, since: Any, until: Any, now: datetime) -> tuple[datetime, datetime]:
    """The window's two ends, from ``between`` or from ``since`` and ``until``."""
    if between is None:
        end = parse_instant(until, now) if until is not None else now
        return end - parse_duration(since), end
    pair = tuple(between) if isinstance(between, list | tuple) else ()
    if len(pair) != 2:
        raise ConfigurationError(
            f"between takes two times (start, end), not {between!r}: e.g. "
            "between=('2026-12-01', '2026-12-02')."
        )
    return parse_instant(pair[0], now), parse_instant(pair[1], now)


def apply_window(
    sql: str, between: Any = None, since: Any = None, until: Any = None,
    now: datetime | None = None,
) -> str:
    """``sql`` restricted to the window the options name (unchanged when they name none)."""
    window = resolve_window(between, since, until, now)
    return sql if window is None else restrict(sql, *window)


# ---- the statement -------------------------------------------------------------------------


def timestamp_literal(moment: datetime) -> str:
    """``moment`` as a csql literal: ``TIMESTAMP('2026-12-01 10:00:00+00:00')``."""
    return f"TIMESTAMP('{_utc(moment).isoformat(sep=' ')}')"


def restrict(sql: str, start: datetime, end: datetime) -> str:
    """``sql`` with every SELECT that reads a log table bounded to ``[start, end)`` on each such
    table's time column; a statement that reads no log table is refused (nothing to bound)."""
    from sqlglot import exp

    tree = _parse(sql)
    bounded = sum(_restrict_select(s, start, end) for s in list(tree.find_all(exp.Select)))
    if not bounded:
        raise ConfigurationError(
            "A time window bounds log tables (firewall.traffic, log.system...), and this "
            "statement reads none: name one in FROM, or drop between/since."
        )
    return tree.sql(dialect="bigquery")


def _parse(sql: str) -> exp.Expression:
    """The one statement in ``sql``, parsed as csql (BigQuery), or a one-line error."""
    import sqlglot

    try:
        statements = [s for s in sqlglot.parse(sql, read="bigquery") if s is not None]
    except sqlglot.errors.SqlglotError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigurationError(
            f"Cannot add the time window: the statement does not parse ({reason}); fix it, "
            "or write the time filter yourself and drop between/since."
        ) from None
    if len(statements) != 1:
        raise ConfigurationError(
            f"A time window bounds one statement, and this text holds {len(statements)}."
        )
    return statements[0]


def _restrict_select(select: exp.Select, start: datetime, end: datetime) -> int:
    """Bound the log tables this SELECT reads directly (its FROM and joins); how many."""
    source = select.args.get("from_") or select.args.get("from")  # renamed in sqlglot 28
    joins = list(select.args.get("joins") or [])
    tables = [(None, source.this)] if source is not None else []
    tables += [(join, join.this) for join in joins]
    in_where: list[exp.Expression] = []
    bounded = 0
    for join, table in tables:
        bounds = _window_bounds(table, len(tables) > 1, start, end)
        if not bounds:
            continue
        _refuse_outer(joins)
        if join is not None and (join.side or "").upper() == "LEFT":
            _and_on(join, bounds)  # in the WHERE it would drop the rows with no match
        else:
            in_where += bounds
        bounded += 1
    if in_where:
        _and_where(select, in_where)
    return bounded


def _refuse_outer(joins: list[exp.Join]) -> None:
    """Refuse a RIGHT or FULL JOIN: its null-extended tables cannot be bounded in the WHERE."""
    for join in joins:
        side = (join.side or "").upper()
        if side in ("RIGHT", "FULL"):
            raise ConfigurationError(
                f"A time window cannot bound the log tables of a {side} JOIN and keep its "
                "meaning: write it as a LEFT JOIN, or write the time filters yourself."
            )


def _window_bounds(
    table: exp.Expression, several: bool, start: datetime, end: datetime
) -> list[exp.Expression]:
    """``[col >= TIMESTAMP(start), col < TIMESTAMP(end)]`` on ``table``'s time column,
    qualified by its alias (or by its name when the SELECT reads several sources); empty when
    ``table`` is not a log table."""
    from sqlglot import exp

    log_table = _log_table(table) if isinstance(table, exp.Table) else None
    if log_table is None:
        return []
    qualifier = table.alias or (table.name if several else "")
    column = f"{qualifier}.{log_table.time_column}" if qualifier else log_table.time_column
    return [
        exp.condition(f"{column} >= {timestamp_literal(start)}", dialect="bigquery"),
        exp.condition(f"{column} < {timestamp_literal(end)}", dialect="bigquery"),
    ]


def _log_table(table: exp.Table) -> catalog.Table | None:
    """The catalog's log table ``table`` names (with or without its instance id), or None."""
    if not table.db:
        return None  # a CTE's name, or another one-part name: not a log table
    try:
        return catalog.table(f"{table.db}.{table.name}")
    except catalog.CatalogLookupError:
        return None


def _grouped(condition: exp.Expression) -> exp.Expression:
    """``condition`` in parentheses (once), so that what is ANDed to it keeps its meaning."""
    from sqlglot import exp

    return condition if isinstance(condition, exp.Paren) else exp.paren(condition, copy=False)


def _and_where(select: exp.Select, bounds: list[exp.Expression]) -> None:
    """AND ``bounds`` to the SELECT's WHERE, the existing condition parenthesised."""
    from sqlglot import exp

    where = select.args.get("where")
    existing = [_grouped(where.this)] if where is not None else []
    select.set("where", exp.Where(this=exp.and_(*existing, *bounds, copy=False)))


def _and_on(join: exp.Join, bounds: list[exp.Expression]) -> None:
    """AND ``bounds`` to the join's ON (a USING join cannot take one: refused)."""
    from sqlglot import exp

    if join.args.get("using"):
        raise ConfigurationError(
            "A time window cannot bound a LEFT JOIN ... USING (...): write it with ON, or "
            "write the time filter yourself."
        )
    on = join.args.get("on")
    existing = [_grouped(on)] if on is not None else []
    join.set("on", exp.and_(*existing, *bounds, copy=False))
