"""Tab completion for ``%cortex`` lines and ``%%cortex`` cells, answered by the kernel.

``%load_ext cortex_nb`` registers ``cortex_matcher`` with IPython's completer (Matcher API v2,
``Completer.custom_matchers``), so every front end that asks the kernel gets it: JupyterLab,
Notebook, VS Code, the IPython terminal. It completes

- ``%cortex`` subcommands, their options and values (regions, profiles, log types, a log
  type's columns), read from the magic's grammar (``cortex_nb.notebook.grammar``) so new
  subcommands and options appear by themselves;
- the options of a ``%%cortex`` line (and the values of those with choices);
- in the SQL of a cell (or of a ``%cortex SELECT ...`` line): log types after FROM and JOIN
  (bare, with the instance id, in backticks), the columns and struct subfields of the tables
  the cell names (``source_ip.`` -> ``source_ip.value``; ``t.`` -> ``t.source_ip`` for an
  alias), csql functions and keywords, in the case the user types them.

``complete(text, offset)`` does the work without IPython and is what the tests call first. A
completer that raises breaks Tab for the user, so the matcher turns any failure into no
completions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from cortex_nb import catalog
from cortex_nb.notebook import grammar
from cortex_nb.sql import text as sqltext
from cortex_nb.sql.params import DATASETS

__all__ = ["FUNCTIONS", "KEYWORDS", "Completions", "complete", "register_completer"]

KEYWORDS = (
    "SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "HAVING", "LIMIT", "OFFSET", "JOIN",
    "LEFT JOIN", "INNER JOIN", "FULL JOIN", "CROSS JOIN", "ON", "USING", "AS", "AND", "OR",
    "NOT", "IN", "IS", "NULL", "LIKE", "BETWEEN", "DISTINCT", "CASE", "WHEN", "THEN", "ELSE",
    "END", "ASC", "DESC", "WITH", "UNION ALL", "EXCEPT", "TRUE", "FALSE", "INTERVAL", "OVER",
    "PARTITION BY", "QUALIFY",
)
FUNCTIONS = (
    "COUNT", "COUNTIF", "SUM", "AVG", "MIN", "MAX", "ANY_VALUE", "APPROX_COUNT_DISTINCT",
    "APPROX_QUANTILES", "ARRAY_AGG", "STRING_AGG", "LOGICAL_AND", "LOGICAL_OR", "STDDEV",
    "LOWER", "UPPER", "CONCAT", "SUBSTR", "LENGTH", "TRIM", "REPLACE", "SPLIT", "STRPOS",
    "STARTS_WITH", "ENDS_WITH", "CONTAINS_SUBSTR", "REGEXP_CONTAINS", "REGEXP_EXTRACT", "FORMAT",
    "CAST", "SAFE_CAST", "COALESCE", "IFNULL", "NULLIF", "IF", "GREATEST", "LEAST", "ROUND",
    "ABS", "DIV", "MOD", "SAFE_DIVIDE", "ARRAY_LENGTH", "TIMESTAMP", "CURRENT_TIMESTAMP",
    "TIMESTAMP_SUB", "TIMESTAMP_ADD", "TIMESTAMP_TRUNC", "TIMESTAMP_DIFF", "TIMESTAMP_MICROS",
    "TIMESTAMP_MILLIS", "TIMESTAMP_SECONDS", "UNIX_MICROS", "UNIX_MILLIS", "UNIX_SECONDS",
    "FORMAT_TIMESTAMP", "EXTRACT", "DATE", "DATE_TRUNC", "ROW_NUMBER", "LAG",
)
_LINE_MAGIC = re.compile(r"^\s*%cortex\s")
_CELL_MAGIC = re.compile(r"^\s*%%cortex(?:\s|$)")
_HTTP_REQUEST = re.compile(r"^\s*(GET|POST|PUT|DELETE|PATCH|HEAD)\s+/", re.IGNORECASE)
_SQL_START = re.compile(r"(?:^|\s)(?=(?:select|with)\b)", re.IGNORECASE)
_FRAGMENT_KINDS = ("name", "number")


@dataclass(frozen=True)
class Completions:
    """What replaces ``fragment`` (the text just before the cursor): (text, kind) pairs."""

    fragment: str
    items: tuple[tuple[str, str], ...]


def complete(text: str, offset: int, instance_id: str | None = None) -> Completions | None:
    """Completions at ``offset`` of a cell's ``text``, or None where cortex_nb has nothing
    to say (not a ``%cortex`` line or ``%%cortex`` cell, inside a string, REST mode)."""
    line_start = text.rfind("\n", 0, offset) + 1
    line_end = text.find("\n", offset)
    line = text[line_start : len(text) if line_end < 0 else line_end]
    before_in_line = text[line_start:offset]
    if _LINE_MAGIC.match(line):
        return _complete_line(before_in_line, line, instance_id)
    first_end = text.find("\n")
    if not _CELL_MAGIC.match(text):
        return None
    body = "" if first_end < 0 else text[first_end + 1 :]
    if first_end < 0 or offset <= first_end:
        return _complete_cell_options(before_in_line, body)
    options = text[: first_end].split("%%cortex", 1)[1]
    if _HTTP_REQUEST.match(options) or _HTTP_REQUEST.match(body.lstrip()):
        return None  # REST mode: the body is JSON
    return _complete_sql(body, offset - first_end - 1, instance_id)


# ---- SQL ----------------------------------------------------------------------------------


def _complete_sql(sql: str, offset: int, instance_id: str | None) -> Completions | None:
    """Completions inside SQL: tables where a table goes, else columns, functions, keywords."""
    before = sql[:offset]
    fragment = _fragment(before)
    if fragment is None:
        return None
    if sqltext.expects_table(before[: len(before) - len(fragment)]):
        closes = sql[offset : offset + 1] != "`"  # the editor may have closed it already
        return Completions(fragment, tuple(_table_items(fragment, instance_id, closes)))
    first_word = not sqltext.code_tokens(before[: len(before) - len(fragment)])
    items = [*_column_items(fragment, sql), *_word_items(fragment, keywords_first=first_word)]
    return Completions(fragment, tuple(dict.fromkeys(items)))


def _fragment(before: str) -> str | None:
    """The name being typed at the end of ``before`` (``t.source_ip.``, `` `1234.fire``);
    empty after white space or punctuation; None inside a string or a comment."""
    tokens = sqltext.tokenize(before)
    if not tokens or tokens[-1].end != len(before):
        return ""
    if tokens[-1].kind in ("string", "comment"):
        return None
    start = len(before)
    for token in reversed(tokens):
        if token.end != start or not (token.kind in _FRAGMENT_KINDS or token.text == "."):
            break
        start = token.start
    return before[start:]


def _table_items(fragment: str, instance_id: str | None, closes: bool) -> Iterator[tuple]:
    """Log type names that complete ``fragment``, bare or with an instance id."""
    quoted = fragment.startswith("`")
    typed = fragment.strip("`").lower()
    prefixes = dict.fromkeys(p for p in (instance_id, _instance_prefix(typed)) if p)
    for name in catalog.table_names():
        for full in (name, *(f"{p}.{name}" for p in prefixes)):
            if full.lower().startswith(typed) or (full == name and _kind_starts(name, typed)):
                if quoted or full != name:  # an instance id needs backticks in csql
                    full = f"`{full}`" if closes else f"`{full}"
                yield full, "table"


def _instance_prefix(typed: str) -> str | None:
    """The instance id typed before a log type (``1234`` of ``1234.firewall.tr``), if any."""
    parts = typed.split(".")
    if len(parts) >= 3:
        return ".".join(parts[:-2])
    if len(parts) == 2 and parts[0] not in DATASETS:
        return parts[0]
    return None


def _kind_starts(name: str, typed: str) -> bool:
    """``traf`` finds ``firewall.traffic``: the log type after the dot starts with it."""
    return bool(typed) and "." not in typed and name.split(".", 1)[1].startswith(typed)


def _column_items(fragment: str, sql: str) -> Iterator[tuple[str, str]]:
    """Columns (or subfields, after a dot) of the tables the SQL names that complete
    ``fragment``; every catalog table's when it names none yet."""
    named = _named_tables(sql)
    head, dot, _ = fragment.partition(".")
    tables = list(dict.fromkeys(named.values()))
    if not tables and fragment:  # SELECT written before FROM: columns of any log type
        tables = list(catalog.tables())
    prefix = ""
    if dot and head.lower() in named:  # t.source_ip: a column of the table aliased t
        tables, prefix, fragment = [named[head.lower()]], head + ".", fragment[len(head) + 1 :]
    depth = fragment.count(".")
    typed = fragment.lower()
    for table in tables:
        for path in table.columns():
            if path.count(".") == depth and path.startswith(typed):
                yield prefix + path, "field" if depth else "column"
    if not dot:
        yield from ((alias, "alias") for alias in named if alias.startswith(typed) and alias)


def _named_tables(sql: str) -> dict[str, catalog.Table]:
    """The catalog tables the SQL names, by alias (or the log type's last part) in lower case."""
    named: dict[str, catalog.Table] = {}
    for ref in sqltext.table_refs(sql):
        try:
            table = catalog.table(ref.name)
        except catalog.CatalogLookupError:
            continue
        named[(ref.alias or table.name.rsplit(".", 1)[-1]).lower()] = table
    return named


def _word_items(fragment: str, keywords_first: bool) -> Iterator[tuple[str, str]]:
    """csql functions and keywords that complete ``fragment``, in the case it is typed in."""
    if "." in fragment:
        return
    lower = fragment.islower()
    groups = [(FUNCTIONS, "function"), (KEYWORDS, "keyword")]
    for words, kind in reversed(groups) if keywords_first else groups:
        for word in words:
            if word.startswith(fragment.upper()):
                yield (word.lower() if lower else word), kind


# ---- %cortex lines and the %%cortex line --------------------------------------------------


def _complete_line(before: str, line: str, instance_id: str | None) -> Completions | None:
    """``%cortex`` subcommands, options and values; SQL completion for SQL on the line."""
    if "%cortex" not in before:  # the cursor is in the magic's name
        return None
    rest = before.split("%cortex", 1)[1]
    match = _SQL_START.search(rest)
    if match is not None:
        sql = line.split("%cortex", 1)[1][match.end() :]
        return _complete_sql(sql, len(rest) - match.end(), instance_id)
    words, fragment = _words(rest)
    if not words:
        return Completions(fragment, tuple(_starting(_subcommands(), fragment, "subcommand")))
    command = _subcommands().get(words[0])
    if command is None:
        return None
    return Completions(fragment, tuple(_argument_items(command, words, fragment)))


def _complete_cell_options(before: str, sql: str) -> Completions | None:
    """Options (and option values) of the ``%%cortex`` line; ``sql`` is the cell's body (the
    columns ``--by`` and ``--value`` offer are those its result will have)."""
    if "%%cortex" not in before:  # the cursor is in the magic's name
        return None
    words, fragment = _words(before.split("%%cortex", 1)[1])
    items = _option_items(grammar.cell_options(), words, fragment, sql)
    return Completions(fragment, tuple(items))


def _words(text: str) -> tuple[list[str], str]:
    """The complete words of ``text`` and the one being typed (empty after a space)."""
    words = text.split()
    if words and not text[-1:].isspace():
        return words[:-1], words[-1]
    return words, ""


def _subcommands() -> dict[str, grammar.Subcommand]:
    """The ``%cortex`` subcommands by name, from the magic's grammar."""
    return grammar.subcommands()


def _argument_items(
    command: grammar.Subcommand, words: list[str], fragment: str
) -> Iterator[tuple[str, str]]:
    """Positional values, options, or the value of the option just typed, of a subcommand."""
    flags = _flags(command.options)
    if not (words[-1] in flags or fragment.startswith("-")):
        given = _positionals_given(flags, words[1:])
        if given < len(command.positionals):
            values = _argument_values(command.positionals[given], words[1:])
            yield from _starting(values, fragment, "value")
    yield from _option_items(command.options, words, fragment)


def _flags(options: Iterable[grammar.Switch | grammar.Option]) -> dict[str, Any]:
    """Every flag spelling (``-o``, ``--output``) -> its switch or option."""
    return {flag: option for option in options for flag in option.flags}


def _option_items(
    options: Iterable[grammar.Switch | grammar.Option], words: list[str], fragment: str,
    sql: str = "",
) -> Iterator[tuple[str, str]]:
    """The value of the option just typed, or the options themselves for ``-...``."""
    flags = _flags(options)
    previous = _awaiting_value(flags, words)
    if previous is not None:
        yield from _starting(_argument_values(previous, words, sql), fragment, "value")
    elif fragment.startswith("-") or not fragment:
        used = set(words)
        names = [f for f in flags if f.startswith("--") and f not in used]
        yield from _starting(names, fragment, "option")


def _awaiting_value(flags: dict[str, Any], words: list[str]) -> Any:
    """The option whose values are still being typed (``--between START `` awaits END)."""
    for back, word in enumerate(reversed(words[-8:])):
        option = flags.get(word)
        if option is not None:
            wanted = (getattr(option, "nargs", None) or 1) if option.takes_value else 0
            return option if back < wanted else None
    return None


def _positionals_given(flags: dict[str, Any], words: list[str]) -> int:
    """How many positional arguments ``words`` already hold (options and their values aside)."""
    count, skip = 0, False
    for word in words:
        if skip:
            skip = False
        elif word in flags:
            skip = flags[word].takes_value
        elif not word.startswith("-"):
            count += 1
    return count


def _argument_values(argument: Any, given: list[str], sql: str = "") -> Iterable[str]:
    """Known values of an argument: its choices, or those its ``values`` names (regions,
    stored profiles, log types, the columns of the log type given first, the columns of the
    cell's result)."""
    if argument.choices:
        return list(argument.choices)
    if argument.values == "result_columns":
        return _result_columns(sql)
    finder = _VALUES.get(argument.values)
    return finder(given) if finder is not None else ()


def _regions(given: list[str]) -> Iterable[str]:
    from cortex_nb.http.endpoints import REGION_NAMES

    return REGION_NAMES


def _profiles(given: list[str]) -> Iterable[str]:
    from cortex_nb.http.profiles import list_profiles

    return list_profiles()


def _columns(given: list[str]) -> Iterable[str]:
    """The columns of the log type given as the first positional (``columns TABLE ...``)."""
    table = next((word for word in given if not word.startswith("-")), None)
    if table is None:
        return ()
    try:
        return catalog.table(table).columns()
    except catalog.CatalogLookupError:
        return ()


def _result_columns(sql: str) -> list[str]:
    """The columns a statement's result has: its SELECT list's names (a ``*`` gives the named
    tables' top-level columns); none when the SQL does not parse yet."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="bigquery") if sql.strip() else None
    except sqlglot.errors.SqlglotError:
        return []
    select = tree if isinstance(tree, exp.Select) else tree and tree.find(exp.Select)
    if select is None:
        return []
    names: list[str] = []
    for projection in select.expressions:
        if isinstance(projection, exp.Star):
            tables = dict.fromkeys(_named_tables(sql).values())
            names += [c for t in tables for c in t.columns() if "." not in c]
        elif projection.alias_or_name and projection.alias_or_name != "*":
            names.append(projection.alias_or_name)
    return list(dict.fromkeys(names))


_VALUES: dict[str | None, Callable[[list[str]], Iterable[str]]] = {
    "regions": _regions,
    "profiles": _profiles,
    "tables": lambda given: catalog.table_names(),
    "columns": _columns,
}


def _starting(names: Iterable[str], fragment: str, kind: str) -> Iterator[tuple[str, str]]:
    return ((name, kind) for name in names if name.lower().startswith(fragment.lower()))


# ---- IPython ------------------------------------------------------------------------------


def _instance_id() -> str | None:
    """The connected tenant's instance id, if any (to offer `` `<id>.firewall.traffic` ``)."""
    from cortex_nb.notebook.connection import get_connection

    return get_connection().instance_id


def cortex_matcher(context: Any) -> dict[str, Any]:
    """IPython matcher (API v2): cortex_nb's completions, or none (never an exception)."""
    try:
        lines = context.full_text.split("\n")
        offset = sum(len(x) + 1 for x in lines[: context.cursor_line]) + context.cursor_position
        found = complete(context.full_text, offset, _instance_id())
    except Exception:  # a completer that raises breaks Tab: say nothing instead
        found = None
    if not found or not found.items:
        return {"completions": [], "suppress": False}
    from IPython.core.completer import SimpleCompletion

    return {
        "completions": [SimpleCompletion(text, type=kind) for text, kind in found.items],
        "matched_fragment": found.fragment,
        "suppress": True,  # Python names mean nothing in SQL
        "ordered": True,
    }


cortex_matcher.matcher_api_version = 2  # type: ignore[attr-defined]
cortex_matcher.matcher_identifier = "cortex_nb.notebook.completion.cortex_matcher"  # type: ignore[attr-defined]
cortex_matcher.matcher_priority = 1  # type: ignore[attr-defined] # before IPython's own


def register_completer(shell: Any) -> None:
    """Add ``cortex_matcher`` to the shell's completer (once; quietly not on old IPython)."""
    try:
        from IPython.core.completer import SimpleCompletion  # noqa: F401 - Matcher API v2
    except ImportError:  # IPython before 8.6 would call the matcher the old way
        return
    completer = getattr(shell, "Completer", None)
    matchers = getattr(completer, "custom_matchers", None)
    if matchers is not None and cortex_matcher not in matchers:
        matchers.append(cortex_matcher)
