"""BigQuery-style type checks of a csql query, made when its job is created.

The service types every expression of a query before it reads any data (BigQuery's analysis)
and refuses a query whose types do not fit, with a 400. DuckDB, which runs the sandbox's
queries, is more lenient: it casts a quoted string to an integer, a struct or a timestamp while
it runs, so ``dest_port = "443"`` would be accepted and ``source_ip = "10.1.2.3"`` would fail
only halfway through the job. ``check`` applies the service's rules at creation instead:

- Comparisons (``=``, ``<``, ``BETWEEN``, ``IN``...): both sides of one family. Numbers compare
  with numbers, DATE with DATETIME, and a quoted string *literal* with a DATE, DATETIME, TIME
  or TIMESTAMP when it spells one (BigQuery's literal coercion); nothing else converts, so a
  STRING never meets an INT64 or a BOOL, a TIMESTAMP never meets an INT64, a DATE or a
  DATETIME, and a STRUCT or ARRAY is never compared with a scalar (nor an ARRAY with anything).
- Literals: a quoted string that must become a date or time (compared with one, in
  ``TIMESTAMP("...")``, ``CAST("..." AS DATE)``, ``TIMESTAMP "..."``) has to spell one.
- ``LIKE`` and the string functions take strings, ``SUM``/``AVG`` numbers, the ``TIMESTAMP_*``
  functions timestamps; arithmetic takes numbers (dates and timestamps with intervals, dates
  with integers); ``WHERE``/``HAVING`` take a BOOL.
- Struct paths: the field must exist in the struct (``source_ip.valu`` is refused), and only
  structs have fields.

Types come from sqlglot's analysis (``qualify`` resolves every column against the log tables'
schema, ``annotate_types`` types every expression with BigQuery's rules), run on a copy of the
tree. Only types sqlglot is sure of count: an expression it cannot type passes, and a query
whose columns it cannot resolve is left to DuckDB's binding (which refuses unknown names).
Messages follow BigQuery's wording and end with ``at [line:column]`` of the csql text;
``binding_refusal`` words DuckDB's own binding errors (unknown names and functions, columns
neither grouped nor aggregated) the same way.

Bounded work: nothing is evaluated, and sqlglot's column resolution costs the number of
columns times the depth of the tree, so a query of more than ``MAX_ANALYSED_NODES`` nodes or
``MAX_ANALYSED_DEPTH`` levels (a chain of thousands of ``OR``, a list of thousands of values)
is not analysed here: DuckDB's binding alone checks it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence

import sqlglot
from sqlglot import exp, tokens
from sqlglot.dialects.bigquery import BigQuery
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import Schema

from cortex_nb.catalog import closest
from cortex_nb.sandbox.service.policy import QueryRejected, within

__all__ = [
    "KIND",
    "MAX_ANALYSED_DEPTH",
    "MAX_ANALYSED_NODES",
    "binding_refusal",
    "check",
    "kind",
    "type_name",
    "visible_names",
]

KIND = "csql_kind"  # meta key: the type family of an expression, when the analysis knows it
_NUMBER = "csql_node"  # meta key: a node's place in the tree, to find it again in the copy

MAX_ANALYSED_NODES = 5000  # about half a second of analysis
MAX_ANALYSED_DEPTH = 150

NUMERIC = frozenset({"INT64", "FLOAT64", "NUMERIC", "BIGNUMERIC"})
STRINGS = frozenset({"STRING", "BYTES"})
TEMPORAL = frozenset({"DATE", "DATETIME", "TIME", "TIMESTAMP"})
_KINDS: dict[exp.DType, str] = {
    **dict.fromkeys(exp.DataType.INTEGER_TYPES, "INT64"),
    **dict.fromkeys(exp.DataType.REAL_TYPES, "FLOAT64"),
    exp.DType.DECIMAL: "NUMERIC",
    exp.DType.BIGDECIMAL: "BIGNUMERIC",
    **dict.fromkeys(exp.DataType.TEXT_TYPES, "STRING"),
    exp.DType.BINARY: "BYTES",
    exp.DType.VARBINARY: "BYTES",
    exp.DType.BLOB: "BYTES",
    exp.DType.BOOLEAN: "BOOL",
    exp.DType.TIMESTAMPTZ: "TIMESTAMP",
    exp.DType.TIMESTAMPLTZ: "TIMESTAMP",
    # sqlglot's BigQuery reading: DATETIME is a wall-clock time; a bare TIMESTAMP type is
    # left out on purpose (sqlglot uses it for either meaning)
    exp.DType.DATETIME: "DATETIME",
    exp.DType.DATE: "DATE",
    exp.DType.TIME: "TIME",
    exp.DType.STRUCT: "STRUCT",
    exp.DType.ARRAY: "ARRAY",
    exp.DType.INTERVAL: "INTERVAL",
    exp.DType.NULL: "NULL",
}
# BigQuery's canonical literal formats, which a quoted string must follow to become that type
_DATE = r"\s*\d{4}-\d{1,2}-\d{1,2}"
_TIME = r"\d{1,2}:\d{1,2}(:\d{1,2}(\.\d{1,6})?)?"
_ZONE = r"(\s*(Z|UTC|[+-]\d{1,2}(:?\d{2})?)|\s+[A-Za-z_]+(/[A-Za-z_+-]+)+)?"
LITERAL_FORMATS = {
    "INT64": re.compile(r"\s*[+-]?(\d+|0[xX][0-9a-fA-F]+)\s*"),
    "FLOAT64": re.compile(
        r"\s*[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity|nan)\s*", re.IGNORECASE
    ),
    "NUMERIC": re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*"),
    "BOOL": re.compile(r"\s*(true|false)\s*", re.IGNORECASE),
    "DATE": re.compile(rf"{_DATE}\s*"),
    "TIME": re.compile(rf"\s*{_TIME}\s*"),
    "DATETIME": re.compile(rf"{_DATE}([ T]{_TIME})?\s*"),
    "TIMESTAMP": re.compile(rf"{_DATE}([ Tt]{_TIME})?{_ZONE}\s*", re.IGNORECASE),
}
_COMPARISONS: dict[type[exp.Expression], str] = {
    exp.EQ: "=",
    exp.NEQ: "!=",
    exp.GT: ">",
    exp.GTE: ">=",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.NullSafeEQ: "IS NOT DISTINCT FROM",
    exp.NullSafeNEQ: "IS DISTINCT FROM",
}
_ORDERING = frozenset({">", ">=", "<", "<="})
_ARITHMETIC: dict[type[exp.Expression], str] = {
    exp.Add: "+",
    exp.Sub: "-",
    exp.Mul: "*",
    exp.Div: "/",
}
# functions whose first argument must be of one family: sqlglot node -> (name, accepted)
_FIRST_ARGUMENT: dict[type[exp.Expression], tuple[str, frozenset[str]]] = {
    exp.RegexpLike: ("REGEXP_CONTAINS", STRINGS),
    exp.RegexpExtract: ("REGEXP_EXTRACT", STRINGS),
    exp.RegexpReplace: ("REGEXP_REPLACE", STRINGS),
    exp.Lower: ("LOWER", STRINGS),
    exp.Upper: ("UPPER", STRINGS),
    exp.StartsWith: ("STARTS_WITH", STRINGS),
    exp.EndsWith: ("ENDS_WITH", STRINGS),
    exp.Sum: ("SUM", NUMERIC | {"INTERVAL"}),
    exp.Avg: ("AVG", NUMERIC | {"INTERVAL"}),
    exp.TimestampAdd: ("TIMESTAMP_ADD", frozenset({"TIMESTAMP"})),
    exp.TimestampSub: ("TIMESTAMP_SUB", frozenset({"TIMESTAMP"})),
    exp.TimestampTrunc: ("TIMESTAMP_TRUNC", frozenset({"TIMESTAMP"})),
    exp.TimestampDiff: ("TIMESTAMP_DIFF", frozenset({"TIMESTAMP"})),
    exp.UnixSeconds: ("UNIX_SECONDS", frozenset({"TIMESTAMP"})),
    exp.UnixMillis: ("UNIX_MILLIS", frozenset({"TIMESTAMP"})),
    exp.UnixMicros: ("UNIX_MICROS", frozenset({"TIMESTAMP"})),
    exp.UnixToTime: ("TIMESTAMP_SECONDS", frozenset({"INT64"})),
    exp.DateAdd: ("DATE_ADD", frozenset({"DATE"})),
    exp.DateSub: ("DATE_SUB", frozenset({"DATE"})),
}
# functions and casts that turn a quoted string into a date or time
_LITERAL_CONVERSIONS: dict[type[exp.Expression], str] = {
    exp.Timestamp: "TIMESTAMP",
    exp.TsOrDsToTimestamp: "TIMESTAMP",
    exp.Date: "DATE",
    exp.TsOrDsToDate: "DATE",
    exp.TsOrDsToDatetime: "DATETIME",
}


def check(tree: exp.Query, schema: Schema, csql: str) -> None:
    """Refuse ``tree`` (``QueryRejected``) when its types do not fit BigQuery's rules.

    ``tree`` is the checked csql tree whose tables name the sandbox's catalog, ``schema``
    their columns, ``csql`` the text (for positions). The family of each expression whose
    type is known is left in its ``meta[KIND]`` (``TIMESTAMP``, ``STRING``...), for the
    translation; the tree is otherwise unchanged.
    """
    if not within(tree, MAX_ANALYSED_NODES, MAX_ANALYSED_DEPTH):
        return
    originals = list(tree.walk())
    for number, node in enumerate(originals):
        node.meta[_NUMBER] = number
    typed = _typed_copy(tree, schema)
    if typed is None:
        return
    checker = _Checker(csql)
    for node in _inside_out(typed):
        rule = _RULES.get(type(node))
        if rule is not None:
            rule(checker, node)
        if type(node) in _FIRST_ARGUMENT:
            checker.first_argument(node)
        number, found = node.meta.get(_NUMBER), kind(node)
        if number is not None and found is not None:
            originals[number].meta[KIND] = found


def type_name(dtype: exp.DataType | None) -> str:
    """A type as BigQuery writes it in messages (``INT64``, ``STRUCT<value STRING>``...)."""
    if dtype is None:
        return "UNKNOWN"
    return dtype.sql("bigquery").replace("`", "")


def kind(node: exp.Expression) -> str | None:
    """The family of ``node``'s type (``INT64``, ``STRING``, ``TIMESTAMP``...), None if unknown."""
    if isinstance(node, exp.Null):
        return "NULL"  # BigQuery types a bare NULL as INT64, yet it fits anywhere
    dtype = node.type
    return None if dtype is None else _KINDS.get(dtype.this)


