"""What a sandbox query may touch: the log tables, and no part of DuckDB itself.

The service lets a query read the tenant's log tables and nothing else. DuckDB, which runs the
sandbox's queries, also has catalogs of its own (``system``, ``temp``, ``information_schema``,
``pg_catalog``), settings, and functions that read or change its state; a statement must reach
none of them, whatever names or CTEs stand around a reference. ``check`` enforces, on the parsed
csql tree, before anything reaches DuckDB:

- Tables: each reference is resolved by scope (sqlglot's scope analysis, the rules DuckDB uses).
  A reference to a CTE visible at that point stays as it is; every other reference must name a
  log table and is rewritten to the sandbox's own catalog, so DuckDB's name lookup never decides.
- Statements: only a query; no DESCRIBE, SHOW, PRAGMA, SET or DDL nested in one, no parameters.
- Functions: those that read settings, catalogs, variables, sequences or files, or that sleep,
  are refused by name (``DENIED_FUNCTIONS``), and so are bare names DuckDB would take for one of
  them (``user``, ``current_schema``...) unless a log table the query reads has such a column.
- Sizes: DuckDB's memory limit does not count a value being built, so functions that make a
  large value from a small one (``repeat``, ``lpad``, ``range``, ``printf`` widths...) take
  literal sizes of at most ``MAX_VALUE_SIZE`` characters or items, and are not used inside a
  lambda or inside one another, where the sizes would multiply. Functions that grow a string
  they are given (``replace``, ``regexp_replace``, ``concat``, ``||``...) multiply or add sizes
  too, so every string a statement builds is estimated (``built_chars``: literals by their
  length, log fields and whatever the estimate cannot follow at ``FIELD_CHARS``) and a statement
  whose estimate passes ``MAX_BUILT_CHARS`` per value is refused: DuckDB computes 2048 rows at a
  time, so one such value costs up to 2048 times its size outside its memory limit.

A statement too deeply nested for the parser is refused too (``QueryRejected``), never crashed on,
and so is one nested deeper than DuckDB's expression depth limit (``MAX_DEPTH``), before any
more work is spent on it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, traverse_scope

from cortex_nb import catalog

MAX_VALUE_SIZE = 10_000  # characters of a built string, items of a built list
MAX_DEPTH = 1000  # DuckDB's max_expression_depth: deeper statements fail there anyway
MAX_BUILT_CHARS = 20_000  # estimated characters of any string a statement builds, per value
FIELD_CHARS = 1_000  # a log field's value (or anything the estimate cannot follow), at most about

DENIED_FUNCTIONS = re.compile(
    r"""(?x)^(
        (duckdb|pragma|pg|txid|inet|read|parquet|json_execute|json_serialize)_\w*
      | current_(?!(date|time|timestamp|datetime|localtime|localtimestamp)$)\w*
      | has_\w+_privilege | (col|obj|shobj)_description | format_(pg_)?type
      | user | session_user | version | platform | user_agent | getenv | getvariable
      | setvariable | nextval | currval | setval | sleep_ms | write_log | query | query_table
      | glob | sniff_csv | \w+_scan | sql_auto_complete | which_secret | in_search_path
      | get_block_size | stats | invoke | parse_duckdb_log_message | database_size
      | storage_info | table_info | (list_|array_)?reduce
    )$"""
)
# bare names DuckDB answers with a function when no column has that name
FUNCTION_NAMES = frozenset(
    {"user", "current_user", "session_user", "current_role", "current_schema", "current_catalog"}
)
STATEMENTS = (
    *(exp.DDL, exp.DML, exp.Command, exp.Describe, exp.Summarize, exp.Pragma, exp.Show),
    *(exp.Set, exp.Use, exp.Attach, exp.Detach, exp.Install, exp.Transaction),
)
PARAMETERS = (exp.Placeholder, exp.Parameter, exp.SessionParameter)
# the parts of a printf or format pattern that set a width or precision
FORMAT_SPECS = re.compile(r"%[-+ #0']*[\d.]*|\{[^{}]*\}")


class QueryRejected(Exception):
    """A query the service refuses (HTTP 400 at creation, or a FAILED job)."""

    def __init__(self, message: str, context: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.context = context


def check(tree: exp.Query, map_table: Callable[[exp.Table], None]) -> None:
    """Refuse what ``tree`` may not use; ``map_table`` maps (or refuses) each log table."""
    if not within(tree, max_nodes=sys.maxsize, max_depth=MAX_DEPTH):
        raise QueryRejected(
            f"The query is nested too deeply (more than {MAX_DEPTH} levels of expressions); "
            "flatten it (fewer terms in one chain of operators, fewer levels of parentheses)"
        )
    cte_references = _cte_references(tree)
    for node in tree.walk():
        if isinstance(node, exp.Table) and id(node) not in cte_references:
            map_table(node)
        elif isinstance(node, STATEMENTS):
            raise QueryRejected("Only SELECT queries are supported", context=_shown(node))
        elif isinstance(node, PARAMETERS):
            raise QueryRejected("Query parameters are not supported", context=_shown(node))
        elif isinstance(node, exp.Func):
            _check_function(node)
        elif isinstance(node, exp.Column) and not node.table:
            _check_bare_name(node, tree, cte_references)
    _check_built_sizes(tree)


def within(tree: exp.Expression, max_nodes: int, max_depth: int) -> bool:
    """Whether ``tree`` has at most ``max_nodes`` nodes and ``max_depth`` levels (counted
    without recursion, so any depth can be measured)."""
    pending, count = [(tree, 1)], 0
    while pending:
        node, depth = pending.pop()
        count += 1
        if count > max_nodes or depth > max_depth:
            return False
        pending.extend((child, depth + 1) for child in node.iter_expressions())
    return True


def _cte_references(tree: exp.Query) -> set[int]:
    """Ids of the table nodes that name a CTE visible where they stand."""
    references = set()
    for scope in traverse_scope(tree):
        for table in scope.tables:
            source = scope.sources.get(table.alias_or_name)
            if isinstance(source, Scope) and not table.args.get("db"):
                references.add(id(table))
    return references


def function_name(node: exp.Func) -> str:
    """The lower-case name DuckDB sees for a function node."""
    if isinstance(node, exp.Pad):
        return "lpad" if node.args.get("is_left") else "rpad"
    return (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()


def _check_function(node: exp.Func) -> None:
    name = function_name(node)
    if DENIED_FUNCTIONS.match(name):
        raise QueryRejected(
            f"Function {name}() is not available: queries may read the log tables only",
            context=_shown(node),
        )
    bound = _SIZE_BOUNDS.get(name)
    if bound is not None and not bound(node):
        raise QueryRejected(
            f"{name}() takes literal sizes of at most {MAX_VALUE_SIZE:,} in the sandbox "
            "(it would build a value too large for the memory limit)",
            context=_shown(node),
        )
    if bound is not None and _inside_builder(node):
        raise QueryRejected(
            f"{name}() cannot be used inside a lambda or another function that builds a large "
            "value in the sandbox (the sizes would multiply)",
            context=_shown(node),
        )


def _inside_builder(node: exp.Expression) -> bool:
    """True when ``node`` stands inside a lambda or a size-bounded function."""
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.Lambda):
            return True
        if isinstance(parent, exp.Func) and function_name(parent) in _SIZE_BOUNDS:
            return True
        parent = parent.parent
    return False


def _log_columns(tree: exp.Query, cte_references: set[int]) -> set[str]:
    """Lower-case names of the columns of the log tables ``tree`` reads (from the catalog)."""
    names: set[str] = set()
    for table in tree.find_all(exp.Table):
        if id(table) in cte_references:
            continue
        try:
            found = catalog.table(f"{table.db}.{table.name}")
        except LookupError:
            continue  # not a log table: map_table refuses it
        names.update(f.name.lower() for f in found.fields)
    return names


def _check_bare_name(node: exp.Column, tree: exp.Query, cte_references: set[int]) -> None:
    name = node.name.lower()
    # a column of that name wins over DuckDB's function (firewall.userid has a `user`)
    if name in FUNCTION_NAMES and name not in _log_columns(tree, cte_references):
        raise QueryRejected(
            f"'{node.name}' names a DuckDB function here, not a column; use another name",
            context=node.name,
        )


def _shown(node: exp.Expression) -> str:
    return node.sql("bigquery")[:200]


# ---- sizes of values built by a function ----------------------------------------------------


def _int(node: exp.Expression | None) -> int | None:
    """The value of an integer literal (negative too), else None."""
    if isinstance(node, exp.Neg):
        inner = _int(node.this)
        return None if inner is None else -inner
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return int(node.this)
        except ValueError:
            return None
    return None


def _small(node: exp.Expression | None, absent_ok: bool = False) -> bool:
    if node is None:
        return absent_ok
    value = _int(node)
    return value is not None and value <= MAX_VALUE_SIZE


def _args(node: exp.Func) -> list[exp.Expression]:
    """Positional arguments, for functions sqlglot does not know by name."""
    if isinstance(node, exp.Anonymous):
        return list(node.expressions)
    return [value for value in node.args.values() if isinstance(value, exp.Expression)]


def _arg(node: exp.Func, position: int) -> exp.Expression | None:
    args = _args(node)
    return args[position] if position < len(args) else None


def _repeat_ok(node: exp.Func) -> bool:
    text, times = _arg(node, 0), _int(_arg(node, 1))
    if not (isinstance(text, exp.Literal) and text.is_string and times is not None):
        return False
    return len(text.this) * times <= MAX_VALUE_SIZE


def _series_ok(node: exp.Func) -> bool:
    bounds = [_int(arg) for arg in _args(node)]
    if not 1 <= len(bounds) <= 3 or None in bounds:
        return False
    start, end, step = (*([0] if len(bounds) == 1 else []), *bounds, 1, 1)[:3]
    return step != 0 and abs(end - start) // abs(step) <= MAX_VALUE_SIZE


def _format_ok(node: exp.Func) -> bool:
    pattern = _arg(node, 0)
    if not (isinstance(pattern, exp.Literal) and pattern.is_string) or "*" in pattern.this:
        return False
    specs = FORMAT_SPECS.findall(pattern.this)
    return all(int(n) <= MAX_VALUE_SIZE for spec in specs for n in re.findall(r"\d+", spec))


_SIZE_BOUNDS: dict[str, Callable[[exp.Func], bool]] = {
    "repeat": _repeat_ok,
    "lpad": lambda node: _small(_arg(node, 1)),
    "rpad": lambda node: _small(_arg(node, 1)),
    "bar": lambda node: _small(_arg(node, 3), absent_ok=True),
    "to_base": lambda node: _small(_arg(node, 2), absent_ok=True),
    "list_resize": lambda node: _small(_arg(node, 1)),
    "array_resize": lambda node: _small(_arg(node, 1)),
    "range": _series_ok,
    "generate_series": _series_ok,
    "generate_array": _series_ok,
    "generate_date_array": lambda node: False,
    "generate_timestamp_array": lambda node: False,
    "format": _format_ok,
    "printf": _format_ok,
}


# ---- sizes of strings grown by a function ---------------------------------------------------


def _check_built_sizes(tree: exp.Expression) -> None:
    """Refuse a statement that builds a string longer than ``MAX_BUILT_CHARS`` (estimated)."""
    sizes = built_chars(tree)
    for node in tree.walk():
        if _grower(node) is not None and sizes[id(node)] > MAX_BUILT_CHARS:
            name = f"{function_name(node)}()" if isinstance(node, exp.Func) else "||"
            raise QueryRejected(
                f"{name} may build a string of about {sizes[id(node)]:,} characters per row, "
                f"over the sandbox's {MAX_BUILT_CHARS:,} (replace, repeat, lpad, concat... "
                "nested in one another multiply sizes); build smaller values",
                context=_shown(node),
            )


def built_chars(tree: exp.Expression) -> dict[int, int]:
    """About the most characters each node of ``tree`` can make per row, by node id (an
    upper bound for growth; worked out children first, without recursion)."""
    sizes: dict[int, int] = {}
    for node in reversed(list(tree.walk())):
        sizes[id(node)] = _estimate(node, sizes)
    return sizes


def _estimate(node: exp.Expression, sizes: dict[int, int]) -> int:
    if isinstance(node, exp.Literal):
        return len(node.this)
    if isinstance(node, (exp.Column, exp.Dot, exp.AggFunc, exp.Subquery, exp.Query)):
        return FIELD_CHARS  # a value read, or made by DuckDB within its memory limit
    parts = [sizes[id(child)] for child in node.iter_expressions()]
    grower = _grower(node)
    if grower is not None:
        return grower(node, parts)
    return max(parts, default=8)  # most functions make a value about as long as their input


def _grower(node: exp.Expression) -> Callable[[exp.Expression, list[int]], int] | None:
    """How ``node`` grows the sizes of its arguments, when it is a function that does."""
    if isinstance(node, (exp.DPipe, exp.Concat, exp.ConcatWs)):
        return _sum_grows
    if isinstance(node, exp.Func):
        return _GROWERS.get(function_name(node))
    return None


def _sum_grows(node: exp.Expression, parts: list[int]) -> int:
    return sum(parts)


def _format_grows(node: exp.Expression, parts: list[int]) -> int:
    pattern = _arg(node, 0)
    text = pattern.this if isinstance(pattern, exp.Literal) else ""
    widths = sum(int(n) for spec in FORMAT_SPECS.findall(text) for n in re.findall(r"\d+", spec))
    return sum(parts) + widths


def _repeat_grows(node: exp.Expression, parts: list[int]) -> int:
    times = _int(_arg(node, 1))
    return parts[0] * (MAX_BUILT_CHARS + 1 if times is None else max(times, 0))


def _replace_grows(node: exp.Expression, parts: list[int]) -> int:
    found = _arg(node, 1)
    shortest = len(found.this) if isinstance(found, exp.Literal) and found.is_string else 1
    by = parts[2] if len(parts) > 2 else 0
    return parts[0] * max(1, -(-by // max(shortest, 1)))


def _regexp_replace_grows(node: exp.Expression, parts: list[int]) -> int:
    by = parts[2] if len(parts) > 2 else 0
    return (parts[0] + 1) * (by + 1)  # a pattern may match between every two characters


def _pad_grows(node: exp.Expression, parts: list[int]) -> int:
    width = _int(_arg(node, 1))
    return MAX_BUILT_CHARS + 1 if width is None else max(width, parts[0] if parts else 0)


_GROWERS: dict[str, Callable[[exp.Expression, list[int]], int]] = {
    "repeat": _repeat_grows,
    "replace": _replace_grows,
    "regexp_replace": _regexp_replace_grows,
    "lpad": _pad_grows,
    "rpad": _pad_grows,
    "format": _format_grows,
    "printf": _format_grows,
    "concat": _sum_grows,
    "concat_ws": _sum_grows,
    "array_to_string": _sum_grows,
}
