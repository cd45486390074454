"""Query Service result rows -> typed pandas DataFrames, built page by page.

A results page arrives as already-decoded JSON: a list of dicts (``valuesDictionary``) or of
lists ordered by ``schema.fields`` (``valuesArray``). Per-cell Python loops over 1M rows x 40
columns cost several times the JSON parse itself, so the work is done by Arrow, in C++:

1. Each page goes to Arrow as it arrives, in one ``pyarrow.array(rows, type=...)`` call, and only
   Arrow column chunks are kept: the page's Python objects are freed, so peak memory stays near
   the final frame, and the garbage collector never walks kept rows (keeping 1M lists and dicts
   alive while later pages were parsed cost 20 s of collection in a 50 s run).
2. When a page brings columns not seen before, Arrow infers their types from a sample of its
   rows; that becomes the *request type*. Pages are converted with the request type, about twice
   as fast as inference, skipping what is dropped anyway (an IP's ``hex``, an enum's ``id`` when
   only ``value`` is kept). A page the request type does not fit is inferred whole.
3. Integers are requested as ``decimal128(19, 0)`` and cast to int64: Arrow's int64 conversion
   silently truncates floats (1.5 -> 1), decimal refuses them. A page Arrow refuses (mixed types,
   ints beyond int64) is redone column by column, and only a column that still fails is cleaned
   value by value in Python; what cannot be kept becomes missing and is reported once per column
   with a ``ValueLostWarning`` giving the column and the count.
4. Lists and structs kept whole stay in Arrow until ``to_dataframe``, which builds their Python
   objects with the collector paused (it would otherwise rescan them again and again). A query's
   frame (``objects_as_pages_come``) builds them page by page instead, while the next pages
   download, each page's objects frozen out of the collector's scans until the frame is built.
5. ``to_dataframe`` unifies each column's chunks across pages (the schema's type if given, else
   the type the pages agree on: int and float -> float, otherwise the majority), turns
   microsecond ints into tz-aware UTC timestamps and hands each column to pandas with nullable
   dtypes (``Int64``, ``boolean``, Arrow-backed ``string``: a missing value is ``pd.NA``, shown
   ``<NA>``, in each), dropping its chunks as it goes. Lists
   and structs kept whole become Python objects (``dtypes="objects"``, the default) or stay in
   Arrow as pandas ``ArrowDtype`` columns (``dtypes="arrow"``: about 0.6x the memory).
6. ``take_table`` hands out the pages added so far as one typed Arrow table instead, keeping
   what was learnt about the columns: pages streamed to Parquet (``cortex_nb.results.datasets``).

Without a schema, a column is a timestamp when its name is one of ``TIMESTAMP_COLUMNS`` or ends
in ``_time`` and it holds integers (a stray float there is lost, it does not make the column
float). ``valuesArray`` rows need the schema to name their columns.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import gc
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any, Literal

import pandas as pd

try:
    import pyarrow as pa
    import pyarrow.compute as pc
except ImportError as error:  # pragma: no cover - pyarrow is a dependency
    raise ImportError("cortex_nb needs pyarrow: pip install 'pyarrow>=14'") from error

from cortex_nb import wire
from cortex_nb.exceptions import ConfigurationError, CortexError, QueryError

__all__ = [
    "DEFAULT_DTYPES",
    "DTYPE_MODES",
    "TIMESTAMP_COLUMNS",
    "ArrowPage",
    "FrameBuilder",
    "ValueLostWarning",
    "arrow_to_frame",
    "parse_page",
    "release_freed_memory",
    "to_dataframe",
]

ResultFormat = Literal["valuesDictionary", "valuesArray"]
StructMode = Literal["value", "keep", "flatten"]
DtypeMode = Literal["arrow", "objects"]
DTYPE_MODES = ("arrow", "objects")
# Python lists and dicts by default: pandas cannot read back from Parquet or Feather a frame
# with ArrowDtype lists or structs (pandas-dev/pandas#57411); see the README's "Lean frames"
DEFAULT_DTYPES: DtypeMode = "objects"
# A column's data from one page: an Arrow array, or Python values Arrow cannot hold.
Chunk = pa.Array | list

TIMESTAMP_COLUMNS = frozenset(
    {"time_generated", "log_time", "session_start_time", "event_time", "receive_time"}
)
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UTC_US = pa.timestamp("us", tz="UTC")
_STRICT_INT = pa.decimal128(19, 0)
_STRICT_INT_LIST = pa.list_(_STRICT_INT)
_KEEP = "object"  # target of a column kept as Python objects
_MISSING = object()
_SCALAR_KINDS = {"bool", "int", "float", "str"}
_SAMPLE_ROWS = 1000  # rows whose inferred types seed the request type of new columns
_ARROW_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError)
_SCHEMA_TYPES = {
    "TIMESTAMP": _UTC_US,
    "INTEGER": pa.int64(),
    "INT64": pa.int64(),
    "FLOAT": pa.float64(),
    "FLOAT64": pa.float64(),
    "NUMERIC": pa.float64(),
    "BIGNUMERIC": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "BOOL": pa.bool_(),
    "STRING": pa.string(),
    "BYTES": pa.string(),
    "DATE": pa.date32(),
}
# pandas' nullable dtypes: a missing integer, boolean or text is pd.NA, shown <NA> in every
# column (pandas 3's default ``str`` would show missing text as NaN); text stays in Arrow
_TEXT = pd.StringDtype("pyarrow")
_PANDAS_TYPES = {
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
    pa.string(): _TEXT,
    pa.large_string(): _TEXT,
}
_OBJECTS = "a Python object"  # what a list or struct column holds, for loss warnings


def check_dtypes(dtypes: str) -> None:
    """``ConfigurationError`` unless ``dtypes`` is a dtype mode (``arrow`` or ``objects``)."""
    if dtypes not in DTYPE_MODES:
        raise ConfigurationError(
            f"dtypes={dtypes!r}: use 'arrow' (Arrow-backed lists and structs) or 'objects' "
            "(Python lists and dicts)"
        )


def _pandas_type(arrow_type: pa.DataType, dtypes: str) -> Any:
    """The pandas dtype an Arrow column becomes (None: pandas' own choice)."""
    if dtypes == "arrow" and pa.types.is_nested(arrow_type):
        return pd.ArrowDtype(arrow_type)
    return _PANDAS_TYPES.get(arrow_type)


def _to_series(column: pa.ChunkedArray, dtypes: str) -> pd.Series:
    """One typed Arrow column as a pandas column, in the ``dtypes`` mode."""
    return column.to_pandas(
        types_mapper=lambda kind: _pandas_type(kind, dtypes), date_as_object=False
    )


def arrow_to_frame(table: pa.Table, dtypes: DtypeMode = DEFAULT_DTYPES) -> pd.DataFrame:
    """A DataFrame with the dtypes ``FrameBuilder`` gives, from an Arrow table of its columns.

    Reads a dataset written from query pages (``cortex_nb.results.datasets``) back into the frame
    the same query gives in memory: Int64, boolean, str, UTC timestamps, and lists and structs as
    ``ArrowDtype`` or Python objects.
    """
    check_dtypes(dtypes)
    data = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if dtypes == "objects" and pa.types.is_nested(column.type):
            data[name] = _object_column(list(column.chunks), [len(c) for c in column.chunks])
        else:
            data[name] = _to_series(column, dtypes)
    if not data:
        return pd.DataFrame(index=pd.RangeIndex(table.num_rows))
    return pd.DataFrame(data, copy=False)


class ValueLostWarning(UserWarning):
    """Some values could not be represented in their column's type and became missing."""


class FrameBuilder:
    """Collects Query Service results pages and turns them into one typed DataFrame.

    ``schema`` is the results page's own ``schema``: it names, orders and types the columns.
    ``known_types`` (the same shape) types columns the results *may* hold, where the schema is
    silent: it adds no column and sets no order, and a column whose values do not fit its
    known type is inferred as if it had none. The query layer fills it from the catalog, so a
    timestamp stays a datetime when the service sends no schema and the first page holds only
    nulls.

    ``dtypes`` says how lists and structs kept whole become columns: ``"arrow"`` (pandas
    ``ArrowDtype``: one Arrow buffer per column, no Python object per cell) or ``"objects"``
    (Python lists and dicts in ``object`` columns). Strings are Arrow-backed either way.
    """

    def __init__(
        self,
        schema: dict[str, Any] | None = None,
        result_format: ResultFormat = wire.DEFAULT_RESULT_FORMAT,
        structs: StructMode = "value",
        known_types: dict[str, Any] | None = None,
        dtypes: DtypeMode = DEFAULT_DTYPES,
    ) -> None:
        if result_format not in wire.RESULT_FORMATS:
            raise ConfigurationError(
                f"result_format={result_format!r}: use 'valuesDictionary' or 'valuesArray'"
            )
        if structs not in ("value", "keep", "flatten"):
            raise ConfigurationError(f"structs={structs!r}: use 'value', 'keep' or 'flatten'")
        check_dtypes(dtypes)
        self._dtypes = dtypes
        self._format = result_format
        self._structs = structs
        self._fields = _parse_schema(schema)
        self._schema_names = {name for name, _ in self._fields}
        self._requests: dict[str, pa.DataType | None] = {}  # top-level name -> request type
        self._request_struct: pa.StructType | None = None
        self._targets: dict[str, pa.DataType | str] = {}  # output column -> schema type
        self._chunks: dict[str, list[tuple[int, Chunk]]] = {}  # output column -> chunks
        self._sizes: list[int] = []
        self._lost: Counter[str] = Counter()  # output column -> values made missing
        self._kinds: dict[str, str] = {}  # output column -> what it holds, for loss warnings
        self._finished = False
        self._objects_now = False  # lists and structs become Python objects as pages come
        self._froze = False  # this builder's objects are frozen out of the collector's scans
        self._shared: dict[str, dict[str, str]] = {}  # output column -> its strings, shared
        self._known_fields: dict[str, pa.DataType] = {}  # top-level name -> known type
        self._known: dict[str, pa.DataType] = {}  # output column -> known type
        for name, arrow_type in self._fields:
            self._learn_field(name, arrow_type)
            for column, target in self._schema_outputs(name, arrow_type):
                self._targets[column] = target
                self._chunks[column] = []
        self._learn_known_types(known_types)

    @property
    def rows(self) -> int:
        """Number of rows added so far."""
        return sum(self._sizes)

    def add_page(self, rows: list[Any]) -> None:
        """Convert one page of rows (``page.result.data``) and keep its column chunks."""
        if self._finished:
            raise CortexError(
                "FrameBuilder.add_page() after to_dataframe(): start a new FrameBuilder"
            )
        page = len(self._sizes)
        if self._format == wire.VALUES_DICTIONARY:
            _check_rows(rows, dict, page, "a JSON object", wire.VALUES_ARRAY)
            columns = self._dict_page(rows) if rows else {}
        else:
            _check_rows(rows, list, page, "a JSON array", wire.VALUES_DICTIONARY)
            columns = self._array_page(rows, page) if rows else {}
        self._sizes.append(len(rows))
        for name, chunk in columns.items():
            self._chunks.setdefault(name, []).append((page, chunk))
        release_freed_memory()

    def add_arrow_page(self, rows: pa.StructArray) -> None:
        """Keep the column chunks of one ``valuesDictionary`` page already parsed by Arrow.

        ``rows`` comes from ``parse_page``: the same columns ``add_page`` would make from the
        decoded rows, without a Python object per value on the way.
        """
        if self._finished:
            raise CortexError(
                "FrameBuilder.add_arrow_page() after to_dataframe(): start a new FrameBuilder"
            )
        page = len(self._sizes)
        for field, array in zip(rows.type, rows.flatten(), strict=True):
            self._learn_field(field.name, field.type)
            if self._requests.get(field.name) is None:  # kept whole: objects at the end
                chunks: Iterator[tuple[str, Chunk]] = iter([(field.name, array)])
            else:
                chunks = self._shape(field.name, array)
            for name, chunk in chunks:
                self._chunks.setdefault(name, []).append((page, self._early_objects(name, chunk)))
        self._sizes.append(len(rows))
        self._freeze_objects()
        release_freed_memory()

    def objects_as_pages_come(self) -> None:
        """Build the Python objects of lists and structs page by page (``dtypes="objects"``
        frames only: ``take_table`` keeps them in Arrow).

        The work then overlaps the download of the next pages instead of following the last
        one. Each page's objects are frozen out of the garbage collector's scans
        (``gc.freeze``) until the frame is built, so they cost no collection time however many
        pages follow; ``close`` (or ``to_dataframe``) gives them back to the collector. Off
        when something else in the process froze objects already.
        """
        self._objects_now = self._dtypes == "objects" and gc.get_freeze_count() == 0

    def close(self) -> None:
        """Give the objects frozen by ``objects_as_pages_come`` back to the collector."""
        if self._froze:
            self._froze = False
            gc.unfreeze()

    def _early_objects(self, name: str, chunk: Chunk) -> Chunk:
        """A nested Arrow chunk of column ``name`` as Python objects, its strings shared with
        the column's earlier pages, if they are built now."""
        if not (self._objects_now and isinstance(chunk, pa.Array) and _is_objects(chunk)):
            return chunk
        with _gc_paused():
            cells = _SharedCells(chunk.to_pylist())
            _share_strings(cells, self._shared.setdefault(name, {}))
        return cells

    def _freeze_objects(self) -> None:
        if self._objects_now:
            gc.freeze()
            self._froze = True

    def to_dataframe(self) -> pd.DataFrame:
        """Build the final typed DataFrame (once, after the last page)."""
        if self._finished:
            raise CortexError(
                "FrameBuilder.to_dataframe() was already called: it hands its "
                "data to the DataFrame; keep the frame it returned"
            )
        self._finished = True
        data = {}
        try:
            for name in list(self._chunks):
                data[name], self._kinds[name] = self._finish_column(name, self._chunks.pop(name))
        finally:
            self.close()
        self._report_lost("the DataFrame", stacklevel=3)
        if not data:
            return pd.DataFrame(index=pd.RangeIndex(self.rows))
        return pd.DataFrame(data, copy=False)

    def _learn_known_types(self, known_types: dict[str, Any] | None) -> None:
        """Remember the known types of fields and of the columns they become, as hints."""
        for name, arrow_type in _parse_schema(known_types):
            if name in self._schema_names:
                continue
            self._known_fields[name] = arrow_type  # requested when the field first appears
            for column, target in self._schema_outputs(name, arrow_type):
                if isinstance(target, pa.DataType) and not pa.types.is_null(target):
                    self._known[column] = target

    def take_table(self, last: bool = False) -> pa.Table:
        """The rows added since the last call, as one typed Arrow table; they are then let go.

        For streaming pages to a file: what was learnt about the columns (their types) stays,
        the rows go, so memory holds about one page. ``last`` reports lost values (once per
        column, as ``to_dataframe`` does). A column of values Arrow cannot hold together
        (mixed kinds) raises ``QueryError``.
        """
        if self._finished:
            raise CortexError("FrameBuilder.take_table() after to_dataframe(): start a new one")
        if self._objects_now:
            raise CortexError("FrameBuilder.take_table() after objects_as_pages_come()")
        names, columns = [], []
        for name, chunks in self._chunks.items():
            pieces = self._pieces(chunks)
            if self._is_nested(name, pieces):
                column, self._kinds[name] = _nested_column(pieces, self._sizes), _OBJECTS
                if column is None:
                    raise QueryError(
                        f"column {name!r} mixes kinds of values (e.g. numbers and objects) "
                        "that one Parquet column cannot hold; CAST it in the SQL"
                    )
            else:
                column, self._kinds[name] = self._scalar_column(name, pieces)
            names.append(name)
            columns.append(column)
        self._chunks = {name: [] for name in self._chunks}
        self._sizes = []
        if last:
            self._report_lost("the dataset", stacklevel=3)
        return pa.Table.from_arrays(columns, names=names)

    def _report_lost(self, where: str, stacklevel: int) -> None:
        """One ``ValueLostWarning`` per column that lost values."""
        for name, count in self._lost.items():
            warnings.warn(
                f"column {name!r}: {count} value(s) could not be read as {self._kinds[name]} "
                f"and are missing (NA) in {where}",
                ValueLostWarning,
                stacklevel=stacklevel,
            )

    # -- pages -> chunks ------------------------------------------------------------------

    def _dict_page(self, rows: list[dict[str, Any]]) -> dict[str, Chunk]:
        keys = set().union(*rows)
        if self._structs != "flatten":
            if not keys <= self._requests.keys():  # new columns: learn their types cheaply
                sample = _try_array(rows[:_SAMPLE_ROWS])
                for field in sample.type if sample is not None else ():
                    self._learn_field(field.name, field.type)
            if keys <= self._requests.keys():
                table = _try_array(rows, self._request_type())
                if table is not None:
                    return self._known_page(table, rows, keys)
        table = _try_array(rows)
        if table is None:  # mixed types or huge ints somewhere: one column at a time
            names = dict.fromkeys(chain.from_iterable(rows))
            return self._convert_columns({n: _gather(rows, n) for n in names})
        columns: dict[str, Chunk] = {}
        for index, field in enumerate(table.type):
            self._learn_field(field.name, field.type, replace=True)
            columns.update(self._shape(field.name, table.field(index)))
        return columns

    def _known_page(
        self, table: pa.StructArray, rows: list[dict[str, Any]], keys: set[str]
    ) -> dict[str, Chunk]:
        """Chunks of a page converted with the request type, in first-appearance order."""
        columns: dict[str, Chunk] = {}
        for name, request in self._requests.items():
            if name not in keys:
                continue
            if request is None:  # not in the request type: see _object_chunk
                columns[name] = _object_chunk(_gather(rows, name))
            else:
                array = table.field(table.type.get_field_index(name))
                columns.update(self._shape(name, array))
        return columns

    def _array_page(self, rows: list[list[Any]], page: int) -> dict[str, Chunk]:
        if not self._fields:
            raise QueryError(
                f"results page {page}: 'valuesArray' rows have no column names without the "
                "page's schema; pass schema=<results page 'schema'> or request "
                "resultFormat='valuesDictionary'"
            )
        width = len(self._fields)
        if set(map(len, rows)) != {width}:
            bad = next(i for i, row in enumerate(rows) if len(row) != width)
            raise QueryError(
                f"results page {page}, row {bad}: {len(rows[bad])} values but the schema has "
                f"{width} fields; pass the schema of this query's results"
            )
        columns = zip(*rows, strict=True)
        names = [name for name, _ in self._fields]
        return self._convert_columns({n: list(c) for n, c in zip(names, columns, strict=True)})

    def _convert_columns(self, columns: dict[str, list[Any]]) -> dict[str, Chunk]:
        """Chunks of a page converted one column at a time."""
        out: dict[str, Chunk] = {}
        for name, values in columns.items():
            request = self._requests.get(name, _MISSING)
            if request is None:  # kept as Python objects
                out[name] = _object_chunk(values)
                continue
            array = None
            if request is not _MISSING and self._structs != "flatten":
                array = _try_array(values, request)
            if array is None:
                array = _try_array(values)
                if array is not None:
                    self._learn_field(name, array.type, replace=True)
            if array is None:
                chunks = self._coerce_raw(name, values)
                cleaned = chunks.get(name)
                if isinstance(cleaned, pa.Array) and self._structs != "flatten":
                    self._learn_field(name, cleaned.type)  # so later pages take the fast path
                out.update(chunks)
            else:
                out.update(self._shape(name, array))
        return out

    def _shape(self, name: str, array: pa.Array) -> Iterator[tuple[str, Chunk]]:
        """Output chunks of one field: structs to their value or flattened, as configured."""
        kind = array.type
        if pa.types.is_struct(kind) and kind.num_fields:
            if self._structs == "flatten":
                for index, field in enumerate(kind):
                    child = pc.struct_field(array, [index])
                    yield from self._shape(f"{name}.{field.name}", child)
                return
            index = kind.get_field_index("value")
            if self._structs == "value" and index >= 0:
                yield from self._shape(name, pc.struct_field(array, [index]))
                return
        if kind == _STRICT_INT:
            yield name, self._decimal_to_int64(name, array)
        elif kind == _STRICT_INT_LIST:
            yield name, _int_lists(array)
        else:
            yield name, array

    def _decimal_to_int64(self, name: str, array: pa.Array) -> pa.Array:
        try:
            return array.cast(pa.int64())
        except pa.ArrowInvalid:  # beyond int64: keep the rest, report the loss
            values = [None if v is None else int(v) for v in array.to_pylist()]
            return self._coerce(name, values, pa.int64())

    # -- types ----------------------------------------------------------------------------

    def _learn_field(self, name: str, arrow_type: pa.DataType, replace: bool = False) -> None:
        """Remember how to request a top-level field (the schema's type is never replaced)."""
        known = self._requests.get(name, _MISSING)
        if known is None or (known is not _MISSING and pa.types.is_null(arrow_type)):
            return  # kept as objects for good, or nothing new to learn
        if known is _MISSING and not replace:  # first seen: its known type, if any, is asked for
            arrow_type = self._known_fields.get(name, arrow_type)
        learned = known is not _MISSING and not pa.types.is_null(known)
        if learned and (not replace or name in self._schema_names):
            return
        own_inference = self._kept_whole(arrow_type) and not _is_flat_list(arrow_type)
        self._requests[name] = None if own_inference else _request(arrow_type, self._structs)
        self._request_struct = None

    def _kept_whole(self, arrow_type: pa.DataType) -> bool:
        """Whether a field's values stay Python objects (lists, structs kept whole)."""
        if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
            return True
        if not pa.types.is_struct(arrow_type) or self._structs == "flatten":
            return False
        return self._structs == "keep" or arrow_type.get_field_index("value") < 0

    def _request_type(self) -> pa.StructType:
        if self._request_struct is None:
            fields = [(n, t) for n, t in self._requests.items() if t is not None]
            self._request_struct = pa.struct(fields)
        return self._request_struct

    def _schema_outputs(
        self, name: str, arrow_type: pa.DataType
    ) -> Iterator[tuple[str, pa.DataType | str]]:
        if self._kept_whole(arrow_type):
            yield name, _KEEP
        elif pa.types.is_struct(arrow_type) and self._structs == "flatten":
            for field in arrow_type:
                yield from self._schema_outputs(f"{name}.{field.name}", field.type)
        elif pa.types.is_struct(arrow_type):
            yield from self._schema_outputs(name, arrow_type.field("value").type)
        else:
            yield name, arrow_type

    def _target(self, column: str) -> pa.DataType | None:
        """The schema's type for an output column, None if it has none (or is objects)."""
        target = self._targets.get(column)
        if isinstance(target, pa.DataType) and not pa.types.is_null(target):
            return target
        return None

    def _learned_type(self, name: str) -> pa.DataType | None:
        """The scalar type earlier pages gave a column, if any."""
        request = self._requests.get(name)
        if request is None or pa.types.is_nested(request) or pa.types.is_null(request):
            return None
        return pa.int64() if request == _STRICT_INT else request

    # -- value-by-value cleaning (only for columns Arrow refused) -------------------------

    def _coerce_raw(self, name: str, values: list[Any]) -> dict[str, Chunk]:
        """Output chunks of one column from its raw values; what does not fit is missing."""
        kinds = Counter(_kind(v) for v in values if v is not None)
        if kinds.keys() == {"dict"} and self._structs == "flatten":
            keys = dict.fromkeys(chain.from_iterable(v for v in values if v is not None))
            out: dict[str, Chunk] = {}
            for key in keys:
                children = [None if v is None else v.get(key) for v in values]
                out.update(self._coerce_raw(f"{name}.{key}", children))
            return out
        if "dict" in kinds and self._structs == "value":
            unwrapped = [v.get("value", v) if type(v) is dict else v for v in values]
            if any(type(v) is dict and "value" in v for v in values):
                return self._coerce_raw(name, unwrapped)
        if kinds.keys() - _SCALAR_KINDS or self._targets.get(name) == _KEEP:
            return {name: values}
        target = self._target(name) or self._learned_type(name)
        target = target or _majority_type(kinds, _is_time_name(name))
        return {name: self._coerce(name, values, _storage(target))}

    def _coerce(self, name: str, values: Sequence[Any], target: pa.DataType) -> pa.Array:
        convert = _converter(target)
        cleaned = [None if v is None else convert(v) for v in values]
        lost = sum(v is _MISSING for v in cleaned)
        if lost:
            self._lost[name] += lost
            cleaned = [None if v is _MISSING else v for v in cleaned]
        return pa.array(cleaned, type=target)

    # -- chunks -> pandas -----------------------------------------------------------------

    def _finish_column(self, name: str, chunks: list[tuple[int, Chunk]]) -> tuple[Any, str]:
        """The pandas column for name, and what its values are (for loss warnings)."""
        pieces = self._pieces(chunks)
        if self._is_nested(name, pieces):
            column = _nested_column(pieces, self._sizes) if self._dtypes == "arrow" else None
            if column is None:
                return _object_column(pieces, self._sizes, self._shared.get(name)), _OBJECTS
            return _to_series(column, self._dtypes), _OBJECTS
        column, kind = self._scalar_column(name, pieces)
        return _to_series(column, self._dtypes), kind

    def _pieces(self, chunks: list[tuple[int, Chunk]]) -> list[Chunk | None]:
        """A column's chunk for every page, None for pages that lack it."""
        by_page = dict(chunks)
        return [by_page.get(page) for page in range(len(self._sizes))]

    def _is_nested(self, name: str, pieces: list[Chunk | None]) -> bool:
        """Whether a column holds lists or structs kept whole (or values Arrow cannot hold)."""
        return self._targets.get(name) == _KEEP or any(map(_is_objects, pieces))

    def _scalar_column(self, name: str, pieces: list[Chunk | None]) -> tuple[pa.ChunkedArray, str]:
        """A column of scalars from every page, in its final Arrow type, and what it holds."""
        target = self._target(name)
        if target is None:
            target = _unify([p for p in pieces if p is not None], _is_time_name(name))
            known = self._known.get(name)
            if known is not None and _fits(target, known):
                target = known
            elif target == pa.int64() and _is_time_name(name):
                target = _UTC_US
        storage = _storage(target)
        arrays = [
            pa.nulls(size, storage) if p is None else self._cast(name, p, storage)
            for p, size in zip(pieces, self._sizes, strict=True)
        ]
        column = pa.chunked_array(arrays, type=storage)
        if target == _UTC_US:
            column = self._to_timestamp(name, column)
        elif pa.types.is_date(target):
            column = self._to_date(name, column)
        return column, _describe(target)

    def _cast(self, name: str, array: pa.Array, target: pa.DataType) -> pa.Array:
        if array.type == target:
            return array
        if pa.types.is_null(array.type):
            return pa.nulls(len(array), target)
        if pa.types.is_integer(array.type) and pa.types.is_floating(target):
            return array.cast(target)
        return self._coerce(name, array.to_pylist(), target)

    def _to_date(self, name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
        try:
            return column.cast(pa.date32())
        except pa.ArrowInvalid:
            return pa.chunked_array([self._coerce(name, column.to_pylist(), pa.date32())])

    def _to_timestamp(self, name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
        # pandas reads the int64 minimum as NaT: report it rather than hide it
        sentinel = pc.equal(column, _INT64_MIN)
        lost = pc.sum(sentinel).as_py() or 0
        if lost:
            self._lost[name] += lost
            column = pc.if_else(sentinel, pa.scalar(None, pa.int64()), column)
        return column.cast(_UTC_US)


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_freed_memory() -> None:
    """Give memory freed by converted pages back to the OS.

    Pages are downloaded (and parsed) in worker threads and freed in the one that builds the
    frame; glibc keeps such memory in the threads' arenas, so without this the process's peak
    grew with the number of pages in flight instead of staying near the size of the frame.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@dataclass
class ArrowPage:
    """A results page parsed by Arrow: its envelope and its rows as one ``StructArray``."""

    state: str
    rows: pa.StructArray
    rows_in_page: int | None
    page_cursor: str | None


def parse_page(content: bytes, rows_asked: int | None = None) -> ArrowPage | None:
    """Parse a DONE ``valuesDictionary`` results page with Arrow's JSON reader, or return None.

    Arrow's reader is C++ and releases the GIL, so pages parse in the download threads without
    a Python object per value: about 2.5x less work than ``orjson`` + ``add_page``. None means
    "use the ordinary path", whose checks then say what is wrong: a page Arrow cannot read
    (mixed types in a column); one whose values the strict path must see (any float: Arrow
    reads an int beyond int64 as a float; empty structs); one Arrow reads but ``orjson`` would
    not (a byte order mark, NaN or Infinity, invalid UTF-8); one whose envelope
    ``wire.parse_results`` refuses; or not a DONE page of objects. So a page the strict path
    refuses is never taken here. Nor is one ``wire.check_reply_shape`` refuses (nested deeper
    than the reader's stack survives, or with far more rows than ``rows_asked``): Arrow never
    sees it.
    """
    import pyarrow.json as pj

    if not _AN_OBJECT.match(content):  # a document starting with null crashes Arrow's reader
        return None
    try:
        wire.check_reply_shape(content, "", rows_asked)
    except QueryError:
        return None
    options = pj.ReadOptions(use_threads=False, block_size=len(content) + 1)
    try:
        # The system allocator, not Arrow's per-thread pool: pages parse in download threads
        # and are freed in another, which per-thread pools keep as retained memory.
        table = pj.read_json(
            pa.BufferReader(content), read_options=options, memory_pool=pa.system_memory_pool()
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if not _reads_as_json_does(table, content):
        return None
    rows = _page_rows(table.column("page").chunk(0))
    if rows is None:
        return None
    try:
        checked = wire.parse_results(_envelope(table), rows=rows)
    except QueryError:
        return None
    if checked.state != wire.DONE:
        return None
    return ArrowPage(checked.state, rows, checked.rows_in_page, checked.cursor)


# JSON white space, then an object: no byte order mark (Arrow skips it, orjson refuses it),
# no other first value (Arrow's reader dies of a segmentation fault on a first ``null``)
_AN_OBJECT = re.compile(rb"[ \t\r\n]*\{")


def _reads_as_json_does(table: pa.Table, content: bytes) -> bool:
    """True when Arrow read one JSON document with a page, exactly as ``orjson`` would."""
    if table.num_rows != 1 or "page" not in table.column_names:
        return False
    if any(_needs_strict_path(field.type) for field in table.schema):
        return False
    if content.isascii():
        return True
    try:  # Arrow's reader lets invalid UTF-8 through; its full validation does not
        table.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _envelope(table: pa.Table) -> dict[str, Any]:
    """The page's envelope as Python values: every field but ``page.result.data``."""
    envelope = {
        name: table.column(name)[0].as_py() for name in table.column_names if name != "page"
    }
    page = table.column("page").chunk(0)
    envelope["page"] = {
        **_fields_but(page, "result"), "result": _fields_but(page.field("result"), "data")
    }
    return envelope


def _fields_but(struct: pa.StructArray, left_out: str) -> dict[str, Any]:
    """The fields of the first (only) value of ``struct``, but ``left_out``."""
    return {
        field.name: struct.field(i)[0].as_py()
        for i, field in enumerate(struct.type)
        if field.name != left_out
    }


def _page_rows(page: pa.Array) -> pa.StructArray | None:
    """``page.result.data`` as a StructArray of rows, or None if it is not a list of objects."""
    if not pa.types.is_struct(page.type) or page.type.get_field_index("result") < 0:
        return None
    result = page.field("result")
    if not pa.types.is_struct(result.type) or result.type.get_field_index("data") < 0:
        return None
    data = result.field("data")
    if not pa.types.is_list(data.type) or data.null_count:
        return None
    if pa.types.is_null(data.type.value_type):  # an empty page
        return pa.array([], type=pa.struct([]))
    if not pa.types.is_struct(data.type.value_type):
        return None
    return data.flatten()


def _needs_strict_path(arrow_type: pa.DataType) -> bool:
    if pa.types.is_floating(arrow_type):
        return True
    if pa.types.is_struct(arrow_type):
        return arrow_type.num_fields == 0 or any(_needs_strict_path(f.type) for f in arrow_type)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return _needs_strict_path(arrow_type.value_type)
    return False


def to_dataframe(
    rows: list[Any],
    schema: dict[str, Any] | None = None,
    result_format: ResultFormat = wire.DEFAULT_RESULT_FORMAT,
    structs: StructMode = "value",
    dtypes: DtypeMode = DEFAULT_DTYPES,
) -> pd.DataFrame:
    """Convert one list of result rows to a typed DataFrame (see ``FrameBuilder``)."""
    builder = FrameBuilder(
        schema=schema, result_format=result_format, structs=structs, dtypes=dtypes
    )
    builder.add_page(rows)
    return builder.to_dataframe()


# -- helpers ------------------------------------------------------------------------------


def _parse_schema(schema: Any) -> list[tuple[str, pa.DataType]]:
    """Top-level (name, Arrow type) pairs of a results page's ``schema``."""
    if schema is None:
        return []
    fields = schema.get("fields") if isinstance(schema, dict) else None
    if not isinstance(fields, list) or not all(
        isinstance(f, dict) and isinstance(f.get("name"), str) for f in fields
    ):
        raise QueryError(
            "results schema is malformed: expected {'fields': [{'name': ..., 'type': ...}, ...]}"
            f", got {str(schema)[:200]}; pass the 'schema' of a results page or None"
        )
    return [(f["name"], _schema_type(f)) for f in fields]


def _schema_type(field: dict[str, Any]) -> pa.DataType:
    """Arrow type of one schema field; null for a type name we do not know (then inferred)."""
    kind = str(field.get("type", "")).upper()
    if kind in ("RECORD", "STRUCT"):
        children = [c for c in field.get("fields") or [] if isinstance(c, dict) and "name" in c]
        arrow_type = pa.struct([(c["name"], _schema_type(c)) for c in children])
    else:
        arrow_type = _SCHEMA_TYPES.get(kind, pa.null())
    if str(field.get("mode", "")).upper() == "REPEATED":
        return pa.list_(arrow_type)
    return arrow_type


def _request(arrow_type: pa.DataType, structs: str) -> pa.DataType:
    """The type to ask Arrow for when converting a field we know the type of."""
    is_struct = pa.types.is_struct(arrow_type)
    if is_struct and structs == "value" and arrow_type.get_field_index("value") >= 0:
        return pa.struct([("value", _request(arrow_type.field("value").type, structs))])
    if _is_flat_list(arrow_type):
        return pa.list_(_request(arrow_type.value_type, structs))
    if pa.types.is_nested(arrow_type):  # kept whole: Arrow's own (exact, inferred) type
        return arrow_type
    if pa.types.is_integer(arrow_type) or pa.types.is_timestamp(arrow_type):
        return _STRICT_INT
    if pa.types.is_date(arrow_type):
        return pa.string()
    return arrow_type


def _is_flat_list(arrow_type: pa.DataType) -> bool:
    return pa.types.is_list(arrow_type) and not pa.types.is_nested(arrow_type.value_type)


def _int_lists(array: pa.Array) -> Chunk:
    """Lists of ints requested as decimals, back to int64 (Python ints beyond it)."""
    try:
        return array.cast(pa.list_(pa.int64()))
    except pa.ArrowInvalid:
        return [
            None if v is None else [None if x is None else int(x) for x in v]
            for v in array.to_pylist()
        ]


def _try_array(values: list[Any], arrow_type: pa.DataType | None = None) -> pa.Array | None:
    try:
        return pa.array(values, type=arrow_type)
    except _ARROW_ERRORS:
        return None


def _gather(rows: list[dict[str, Any]], name: str) -> list[Any]:
    """One column of the rows' own values; None where a row lacks the key."""
    try:
        return list(map(itemgetter(name), rows))
    except KeyError:
        return [row.get(name) for row in rows]


def _check_rows(rows: Any, kind: type, page: int, wanted: str, other_format: str) -> None:
    """Raise QueryError unless rows is a list whose items are all of kind."""
    if not isinstance(rows, list):
        raise QueryError(
            f"results page {page}: rows must be a list (the page's 'result.data'), got "
            f"{type(rows).__name__}; pass page['page']['result']['data'] of a DONE page"
        )
    if all(issubclass(t, kind) for t in set(map(type, rows))):
        return
    bad = next(i for i, row in enumerate(rows) if not isinstance(row, kind))
    raise QueryError(
        f"results page {page}, row {bad}: expected {wanted}, got {type(rows[bad]).__name__}; "
        f"check the page's resultFormat (use result_format={other_format!r} if it is that)"
    )


def _kind(value: Any) -> str:
    return type(value).__name__


def _majority_type(kinds: Counter[str], prefer_int: bool = False) -> pa.DataType:
    """The type most values of a mixed column have; ints and floats count together."""
    counts = Counter(kinds)
    if "int" in counts and "float" in counts:
        merged, into = ("float", "int") if prefer_int else ("int", "float")
        counts[into] += counts.pop(merged)
    kind = counts.most_common(1)[0][0] if counts else "str"
    return {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64()}.get(kind, pa.string())


def _unify(pieces: list[pa.Array], prefer_int: bool = False) -> pa.DataType:
    """One type for a column whose pages were typed separately (int and float: float)."""
    counts: Counter[pa.DataType] = Counter()
    for piece in pieces:
        if not pa.types.is_null(piece.type):
            counts[piece.type] += len(piece) - piece.null_count
    if not counts:
        return pa.null()
    if len(counts) > 1 and all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in counts):
        return pa.int64() if prefer_int else pa.float64()
    return counts.most_common(1)[0][0]


def _fits(inferred: pa.DataType, known: pa.DataType) -> bool:
    """Whether a column whose pages agree on ``inferred`` may take its ``known`` type."""
    if pa.types.is_null(inferred) or inferred == _storage(known):
        return True
    return pa.types.is_floating(known) and pa.types.is_integer(inferred)


def _storage(target: pa.DataType) -> pa.DataType:
    """The Arrow type a column is gathered in before its final cast."""
    if target == _UTC_US:
        return pa.int64()
    if pa.types.is_date(target):
        return pa.string()
    return target


def _converter(target: pa.DataType) -> Callable[[Any], Any]:
    """A function giving a value fit for target, or _MISSING."""
    if pa.types.is_integer(target):
        return _to_int64
    if pa.types.is_floating(target):
        return lambda v: v if type(v) in (int, float) else _MISSING
    if pa.types.is_boolean(target):
        return lambda v: v if type(v) is bool else _MISSING
    if pa.types.is_string(target):
        return lambda v: v if type(v) is str else _MISSING
    if pa.types.is_date(target):
        return _parse_date
    return lambda v: _MISSING


def _to_int64(value: Any) -> Any:
    if type(value) is float and value.is_integer():  # 2.0 is an int written as a float
        value = int(value)
    return value if type(value) is int and _INT64_MIN <= value <= _INT64_MAX else _MISSING


def _parse_date(value: Any) -> Any:
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        return _MISSING


def _describe(target: pa.DataType) -> str:
    if target == _UTC_US:
        return "a timestamp (int64 microseconds since the epoch)"
    if pa.types.is_integer(target):
        return "a 64-bit integer"
    return {"double": "a float", "bool": "a boolean", "string": "a string"}.get(
        str(target), str(target)
    )


def _is_time_name(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return leaf in TIMESTAMP_COLUMNS or leaf.endswith("_time")


def _object_chunk(values: list[Any]) -> Chunk:
    """Lists and structs kept whole, stored in Arrow until the end.

    Python containers kept across pages make every full garbage collection walk all of them;
    while the next pages are parsed that cost grew with the square of the row count (20 s of
    a 50 s run at 1M rows). Arrow buffers are invisible to the collector. Values Arrow cannot
    hold (mixed kinds) stay as they are.
    """
    array = _try_array(values)
    return values if array is None else array


def _is_objects(piece: Chunk | None) -> bool:
    return isinstance(piece, list) or (piece is not None and pa.types.is_nested(piece.type))


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many containers that all survive."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _nested_column(pieces: list[Chunk | None], sizes: list[int]) -> pa.ChunkedArray | None:
    """Lists and structs of every page as one Arrow column, their types merged (a struct
    field missing from some pages is null there); None when a page holds Python values Arrow
    could not (mixed kinds) or the pages' types do not merge."""
    if any(isinstance(piece, list) for piece in pieces):
        return None
    kinds = [p.type for p in pieces if p is not None and not pa.types.is_null(p.type)]
    target = _merged_type(kinds) if kinds else pa.null()
    if target is None:
        return None
    arrays = []
    for piece, size in zip(pieces, sizes, strict=True):
        if piece is None or pa.types.is_null(piece.type):
            arrays.append(pa.nulls(size, target))
            continue
        try:
            arrays.append(piece.cast(target))
        except _ARROW_ERRORS:
            return None
    return pa.chunked_array(arrays, type=target)


def _merged_type(kinds: list[pa.DataType]) -> pa.DataType | None:
    """One type for the pages of a nested column (struct fields united), or None."""
    distinct = list(dict.fromkeys(kinds))
    if len(distinct) == 1:
        return distinct[0]
    schemas = [pa.schema([("column", kind)]) for kind in distinct]
    try:
        return pa.unify_schemas(schemas, promote_options="permissive").field("column").type
    except _ARROW_ERRORS:
        return None


def _object_column(
    pieces: list[Chunk | None], sizes: list[int], shared: dict[str, str] | None = None
) -> pd.Series:
    """One object column (lists, dicts, mixed values) from Arrow and Python chunks; ``shared``
    holds the strings of its pages built already, if any."""
    values: list[Any] = []
    shared = {} if shared is None else shared  # the column's strings, whichever page
    with _gc_paused():
        for piece, size in zip(pieces, sizes, strict=True):
            if piece is None:
                values.extend([None] * size)
            elif isinstance(piece, _SharedCells):  # built, strings shared, as its page came
                values.extend(piece)
            else:
                cells = piece if isinstance(piece, list) else piece.to_pylist()
                _share_strings(cells, shared)
                values.extend(cells)
        return pd.Series(values, dtype=object)


class _SharedCells(list):
    """A page's list and struct cells already built as Python objects, strings shared."""


_SHARED_STRINGS_MAX = 100_000  # distinct strings worth sharing; beyond that they are not repeats


def _share_strings(cells: list[Any], shared: dict[str, str]) -> None:
    """Make equal strings inside list and dict cells one object, in place: the one ``shared``
    holds (a column's dict, kept across its pages).

    Arrow builds a new ``str`` for every occurrence ("ethernet" once per row); sharing them,
    as pyarrow's own ``to_pandas(deduplicate_objects=True)`` does for string columns, saves
    about a tenth of a traffic frame. Stops early when the strings are mostly distinct.
    """
    for cell in cells:
        if len(shared) > _SHARED_STRINGS_MAX:
            return
        if type(cell) is list or type(cell) is dict:
            _share_in(cell, shared)


def _share_in(container: list[Any] | dict[str, Any], shared: dict[str, str]) -> None:
    items = enumerate(container) if type(container) is list else container.items()
    for key, item in items:
        if type(item) is str:
            container[key] = shared.setdefault(item, item)  # type: ignore[index]
        elif type(item) is list or type(item) is dict:
            _share_in(item, shared)