def _inside_out(tree: exp.Expression):
    """Every node of ``tree``, each after its arguments and left to right (post-order): the
    error reported is the innermost, first one, as BigQuery's analysis finds it."""
    pending: list[tuple[exp.Expression, bool]] = [(tree, False)]
    while pending:
        node, expanded = pending.pop()
        if expanded:
            yield node
            continue
        pending.append((node, True))
        pending.extend((child, False) for child in reversed(list(node.iter_expressions())))


def _typed_copy(tree: exp.Query, schema: Schema) -> exp.Expression | None:
    """A qualified, type-annotated copy of ``tree``; None when sqlglot cannot follow it."""
    try:
        typed = qualify(
            tree.copy(),
            schema=schema,
            dialect="bigquery",
            expand_stars=False,
            quote_identifiers=False,
        )
        return annotate_types(typed, schema=schema, dialect="bigquery")
    except (SqlglotError, KeyError, ValueError, TypeError, AttributeError):
        # a column it cannot resolve, or a form its analysis does not know: DuckDB's binding
        # decides (it refuses unknown names with its own message)
        return None


class _Checker:
    """The rules, with what they need to word a refusal (the csql text, for positions)."""

    def __init__(self, csql: str) -> None:
        self.csql = csql

    def refuse(self, message: str, node: exp.Expression, keyword: str = "") -> None:
        """Raise the service's refusal for ``node``, positioned in the csql text (at the
        ``keyword`` that opens it, for nodes whose own tokens carry no position)."""
        spans = [(n.meta["start"], n.meta["end"]) for n in node.walk() if "start" in n.meta]
        if not spans:
            raise QueryRejected(message, context=node.sql("bigquery"))
        start, end = min(s for s, _ in spans), max(e for _, e in spans) + 1
        opening = self.csql.upper().rfind(keyword, 0, start) if keyword else -1
        start = opening if opening >= 0 else start
        # the closing parentheses of calls carry no position: take those the text still owes
        owed = self.csql.count("(", start, end) - self.csql.count(")", start, end)
        while owed > 0 and end < len(self.csql):
            owed += {"(": 1, ")": -1}.get(self.csql[end], 0)
            end += 1
        raise QueryRejected(f"{message}{_at(self.csql, start)}", self.csql[start:end])

    # ---- comparisons ----------------------------------------------------------------------

    def comparison(self, node: exp.Expression) -> None:
        """``a op b``: both sides comparable."""
        operator = _COMPARISONS[type(node)]
        self.compare(node, operator, node.this, [node.expression])

    def between(self, node: exp.Between) -> None:
        """``a BETWEEN low AND high``: every bound comparable with ``a``."""
        self.compare(node, "BETWEEN", node.this, [node.args["low"], node.args["high"]])

    def in_list(self, node: exp.In) -> None:
        """``a IN (x, y)``: every listed value comparable with ``a`` (subqueries pass)."""
        if node.expressions:
            self.compare(node, "IN", node.this, node.expressions)

    def compare(
        self, node: exp.Expression, operator: str, left: exp.Expression, others: list
    ) -> None:
        """Refuse the first of ``others`` that cannot be compared with ``left``."""
        for other in others:
            problem = _comparison_problem(operator, left, other) or _comparison_problem(
                operator, other, left
            )
            if problem:
                self.refuse(problem, node)

    def like(self, node: exp.Like | exp.ILike) -> None:
        """``a LIKE b``: two strings (or two byte strings)."""
        sides = [node.this, node.expression]
        kinds = [kind(side) for side in sides]
        if any(k is not None and k not in STRINGS | {"NULL"} for k in kinds):
            names = ", ".join(type_name(side.type) for side in sides)
            self.refuse(
                f"No matching signature for operator LIKE for argument types: {names}. "
                "Supported signatures: STRING LIKE STRING; BYTES LIKE BYTES",
                node,
            )

    # ---- functions, arithmetic, clauses ---------------------------------------------------

    def first_argument(self, node: exp.Expression) -> None:
        """A function whose first argument must be of one family (strings, numbers...)."""
        name, accepted = _FIRST_ARGUMENT[type(node)]
        argument = _unwrap_conversion(node.this)
        found = kind(argument)
        if found is None or found in accepted or found == "NULL":
            return
        if found == "STRING" and _is_string_literal(argument) and accepted & TEMPORAL:
            self.literal(argument, next(iter(accepted & TEMPORAL)), node)
            return
        self.refuse(
            f"No matching signature for function {self.called_name(node, name)} for argument "
            f"types: {type_name(argument.type)}",
            node,
        )

    def format_timestamp(self, node: exp.TimeToStr) -> None:
        """``FORMAT_TIMESTAMP(format, ts)`` (sqlglot wraps ``ts``): ``ts`` a timestamp."""
        if isinstance(node.this, exp.TsOrDsToTimestamp):
            argument = node.this.this
            found = kind(argument)
            if found == "STRING" and _is_string_literal(argument):
                self.literal(argument, "TIMESTAMP", node)
            elif found is not None and found not in {"TIMESTAMP", "NULL"}:
                self.refuse(
                    "No matching signature for function FORMAT_TIMESTAMP for argument types: "
                    f"STRING, {type_name(argument.type)}",
                    node,
                )

    def conversion(self, node: exp.Expression) -> None:
        """``TIMESTAMP("...")``, ``DATE("...")``, ``CAST("..." AS TIMESTAMP)``: a valid literal."""
        if isinstance(node, exp.Cast):
            target = kind(node.args["to"]) if node.args.get("to") else None
            if node.args.get("safe") or isinstance(node, exp.TryCast):
                return  # SAFE_CAST turns a bad value into NULL
        else:
            target = _LITERAL_CONVERSIONS[type(node)]
        if target in LITERAL_FORMATS and _is_string_literal(node.this):
            self.literal(node.this, target, node)

    def literal(self, literal: exp.Literal, target: str, node: exp.Expression) -> None:
        """Refuse a quoted string that does not spell a ``target`` (DATE, TIMESTAMP...)."""
        if not LITERAL_FORMATS[target].fullmatch(literal.this):
            self.refuse(f'Could not cast literal "{literal.this}" to type {target}', node)

    def branches(self, node: exp.Expression) -> None:
        """``IFNULL``/``COALESCE``, ``IF`` and ``CASE``: values of one supertype."""
        if isinstance(node, exp.If) and isinstance(node.parent, exp.Case):
            return  # a WHEN ... THEN of a CASE: the CASE checks its values
        values, head, listed = self.branch_values(node)
        if not all(_coercible(a, b) for a in values for b in values):
            keyword = {exp.If: "IF", exp.Case: "CASE"}.get(type(node), "")
            self.refuse(head + ", ".join(type_name(v.type) for v in listed), node, keyword)

    def branch_values(self, node: exp.Expression) -> tuple[list, str, list]:
        """The values that need a common type, the message's start, and what it lists."""
        if isinstance(node, exp.Coalesce):
            values = [node.this, *node.expressions]
            name = self.called_name(node, "COALESCE")
            return values, f"No matching signature for function {name} for argument types: ", values
        if isinstance(node, exp.Case):
            values = [branch.args.get("true") for branch in node.args.get("ifs") or []]
            values = [v for v in [*values, node.args.get("default")] if v is not None]
            head = (
                "No matching signature for operator CASE; all THEN/ELSE arguments must be "
                "coercible to a common type but found: "
            )
            return values, head, values
        values = [v for v in (node.args.get("true"), node.args.get("false")) if v is not None]
        head = "No matching signature for function IF for argument types: "
        return values, head, [node.this, *values]

    def called_name(self, node: exp.Expression, default: str) -> str:
        """The function name as the csql spells it at ``node`` (``IFNULL`` for a COALESCE)."""
        start = node.meta.get("start")
        found = re.match(r"[A-Za-z_]\w*", self.csql[start:]) if start is not None else None
        return found.group(0).upper() if found else default

    def arithmetic(self, node: exp.Binary) -> None:
        """``a + b`` and the like: numbers, or dates and times with what they take."""
        operator = _ARITHMETIC[type(node)]
        left, right = kind(node.this), kind(node.expression)
        if left is None or right is None or "NULL" in (left, right):
            return
        if not _arithmetic_fits(operator, left, right):
            self.refuse(
                f"No matching signature for operator {operator} for argument types: "
                f"{type_name(node.this.type)}, {type_name(node.expression.type)}",
                node,
            )

    def condition(self, node: exp.Where | exp.Having) -> None:
        """``WHERE``/``HAVING``: a BOOL."""
        found = kind(node.this)
        if found is not None and found not in {"BOOL", "NULL"}:
            clause = "WHERE" if isinstance(node, exp.Where) else "HAVING"
            self.refuse(
                f"{clause} clause should return type BOOL, but returns {type_name(node.this.type)}",
                node.this,
            )

    def field_access(self, node: exp.Dot) -> None:
        """``struct.field``: the field exists, and only structs have fields."""
        found = kind(node.this)
        name = node.expression.name if isinstance(node.expression, exp.Identifier) else None
        if found is None or name is None:
            return
        if found != "STRUCT":
            self.refuse(
                f"Cannot access field {name} on a value with type {type_name(node.this.type)}",
                node,
            )
        fields = {f.name.lower() for f in node.this.type.expressions}
        if fields and name.lower() not in fields:
            self.refuse(f"Field name {name} does not exist in {type_name(node.this.type)}", node)


