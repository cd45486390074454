"""What a csql text names: its tables and their aliases, its outer SELECT list, its words.

A small tokenizer, not a parser: it reads the half-written SQL of a cell being completed and
the SQL a service refused as well as good SQL, and it never raises. Strings, comments and
backticked names are single tokens; a dotted name (``t.source_ip.value``,
`` `1234.firewall.traffic` ``) is one token with its parts. Every token knows its parenthesis
depth, which tells the outer query from its subqueries.

Nothing here knows the catalog: callers decide what the names mean.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = [
    "SelectItem",
    "TableRef",
    "Token",
    "code_tokens",
    "cte_names",
    "expects_table",
    "outer_select",
    "table_refs",
    "tokenize",
]

_PART = r"(?:`[^`]*`?|[A-Za-z_][A-Za-z0-9_]*)"
_SCANNER = re.compile(
    r"(?P<space>\s+)"
    r"|(?P<comment>--[^\n]*|\#[^\n]*|/\*.*?(?:\*/|\Z))"
    r"|(?P<string>'(?:[^'\\]|\\.)*(?:'|\Z)|\"(?:[^\"\\]|\\.)*(?:\"|\Z))"
    rf"|(?P<name>{_PART}(?:\.{_PART})*)"
    r"|(?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
    r"|(?P<punct>.)",
    re.DOTALL,
)
# words that end a FROM clause or cannot be a table's alias
_CLAUSE_WORDS = frozenset({
    "WHERE", "GROUP", "ORDER", "LIMIT", "HAVING", "QUALIFY", "WINDOW", "UNION", "INTERSECT",
    "EXCEPT", "SELECT", "OFFSET",
})
_JOIN_WORDS = frozenset({
    "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "OUTER", "CROSS", "ON", "USING", "NATURAL",
})
# functions whose arguments may hold the word FROM (EXTRACT(HOUR FROM time_generated))
_FROM_FUNCTIONS = frozenset({"EXTRACT", "TRIM", "SUBSTRING", "POSITION", "OVERLAY"})
_NOT_ALIASES = _CLAUSE_WORDS | _JOIN_WORDS | {"AS", "FROM", "TABLESAMPLE", "FOR", "UNNEST"}


@dataclass(frozen=True)
class Token:
    """One token of the text: its kind, text, offset, parenthesis depth and name parts."""

    kind: str  # name, string, number, punct or comment
    text: str
    start: int
    depth: int
    parts: tuple[str, ...] = ()  # a name's parts, backticks removed and split at dots

    @property
    def end(self) -> int:
        """Offset just past the token."""
        return self.start + len(self.text)

    def is_word(self, *words: str) -> bool:
        """Whether the token is one of ``words`` (a bare keyword, compared in upper case)."""
        return self.kind == "name" and "`" not in self.text and self.text.upper() in words


@dataclass(frozen=True)
class TableRef:
    """A table a query reads: its name as written (backticks removed), its alias, its token."""

    name: str
    alias: str | None
    token: Token


@dataclass(frozen=True)
class SelectItem:
    """One item of the outer SELECT list.

    ``star`` for ``*`` and ``t.*`` (``path`` then holds just the qualifier, if any); ``path``
    for a bare column reference (``source_ip``, ``t.source_ip.value``); ``output`` is the
    column name the result has (the alias, else the path's last part); neither for anything
    computed.
    """

    output: str | None = None
    path: tuple[str, ...] = ()
    star: bool = False


@dataclass
class _Query:
    """The outer query's SELECT items and FROM tables, as found so far."""

    items: list[list[Token]] = field(default_factory=list)
    tables: list[TableRef] = field(default_factory=list)
    other_sources: bool = False  # a subquery or UNNEST in the outer FROM
    set_operation: bool = False


def tokenize(text: str) -> list[Token]:
    """Every token of ``text`` except white space, in order (unclosed quotes run to the end)."""
    tokens, depth = [], 0
    for match in _SCANNER.finditer(text):
        kind = match.lastgroup or "punct"
        value = match.group()
        if kind == "space":
            continue
        if value == ")":
            depth = max(0, depth - 1)
        parts = _name_parts(value) if kind == "name" else ()
        tokens.append(Token(kind, value, match.start(), depth, parts))
        if value == "(":
            depth += 1
    return tokens


def _name_parts(text: str) -> tuple[str, ...]:
    parts: list[str] = []
    for piece in re.findall(_PART, text):
        parts.extend(p for p in piece.strip("`").split(".") if p)
    return tuple(parts)


def code_tokens(text: str) -> list[Token]:
    """The tokens of ``text`` without comments."""
    return [t for t in tokenize(text) if t.kind != "comment"]


def table_refs(text: str) -> list[TableRef]:
    """Every table named after FROM or JOIN (or a comma in a FROM clause), at any depth.

    A subquery, ``UNNEST(...)`` or table function in that place is not a table; common table
    expressions (``WITH x AS (...)``) are, by name: callers tell them apart with ``cte_names``.
    """
    tokens = code_tokens(text)
    refs = []
    for index in _table_positions(tokens):
        token = tokens[index]
        follows = tokens[index + 1] if index + 1 < len(tokens) else None
        if token.kind != "name" or (follows is not None and follows.text == "("):
            continue
        refs.append(TableRef(".".join(token.parts), _alias_after(tokens, index + 1), token))
    return refs


def cte_names(text: str) -> set[str]:
    """Names given to common table expressions (``WITH name AS (``), in lower case."""
    tokens = code_tokens(text)
    return {
        tokens[i].text.strip("`").lower()
        for i in range(len(tokens) - 2)
        if tokens[i].kind == "name" and tokens[i + 1].is_word("AS") and tokens[i + 2].text == "("
    }


def _table_positions(tokens: list[Token]) -> Iterator[int]:
    """Indexes of the tokens that stand where a table goes."""
    from_depths: list[int] = []  # depths at which a FROM clause is open
    openers: list[str] = []  # for each open parenthesis, the word before it
    for index, token in enumerate(tokens):
        if token.text == ")" and openers:
            openers.pop()
        while from_depths and (token.depth < from_depths[-1] or (
            token.depth == from_depths[-1] and token.is_word(*_CLAUSE_WORDS)
        )):
            from_depths.pop()
        if token.is_word("FROM", "JOIN") and not (openers and openers[-1] in _FROM_FUNCTIONS):
            if token.is_word("FROM"):
                from_depths.append(token.depth)
            yield index + 1
        elif token.text == "," and from_depths and token.depth == from_depths[-1]:
            yield index + 1
        if token.text == "(":
            openers.append(tokens[index - 1].text.upper() if index else "")


def expects_table(before: str) -> bool:
    """Whether a name written at the end of ``before`` would be a table (after FROM, JOIN...)."""
    tokens = code_tokens(before + " x")
    return len(tokens) - 1 in set(_table_positions(tokens))


def _alias_after(tokens: list[Token], index: int) -> str | None:
    """The alias following a table name (``t`` in ``traffic AS t`` or ``traffic t``)."""
    if index < len(tokens) and tokens[index].is_word("AS"):
        index += 1
    if index >= len(tokens):
        return None
    token = tokens[index]
    if token.kind != "name" or len(token.parts) != 1 or token.is_word(*_NOT_ALIASES):
        return None
    return token.parts[0]


def outer_select(text: str) -> tuple[list[SelectItem], list[TableRef]] | None:
    """The outer query's SELECT items and the tables its FROM reads, or None when unsure.

    None for anything but one plain SELECT whose FROM names only tables: set operations
    (``UNION``...) and subqueries or ``UNNEST`` in the outer FROM make the result's columns
    something this reading cannot tell.
    """
    tokens = code_tokens(text)
    query = _outer_query(tokens)
    if query is None or query.set_operation or query.other_sources or not query.tables:
        return None
    return [_select_item(item) for item in query.items], query.tables


def _outer_query(tokens: list[Token]) -> _Query | None:
    """Split the depth-0 tokens into SELECT items; collect the depth-0 tables."""
    top = [i for i, t in enumerate(tokens) if t.depth == 0]
    selects = [i for i in top if tokens[i].is_word("SELECT")]
    if not selects:
        return None
    query, item, where = _Query(), [], "start"
    positions = set(_table_positions(tokens))
    for index in range(selects[0] + 1, len(tokens)):
        token = tokens[index]
        if token.depth == 0 and _ends_select_list(token, where):
            where = "from" if token.is_word("FROM") else "rest"
            query.set_operation |= token.is_word("UNION", "INTERSECT") or (
                token.is_word("EXCEPT") and tokens[index - 1].text != "*"
            )
        if where == "start":
            if token.depth == 0 and token.text == ",":
                query.items.append(item)
                item = []
            elif not (token.depth == 0 and token.is_word("DISTINCT", "ALL") and not item):
                item.append(token)
        elif where == "from" and token.depth == 0 and index in positions:
            if token.kind == "name" and not _next_is(tokens, index, "("):
                query.tables.append(
                    TableRef(".".join(token.parts), _alias_after(tokens, index + 1), token)
                )
            else:
                query.other_sources = True
    query.items.append(item)
    return query


def _ends_select_list(token: Token, where: str) -> bool:
    if where == "start":
        return token.is_word("FROM", *_CLAUSE_WORDS - {"SELECT", "EXCEPT"})
    return token.is_word("UNION", "INTERSECT", "EXCEPT", "SELECT")


def _next_is(tokens: list[Token], index: int, text: str) -> bool:
    return index + 1 < len(tokens) and tokens[index + 1].text == text


def _select_item(tokens: list[Token]) -> SelectItem:
    """What one SELECT item is: a star, a bare column (maybe aliased) or something computed."""
    texts = [t.text for t in tokens]
    if texts == ["*"] or (texts[-2:] == [".", "*"] and len(tokens) == 3):
        return SelectItem(path=tokens[0].parts if len(tokens) == 3 else (), star=True)
    if texts[:1] == ["*"] and len(tokens) > 1 and tokens[1].is_word("EXCEPT", "REPLACE"):
        return SelectItem(star=True)  # some columns left out or replaced: the rest keep types
    if not tokens or tokens[0].kind != "name" or any(t.depth > 0 for t in tokens):
        return SelectItem()
    column, rest = tokens[0], tokens[1:]
    if rest and rest[0].is_word("AS"):
        rest = rest[1:]
    if not rest:
        return SelectItem(output=column.parts[-1], path=column.parts)
    if len(rest) == 1 and rest[0].kind == "name" and len(rest[0].parts) == 1:
        return SelectItem(output=rest[0].parts[0], path=column.parts)
    return SelectItem()
