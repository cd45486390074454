"""csql (BigQuery's SQL) in DuckDB's words, with BigQuery's meaning.

sqlglot reads csql as BigQuery and writes DuckDB; ``Csql`` is its DuckDB dialect with the
forms log queries use and that DuckDB spells, or means, differently:

- ``TIME(ts)``: the time of day in UTC (DuckDB has no cast from TIMESTAMPTZ to TIME).
- ``EXTRACT``: ``DAYOFWEEK`` counts from Sunday = 1, ``WEEK`` and ``WEEK(<day>)`` number the
  weeks that start on that day (0 before the first one), ``MILLISECOND``/``MICROSECOND`` leave
  the whole seconds out, and ``DATE``/``TIME``/``DATETIME`` take that part of a timestamp.
- ``FORMAT_TIMESTAMP``/``FORMAT_DATE``/``FORMAT_DATETIME``/``FORMAT_TIME``: BigQuery's format
  elements (``%E*S``, ``%Ez``, ``%s``, ``%e``, ``%k``, ``%Q``...) and the time zone argument.
- ``TIMESTAMP_DIFF`` counts whole units between the instants (DuckDB's ``date_diff`` counts
  boundaries crossed); ``DATE_ADD``/``DATE_SUB`` stay DATEs; ``TIMESTAMP_SECONDS``/``_MILLIS``/
  ``_MICROS``, ``PARSE_TIMESTAMP`` and ``CURRENT_*`` have BigQuery's types.
- ``LIKE`` takes backslash escapes; ``FORMAT`` is printf-style; ``SAFE.f(...)`` gives NULL
  where ``f`` fails; ``ARRAY_AGG(... LIMIT n)``; ``APPROX_TOP_COUNT`` gives ``{value, count}``
  structs.

What sqlglot knows it cannot write for DuckDB is refused (``UnsupportedError``), never
written approximately.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import ErrorLevel

from cortex_nb.sandbox.service.policy import QueryRejected
from cortex_nb.sandbox.service.typecheck import KIND

__all__ = ["Csql", "to_duckdb"]

_UTC = exp.Literal.string("UTC")
# nodes the generator below writes with a method of its own
_WRITTEN_HERE = frozenset(
    {
        *(exp.TimeToStr, exp.TimestampDiff, exp.DateAdd, exp.DateSub, exp.UnixToTime),
        *(exp.StrToTime, exp.NetFunc),
    }
)
# EXTRACT parts that DuckDB reads the way BigQuery does
_SAME_PARTS = frozenset(
    {"YEAR", "QUARTER", "MONTH", "DAY", "DAYOFYEAR", "HOUR", "MINUTE", "SECOND", "ISOYEAR"}
)
_WEEKDAYS = ("SUNDAY", "MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY")
# a format element as sqlglot leaves it after reading BigQuery's (it expands %F, %T, %D, %c,
# %x and %E6S, and turns %e into %-d): %E*S, %E<digits>S, %Ez, %-d, or one letter
_ELEMENT = re.compile(r"%(E\*S|E\d+S|E4Y|Ez|[EO]?[-]?[A-Za-z%])")
# a printf specification: flags, width and precision, then the conversion
_PRINTF_SPEC = re.compile(r"%([-+ #0']*\d*(?:\.\d+)?)([a-zA-Z%])")
# elements DuckDB's strftime writes as BigQuery does
_NATIVE = frozenset("aAbBdHIjmMpSuUVwWyYGXhf%")


def to_duckdb(tree: exp.Expression) -> str:
    """The DuckDB SQL for a csql tree (``UnsupportedError`` for what has no translation).

    The tree is written as it is, not copied first (a copy costs as much as the writing), so
    it may be changed on the way: the caller keeps only the text.
    """
    return tree.sql(dialect=Csql, unsupported_level=ErrorLevel.RAISE, copy=False)


def _sql(template: str, **parts: exp.Expression) -> exp.Expression:
    """A DuckDB expression from ``template`` whose names ``parts`` replaces by expressions."""
    tree = sqlglot.parse_one(template, dialect="duckdb")

    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and not node.table and node.name in parts:
            return parts[node.name].copy()
        return node

    return tree.transform(swap)


def _epoch_seconds(value: exp.Expression) -> exp.Expression:
    """Whole seconds since the epoch, rounded down as BigQuery does (DuckDB's cast rounds)."""
    return _sql("CAST(FLOOR(EPOCH_US(v) / 1000000) AS BIGINT)", v=value)


def _strftime(value: exp.Expression, pattern: str) -> exp.Expression:
    """DuckDB's ``strftime`` with a pattern in DuckDB's notation (a call sqlglot leaves as it
    is: its own ``STRFTIME`` node would read the pattern as BigQuery's again)."""
    return exp.Anonymous(this="STRFTIME", expressions=[value.copy(), exp.Literal.string(pattern)])


def _as_time(value: exp.Expression) -> exp.Expression:
    """A timestamp's time of day in UTC (via DuckDB's wall-clock TIMESTAMP, UTC here)."""
    return exp.cast(exp.cast(value, exp.DType.TIMESTAMP), exp.DType.TIME)


def _local(value: exp.Expression, zone: exp.Expression | None) -> exp.Expression:
    """The wall-clock time (a DuckDB TIMESTAMP) of an instant in ``zone`` (UTC if None)."""
    instant = exp.cast(value, exp.DType.TIMESTAMPTZ)
    if zone is None:
        return exp.cast(instant, exp.DType.TIMESTAMP)
    return exp.Anonymous(this="TIMEZONE", expressions=[zone.copy(), instant])


class Csql(DuckDB):
    """DuckDB, written for csql queries (see the module docstring)."""

    class Generator(DuckDB.Generator):
        """DuckDB's generator with BigQuery's meaning for the forms above."""

        # DuckDB's own transforms win over methods: drop those this class writes itself
        TRANSFORMS = {
            **{
                node: written
                for node, written in DuckDB.Generator.TRANSFORMS.items()
                if node not in _WRITTEN_HERE
            },
            exp.TsOrDsToTime: lambda self, e: self.sql(_as_time(e.this)),
            exp.CurrentTime: lambda self, e: self.sql(_as_time(exp.CurrentTimestamp())),
            exp.SafeFunc: lambda self, e: self.func("TRY", e.this),
            exp.UnixSeconds: lambda self, e: self.sql(_epoch_seconds(e.this)),
        }

        def cast_sql(self, expression: exp.Cast, safe_prefix: str | None = None) -> str:
            """``CAST(timestamp AS STRING)`` as BigQuery writes it: ``+00``, and 0, 3 or 6
            digits of fraction (DuckDB drops trailing zeros)."""
            to_text = expression.to.is_type(*exp.DataType.TEXT_TYPES)
            if to_text and expression.this.meta.get(KIND) == "TIMESTAMP":
                return self.sql(_timestamp_text(expression.this))
            return super().cast_sql(expression, safe_prefix)

        def format_sql(self, expression: exp.Format) -> str:
            """``FORMAT(pattern, ...)``: printf-style, as DuckDB's ``printf``."""
            pattern, values = _printf_arguments(expression.this, expression.expressions)
            return self.func("PRINTF", pattern, *values)

        def currentdatetime_sql(self, expression: exp.CurrentDatetime) -> str:
            """``CURRENT_DATETIME([zone])``: the wall-clock time now (UTC by default)."""
            return self.sql(_local(exp.CurrentTimestamp(), expression.this))

        def extract_sql(self, expression: exp.Extract) -> str:
            """``EXTRACT(part FROM value)`` with BigQuery's parts."""
            value, part = expression.expression, expression.this
            if isinstance(part, exp.WeekStart):
                return self.sql(_week_number(value, part.name.upper()))
            name = part.name.upper()
            built = _EXTRACTED.get(name)
            if built is not None:
                return self.sql(built(value))
            if name == "WEEK":
                return self.sql(_week_number(value, "SUNDAY"))
            if name not in _SAME_PARTS:  # BigQuery's parts are all known here
                raise QueryRejected(f"A valid date part name is required but found {name}")
            return super().extract_sql(expression)

        def timetostr_sql(self, expression: exp.TimeToStr) -> str:
            """``FORMAT_TIMESTAMP`` and its kin: BigQuery's elements, in the given zone."""
            value, zone = expression.this, expression.args.get("zone")
            instant = None
            if isinstance(value, exp.TsOrDsToTimestamp):
                instant = exp.cast(value.this, exp.DType.TIMESTAMPTZ)
                local = _local(value.this, zone)
            elif isinstance(value, exp.TsOrDsToDate):
                local = exp.cast(value.this, exp.DType.DATE)
            elif isinstance(value, exp.TsOrDsToTime):
                # strftime takes no TIME: put the time on a date
                local = _sql("DATE '1970-01-01' + CAST(v AS TIME)", v=value.this)
            else:
                inner = value.this if isinstance(value, exp.TsOrDsToDatetime) else value
                local = exp.cast(inner, exp.DType.TIMESTAMP)
            pattern = expression.args.get("format")
            if not (isinstance(pattern, exp.Literal) and pattern.is_string):
                return self.func("STRFTIME", local, pattern)
            parts = _format_parts(pattern.this, local, instant, zone)
            return " || ".join(self.sql(part) for part in parts) if parts else "''"

        def timestampdiff_sql(self, expression: exp.TimestampDiff) -> str:
            """``TIMESTAMP_DIFF(a, b, unit)``: whole units from ``b`` to ``a``."""
            unit = exp.Literal.string(expression.unit.name if expression.unit else "DAY")
            return self.func("DATE_SUB", unit, expression.expression, expression.this)

        def dateadd_sql(self, expression: exp.DateAdd) -> str:
            """``DATE_ADD(date, INTERVAL ...)``: a DATE (DuckDB's sum is a TIMESTAMP)."""
            return f"CAST({DuckDB.Generator.TRANSFORMS[exp.DateAdd](self, expression)} AS DATE)"

        def datesub_sql(self, expression: exp.DateSub) -> str:
            """``DATE_SUB(date, INTERVAL ...)``: a DATE."""
            return f"CAST({DuckDB.Generator.TRANSFORMS[exp.DateSub](self, expression)} AS DATE)"

        def unixtotime_sql(self, expression: exp.UnixToTime) -> str:
            """``TIMESTAMP_SECONDS``/``_MILLIS``/``_MICROS``: a TIMESTAMP (an instant)."""
            written = DuckDB.Generator.TRANSFORMS[exp.UnixToTime](self, expression)
            return f"CAST({written} AS TIMESTAMPTZ)"

        def strtotime_sql(self, expression: exp.StrToTime) -> str:
            """``PARSE_TIMESTAMP(format, text[, zone])``: an instant, UTC unless told."""
            zone = expression.args.get("zone")
            pattern = _parse_format(expression.args.get("format"))
            call = exp.Anonymous(this="STRPTIME", expressions=[expression.this, pattern])
            parsed = exp.cast(call, exp.DType.TIMESTAMP)
            if zone is None:
                return self.sql(exp.cast(parsed, exp.DType.TIMESTAMPTZ))
            return self.sql(exp.AtTimeZone(this=parsed, zone=zone))

        def like_sql(self, expression: exp.Like) -> str:
            """``LIKE``: a backslash escapes the next character, as in BigQuery."""
            written = super().like_sql(expression)
            pattern = expression.expression
            plain = isinstance(pattern, exp.Literal) and "\\" not in pattern.this
            if plain or isinstance(expression.parent, exp.Escape):
                return written
            return f"{written} ESCAPE '\\'"

        def arrayagg_sql(self, expression: exp.ArrayAgg) -> str:
            """``ARRAY_AGG([DISTINCT] x [IGNORE NULLS] [ORDER BY ...] [LIMIT n])``."""
            inner, limit = expression.this, None
            if isinstance(inner, exp.Limit):
                inner, limit = inner.this, inner.expression
            value = inner.this if isinstance(inner, exp.Order) else inner
            if isinstance(value, exp.Distinct):
                value = value.expressions[0]
            written = f"ARRAY_AGG({self.sql(inner)})"
            if expression.args.get("nulls_excluded"):
                written += f" FILTER(WHERE {self.sql(value)} IS NOT NULL)"
            if limit is not None:
                written = f"LIST_SLICE({written}, 1, {self.sql(limit)})"
            return written

        def unnest_sql(self, expression: exp.Unnest) -> str:
            """``UNNEST(a) AS x WITH OFFSET AS o``: ``o`` counts from 0 (DuckDB's ordinality
            from 1), so the two lists are unnested side by side instead."""
            offset, alias = expression.args.get("offset"), expression.args.get("alias")
            columns = alias.columns if alias else []
            if not isinstance(offset, exp.Identifier) or len(columns) != 1:
                return super().unnest_sql(expression)
            array = self.sql(expression.expressions[0])
            name = self.sql(alias.this) if alias.this else "_unnested"
            return (
                f"(SELECT UNNEST({array}) AS {self.sql(columns[0])}, "
                f"UNNEST(RANGE(LEN({array}))) AS {self.sql(offset)}) AS {name}"
            )

        def netfunc_sql(self, expression: exp.NetFunc) -> str:
            """``NET.*``: DuckDB would reach for an extension it may not load here."""
            called = expression.this
            name = called.name if isinstance(called, exp.Anonymous) else called.sql_name()
            self.unsupported(f"NET.{name.upper()}() is not available in the sandbox")
            return ""

        def approxtopk_sql(self, expression: exp.ApproxTopK) -> str:
            """``APPROX_TOP_COUNT(x, n)``: the ``n`` commonest values as ``{value, count}``."""
            counted = _sql(
                "LIST_TRANSFORM(LIST_SLICE(LIST_REVERSE_SORT(LIST_TRANSFORM("
                "MAP_ENTRIES(HISTOGRAM(x)), e -> {'count': e.value, 'value': e.key})), 1, n), "
                "e -> {'value': e.value, 'count': e.count})",
                x=expression.this,
                n=expression.expression,
            )
            return self.sql(counted)


def _timestamp_text(value: exp.Expression) -> exp.Expression:
    """BigQuery's text for a timestamp: ``2020-03-01 12:34:56[.fff[fff]]+00`` (UTC)."""
    wall_clock = exp.cast(value, exp.DType.TIMESTAMP)
    return _sql(
        "seconds || CASE WHEN MICROSECOND(v) % 1000000 = 0 THEN '' "
        "WHEN MICROSECOND(v) % 1000 = 0 THEN millis ELSE micros END || '+00'",
        v=value,
        seconds=_strftime(wall_clock, "%Y-%m-%d %H:%M:%S"),
        millis=_strftime(wall_clock, ".%g"),
        micros=_strftime(wall_clock, ".%f"),
    )


# ---- EXTRACT ------------------------------------------------------------------------------


def _week_number(value: exp.Expression, first_day: str) -> exp.Expression:
    """BigQuery's ``WEEK(<first_day>)``: weeks start on that day, week 0 before the first."""
    if first_day not in _WEEKDAYS:
        raise sqlglot.errors.UnsupportedError(f"EXTRACT(WEEK({first_day}) ...) is not supported")
    offset = exp.Literal.number(_WEEKDAYS.index(first_day))
    return _sql("(DAYOFYEAR(v) + 6 - (DAYOFWEEK(v) - d + 7) % 7) // 7", v=value, d=offset)


_EXTRACTED = {
    "DAYOFWEEK": lambda v: _sql("DAYOFWEEK(v) + 1", v=v),
    "MILLISECOND": lambda v: _sql("MILLISECOND(v) % 1000", v=v),
    "MICROSECOND": lambda v: _sql("MICROSECOND(v) % 1000000", v=v),
    "ISOWEEK": lambda v: _sql("WEEK(v)", v=v),
    "DATE": lambda v: exp.cast(v, exp.DType.DATE),
    "TIME": _as_time,
    "DATETIME": lambda v: exp.cast(v, exp.DType.TIMESTAMP),
}


# ---- format elements ----------------------------------------------------------------------


def _format_parts(
    pattern: str,
    local: exp.Expression,
    instant: exp.Expression | None,
    zone: exp.Expression | None,
) -> list[exp.Expression]:
    """``pattern`` written as strftime calls on ``local`` and expressions for the elements
    DuckDB lacks, in order (to be joined with ``||``)."""
    parts: list[exp.Expression] = []
    native = ""  # strftime pattern gathered so far

    def flush() -> None:
        nonlocal native
        if native:
            parts.append(_strftime(local, native))
            native = ""

    position = 0
    for match in _ELEMENT.finditer(pattern):
        native += pattern[position : match.start()].replace("%", "%%")
        position = match.end()
        element = match.group(1)
        special = _special_element(element, local, instant, zone)
        if special is None:
            native += "%" + element.lstrip("EO")
        elif isinstance(special, str):
            native += special
        else:
            flush()
            parts.append(special)
    native += pattern[position:].replace("%", "%%")
    flush()
    return parts


def _special_element(
    element: str,
    local: exp.Expression,
    instant: exp.Expression | None,
    zone: exp.Expression | None,
) -> exp.Expression | str | None:
    """How to write one element: None for strftime's own, a strftime pattern, or an expression."""
    # %E and %O variants of plain elements (%Ey, %Od...) write the plain element
    plain = element[1:] if len(element) == 2 and element[0] in "EO" and element != "Ez" else element
    if plain in _NATIVE:
        return None
    if plain in _PATTERNS:
        return _PATTERNS[plain]
    builder = _BUILDERS.get(plain)
    if builder is not None:
        return builder(local, instant, zone)
    digits = re.fullmatch(r"E(\d+)S", plain)
    if digits:
        count = min(int(digits.group(1)), 6)
        if count == 0:
            return "%S"
        return _sql(
            f"seconds || LEFT(micros, {count})",
            seconds=_strftime(local, "%S."),
            micros=_strftime(local, "%f"),
        )
    raise sqlglot.errors.UnsupportedError(f"Format element %{element} is not supported")


# elements with a strftime spelling of their own (DuckDB's %n is nanoseconds, BigQuery's a
# newline)
_PATTERNS = {"R": "%H:%M", "E4Y": "%Y", "n": "\n", "t": "\t"}
_BUILDERS = {
    # sqlglot reads BigQuery's %e (day, space-padded) as %-d
    "-d": lambda local, instant, zone: _padded("DAY(v)", local, " "),
    "e": lambda local, instant, zone: _padded("DAY(v)", local, " "),
    "k": lambda local, instant, zone: _padded("HOUR(v)", local, " "),
    "l": lambda local, instant, zone: _padded("(HOUR(v) + 11) % 12 + 1", local, " "),
    "C": lambda local, instant, zone: _padded("YEAR(v) // 100", local, "0"),
    "g": lambda local, instant, zone: _padded("ISOYEAR(v) % 100", local, "0"),
    "Q": lambda local, instant, zone: _sql("CAST(QUARTER(v) AS VARCHAR)", v=local),
    "P": lambda local, instant, zone: exp.Lower(this=_strftime(local, "%p")),
    "s": lambda local, instant, zone: exp.cast(_epoch_seconds(instant or local), exp.DType.VARCHAR),
    "z": lambda local, instant, zone: _offset_text(local, instant, ""),
    "Ez": lambda local, instant, zone: _offset_text(local, instant, ":"),
    "Z": lambda local, instant, zone: zone.copy() if zone is not None else _UTC.copy(),
    "E*S": lambda local, instant, zone: _sql(
        "seconds || CASE WHEN MICROSECOND(v) % 1000000 = 0 THEN '' "
        "ELSE '.' || RTRIM(micros, '0') END",
        v=local,
        seconds=_strftime(local, "%S"),
        micros=_strftime(local, "%f"),
    ),
}


def _padded(template: str, value: exp.Expression, fill: str) -> exp.Expression:
    """A two-character number, padded with ``fill``."""
    return _sql(f"LPAD(CAST({template} AS VARCHAR), 2, '{fill}')", v=value)


def _offset_text(
    local: exp.Expression, instant: exp.Expression | None, separator: str
) -> exp.Expression:
    """``+HHMM`` (``+HH:MM``): how far the wall-clock time ``local`` of ``instant`` is from UTC."""
    if instant is None:  # a date or wall-clock value: BigQuery writes it as UTC
        return exp.Literal.string(f"+00{separator}00")
    offset = _sql("CAST(EPOCH(l) - EPOCH(i) AS BIGINT)", l=local, i=instant)
    return _sql(
        "CASE WHEN o < 0 THEN '-' ELSE '+' END || LPAD(CAST(ABS(o) // 3600 AS VARCHAR), 2, '0') "
        f"|| '{separator}' || LPAD(CAST(ABS(o) % 3600 // 60 AS VARCHAR), 2, '0')",
        o=offset,
    )


def _parse_format(pattern: exp.Expression) -> exp.Expression:
    """A BigQuery parsing pattern (as sqlglot leaves it) for DuckDB's strptime."""
    if not (isinstance(pattern, exp.Literal) and pattern.is_string):
        return pattern
    text = pattern.this
    swaps = {"%E*S": "%S.%f", "%Ez": "%z", "%R": "%H:%M", "%-d": "%d", "%e": "%d", "%k": "%H"}
    for bigquery, duckdb in swaps.items():
        text = text.replace(bigquery, duckdb)
    return exp.Literal.string(text)


def _printf_arguments(
    pattern: exp.Expression, values: list[exp.Expression]
) -> tuple[exp.Expression, list[exp.Expression]]:
    """``FORMAT``'s pattern and values for DuckDB's printf: ``%t``/``%T`` (any value as text)
    become ``%s`` of the value cast to text."""
    if not (isinstance(pattern, exp.Literal) and pattern.is_string):
        return pattern, values
    values = list(values)
    specs = [m for m in _PRINTF_SPEC.finditer(pattern.this) if m.group(2) != "%"]
    for position, spec in enumerate(specs):
        if spec.group(2) in "tT" and position < len(values):
            values[position] = exp.cast(values[position], exp.DType.VARCHAR)
    text = _PRINTF_SPEC.sub(
        lambda m: f"%{m.group(1)}s" if m.group(2) in "tT" else m.group(0), pattern.this
    )
    return exp.Literal.string(text), values