def _comparison_problem(operator: str, left: exp.Expression, right: exp.Expression) -> str:
    """Why ``left`` cannot be compared with ``right`` by ``operator``, or ''."""
    a, b = kind(left), kind(right)
    if a is None or b is None or "NULL" in (a, b) or "INTERVAL" in (a, b):
        return ""
    if "ARRAY" in (a, b):
        array = left if a == "ARRAY" else right
        what = "Equality" if operator not in _ORDERING else "Less than"
        return f"{what} is not defined for arguments of type {type_name(array.type)}"
    if a == "STRUCT" and b == "STRUCT" and operator in _ORDERING:
        return f"Less than is not defined for arguments of type {type_name(left.type)}"
    if a == b or {a, b} <= NUMERIC or {a, b} == {"DATE", "DATETIME"}:
        return ""
    if b == "STRING" and a in TEMPORAL and _is_string_literal(right):
        if LITERAL_FORMATS[a].fullmatch(right.this):
            return ""
        return f'Could not cast literal "{right.this}" to type {a}'
    if a == "STRING" and b in TEMPORAL and _is_string_literal(left):
        return ""  # seen from the other side
    return (
        f"No matching signature for operator {operator} for argument types: "
        f"{type_name(left.type)}, {type_name(right.type)}"
    )


