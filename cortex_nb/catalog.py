"""The documented log types of Cortex Data Lake and their fields: one source of truth.

The data lives in ``catalog.json`` next to this module (shipped as package data); this module
loads it once and answers questions about it. It imports nothing from the rest of cortex_nb, so
the sandbox (which must not depend on the client side) can read it too, and pandas is imported
only by the two frame functions.

Every field has a *wire type*, how its values look in Query Service result rows:

========== ================================================================================
string     text
integer    a JSON integer (ports, counters, ids, bit fields)
float      a JSON number
boolean    true / false
timestamp  integer microseconds since the Unix epoch (UTC)
ip         ``{"value": "10.1.2.3", "hex": "00000000000000000000ffff0a010203"}``
enum       ``{"id": 6, "value": "tcp"}``
list       a JSON array (``Field.items`` names the element type)
struct     an object with the subfields in ``Field.subfields`` (interfaces, ``*_if_details``,
           ``*_user_info``...)
========== ================================================================================

``ip`` and ``enum`` fields also have subfields (``source_ip.value``, ``protocol.id``), so a
dotted path reaches into any structured field: ``table("firewall.traffic").field("source_ip.hex")``.

The data file holds ``sources`` (where the field lists come from), ``shapes`` (the subfields of
``ip``, ``enum`` and each kind of ``struct``), ``fields`` (one shared definition per field name:
type, ``items`` or ``shape``, description) and ``tables`` (description, time column, and the
field names in order; an entry that is an object overrides the shared definition for that table,
and ``"documented": false`` marks a field the vendor's reference does not list for it).

Lookups that fail raise ``CatalogLookupError``, a ``LookupError`` carrying the closest known
names; the client side wraps it into its own errors where it needs to.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DATA_FILE",
    "WIRE_TYPES",
    "CatalogLookupError",
    "Field",
    "Table",
    "closest",
    "columns_frame",
    "did_you_mean",
    "parse_table_name",
    "sources",
    "suggest_column",
    "suggest_table",
    "table",
    "table_names",
    "tables",
    "tables_frame",
]

DATA_FILE = "catalog.json"
WIRE_TYPES = frozenset(
    {"string", "integer", "float", "boolean", "timestamp", "ip", "enum", "list", "struct"}
)
# wire types whose values are objects with subfields, and where those subfields are defined
_SHAPED_TYPES = frozenset({"ip", "enum", "struct"})
_GLOB_CHARS = re.compile(r"[*?\[]")
# the scalar wire types as a results schema names them (BigQuery type names)
_BIGQUERY_TYPES = {
    "string": "STRING",
    "integer": "INTEGER",
    "float": "FLOAT",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMP",
}


class CatalogLookupError(LookupError):
    """A table or field name the catalog does not know, with the closest names it does know."""

    def __init__(self, what: str, name: str, suggestions: Sequence[str], where: str = "") -> None:
        self.what = what
        self.name = name
        self.suggestions = tuple(suggestions)
        self.where = where
        super().__init__(self._message())

    def _message(self) -> str:
        place = f" in {self.where}" if self.where else ""
        text = f"Unknown {self.what} `{self.name}`{place}"
        if self.suggestions:
            text += f": {did_you_mean(self.suggestions)}"
        return text


@dataclass(frozen=True)
class Field:
    """One field of a log type (or a subfield of a structured field) and its wire type."""

    name: str
    type: str
    description: str
    items: str | None = None
    shape: str | None = None
    subfields: tuple[Field, ...] = ()
    documented: bool = True

    @property
    def type_label(self) -> str:
        """The wire type as shown to people: ``ip``, ``list<string>``, ``struct<interface>``."""
        if self.type == "list":
            return f"list<{self.items}>"
        if self.type == "struct":
            return f"struct<{self.shape}>"
        return self.type

    def field(self, path: str) -> Field:
        """The subfield at dotted ``path`` (``"type.value"`` of an ``*_if_details`` field)."""
        head, _, rest = path.partition(".")
        for sub in self.subfields:
            if sub.name == head:
                return sub.field(rest) if rest else sub
        names = [s.name for s in self.subfields]
        raise CatalogLookupError("subfield", head, closest(head, names), where=f"`{self.name}`")

    def schema_field(self, name: str | None = None) -> dict[str, Any]:
        """The field as a results ``schema.fields`` item (BigQuery type names), named ``name``.

        What the Query Service's own schema would say of this column, for readers of results
        pages that came without one.
        """
        item: dict[str, Any] = {"name": name or self.name}
        if self.subfields:
            item["type"] = "RECORD"
            item["fields"] = [sub.schema_field() for sub in self.subfields]
        elif self.type == "list":
            item["type"] = _BIGQUERY_TYPES.get(self.items or "", "STRING")
            item["mode"] = "REPEATED"
        else:
            item["type"] = _BIGQUERY_TYPES[self.type]
        return item

    def walk(self, prefix: str = "") -> Iterator[tuple[str, Field]]:
        """This field and every subfield below it, each with its dotted path."""
        path = f"{prefix}{self.name}"
        yield path, self
        for sub in self.subfields:
            yield from sub.walk(f"{path}.")


@dataclass(frozen=True)
class Table:
    """A log type (``firewall.traffic``...): what it holds, its time column and its fields."""

    name: str
    description: str
    time_column: str
    fields: tuple[Field, ...]

    def field(self, path: str) -> Field:
        """The field at ``path``, which may reach into subfields (``"source_ip.value"``)."""
        head, _, rest = path.strip().partition(".")
        for candidate in self.fields:
            if candidate.name == head:
                return candidate.field(rest) if rest else candidate
        names = [f.name for f in self.fields]
        raise CatalogLookupError("column", head, closest(head, names), where=f"`{self.name}`")

    def columns(self) -> tuple[str, ...]:
        """Every column path, subfields included: ``source_ip``, ``source_ip.value``..."""
        return tuple(path for path, _ in self.walk())

    def walk(self) -> Iterator[tuple[str, Field]]:
        """Every field and subfield of the table with its dotted path, in catalog order."""
        for field in self.fields:
            yield from field.walk()

    def __contains__(self, path: object) -> bool:
        """Whether ``path`` is one of the table's column paths."""
        return isinstance(path, str) and path in self.columns()


