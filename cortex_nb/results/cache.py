"""The result cache: query results kept as Parquet, so a notebook run again asks nothing twice.

An entry is keyed by the tenant, the instance and the normalized SQL, plus what shapes the
frame (``QueryOptions.shape()``: structs, dtypes, the row limit, job properties); never by a
secret. A hit is read back with the dtypes the query gives (``frames.arrow_to_frame``), so it
equals the frame it stands for. It is two files in the
cache directory: ``<key>.parquet`` (the frame, its dtypes kept) and ``<key>.json`` (the SQL,
tenant, instance, when it ran, rows, job id), each written to a temporary file and renamed
into place, the description last: an entry without one is not there.

The directory is ``$CORTEX_NB_CACHE_DIR``, else ``$XDG_CACHE_HOME/cortex_nb/results``, else
``~/.cache/cortex_nb/results``. ``current_time_function(sql)`` names the function that makes a
query's result depend on when it runs (``CURRENT_TIMESTAMP``...): caching one says so (and the
magic caches it only when a cell asks, not by its ``cache`` default).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cortex_nb.exceptions import ConfigurationError
from cortex_nb.http.security import mask_url
from cortex_nb.localfiles import open_regular_file, private_directory
from cortex_nb.sql.params import normalize_sql

if TYPE_CHECKING:
    from cortex_nb.options import QueryOptions

__all__ = [
    "CACHE_ENV",
    "CacheEntry",
    "CachedResult",
    "ResultCache",
    "age_text",
    "cache_dir",
    "cache_scope",
    "current_time_function",
]

CACHE_ENV = "CORTEX_NB_CACHE_DIR"
KEY_PATTERN = re.compile(r"[0-9a-f]{32}")  # what key() makes: the only names an entry has
MAX_DESCRIPTION_BYTES = 2**20  # an entry's JSON holds one query's SQL and a few facts
# functions whose value depends on when the query runs (outside quotes, any case)
_CLOCK = re.compile(
    r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`[^`]*`"""
    r"|\b(?P<clock>CURRENT_(?:TIMESTAMP|DATETIME|DATE|TIME)|NOW\s*\(\s*\))",
    re.IGNORECASE | re.DOTALL,
)


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where results are kept: ``$CORTEX_NB_CACHE_DIR``, else the user's cache directory."""
    env = os.environ if environ is None else environ
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "cortex_nb" / "results"


def current_time_function(sql: str) -> str | None:
    """The first function in ``sql`` (outside quotes) whose value is the current time, or None."""
    for match in _CLOCK.finditer(sql):
        if match.group("clock"):
            return re.sub(r"\s+", "", match.group("clock")).upper()
    return None


def cache_scope(connection: Any) -> tuple[str, str]:
    """``(tenant, instance)`` of a connection, as cache keys name them (no secret in either).

    The tenant is the API URL; for a sandbox (in this process or its own), its data
    (``data_identity``: rows, seed, anchor hour), since its port changes; for a replayed
    cassette, the cassette's content.
    """
    instance = connection.instance_id or ""
    replay, sandbox, endpoint = connection.replay, connection.sandbox, connection.endpoint
    if replay is not None and endpoint is not None and endpoint.api_url == replay.url:
        return f"replay {Path(replay.path).name} {replay.cassette.digest[:16]}", instance
    if sandbox is not None and endpoint is not None and endpoint.sandbox:
        return f"sandbox {sandbox.data_identity}", instance
    return (mask_url(endpoint.api_url) if endpoint is not None else ""), instance


def age_text(seconds: float) -> str:
    """``just now``, ``42 s ago``, ``12 min ago``, ``3 h ago``, ``2 days ago``."""
    if seconds < 1:
        return "just now"
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''} ago"
    return f"{int(seconds)} s ago"


@dataclass
class CacheEntry:
    """What a cached result is: the query, where it ran, when, and what came back."""

    key: str
    sql: str
    tenant: str
    instance: str
    created: str  # ISO 8601, UTC
    rows: int
    job_id: str
    current_time: str | None = None
    shape: dict[str, Any] = field(default_factory=dict)

    @property
    def created_at(self) -> datetime:
        """When the query ran, as an aware UTC datetime."""
        return datetime.fromisoformat(self.created)

    def age(self, now: datetime | None = None) -> float:
        """Seconds since the query ran."""
        now = now or datetime.now(timezone.utc)
        return max(0.0, (now - self.created_at).total_seconds())

    def hit_line(self) -> str:
        """One line for a cache hit: its age, and that nothing was sent."""
        when = self.created_at.strftime("%Y-%m-%d %H:%M UTC")
        line = (
            f"Cached result from {age_text(self.age())} ({when}, job {self.job_id}): "
            f"{self.rows:,} rows, no request sent; --refresh runs the query again."
        )
        if self.current_time:
            line += f" The query uses {self.current_time}: this is its result as of then."
        return line


@dataclass
class CachedResult:
    """A result read from the cache: the frame and its entry (no traces: nothing was sent)."""

    df: Any
    entry: CacheEntry
    traces: list[Any] = field(default_factory=list)

    def summary(self) -> str:
        """One line: rows, age and job id."""
        entry = self.entry
        return f"{entry.rows:,} rows cached {age_text(entry.age())}, job {entry.job_id}"