def _coercible(left: exp.Expression, right: exp.Expression) -> bool:
    """Whether ``left`` and ``right`` have a common supertype (unknown types pass)."""
    a, b = kind(left), kind(right)
    if a is None or b is None or "NULL" in (a, b):
        return True
    if a == b or {a, b} <= NUMERIC or {a, b} == {"DATE", "DATETIME"}:
        return True
    literal, other = (left, b) if a == "STRING" else (right, a)
    return (
        other in TEMPORAL
        and _is_string_literal(literal)
        and bool(LITERAL_FORMATS[other].fullmatch(literal.this))
    )


def _arithmetic_fits(operator: str, left: str, right: str) -> bool:
    if left in NUMERIC and right in NUMERIC:
        return True
    if operator == "+":
        pair = {left, right}
        return pair in ({"DATE", "INT64"}, {"INTERVAL"}) or (
            "INTERVAL" in pair and bool(pair & TEMPORAL)
        )
    if operator == "-":
        if right == "INTERVAL":
            return left in TEMPORAL or left == "INTERVAL"
        return (left, right) == ("DATE", "INT64") or (left == right and left in TEMPORAL)
    return "INTERVAL" in (left, right) and bool({left, right} & NUMERIC)


def _is_string_literal(node: exp.Expression | None) -> bool:
    return isinstance(node, exp.Literal) and node.is_string


