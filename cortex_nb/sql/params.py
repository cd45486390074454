"""SQL text helpers for the magic: ``{name}`` parameters as safe literals, table completion.

``{name}`` inserts the *value* of a Python variable as a typed csql literal: strings quoted and
escaped, numbers, booleans, ``NULL``, datetimes as ``TIMESTAMP("...")``, lists as ``(a, b)``.
Nothing is evaluated and no raw text is inserted, so ``x" OR 1=1 --`` stays a string. Braces
inside quoted strings and backticked names are left alone; ``{{`` and ``}}`` give literal braces.
Braces around anything else (``{row["src"]}``, ``{x + 1}``) are refused before the query is
sent: it would reach the service as text and fail there with a puzzling message.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any

from cortex_nb.exceptions import ConfigurationError

__all__ = [
    "DATASETS",
    "LOG_FAMILIES",
    "normalize_sql",
    "qualify_tables",
    "render_parameters",
    "sql_literal",
]

# the first part of a log type's name (firewall.traffic): a family of log types
LOG_FAMILIES = ("firewall", "log", "endpoint")
DATASETS = LOG_FAMILIES  # its old name (a "dataset" is now only a Parquet folder)
# quoted strings and backticked names (skipped), then the things we rewrite
_TOKENS = re.compile(
    r"""(?P<quoted>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`[^`]*`)"""
    r"""|(?P<escape>\{\{|\}\})"""
    r"""|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}"""
    r"""|(?P<expression>\{[^{}\n]*\})""",
    re.DOTALL,
)
_BARE_TABLE = re.compile(
    rf"\b(?P<kw>FROM|JOIN)(?P<ws>\s+)(?P<table>(?:{'|'.join(LOG_FAMILIES)})\.[A-Za-z_][A-Za-z0-9_]*)\b",
    re.IGNORECASE,
)
_BACKTICK_TABLE = re.compile(rf"^`((?:{'|'.join(LOG_FAMILIES)})\.[A-Za-z_][A-Za-z0-9_]*)`$")


def _quote_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def _timestamp(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return f'TIMESTAMP("{value.isoformat(sep=" ")}")'


def sql_literal(value: Any) -> str:
    """Render one Python value as a csql literal, or raise ``ConfigurationError``."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        if not math.isfinite(float(value)):
            raise ConfigurationError(f"cannot insert {value!r} into SQL: not a finite number")
        return repr(float(value))
    if isinstance(value, str):
        return _quote_string(value)
    if isinstance(value, dt.datetime):
        return _timestamp(value)
    if isinstance(value, dt.date):
        return f'DATE("{value.isoformat()}")'
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else list(value)
        if not items:
            raise ConfigurationError("cannot insert an empty list into SQL (IN () is invalid)")
        return "(" + ", ".join(sql_literal(v) for v in items) + ")"
    raise ConfigurationError(
        f"cannot insert a {type(value).__name__} into SQL; use a str, number, bool, None, "
        "datetime, date or a list of those"
    )


def _rewrite_outside_quotes(sql: str, on_name: Callable[[str], str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group("quoted"):
            return match.group("quoted")
        if match.group("escape"):
            return match.group("escape")[0]
        if match.group("expression"):
            raise _not_a_parameter(match.group("expression"))
        return on_name(match.group("name"))

    return _TOKENS.sub(replace, sql)


def render_parameters(sql: str, namespace: Mapping[str, Any]) -> str:
    """Replace each ``{name}`` outside quotes with the literal of ``namespace[name]``."""

    def literal(name: str) -> str:
        if name not in namespace:
            raise ConfigurationError(
                f"{{{name}}} in the query names no variable; define {name} first, or write "
                "{{ and }} for literal braces"
            )
        return sql_literal(namespace[name])

    return _rewrite_outside_quotes(sql, literal)


def _not_a_parameter(braced: str) -> ConfigurationError:
    """The refusal of ``{...}`` around something other than a plain variable name."""
    inside = braced[1:-1].strip() or "..."
    shown = braced if len(braced) <= 60 else braced[:57] + "...}"
    return ConfigurationError(
        f"{shown} in the query: only {{name}} is substituted, with a plain variable name; "
        f"assign it to a variable first (value = {inside}) and write {{value}}, "
        "or write {{ and }} for literal braces"
    )


def qualify_tables(sql: str, instance_id: str | None) -> str:
    """Prefix ``firewall.traffic``-style names that lack the instance id with ``instance_id``."""
    if not instance_id:
        return sql

    def backticked(quoted: str) -> str:
        match = _BACKTICK_TABLE.match(quoted)
        return f"`{instance_id}.{match.group(1)}`" if match else quoted

    out, last = [], 0  # quoted spans are kept out of the bare-name rewrite
    for match in _TOKENS.finditer(sql):
        out.append(_qualify_bare(sql[last : match.start()], instance_id))
        quoted = match.group("quoted")
        out.append(backticked(quoted) if quoted else match.group(0))
        last = match.end()
    out.append(_qualify_bare(sql[last:], instance_id))
    return "".join(out)


def _qualify_bare(text: str, instance_id: str) -> str:
    return _BARE_TABLE.sub(
        lambda m: f"{m.group('kw')}{m.group('ws')}`{instance_id}.{m.group('table')}`", text
    )



_SPACE = re.compile(r"\s+")


def normalize_sql(sql: str) -> str:
    """``sql`` with each run of white space outside quotes made one space, the ends trimmed and
    a trailing ``;`` dropped: two layouts of one query compare equal (cache keys, replay)."""
    out, last = [], 0
    for match in _TOKENS.finditer(sql):
        if match.group("quoted"):
            out += [_SPACE.sub(" ", sql[last : match.start()]), match.group("quoted")]
            last = match.end()
    out.append(_SPACE.sub(" ", sql[last:]))
    return "".join(out).strip().removesuffix(";").rstrip()
