"""Time windows in a statement: a query bounded to ``[start, end)`` on each log table's own
time column.

An analyst says when (``between=(start, end)``, ``since="24h"``, ``until=...``; read by
``cortex_nb.times``, whose ``parse_instant``, ``parse_duration`` and ``resolve_window`` are
also importable from here) and ``restrict`` adds ``col >= TIMESTAMP('start') AND col <
TIMESTAMP('end')`` to the WHERE of every SELECT that reads a log table, on that table's time
column from the catalog (``time_generated`` for the firewall tables, ``event_time`` for
``log.*``). ``bounded(sql, options)`` does it for a query's options, once, on the way to the
service.

The statement is parsed with sqlglot (BigQuery, the dialect csql follows) and written back, not
pasted into: CTEs, subqueries and UNIONs are bounded where they read a log table, each table of
a join gets its own filter (in the ON of a LEFT JOIN, so unmatched rows stay), and an existing
WHERE keeps its meaning (parenthesised, then ANDed). RIGHT and FULL joins are refused: their
null-extended tables cannot be bounded without changing what the query means.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from cortex_nb import catalog
from cortex_nb.exceptions import ConfigurationError
from cortex_nb.times import (
    INSTANT_FORMS,
    naive_note,
    parse_duration,
    parse_instant,
    resolve_window,
    utc,
)

if TYPE_CHECKING:
    from sqlglot import exp

    from cortex_nb.options import QueryOptions

__all__ = [
    "INSTANT_FORMS",
    "bounded",
    "log_table",
    "naive_note",
    "parse_duration",
    "parse_instant",
    "resolve_window",
    "restrict",
    "timestamp_literal",
]


def bounded(
    sql: str, options: QueryOptions, now: datetime | None = None
) -> tuple[str, QueryOptions]:
    """``sql`` restricted to the options' time window as of ``now`` (default: this moment), and
    the options without the window: from then on the statement carries it, in absolute times,
    so a job, its cache key and its dataset all see the rows it names even when "now" moves."""
    window = options.window(now)
    if window is None:
        return sql, options
    return restrict(sql, *window), options.replace(between=None, since=None, until=None)


# ---- the statement -------------------------------------------------------------------------


def timestamp_literal(moment: datetime) -> str:
    """``moment`` as a csql literal: ``TIMESTAMP('2026-12-01 10:00:00+00:00')``."""
    return f"TIMESTAMP('{utc(moment).isoformat(sep=' ')}')"


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

    logs = log_table(table) if isinstance(table, exp.Table) else None
    if logs is None:
        return []
    qualifier = table.alias or (table.name if several else "")
    column = f"{qualifier}.{logs.time_column}" if qualifier else logs.time_column
    return [
        exp.condition(f"{column} >= {timestamp_literal(start)}", dialect="bigquery"),
        exp.condition(f"{column} < {timestamp_literal(end)}", dialect="bigquery"),
    ]


def log_table(table: exp.Table) -> catalog.Table | None:
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