def _unwrap_conversion(node: exp.Expression) -> exp.Expression:
    """The argument inside sqlglot's implicit ``TsOrDsTo...`` wrappers."""
    while isinstance(node, (exp.TsOrDsToTimestamp, exp.TsOrDsToDate, exp.TsOrDsToDatetime)):
        node = node.this
    return node


_RULES: dict[type[exp.Expression], Callable[[_Checker, exp.Expression], None]] = {
    **dict.fromkeys(_COMPARISONS, _Checker.comparison),
    **dict.fromkeys(_ARITHMETIC, _Checker.arithmetic),
    **dict.fromkeys(_LITERAL_CONVERSIONS, _Checker.conversion),
    exp.Cast: _Checker.conversion,
    exp.Between: _Checker.between,
    exp.In: _Checker.in_list,
    exp.Like: _Checker.like,
    exp.ILike: _Checker.like,
    exp.TimeToStr: _Checker.format_timestamp,
    exp.Where: _Checker.condition,
    exp.Having: _Checker.condition,
    exp.Dot: _Checker.field_access,
    exp.Coalesce: _Checker.branches,
    exp.If: _Checker.branches,
    exp.Case: _Checker.branches,
}


# ---- DuckDB's binding errors, in the service's words -------------------------------------

# DuckDB's message -> BigQuery's wording
_BINDING_ERRORS = [
    (r'Referenced column "(?P<name>[^"]+)" not found', "Unrecognized name: {name}"),
    (
        # ``sorce_ip.value``: the head names no table and no column; DuckDB calls it a table
        r'Referenced table "(?P<name>[^".]+)[^"]*" not found',
        "Unrecognized name: {name}",
    ),
    (
        r'Could not find key "(?P<name>[^"]+)" in struct',
        "Field name {name} does not exist in STRUCT",
    ),
    (
        r"(?:Scalar|Aggregate|Table) Function with name (?P<name>\S+) does not",
        "Function not found: {name}",
    ),
    (
        # a view (every log table is one) is a "Values list" to DuckDB's binder
        r'(?:Table|Values list) "(?P<table>[^"]+)" does not have a column named "(?P<name>[^"]+)"',
        "Name {name} not found inside {table}",
    ),
    (
        r'column "(?P<name>[^"]+)" must appear in the GROUP BY clause',
        "SELECT list expression references column {name} which is neither grouped nor aggregated",
    ),
]
# DuckDB's candidates for an unknown name: 'Candidate bindings: "source_ip", "source_port"'
_CANDIDATES = re.compile(r'"([^"]+)"')


