"""Whether a statement's result can be cut into time windows and put back together.

A query split by time (``--split 1h``) runs once per window and its results are concatenated.
That equals the unsplit result only when every row belongs to one window: plain selects and
filters, joins, and aggregates grouped by a time bucket do; an aggregate over the whole span,
``DISTINCT``, a ``LIMIT`` (with or without ``ORDER BY``), a window function (``OVER``) or a
``UNION DISTINCT`` do not, and ``check_splittable`` refuses them before anything is sent, with
one line saying why and what to do instead.

What it learns along the way comes back as a ``SplitPlan``: the direction of a top-level
``ORDER BY`` time (windows are put together in that order) and the size of the time bucket an
aggregate is grouped by (windows must not cut a bucket in two).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cortex_nb import catalog
from cortex_nb.exceptions import ConfigurationError

__all__ = ["NotSplittable", "SplitPlan", "check_splittable", "time_columns"]

_BUCKET_UNITS = {
    "MICROSECOND": dt.timedelta(microseconds=1),
    "MILLISECOND": dt.timedelta(milliseconds=1),
    "SECOND": dt.timedelta(seconds=1),
    "MINUTE": dt.timedelta(minutes=1),
    "HOUR": dt.timedelta(hours=1),
    "DAY": dt.timedelta(days=1),
}
_RUN_UNSPLIT = "or run it without --split (split=None)"


class NotSplittable(ConfigurationError):
    """A statement whose result cannot be concatenated across time windows (nothing was sent)."""


@dataclass(frozen=True)
class SplitPlan:
    """What the statement asks of the windows: their order, and the bucket they must keep whole.

    ``descending``: the statement orders by time, newest first (windows go newest first too).
    ``bucket``: the largest time bucket an aggregate groups by (None: no aggregate).
    ``pairs``: a SELECT matches rows of two log tables, so pairs across a window's edge are
    missed (``note()`` says so).
    """

    descending: bool = False
    bucket: dt.timedelta | None = None
    pairs: bool = False  # one SELECT matches rows of two log tables (a join, IN (SELECT ...))

    def note(self) -> str | None:
        """One line on what splitting changes in the result (None: nothing)."""
        if not self.pairs:
            return None
        return ("Split: the query matches rows of two log tables (a join or a subquery), and "
                "each window only its own: a pair whose rows fall in two windows is missed "
                "(a longer --split, or none, keeps it).")


def time_columns() -> frozenset[str]:
    """The time column of every documented log type (``time_generated``, ``event_time``)."""
    return frozenset(table.time_column for table in catalog.tables())


def check_splittable(sql: str) -> SplitPlan:
    """The statement's ``SplitPlan``, or ``NotSplittable`` saying why it cannot be split."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="bigquery")
    except sqlglot.errors.ParseError as error:
        first = str(error).splitlines()[0] if str(error) else "it does not parse"
        raise NotSplittable(f"--split needs a statement it can read: {first}") from None
    _refuse_whole_span_parts(tree, exp)
    buckets = [_checked_grouping(select, exp) for select in tree.find_all(exp.Select)]
    known = [b for b in buckets if b is not None]
    pairs = any(_pairs_log_rows(select, exp) for select in tree.find_all(exp.Select))
    return SplitPlan(_descending(tree, exp), max(known) if known else None, pairs)


def _pairs_log_rows(select: Any, exp: Any) -> bool:
    """Whether ``select`` matches rows of two log-table references: it joins, or filters by a
    subquery, and reads two log tables (a CTE's included); each window filters both."""
    from cortex_nb.sql.timefilter import log_table

    matches = select.args.get("joins") or (
        select.args.get("where") is not None and select.args["where"].find(exp.Select)
    )
    tables = [t for t in select.find_all(exp.Table) if log_table(t) is not None]
    return bool(matches) and len(tables) >= 2


def _refuse(what: str, advice: str) -> None:
    raise NotSplittable(f"--split cannot cut this query into time windows: {what}; {advice}.")