class ResultCache:
    """Query results on disk as Parquet, keyed by tenant, instance, normalized SQL and shape."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else cache_dir()

    @staticmethod
    def key(tenant: str, instance: str, sql: str, options: QueryOptions) -> str:
        """The entry's name: a digest of where, what (the SQL, normalized) and everything in
        ``options`` that shapes the frame (``QueryOptions.shape``: structs, dtypes, limit...)."""
        what = json.dumps(
            {"tenant": tenant, "instance": instance, "sql": normalize_sql(sql),
             "shape": options.shape()},
            sort_keys=True, default=str,
        )
        return hashlib.sha256(what.encode()).hexdigest()[:32]

    def get(self, key: str, dtypes: str = "objects") -> CachedResult | None:
        """The cached result for ``key`` as the query's frame would be typed (``dtypes``), or
        None (also for an entry that cannot be read)."""
        entry = self._entry(self._meta_path(key))
        if entry is None:
            return None
        try:
            import pyarrow.parquet as pq

            from cortex_nb.results.frames import arrow_to_frame

            with _regular_file(self._data_path(key)) as data:
                frame = arrow_to_frame(pq.read_table(data), dtypes)
        except (OSError, ValueError, ConfigurationError):
            return None
        return CachedResult(frame, entry)

    def get_or_run(
        self, scope: tuple[str, str], sql: str, options: QueryOptions, run: Callable[[], Any],
        *, say: Callable[[str], Any] = print,
    ) -> Any:
        """The cached result of ``sql`` in ``scope`` (``(tenant, instance)``) for these
        ``options``, or ``run()``'s, then kept; ``say`` gets one line about what happened (a
        hit's age, why it could not be kept). ``options.refresh`` runs the query whatever is
        cached. A result that depends on when it ran (``CURRENT_TIMESTAMP``...) says so."""
        tenant, instance = scope
        key = self.key(tenant, instance, sql, options)
        if not options.refresh and (hit := self.get(key, options.dtypes)) is not None:
            say(hit.entry.hit_line())
            return hit
        result = run()
        try:
            self.put(key, result, tenant=tenant, instance=instance, sql=sql, options=options)
        except ConfigurationError as exc:  # the result stands; only keeping it failed
            say(f"Not cached: {exc}")
            return result
        if clock := current_time_function(sql):
            say(f"Cached, though the query uses {clock}: this is its result as of now.")
        return result

    def put(
        self, key: str, result: Any, *, tenant: str, instance: str, sql: str,
        options: QueryOptions,
    ) -> CacheEntry:
        """Keep ``result`` (a ``Result``) under ``key``; returns its entry."""
        entry = CacheEntry(
            key=key, sql=normalize_sql(sql), tenant=tenant, instance=instance,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            rows=len(result.df), job_id=result.job_id,
            current_time=current_time_function(sql), shape=options.shape(),
        )
        data_path, meta_path = self._data_path(key), self._meta_path(key)
        try:
            private_directory(self.directory)
            _replace(data_path, lambda out: result.df.to_parquet(out, index=False))
            text = json.dumps(asdict(entry), indent=1, default=str)
            _replace(meta_path, lambda out: out.write(text.encode("utf-8")))
        except OSError as exc:
            raise ConfigurationError(
                f"Cannot keep the result in the cache at {self.directory}: "
                f"{exc.strerror or exc}. Set {CACHE_ENV} to a writable directory."
            ) from None
        except (TypeError, ValueError) as exc:  # a column Parquet cannot hold
            raise ConfigurationError(f"Parquet cannot hold this result ({exc}).") from None
        return entry

    def entries(self) -> list[CacheEntry]:
        """Every readable entry, newest first."""
        if not self.directory.is_dir():
            return []
        found = [self._entry(p) for p in self.directory.glob("*.json")]
        return sorted((e for e in found if e is not None), key=lambda e: e.created, reverse=True)

    def to_frame(self) -> Any:
        """The entries as a DataFrame: age, rows, SQL, tenant, instance, when, job id, key."""
        import pandas as pd

        columns = ["age", "rows", "sql", "tenant", "instance", "created", "current_time",
                   "job_id", "key"]
        rows = [{**asdict(e), "age": age_text(e.age()), "created": e.created_at}
                for e in self.entries()]
        frame = pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=columns)
        # text as frames hold it (an empty value is <NA>, never None in one listing and NaN
        # in another); the dtypes hold for an empty listing too
        text = {c: "string" for c in columns if c not in ("rows", "created")}
        return frame.astype({**text, "rows": "Int64", "created": "datetime64[us, UTC]"})

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        entries = self.entries()
        for entry in entries:
            for path in (self._meta_path(entry.key), self._data_path(entry.key)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return len(entries)

    def _meta_path(self, key: str) -> Path:
        return self.directory / f"{_checked_key(key)}.json"

    def _data_path(self, key: str) -> Path:
        return self.directory / f"{_checked_key(key)}.parquet"

    @staticmethod
    def _entry(path: Path) -> CacheEntry | None:
        """The entry a description file holds; None unless it is a sound one named by its key."""
        try:
            with _regular_file(path) as handle:
                text = handle.read(MAX_DESCRIPTION_BYTES + 1).decode("utf-8")
            entry = CacheEntry(**json.loads(text))  # a longer text is cut: not JSON, not an entry
        except (OSError, ValueError, TypeError, RecursionError, ConfigurationError):
            return None
        return entry if entry.key == path.stem and KEY_PATTERN.fullmatch(path.stem) else None


def _checked_key(key: str) -> str:
    """``key`` if it is a cache key (32 hex digits), else a ``ConfigurationError``: a key names
    files in the cache directory, so it may hold nothing that leads out of it."""
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise ConfigurationError(f"{key!r} is not a result cache key (32 hex digits).")
    return key


def _regular_file(path: Path) -> IO[bytes]:
    """``path`` opened for reading if it is a regular file (never a link: the cache makes
    none); ``OSError`` or ``ConfigurationError`` otherwise, never a wait on a FIFO."""
    return open_regular_file(path, what="The cache file", fix="remove it.", follow_links=False)


def _replace(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write through ``write(file)`` into a new private temporary file beside ``path`` (created
    with ``O_EXCL``: never a file or link already there), then rename it over ``path``."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
