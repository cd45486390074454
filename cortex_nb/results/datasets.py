"""Query results streamed to a Parquet dataset on disk, and the handle that reads it back.

``write_dataset(job, DIR)`` (what ``query(sql, to=DIR)``, ``%%cortex --to DIR`` and
``cortex-nb query --output DIR`` run) types each results page as a query's DataFrame would be
typed (``FrameBuilder.take_table``) and writes it out before the next one is read: memory holds
the pages in flight and a bounded write buffer, never the result.

The layout is plain hive-partitioned Parquet, read unchanged by DuckDB, ``pyarrow.dataset``,
Spark and Dask::

    DIR/
      date=2026-11-25/hour=9/part-00000.parquet      (by the hour of time_generated, in UTC)
      date=2026-11-25/hour=10/part-00001.parquet
      _manifest.json                                 (written last)

A result without a ``time_generated`` timestamp is not partitioned (``DIR/part-*.parquet``).
Partition keys are not stored in the files: hive-aware readers add ``date`` and ``hour`` from
the paths. ``_manifest.json`` holds the SQL, the job id, when, ``rowsInJob``, the rows written
and every file with its row count, size and SHA-256. Readers skip it (a leading ``_``).

Nothing half-written ever looks complete: files go to a hidden sibling directory
(``.DIR.partial-<id>``), the manifest is written last, and the directory is renamed into place
at the end; an error or an interrupt removes it (a killed process leaves it hidden, with no
manifest, and ``Dataset`` refuses a directory without one). An existing dataset is replaced only
with ``overwrite``; a directory that is not a dataset is never replaced.

Nothing of the user's is lost or moved: ``DIR`` is where its symbolic links lead (a link stays a
link, the dataset is written where it points), an existing directory stays in place (an empty
one, ``--to .`` included, is filled; an old dataset loses its manifest first, then the files
it lists, and the new files move in, manifest last), and ``overwrite`` is refused while the
directory holds anything the old manifest does not list (notes, plots): only a dataset's own
files are ever deleted.

``Dataset(DIR)`` (or ``open_dataset``) is the handle: ``rows``, ``schema``, ``files``,
``duckdb()`` (a DuckDB relation over the files), ``arrow()`` (a ``pyarrow.dataset``),
``to_pandas()`` (refused above ``max_rows``, like a query), ``verify()`` (row counts and checksums;
returns what it verified).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cortex_nb.exceptions import ConfigurationError, CortexError, QueryError
from cortex_nb.options import DEFAULT_MAX_ROWS, QueryOptions
from cortex_nb.results.collect import typed_pages
from cortex_nb.results.frames import DEFAULT_DTYPES, arrow_to_frame
from cortex_nb.words import plural

__all__ = [
    "MANIFEST",
    "Dataset",
    "WindowedDataset",
    "check_target",
    "open_dataset",
    "write_dataset",
]

MANIFEST = "_manifest.json"
FORMAT = "cortex_nb.dataset/1"
TIME_COLUMN = "time_generated"
PARTITION_KEYS = ("date", "hour")
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"  # hive's name for a null key
# the keys' types as each reader infers them from ``date=2026-11-25/hour=7``
_ARROW_KEYS = pa.schema([("date", pa.string()), ("hour", pa.int32())])
_DUCKDB_READ = (
    "SELECT * FROM read_parquet($files, hive_partitioning = true, "
    "hive_types = {'date': DATE, 'hour': BIGINT})"
)
COMPRESSION = "zstd"
ROW_GROUP_BYTES = 64 * 2**20  # a partition's buffered rows become a row group at this size
BUFFER_BYTES = 256 * 2**20  # all buffered rows together; past it the largest buffer is written
MAX_OPEN_FILES = 128
_READ_CHUNK = 2**20


# -- writing ------------------------------------------------------------------------------------
def check_target(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """The dataset directory ``path`` (where its links lead), or a ``ConfigurationError``
    saying why it cannot be used.

    Usable: a path that does not exist, an empty directory, or (with ``overwrite``) a
    directory holding a dataset and nothing else. Checked before the query runs, and again
    before publishing.
    """
    target = Path(path).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise ConfigurationError(f"{target} is a file; give a directory for the dataset.")
    if not target.is_dir() or not any(target.iterdir()):
        return target
    if not (target / MANIFEST).is_file():
        raise ConfigurationError(
            f"{target} exists and is not a cortex_nb dataset (no {MANIFEST}); give a new or "
            "empty directory."
        )
    if not overwrite:
        raise ConfigurationError(
            f"{target} already holds a dataset; replace it with overwrite=True (--overwrite) "
            "or give another directory."
        )
    foreign = _entries(target)[1]
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise ConfigurationError(
            f"{target} holds a dataset and also {', '.join(foreign[:3])}{more}, which its "
            "manifest does not list; overwriting replaces only a dataset's own files. Move "
            "those out, or give another directory."
        )
    return target


def _own_paths(target: Path) -> set[str]:
    """The relative paths a dataset's manifest makes its own: the manifest, the files it lists
    and the folders they are in (a listed path that leads out of the directory is not)."""
    own = {MANIFEST}
    for record in _read_manifest(target).get("files") or []:
        relative = PurePosixPath(str(record.get("path", "")) if isinstance(record, dict) else "")
        if relative.is_absolute() or ".." in relative.parts:
            continue
        own.update(p.as_posix() for p in (relative, *relative.parents) if p.parts)
    return own


def _entries(target: Path) -> tuple[list[str], list[str]]:
    """What a dataset directory holds, as relative paths: (its own, everything else). Walked
    without following links, so nothing outside the directory is ever named."""
    own_paths, own, foreign = _own_paths(target), [], []
    for folder, dirs, files in os.walk(target):
        base = Path(folder).relative_to(target)
        for name in sorted(dirs) + sorted(files):
            relative = (base / name).as_posix()
            if relative in own_paths:
                own.append(relative)
            else:
                foreign.append(relative + ("/" if name in dirs else ""))
        dirs[:] = [d for d in dirs if (base / d).as_posix() in own_paths]
    return own, foreign


def write_dataset(
    job: Any,
    path: str | os.PathLike,
    options: QueryOptions | None = None,
    *,
    buffer_bytes: int = BUFFER_BYTES,
    row_group_bytes: int = ROW_GROUP_BYTES,
) -> Dataset:
    """Stream every row of ``job`` (a ``QueryJob``) into a Parquet dataset at ``path``, typed
    as its frame would be (``options``: structs, overwrite; default: the job's own); return
    the dataset's handle."""
    options = options if options is not None else job.options
    overwrite = options.overwrite
    target = check_target(path, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:12]}"
    files = None
    try:
        job.wait()
        files = _PartitionFiles(staging, buffer_bytes, row_group_bytes)
        written = _write_pages(job, files, options)
        records = files.close()
        _write_json(staging / MANIFEST, _manifest(job, written, files.partitioned, records))
        _publish(staging, target, overwrite)
    except BaseException:
        if files is not None:
            files.abort()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Dataset(target)