def _refuse_whole_span_parts(tree: Any, exp: Any) -> None:
    """DISTINCT, LIMIT, OVER and UNION DISTINCT see every window's rows at once."""
    for select in tree.find_all(exp.Select):
        if select.args.get("distinct"):
            _refuse("SELECT DISTINCT would repeat a value seen in two windows",
                    f"group by a time bucket too, {_RUN_UNSPLIT}")
        if select.args.get("limit"):
            what = ("ORDER BY ... LIMIT picks its rows from the whole span"
                    if select.args.get("order") else "a LIMIT would apply to each window")
            _refuse(what, f"use --limit N (limit=N) for the total, {_RUN_UNSPLIT}")
    if tree.find(exp.Window):
        _refuse("a window function (OVER) would see one window's rows only",
                "run it without --split (split=None)")
    for union in tree.find_all(exp.Union):
        if union.args.get("distinct"):
            _refuse("UNION DISTINCT would repeat a row seen in two windows",
                    f"use UNION ALL, {_RUN_UNSPLIT}")


def _checked_grouping(select: Any, exp: Any) -> dt.timedelta | None:
    """A select's time bucket when it aggregates; ``NotSplittable`` when it aggregates over
    something other than time (each window would give its own partial answer)."""
    group = select.args.get("group")
    aggregates = any(_own(node, select, exp) for node in select.find_all(exp.AggFunc))
    if not aggregates and group is None:
        return None
    keys = _grouping_keys(select, group, exp)
    buckets = [_bucket(key, exp) for key in keys]
    found = [b for b in buckets if b is not None]
    if not found:
        _refuse(
            "an aggregate not grouped by a time bucket would give one partial answer per window",
            "group by a bucket of the time column too (e.g. TIMESTAMP_TRUNC(time_generated, "
            f"HOUR)), {_RUN_UNSPLIT}",
        )
    return max(found)


def _own(node: Any, select: Any, exp: Any) -> bool:
    """Whether ``node`` belongs to ``select`` itself, not to a query nested in it."""
    return node.find_ancestor(exp.Select) is select


def _grouping_keys(select: Any, group: Any, exp: Any) -> list[Any]:
    """The GROUP BY expressions, an alias or a position replaced by the item it names."""
    if group is None:
        return []
    items = select.expressions
    aliases = {item.alias: item.this for item in items if isinstance(item, exp.Alias)}
    keys = []
    for key in group.expressions:
        if isinstance(key, exp.Literal) and key.is_int and 0 < int(key.this) <= len(items):
            item = items[int(key.this) - 1]
            key = item.this if isinstance(item, exp.Alias) else item
        elif isinstance(key, exp.Column) and not key.table and key.name in aliases:
            key = aliases[key.name]
        keys.append(key)
    return keys


def _bucket(key: Any, exp: Any) -> dt.timedelta | None:
    """The size of the time bucket ``key`` groups by, or None when it does not read time."""
    names = time_columns()
    if not any(column.name in names for column in _columns(key, exp)):
        return None
    unit = key.args.get("unit") if isinstance(key, exp.Func) else None
    if isinstance(key, exp.Date | exp.TsOrDsToDate):
        return _BUCKET_UNITS["DAY"]
    if unit is not None:
        return _BUCKET_UNITS.get(unit.name.upper(), dt.timedelta(0))
    return dt.timedelta(0)  # the time itself, or a function of it: no window cuts one apart


def _columns(node: Any, exp: Any) -> list[Any]:
    return [node] if isinstance(node, exp.Column) else list(node.find_all(exp.Column))


def _descending(tree: Any, exp: Any) -> bool:
    """Whether the statement's own ORDER BY puts the newest time first; ``NotSplittable``
    when it orders by something else first (windows can only be put together in time order)."""
    order = tree.args.get("order")
    if order is None or not order.expressions:
        return False
    first = order.expressions[0]
    key = first.this
    if isinstance(tree, exp.Select):  # an alias or a position names a selected expression
        key = _grouping_keys(tree, exp.Group(expressions=[key]), exp)[0]
    if _bucket(key, exp) is None:
        _refuse(
            f"ORDER BY {first.this.sql(dialect='bigquery')} would sort each window apart",
            "order by the time column first (or sort the frame afterwards), "
            f"{_RUN_UNSPLIT}",
        )
    return bool(first.args.get("desc"))
