"""The catalog on the client side: tables and columns to browse, types for frames, errors
that teach.

- ``tables(pattern)`` and ``columns(table, pattern)``: the documented log types and their
  fields (struct subfields included) as DataFrames; an unknown table is an
  ``UnknownNameError`` that suggests the closest names.
- ``known_types(sql)``: the catalog types of the columns a query's result will hold, when its
  outer SELECT takes bare columns (or ``*``) of catalog tables. ``QueryJob.result`` hands them
  to ``FrameBuilder`` so the frame is typed even when the service sends no schema.
- ``explain(message, sql)``: for a refused query, where in the SQL it went wrong (a caret
  under the line and column the service names, or under the unknown name) and, for an
  unknown table or column, the closest catalog names. Computed here, from the catalog, so it
  works against any service that names the unknown thing in its message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cortex_nb import catalog
from cortex_nb.exceptions import UnknownNameError
from cortex_nb.sql import text as sqltext

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Lesson", "columns", "explain", "known_types", "tables"]

# how services say a name is unknown (DuckDB, BigQuery, the sandbox, generic wording)
_NOT_FOUND = re.compile(
    r"not found|unrecogni[sz]ed|unknown|does not (?:exist|have)|could not find|cannot find"
    r"|no such|invalid (?:column|field|table|name)",
    re.IGNORECASE,
)
# where a service says the error is: "line 2, column 8", BigQuery's "[2:8]", "at 2:8"
_POSITIONS = (
    re.compile(r"\bline (\d+),? (?:column|col\.?) (\d+)", re.IGNORECASE),
    re.compile(r"\[(\d+):(\d+)\]"),
    re.compile(r"\bat (\d+):(\d+)\b"),
)
_QUOTED = re.compile(r"`([^`]+)`|\"([^\"]+)\"|'([^']+)'")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_SHOWN_WIDTH = 100  # characters of a long SQL line shown around the caret


# ---- browsing -----------------------------------------------------------------------------


def tables(pattern: str | None = None) -> pd.DataFrame:
    """The documented log types (name, description, time column, number of fields).

    ``pattern`` filters by name: shell-style with ``*``/``?``, else a substring (``firewall``).
    """
    return catalog.tables_frame(pattern)


def columns(table: str, pattern: str | None = None) -> pd.DataFrame:
    """The columns of ``table`` (name, type, description), struct subfields included.

    ``table`` may carry the instance id or backticks; ``pattern`` filters the column names
    (``source*`` or ``port``). An unknown table raises ``UnknownNameError`` with suggestions.
    """
    try:
        return catalog.columns_frame(table, pattern)
    except catalog.CatalogLookupError as error:
        raise UnknownNameError(str(error), error.suggestions) from None


# ---- types for frames ---------------------------------------------------------------------


def known_types(sql: str) -> dict[str, Any] | None:
    """A ``schema``-shaped dict of the catalog types of the result's columns, or None.

    Only bare column references and ``*`` of catalog tables are typed; a column named twice
    with different types, anything computed, and queries this reading cannot follow
    (``UNION``, subqueries in the outer FROM) are left to inference.
    """
    selected = sqltext.outer_select(sql)
    if selected is None:
        return None
    items, refs = selected
    found = _catalog_tables(refs)
    if found is None:
        return None
    fields: dict[str, dict[str, Any] | None] = {}
    for output, field in _typed_items(items, found):
        item = field.schema_field(output)
        fields[output] = item if fields.get(output, item) == item else None
    typed = [item for item in fields.values() if item is not None]
    return {"fields": typed} if typed else None


def _catalog_tables(refs: list[sqltext.TableRef]) -> dict[str, catalog.Table] | None:
    """The tables of a FROM clause by the names columns may use for them (alias, else the
    log type's last part); None when one of them is not a catalog table (a CTE...)."""
    found: dict[str, catalog.Table] = {}
    for ref in refs:
        try:
            table = catalog.table(ref.name)
        except catalog.CatalogLookupError:
            return None
        found[(ref.alias or table.name.rsplit(".", 1)[-1]).lower()] = table
    return found


def _typed_items(items: list[sqltext.SelectItem], found: dict[str, catalog.Table]):
    """(output column, catalog field) for every SELECT item the catalog can type."""
    for item in items:
        if item.star:
            for table in _starred(item, found):
                yield from ((field.name, field) for field in table.fields)
        elif item.output is not None:
            field = _resolve(item.path, found)
            if field is not None:
                yield item.output, field


def _starred(item: sqltext.SelectItem, found: dict[str, catalog.Table]) -> list[catalog.Table]:
    """The tables a ``*`` (every one) or ``t.*`` (that one) takes its columns from."""
    if not item.path:
        return list(found.values())
    table = found.get(item.path[0].lower())
    return [table] if table is not None else []


def _scope(
    parts: tuple[str, ...], found: dict[str, catalog.Table]
) -> tuple[list[catalog.Table], str]:
    """The tables a column reference may come from, and its dotted path in them:
    ``h.threat_name`` is ``threat_name`` of the table aliased ``h``; ``source_ip.value`` is
    that path in any of the query's tables."""
    head = parts[0].lower()
    if len(parts) > 1 and head in found:
        return [found[head]], ".".join(parts[1:]).lower()
    return list(dict.fromkeys(found.values())), ".".join(parts).lower()


def _resolve(path: tuple[str, ...], found: dict[str, catalog.Table]) -> catalog.Field | None:
    """The field a column reference names, if exactly one type fits it."""
    candidates, dotted = _scope(path, found)
    fields = [t.field(dotted) for t in candidates if dotted in t]
    if not fields or any(f.schema_field() != fields[0].schema_field() for f in fields):
        return None
    return fields[0]


# ---- errors that teach --------------------------------------------------------------------


@dataclass(frozen=True)
class Lesson:
    """What to add to a service's error about a query: a hint, and the SQL line with a caret."""

    hint: str = ""
    excerpt: str = ""


def explain(message: str, sql: str) -> Lesson:
    """What the client can add to the service's ``message`` about the refused ``sql``.

    The caret goes under the line and column the message names, else under the unknown
    table or column it names; the hint suggests the closest catalog names for that.
    """
    try:
        unknown = _unknown_name(message, sql)
        position = _position(message, sql)
        if unknown is not None:
            at_token = _token_position(sql, unknown.token)
            if position is None or _within(position, at_token):
                position = at_token
        # a service that already suggests names (BigQuery: "Did you mean x?") is not repeated
        suggested = "did you mean" in message.lower()
        hint = catalog.did_you_mean(unknown.suggestions) if unknown and not suggested else ""
        return Lesson(hint, _excerpt(sql, *position) if position else "")
    except Exception:  # teaching is a bonus: it must never hide the service's error
        return Lesson()


@dataclass(frozen=True)
class _Unknown:
    token: sqltext.Token
    suggestions: list[str]


def _unknown_name(message: str, sql: str) -> _Unknown | None:
    """The table or column of ``sql`` that ``message`` says is unknown, with suggestions.

    A name the catalog does not know comes first; one it knows (a log type or field this
    service lacks) still gets the caret, without suggestions.
    """
    if not _NOT_FOUND.search(message):
        return None
    tokens = sqltext.code_tokens(sql)
    ctes = sqltext.cte_names(sql)
    refs = [r for r in sqltext.table_refs(sql) if r.name.lower() not in ctes]
    found = _catalog_tables([r for r in refs if _in_catalog(r.name)]) or {}
    known: _Unknown | None = None
    for candidate in _message_names(message):
        for ref in (r for r in refs if _same_table(r.name, candidate)):
            if not _in_catalog(ref.name):
                return _Unknown(ref.token, catalog.suggest_table(ref.name))
            known = known or _Unknown(ref.token, [])
        for token in _column_tokens(tokens, refs):
            if candidate not in _compared_names(token, found):
                continue
            suggestions = _column_suggestions(token.parts, found)
            if suggestions:
                return _Unknown(token, suggestions)
            if suggestions is not None:
                known = known or _Unknown(token, [])
    return known


def _message_names(message: str) -> list[str]:
    """Names a message mentions, lower case: quoted ones first, then its other words."""
    quoted = [next(g for g in m.groups() if g) for m in _QUOTED.finditer(message)]
    words = _WORD.findall(_QUOTED.sub(" ", message))
    names = [n.strip().strip(".").lower() for n in quoted + words]
    return list(dict.fromkeys(n for n in names if n))


def _same_table(written: str, candidate: str) -> bool:
    """Whether a message's ``candidate`` names the table written ``written`` in the SQL."""
    return catalog.parse_table_name(written)[1] == catalog.parse_table_name(candidate)[1]


def _in_catalog(name: str) -> bool:
    return catalog.parse_table_name(name)[1] in catalog.table_names()


def _column_tokens(tokens: list[sqltext.Token], refs: list[sqltext.TableRef]):
    """Name tokens that may be column references (not tables, functions or keywords)."""
    table_tokens = {ref.token.start for ref in refs}
    for index, token in enumerate(tokens):
        follows = tokens[index + 1].text if index + 1 < len(tokens) else ""
        if token.kind == "name" and token.start not in table_tokens and follows != "(":
            yield token


def _compared_names(token: sqltext.Token, found: dict[str, catalog.Table]) -> set[str]:
    """The names a message may use for a column reference: its whole path and its parts,
    without a table alias in front (``h.threat_nme`` is ``threat_nme``, not ``h``)."""
    dotted = _scope(token.parts, found)[1]
    return {dotted, *dotted.split(".")}


def _column_suggestions(parts: tuple[str, ...], found: dict[str, catalog.Table]) -> list | None:
    """Closest columns for a column reference: empty when a catalog table of the query has
    it (or none is close), None when the query names no catalog table to look in."""
    candidates, dotted = _scope(parts, found)
    if not candidates:
        return None
    if any(dotted in t for t in candidates):
        return []
    suggestions = [s for t in candidates for s in catalog.suggest_column(t.name, dotted)]
    return list(dict.fromkeys(suggestions))[:3]


def _position(message: str, sql: str) -> tuple[int, int, int] | None:
    """(line index, column index, width 1) the message points at, if it names a line."""
    for pattern in _POSITIONS:
        match = pattern.search(message)
        if match:
            line, column = int(match.group(1)) - 1, int(match.group(2)) - 1
            lines = sql.split("\n")
            if 0 <= line < len(lines) and 0 <= column <= len(lines[line]):
                return line, column, 1
    return None


def _within(position: tuple[int, int, int], token: tuple[int, int, int]) -> bool:
    """True when ``position`` falls inside ``token``'s span (a service may point at a part)."""
    return position[0] == token[0] and token[1] <= position[1] < token[1] + max(1, token[2])


def _token_position(sql: str, token: sqltext.Token) -> tuple[int, int, int]:
    """(line index, column index, width) of a token of ``sql``."""
    line = sql.count("\n", 0, token.start)
    column = token.start - (sql.rfind("\n", 0, token.start) + 1)
    return line, column, len(token.text.split("\n")[0])


def _excerpt(sql: str, line: int, column: int, width: int) -> str:
    """The SQL line, numbered, with carets under ``width`` characters from ``column``."""
    text = sql.split("\n")[line].replace("\t", " ")
    start = max(0, min(column - _SHOWN_WIDTH // 2, len(text) - _SHOWN_WIDTH))
    shown = text[start : start + _SHOWN_WIDTH]
    if start:
        shown, column = "…" + shown[1:], column - start
    if start + _SHOWN_WIDTH < len(text):
        shown = shown[:-1] + "…"
    number = str(line + 1)
    pad = " " * len(number)
    carets = "^" * max(1, min(width, len(shown) - column))
    return f"  {number} | {shown.rstrip()}\n  {pad} | {' ' * column}{carets}"