def _write_pages(job: Any, files: _PartitionFiles, options: QueryOptions) -> int:
    """Type each page (``collect.typed_pages``, as a frame's) and hand it to ``files``; the
    rows written (at most the job's wanted)."""
    written, builder, wanted = 0, None, job.wanted_rows
    for builder in typed_pages(job, options):
        table = builder.take_table()
        table = table.slice(0, max(0, wanted - written))  # a limit ends inside a page
        written += table.num_rows
        files.write(table)
    if builder is not None:  # no rows: keeps the schema of an empty result
        files.write(builder.take_table(last=True))
    return written


def _manifest(job: Any, rows: int, partitioned: bool, files: list[dict]) -> dict:
    """What the dataset holds and where it came from."""
    return {
        "format": FORMAT,
        "sql": job.sql,
        "job_id": job.id,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "rows_in_job": job.rows_in_job,
        "rows": rows,
        "limit": job.limit,
        "partitioning": (
            {"flavor": "hive", "keys": list(PARTITION_KEYS), "column": TIME_COLUMN, "unit": "hour"}
            if partitioned else None
        ),
        "schema": job.schema,
        "files": files,
    }


def _write_json(path: Path, value: Any, replace: bool = False) -> None:
    """Write ``value`` as JSON and make it durable before anything points at it; with
    ``replace``, through a temporary file, so a reader never sees half of it."""
    written = path.with_name(path.name + ".new") if replace else path
    with written.open("w", encoding="utf-8") as out:
        json.dump(value, out, indent=1)
        out.flush()
        os.fsync(out.fileno())
    if replace:
        os.replace(written, path)


