"""Log tables in DuckDB with exactly the catalog's columns, valued the way the service sends them.

A generator describes a table as a ``TableData``: raw numpy columns (codes, integers, times in
microseconds), the catalog columns *stored* from them (SQL over the raw columns, shaped into
the wire types: ``ip`` and ``enum`` structs, timestamps, lists) and the catalog columns
*derived* in the table's view (constants, or SQL over stored columns). ``create`` loads the
stored columns into a hidden table (schema ``RAW_SCHEMA``) and puts a view named like the log
type over it that lists every catalog field in catalog order, each cast to the field's DuckDB
type and NULL when the generator gives no value. Constants and null columns so cost nothing to
store or load, and a ``SELECT *`` shows the catalog's columns and nothing else.

The engine renders NULLs as absent keys, as the service does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from cortex_nb import catalog

RAW_SCHEMA = "raw"
_SCALAR_TYPES = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "float": "DOUBLE",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",  # csql's TIMESTAMP is an instant (BigQuery's), as on the wire
}


@dataclass
class TableData:
    """What a generator returns: raw columns (``t_us`` orders the rows) and catalog columns."""

    cols: dict[str, np.ndarray]
    stored: dict[str, str]
    derived: dict[str, str] = field(default_factory=dict)


def sql_type(item: catalog.Field) -> str:
    """The DuckDB type that holds a catalog field's values."""
    if item.type == "list":
        return f"{_SCALAR_TYPES[item.items or 'string']}[]"
    if item.subfields:
        members = ", ".join(f'"{sub.name}" {sql_type(sub)}' for sub in item.subfields)
        return f"STRUCT({members})"
    return _SCALAR_TYPES[item.type]


def fitting(table_name: str, exprs: Mapping[str, str]) -> dict[str, str]:
    """The entries of a shared set of columns that ``table_name`` has (others are dropped)."""
    names = {f.name for f in catalog.table(table_name).fields}
    return {name: sql for name, sql in exprs.items() if name in names}


def create(con, table_name: str, data: TableData, database: str | None = None) -> int:
    """Load ``data`` as the log table ``table_name`` (a view over a hidden table); its rows.

    ``database`` qualifies every name (the sandbox's attached database), so the tables can be
    made from any cursor.
    """
    import pandas as pd

    found = catalog.table(table_name)
    unknown = sorted((data.stored.keys() | data.derived.keys()) - {f.name for f in found.fields})
    if unknown:
        raise ValueError(f"{table_name}: columns not in the catalog: {', '.join(unknown)}")
    prefix = f"{database}." if database else ""
    schema, name = table_name.split(".")
    hidden = f'{prefix}{RAW_SCHEMA}."{schema}_{name}"'
    types = {f.name: sql_type(f) for f in found.fields}
    order = np.argsort(data.cols["t_us"], kind="stable")
    frame = pd.DataFrame({key: values[order] for key, values in data.cols.items()})
    stored = [f'CAST({sql} AS {types[col]}) AS "{col}"' for col, sql in data.stored.items()]
    for ddl in (f"CREATE SCHEMA IF NOT EXISTS {prefix}{RAW_SCHEMA}",
                f"CREATE SCHEMA IF NOT EXISTS {prefix}{schema}"):  # fmt: skip
        con.execute(ddl)
    con.register("raw_frame", frame)
    try:
        # our own SQL over our own frame; nothing here comes from a query
        con.execute(f"CREATE TABLE {hidden} AS SELECT {', '.join(stored)} FROM raw_frame")  # noqa: S608
    finally:
        con.unregister("raw_frame")
    shown = [_view_column(f.name, types[f.name], data) for f in found.fields]
    con.execute(f"CREATE VIEW {prefix}{schema}.{name} AS SELECT {', '.join(shown)} FROM {hidden}")  # noqa: S608
    return len(frame)


def _view_column(name: str, duck_type: str, data: TableData) -> str:
    if name in data.stored:
        return f'"{name}"'
    return f'CAST({data.derived.get(name, "NULL")} AS {duck_type}) AS "{name}"'


# ---- SQL that shapes raw columns into wire values ------------------------------------------


def lit(value: object) -> str:
    """A SQL literal: text quoted, lists as DuckDB lists, ``None`` as NULL."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(lit(v) for v in value) + "]" + ("::VARCHAR[]" if not value else "")
    return str(value)


def lookup(code: str, values: list) -> str:
    """``values[code]`` in SQL, NULL for a negative code."""
    return f"CASE WHEN ({code}) >= 0 THEN {lit(values)}[({code}) + 1] END"


def enum(code: str, pairs: list[tuple[int, str]]) -> str:
    """An ``{id, value}`` enumeration from a code column indexing ``pairs`` (NULL below 0)."""
    ids, names = [p[0] for p in pairs], [p[1] for p in pairs]
    return (
        f"CASE WHEN ({code}) >= 0 THEN {{'id': {lit(ids)}[({code}) + 1], "
        f"'value': {lit(names)}[({code}) + 1]}} END"
    )


def const_enum(pair: tuple[int, str]) -> str:
    """A constant ``{id, value}`` enumeration."""
    return f"{{'id': {pair[0]}, 'value': {lit(pair[1])}}}"


def ip(col: str) -> str:
    """A ``{value, hex}`` address (IPv4 mapped into IPv6 hex) from an integer (NULL below 0)."""
    dotted = " || '.' || ".join(f"((({col}) >> {s}) & 255)" for s in (24, 16, 8, 0))
    hexed = f"'00000000000000000000ffff' || lpad(lower(hex({col})), 8, '0')"
    return f"CASE WHEN ({col}) >= 0 THEN {{'value': {dotted}, 'hex': {hexed}}} END"


def ts(expr: str) -> str:
    """A timestamp from microseconds since the epoch."""
    return f"make_timestamp(({expr})::BIGINT)"


def interface(port: str) -> str:
    """An interface ``{value, hex}`` for port ``port`` of slot 1."""
    return f"{{'value': 'ethernet1/' || ({port}), 'hex': 1138183110656 + ({port})}}"


def if_details(port: str) -> str:
    """Interface details ``{unit, type, slot, port}`` for port ``port`` of slot 1."""
    return f"{{'unit': 0, 'type': {{'id': 1, 'value': 'ethernet'}}, 'slot': 1, 'port': {port}}}"


def user_info(user: str) -> str:
    """A ``{name, domain, uuid}`` user struct from a ``domain\\name`` text column (NULL stays)."""
    return (
        f"CASE WHEN {user} IS NOT NULL THEN {{'name': split_part({user}, '\\', 2), "
        f"'domain': split_part({user}, '\\', 1), 'uuid': hash({user}) % 1000000007}} END"
    )