def binding_refusal(
    message: str, details: str | None, csql: str, names: Sequence[str] = ()
) -> QueryRejected:
    """The refusal for a DuckDB binding error, worded as the service words it when it can.

    An unknown name also gets BigQuery's ``Did you mean ...?`` from DuckDB's candidates (or
    from ``names``, the names the query can use, when DuckDB lists none) and the
    ``at [line:column]`` where the name stands in the csql text.
    """
    for pattern, wording in _BINDING_ERRORS:
        found = re.search(pattern, message)
        if found is None:
            continue
        name = found.group("name")
        text = wording.format(**found.groupdict())
        suggestions = closest(name, _candidates(details, names, text), n=1)
        if suggestions:
            text += f"; Did you mean {suggestions[0]}?"
        return QueryRejected(text + _name_position(csql, name), context=name)
    return QueryRejected(message, context=details)


def _candidates(details: str | None, names: Sequence[str], text: str) -> list[str]:
    """The names to suggest from: DuckDB's candidate columns, else for an unrecognized name
    the query's own (DuckDB's candidate *tables* would suggest a table for a column)."""
    if (details or "").startswith("Candidate bindings"):
        return _CANDIDATES.findall(details or "")
    return list(names) if text.startswith("Unrecognized name") else []


def visible_names(sql: str, schema: Schema) -> list[str]:
    """The names a query's columns may use, for suggestions: the columns of the tables it
    reads (``sql`` is the translated query, whose tables name the schema's) and its aliases."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except SqlglotError:
        return []
    names = [a.alias for a in tree.find_all(exp.Alias, exp.TableAlias) if a.alias]
    for table in tree.find_all(exp.Table):
        with contextlib.suppress(SqlglotError, KeyError, ValueError):
            names += schema.column_names(table, dialect="duckdb")
    return list(dict.fromkeys(names))


def _name_position(csql: str, name: str) -> str:
    """`` at [line:column]`` of the first token spelling ``name`` in ``csql``, or ''."""
    wanted = name.lower()
    try:
        found = BigQuery().tokenize(csql)
    except SqlglotError:
        return ""
    for token in found:
        if token.token_type != tokens.TokenType.STRING and token.text.lower() == wanted:
            return _at(csql, token.start)
    return ""


def _at(csql: str, offset: int) -> str:
    """`` at [line:column]`` (from 1, as BigQuery counts) of character ``offset`` of ``csql``."""
    line = csql.count("\n", 0, offset) + 1
    column = offset - (csql.rfind("\n", 0, offset) + 1) + 1
    return f" at [{line}:{column}]"