def _publish(staging: Path, target: Path, overwrite: bool) -> None:
    """Put the finished staging directory's files at ``target`` (replacing an old dataset's)."""
    check_target(target, overwrite)  # nothing appeared there while the query ran
    if not target.exists():
        staging.rename(target)
        return
    # an existing directory stays (the notebook's working directory, a link's target, its
    # permissions): the old dataset's files go, the new ones move in, the manifest last
    _remove_dataset_files(target)
    for entry in sorted(staging.iterdir(), key=lambda p: p.name == MANIFEST):
        entry.rename(target / entry.name)
    staging.rmdir()


def _remove_dataset_files(target: Path) -> None:
    """Delete a dataset's own files (manifest first: it is no longer complete) and the folders
    they emptied; anything else stays."""
    if not (target / MANIFEST).is_file():
        return  # an empty directory
    own = sorted(_entries(target)[0], key=lambda p: (p != MANIFEST, -p.count("/")))
    for relative in own:  # the manifest, then the deepest first
        path = target / relative
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()  # only once empty: a file that appeared meanwhile stays
            else:
                path.unlink()


class _PartitionFiles:
    """Parquet files under a directory, by hour of ``time_generated`` when the rows have it.

    Rows are buffered per partition and written a row group at a time: when a partition's
    buffer reaches ``row_group_bytes``, when a page no longer brings it rows (results ordered by
    time finish an hour at a time), or, largest first, when all buffers pass ``buffer_bytes``.
    The files' schema is fixed at the first write, from every table buffered so far; later
    tables are cast to it. At most ``MAX_OPEN_FILES`` files are open; a partition whose file
    was closed gets a new one.
    """

    def __init__(
        self, root: Path, buffer_bytes: int, row_group_bytes: int, prefix: str = "part",
        shared: bool = False,
    ) -> None:
        root.mkdir(exist_ok=shared)  # shared: other windows' files are written there too
        self.root, self.buffer_bytes, self.row_group_bytes = root, buffer_bytes, row_group_bytes
        self.prefix = prefix
        self.partitioned: bool | None = None  # decided by the first table
        self.schema: pa.Schema | None = None
        self._buffers: dict[str, list[pa.Table]] = {}
        self._buffered: dict[str, int] = {}
        self._writers: OrderedDict[str, tuple[pq.ParquetWriter, dict]] = OrderedDict()
        self._records: list[dict] = []
        self._tables_seen: list[pa.Schema] = []

    def write(self, table: pa.Table) -> None:
        """Buffer ``table``'s rows in their partitions, writing what is due."""
        if self.partitioned is None:
            self.partitioned = _partitionable(table.schema)
        if self.schema is None:
            self._tables_seen.append(table.schema)
        if table.num_rows == 0:
            return
        touched = set()
        for key, part in self._split(table):
            touched.add(key)
            self._buffers.setdefault(key, []).append(part)
            self._buffered[key] = self._buffered.get(key, 0) + part.nbytes
            if self._buffered[key] >= self.row_group_bytes:
                self._flush(key)
        for key in [k for k in self._buffers if k not in touched]:
            self._flush(key)
        while sum(self._buffered.values()) > self.buffer_bytes:
            self._flush(max(self._buffered, key=self._buffered.__getitem__))

    def close(self) -> list[dict]:
        """Write every buffer, close every file; the files' records (path, rows, bytes, sha256)."""
        for key in list(self._buffers):
            self._flush(key)
        if not self._records:  # an empty result: one empty file keeps its schema
            self.partitioned = False
            self._open("")
        for writer, _ in self._writers.values():
            writer.close()
        self._writers.clear()
        for record in self._records:
            record.update(_file_facts(self.root / record["path"]))
        return self._records

    def abort(self) -> None:
        """Close open files without finishing anything (the directory is being removed)."""
        for writer, _ in self._writers.values():
            with contextlib.suppress(Exception):
                writer.close()
        self._writers.clear()

    def remove(self) -> None:
        """Close and delete this writer's files (a window that did not finish)."""
        self.abort()
        for record in self._records:
            with contextlib.suppress(OSError):
                (self.root / record["path"]).unlink()

    def _split(self, table: pa.Table) -> list[tuple[str, pa.Table]]:
        """``table``'s rows by partition directory ("" when not partitioned), order kept."""
        if not self.partitioned:
            return [("", table)]
        times = table.column(TIME_COLUMN).combine_chunks()
        hours = pc.floor_temporal(times, unit="hour").cast(pa.int64())
        low, high = pc.min_max(hours).values()
        if hours.null_count == 0 and low == high:  # most pages of a time-ordered result
            return [(_partition_dir(low.as_py()), table)]
        order = pc.sort_indices(hours)  # stable (rows of an hour keep their order), nulls last
        table, runs = table.take(order), pc.run_end_encode(hours.take(order))
        parts, start = [], 0
        for end, hour in zip(runs.run_ends.to_pylist(), runs.values.to_pylist(), strict=True):
            parts.append((_partition_dir(hour), table.slice(start, end - start)))
            start = end
        return parts

    def _flush(self, key: str) -> None:
        """Write a partition's buffered rows as one row group of its open file."""
        tables = self._buffers.pop(key, None)
        self._buffered.pop(key, None)
        if not tables:
            return
        if self.schema is None:
            self.schema = _unified_schema(self._tables_seen + [t.schema for t in tables])
            self._tables_seen = []
        writer, record = self._open(key)
        table = pa.concat_tables([_conform(t, self.schema) for t in tables])
        writer.write_table(table, row_group_size=max(1, table.num_rows))
        record["rows"] += table.num_rows

    def _open(self, key: str) -> tuple[pq.ParquetWriter, dict]:
        """The open file of a partition, opening a new one (and closing the oldest) if needed."""
        if key in self._writers:
            self._writers.move_to_end(key)
            return self._writers[key]
        if len(self._writers) >= MAX_OPEN_FILES:
            _, (oldest, _) = self._writers.popitem(last=False)
            oldest.close()
        relative = Path(key) / f"{self.prefix}-{len(self._records):05d}.parquet"
        (self.root / relative).parent.mkdir(parents=True, exist_ok=True)
        schema = self.schema if self.schema is not None else _unified_schema(self._tables_seen)
        writer = pq.ParquetWriter(self.root / relative, schema, compression=COMPRESSION)
        record = {"path": relative.as_posix(), "rows": 0}
        self._records.append(record)
        self._writers[key] = (writer, record)
        return writer, record