# ---- lookups ------------------------------------------------------------------------------


def tables() -> tuple[Table, ...]:
    """Every log type in the catalog, in catalog order."""
    return tuple(_index().values())


def table_names() -> tuple[str, ...]:
    """The names of every log type (``firewall.traffic``, ``log.system``...)."""
    return tuple(_index())


def table(name: str) -> Table:
    """The log type named ``name``, written as in csql or without its instance id.

    ``firewall.traffic`` and ``<instance id>.firewall.traffic``, in backticks or not, name the
    same table.
    """
    _, log_type = parse_table_name(name)
    found = _index().get(log_type)
    if found is None:
        raise CatalogLookupError("table", name.strip(), suggest_table(name))
    return found


def parse_table_name(name: str) -> tuple[str | None, str]:
    """Split a csql table name into (instance id or None, log type), dropping backticks."""
    parts = [p for p in name.replace("`", "").strip().lower().split(".") if p]
    if len(parts) <= 2:
        return None, ".".join(parts)
    return ".".join(parts[:-2]), ".".join(parts[-2:])


def sources() -> tuple[str, ...]:
    """Where the catalog's field lists and wire types come from."""
    return tuple(_load_data()["sources"])


# ---- suggestions --------------------------------------------------------------------------


def closest(name: str, candidates: Sequence[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """The candidates closest to ``name``, best first, ignoring case, for "did you mean".

    Close spellings come first (``difflib``), then candidates that start with ``name`` (at least
    three characters), so ``bytes`` finds ``bytes_sent``.
    """
    by_lower: dict[str, str] = {}
    for candidate in candidates:
        by_lower.setdefault(candidate.lower(), candidate)
    typed = name.lower()
    found = difflib.get_close_matches(typed, by_lower, n=n, cutoff=cutoff)
    if len(typed) >= 3:
        found += [c for c in by_lower if c.startswith(typed) and c != typed and c not in found]
    return [by_lower[c] for c in found[:n]]


def did_you_mean(suggestions: Sequence[str]) -> str:
    """``did you mean `a`, `b` or `c`?`` for a list of names (empty for none)."""
    names = [f"`{s}`" for s in suggestions]
    if not names:
        return ""
    listed = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
    return f"did you mean {listed}?"


def suggest_table(name: str) -> list[str]:
    """Table names close to ``name`` (``firewall.trafic`` or just ``traffic``), best first.

    The log type after the dot is compared, first among the tables of a family (``firewall``,
    ``log``...) spelled close to the one given, then among all tables.
    """
    family, _, kind = parse_table_name(name)[1].rpartition(".")
    return _suggest_in_family(kind, family) or _suggest_in_family(kind, "")


def _suggest_in_family(kind: str, family: str) -> list[str]:
    """Tables whose log type is close to ``kind``, among the families close to ``family``."""
    by_kind: dict[str, list[str]] = {}
    for full in table_names():
        full_family, _, full_kind = full.partition(".")
        if not family or closest(family, [full_family], cutoff=0.75):
            by_kind.setdefault(full_kind, []).append(full)
    return [full for k in closest(kind, list(by_kind)) for full in by_kind[k]][:3]


def suggest_column(table_name: str, name: str) -> list[str]:
    """Columns of ``table_name`` close to ``name``: a dotted name is compared with subfield paths.

    ``src_ip`` -> ``source_ip``; ``source_ip.valeu`` -> ``source_ip.value``.
    """
    found = table(table_name)
    if "." in name:
        return closest(name, found.columns())
    return closest(name, [f.name for f in found.fields])


# ---- frames -------------------------------------------------------------------------------


def tables_frame(pattern: str | None = None) -> pd.DataFrame:
    """The log types as a DataFrame (name, description, time_column, fields), filtered by name.

    ``pattern`` is a shell-style pattern (``firewall.*``) when it has ``*``, ``?`` or ``[``, else
    a case-insensitive substring.
    """
    import pandas as pd

    rows = [
        {
            "name": t.name,
            "description": t.description,
            "time_column": t.time_column,
            "fields": len(t.fields),
        }
        for t in tables()
        if _matches(t.name, pattern)
    ]
    return pd.DataFrame(rows, columns=["name", "description", "time_column", "fields"])


def columns_frame(table_name: str, pattern: str | None = None) -> pd.DataFrame:
    """The columns of a table, subfields included, as a DataFrame (name, type, description)."""
    import pandas as pd

    rows = [
        {"name": path, "type": field.type_label, "description": field.description}
        for path, field in table(table_name).walk()
        if _matches(path, pattern)
    ]
    return pd.DataFrame(rows, columns=["name", "type", "description"])


def _matches(name: str, pattern: str | None) -> bool:
    if not pattern:
        return True
    if _GLOB_CHARS.search(pattern):
        return fnmatch.fnmatchcase(name.lower(), pattern.lower())
    return pattern.lower() in name.lower()


# ---- loading ------------------------------------------------------------------------------


@functools.cache
def _load_data() -> Mapping[str, Any]:
    """The parsed data file (read once)."""
    text = resources.files(__package__).joinpath(DATA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


@functools.cache
def _index() -> Mapping[str, Table]:
    """Every table by name, built once from the data file."""
    data = _load_data()
    shapes = data["shapes"]
    shared = data["fields"]
    built = {
        name: _build_table(name, spec, shared, shapes) for name, spec in data["tables"].items()
    }
    return MappingProxyType(built)


def _build_table(
    name: str, spec: Mapping[str, Any], shared: Mapping[str, Any], shapes: Mapping[str, Any]
) -> Table:
    fields = tuple(_build_field(_table_field_spec(e, shared), shapes) for e in spec["fields"])
    return Table(name, spec["description"], spec["time_column"], fields)


def _table_field_spec(entry: str | Mapping[str, Any], shared: Mapping[str, Any]) -> dict:
    """A table's field entry (a name, or a name with overrides) over its shared definition."""
    if isinstance(entry, str):
        return {"name": entry, **shared[entry]}
    return {"name": entry["name"], **shared[entry["name"]], **entry}


def _build_field(spec: Mapping[str, Any], shapes: Mapping[str, Any]) -> Field:
    kind = spec["type"]
    if kind not in WIRE_TYPES:
        raise ValueError(f"{DATA_FILE}: field {spec['name']!r} has unknown wire type {kind!r}")
    shape = spec.get("shape") if kind == "struct" else None
    subfields: tuple[Field, ...] = ()
    if kind in _SHAPED_TYPES:
        subfields = tuple(_build_field(s, shapes) for s in shapes[shape or kind])
    return Field(
        name=spec["name"],
        type=kind,
        description=spec["description"],
        items=spec.get("items") if kind == "list" else None,
        shape=shape,
        subfields=subfields,
        documented=spec.get("documented", True),
    )