def _partitionable(schema: pa.Schema) -> bool:
    """Whether rows of this schema are partitioned by hour (a UTC ``time_generated``)."""
    index = schema.get_field_index(TIME_COLUMN)
    if index < 0 or any(key in schema.names for key in PARTITION_KEYS):
        return False
    return pa.types.is_timestamp(schema.field(index).type)


def _partition_dir(hour_us: int | None) -> str:
    """``date=YYYY-MM-DD/hour=H`` for the start of an hour (microseconds since the epoch).

    The hour is written without a leading zero (``hour=7``): DuckDB reads a key written
    ``07`` as text, and ``7`` as an integer, as every other hive reader does.
    """
    if hour_us is None:
        return f"date={NULL_PARTITION}/hour={NULL_PARTITION}"
    when = dt.datetime.fromtimestamp(hour_us // 10**6, dt.timezone.utc)
    return f"date={when:%Y-%m-%d}/hour={when.hour}"


def _unified_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for the pages seen (ints and floats together: floats; struct fields merged)."""
    if not schemas:
        return pa.schema([])
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise QueryError(f"The pages of the result disagree on a column's type: {error}") from None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with the files' schema: its columns in order, missing ones null, types cast."""
    extra = [name for name in table.column_names if name not in schema.names]
    if extra:
        raise QueryError(
            f"Column {extra[0]!r} first appeared after rows were already written to the "
            "dataset; select it explicitly (or write the result in one page)."
        )
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(field.name)
        try:
            columns.append(column if column.type == field.type else column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise QueryError(
                f"Column {field.name!r} came as {column.type} after rows were written as "
                f"{field.type}; CAST it in the SQL so that every page has one type."
            ) from None
    return pa.Table.from_arrays(columns, schema=schema)


def _file_facts(path: Path) -> dict:
    """A written file's size and SHA-256."""
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(_READ_CHUNK):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


# -- written a window at a time (a split query), resumable --------------------------------------
class WindowedDataset:
    """A dataset written one time window at a time by a split query, resumable.

    Windows are written, in any order and several at once, into a hidden sibling directory
    (``.DIR.partial-split``) whose ``_windows.json`` lists the windows done, each with its job
    and files. An interrupted run leaves it there: ``resume`` continues it (only the windows
    it lacks are fetched, over the span it recorded), ``overwrite`` starts again, and anything
    else is refused rather than mixed. Once every window is done, ``finish()`` writes the
    manifest (with the windows) and moves the dataset into place: only then does ``Dataset``
    open it.
    """

    def __init__(
        self, path: str | os.PathLike, *, sql: str, span: tuple[dt.datetime, dt.datetime],
        split: str, resume: bool = False, overwrite: bool = False,
    ) -> None:
        self.target = Path(path).expanduser().resolve()
        self.staging = _split_staging(self.target)
        self.overwrite = overwrite
        self.complete = resume and _holds_split_run(self.target, sql)
        self._lock = threading.Lock()
        if self.complete:  # resumed after its last window: nothing to fetch
            self.record = {"span": _read_manifest(self.target)["span"], "windows": []}
        else:
            check_target(self.target, overwrite)
            self.record = self._start(sql, span, split, resume)

    @property
    def span(self) -> tuple[dt.datetime, dt.datetime]:
        """The time span the run covers (a resumed run keeps the one it recorded)."""
        start, end = self.record["span"]
        return dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)

    def windows_done(self) -> list[tuple[dt.datetime, dt.datetime]]:
        """The windows written so far, as ``(start, end)``."""
        return [
            (dt.datetime.fromisoformat(e["start"]), dt.datetime.fromisoformat(e["end"]))
            for e in self.record["windows"]
        ]

    def dataset(self) -> Dataset:
        """The finished dataset."""
        return Dataset(self.target)

    def _start(self, sql: str, span: tuple, split: str, resume: bool) -> dict:
        """The run's record: the interrupted one continued (``resume``), or a new one."""
        record = _read_json(self.staging / WINDOWS_DONE)
        if record is not None and not resume and not self.overwrite:
            raise ConfigurationError(
                f"{self.target}: an interrupted split run left "
                f"{plural(len(record['windows']), 'window')} there; continue it with --resume "
                "(resume=True), or start again with --overwrite."
            )
        if record is not None and resume and record.get("sql") != sql:
            raise ConfigurationError(
                f"{self.target}: the interrupted split run there was of another query; run the "
                "same query with --resume, or start again with --overwrite."
            )
        if record is None or not resume:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging.mkdir(parents=True)
            record = {"format": FORMAT, "sql": sql, "split": split,
                      "span": [span[0].isoformat(), span[1].isoformat()], "windows": []}
            _write_json(self.staging / WINDOWS_DONE, record)
        _remove_unlisted(self.staging, record)
        return record

    def write_window(self, job: Any, window: Any, options: QueryOptions) -> dict:
        """Stream one window's job into the dataset; its record once it is all written."""
        tag = f"part-{window.start:%Y%m%dT%H%M%S}"
        files = _PartitionFiles(self.staging, BUFFER_BYTES // 4, ROW_GROUP_BYTES, tag, True)
        try:
            rows = _write_pages(job, files, options)
            records = files.close()
        except BaseException:
            files.remove()
            raise
        entry = {
            "start": window.start.isoformat(), "end": window.end.isoformat(), "job_id": job.id,
            "rows_in_job": job.rows_in_job, "rows": rows, "schema": job.schema,
            "partitioned": bool(files.partitioned), "files": records,
        }
        with self._lock:  # windows end in any order, in their own threads
            self.record["windows"].append(entry)
            _write_json(self.staging / WINDOWS_DONE, self.record, replace=True)
        return entry

    def finish(self) -> Dataset:
        """Every window is written: the manifest, and the dataset moved into place."""
        entries = sorted(self.record["windows"], key=lambda e: e["start"])
        files = [f for e in entries for f in e["files"]]
        keep = [f for f in files if f["rows"]] or files[:1]  # an all-empty run keeps its schema
        for record in files:
            if record not in keep:
                (self.staging / record["path"]).unlink()
        (self.staging / WINDOWS_DONE).unlink()
        _write_json(self.staging / MANIFEST, self._manifest(entries, keep))
        _publish(self.staging, self.target, self.overwrite)
        return Dataset(self.target)

    def _manifest(self, entries: list[dict], files: list[dict]) -> dict:
        partitioned = any(f["rows"] for f in files) and any(e["partitioned"] for e in entries)
        with_rows = [e for e in entries if e["rows"]] or entries
        return {
            "format": FORMAT, "sql": self.record["sql"], "job_id": None,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "rows_in_job": sum(e["rows_in_job"] or 0 for e in entries),
            "rows": sum(e["rows"] for e in entries), "limit": None,
            "partitioning": (
                {"flavor": "hive", "keys": list(PARTITION_KEYS), "column": TIME_COLUMN,
                 "unit": "hour"} if partitioned else None
            ),
            "schema": with_rows[0]["schema"] if with_rows else None, "files": files,
            "split": self.record["split"], "span": self.record["span"],
            "windows": [{k: e[k] for k in ("start", "end", "job_id", "rows")} for e in entries],
        }


WINDOWS_DONE = "_windows.json"


def _split_staging(target: Path) -> Path:
    """Where a split run into ``target`` writes until its last window (found again on resume)."""
    return target.parent / f".{target.name}.partial-split"


def _holds_split_run(target: Path, sql: str) -> bool:
    """Whether ``target`` is the finished dataset of a split run of ``sql``."""
    if not (target / MANIFEST).is_file():
        return False
    manifest = _read_manifest(target)
    return "windows" in manifest and manifest.get("sql") == sql


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"{path} cannot be read ({error}); start again with "
                                 "--overwrite.") from None


def _remove_unlisted(staging: Path, record: dict) -> None:
    """Delete files of windows that did not finish (a killed run leaves them behind)."""
    listed = {f["path"] for e in record["windows"] for f in e["files"]}
    for folder, _, names in os.walk(staging):
        for name in names:
            relative = (Path(folder) / name).relative_to(staging).as_posix()
            if name.endswith(".parquet") and relative not in listed:
                (Path(folder) / name).unlink()


# -- reading -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verified:
    """What ``Dataset.verify()`` checked: the files, their rows and bytes, all as written."""

    path: Path
    files: int
    rows: int
    bytes: int

    def __str__(self) -> str:
        return (
            f"verified {plural(self.files, 'Parquet file')}, {plural(self.rows, 'row')}, "
            f"{self.bytes:,} bytes at {self.path}: sizes, SHA-256 and row counts match the "
            "manifest"
        )


class Dataset:
    """A Parquet dataset written from a query: what its manifest says, and ways to read it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        self.manifest = _read_manifest(self.path)

    @property
    def rows(self) -> int:
        """Rows in the dataset."""
        return int(self.manifest["rows"])

    @property
    def rows_in_job(self) -> int | None:
        """Rows the query job had (``rowsInJob``; more than ``rows`` when a limit cut it)."""
        return self.manifest.get("rows_in_job")

    @property
    def files(self) -> list[Path]:
        """The Parquet files, as paths."""
        return [self.path / record["path"] for record in self.manifest["files"]]

    @property
    def partitioning(self) -> list[str]:
        """The hive partition keys (``["date", "hour"]``), or ``[]``."""
        spec = self.manifest.get("partitioning")
        return list(spec["keys"]) if spec else []

    @property
    def schema(self) -> pa.Schema:
        """The columns stored in the files (partition keys not included)."""
        return pq.read_schema(self.files[0])

    def arrow(self) -> Any:
        """A ``pyarrow.dataset.Dataset`` over the files, with the hive partition keys."""
        import pyarrow.dataset as ds

        # typed, not inferred: datasets written before have two-digit hours (``hour=07``)
        partitioning = ds.partitioning(_ARROW_KEYS, flavor="hive") if self.partitioning else None
        return ds.dataset(
            [str(f) for f in self.files], format="parquet", partitioning=partitioning,
            partition_base_dir=str(self.path),
        )

    def duckdb(self, connection: Any = None, view: str | None = None) -> Any:
        """A DuckDB relation over the files (hive keys ``date``/``hour`` included), on
        ``connection`` (default: DuckDB's default connection); ``view`` also names it."""
        import duckdb

        con = connection if connection is not None else _duckdb_default(duckdb)
        files = [str(f) for f in self.files]
        if self.partitioning:
            # typed, not inferred: DuckDB reads two-digit hours (``hour=07``, as datasets were
            # written before) as text
            relation = con.sql(_DUCKDB_READ, params={"files": files})
        else:
            relation = con.read_parquet(files)
        if view is not None:
            relation.create_view(view, replace=True)
        return relation

    def to_pandas(
        self, max_rows: int | None = DEFAULT_MAX_ROWS, dtypes: str = DEFAULT_DTYPES
    ) -> Any:
        """The rows as the DataFrame the query gives in memory (without the partition keys);
        refused above ``max_rows`` (None: no limit), as a query is."""
        if max_rows is not None and self.rows > max_rows:
            raise ConfigurationError(
                f"{self.path} has {self.rows:,} rows, more than max_rows={max_rows:,} allows in "
                "memory. Query it with .duckdb() (filter, aggregate), or pass max_rows=None."
            )
        table = pq.ParquetDataset([str(f) for f in self.files], partitioning=None).read()
        return arrow_to_frame(table, dtypes)

    def verify(self) -> Verified:
        """Check every file's size, SHA-256 and row count against the manifest; what was
        verified (files, rows, bytes), or a ``CortexError`` naming the first file that differs."""
        for record, path in zip(self.manifest["files"], self.files, strict=True):
            if not path.is_file():
                raise CortexError(f"{self.path}: {record['path']} is missing.")
            facts = _file_facts(path)
            if facts["sha256"] != record["sha256"] or facts["bytes"] != record["bytes"]:
                raise CortexError(f"{self.path}: {record['path']} changed since it was written.")
            if pq.read_metadata(path).num_rows != record["rows"]:
                raise CortexError(f"{self.path}: {record['path']} has the wrong row count.")
        records = self.manifest["files"]
        return Verified(self.path, len(records), sum(r["rows"] for r in records),
                        sum(r["bytes"] for r in records))

    def summary(self) -> str:
        """One line: rows, files, where, which job (or how many windows)."""
        windows = self.manifest.get("windows")
        if windows is not None:
            return (
                f"{plural(self.rows, 'row')} in {plural(len(self.files), 'Parquet file')} at "
                f"{self.path} ({plural(len(windows), 'window')}{_split_text(self.manifest)}"
                f"{_span_text(self.manifest.get('span'))}, written {self.manifest.get('created')})"
            )
        return (
            f"{plural(self.rows, 'row')} in {plural(len(self.files), 'Parquet file')} at "
            f"{self.path} (job {self.manifest.get('job_id')}, {self.manifest.get('created')})"
        )

    def __repr__(self) -> str:
        return f"<Dataset {self.summary()}>"

    def _repr_html_(self) -> str:
        import html

        return f"<p><code>{html.escape(self.summary())}</code></p>"


def open_dataset(path: str | os.PathLike) -> Dataset:
    """The dataset at ``path`` (``ConfigurationError`` unless its manifest is there)."""
    return Dataset(path)


def _read_manifest(path: Path) -> dict:
    """A dataset's manifest; a clear error for a directory without one (or not a dataset)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(
            f"{path} is not a complete cortex_nb dataset (no {MANIFEST}): its writing did "
            "not finish, or it is not a dataset."
        ) from None
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"{path / MANIFEST} cannot be read: {error}.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigurationError(f"{path / MANIFEST} is not a {FORMAT} manifest.")
    return manifest


def _duckdb_default(duckdb: Any) -> Any:
    """DuckDB's default connection (a function since DuckDB 1.2, an object before)."""
    default = duckdb.default_connection
    return default() if callable(default) else default


def _split_text(manifest: dict) -> str:
    """`` of 1h`` for a split dataset's windows, or `` sized by their rows`` for ``auto``."""
    split = manifest.get("split")
    return " sized by their rows (auto)" if split == "auto" else f" of {split}"


def _span_text(span: Any) -> str:
    """`` from 2026-12-03 16:53 to 2026-12-05 16:53 UTC`` for a split dataset's span, if known."""
    try:
        start, end = (dt.datetime.fromisoformat(t).astimezone(dt.timezone.utc) for t in span)
    except (TypeError, ValueError):
        return ""
    return f" from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
