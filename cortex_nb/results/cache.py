"""The result cache: query results kept as Parquet, so a notebook run again asks nothing twice.

An entry is keyed by the tenant, the instance and the normalized SQL, plus what shapes the
frame (how structs become columns, the row limit); never by a secret. It is two files in the
cache directory: ``<key>.parquet`` (the frame, its dtypes kept) and ``<key>.json`` (the SQL,
tenant, instance, when it ran, rows, job id), each written to a temporary file and renamed
into place, the description last: an entry without one is not there.

The directory is ``$CORTEX_NB_CACHE_DIR``, else ``$XDG_CACHE_HOME/cortex_nb/results``, else
``~/.cache/cortex_nb/results``. ``current_time_function(sql)`` names the function that makes a
query's result depend on when it runs (``CURRENT_TIMESTAMP``...): such a query is cached only
when asked for explicitly (``%%cortex --cache``), and says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cortex_nb.exceptions import ConfigurationError
from cortex_nb.http.security import mask_url
from cortex_nb.sql.params import normalize_sql

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

    The tenant is the API URL; for the in-process sandbox, its data (rows, seed, anchor hour),
    since its port changes; for a replayed cassette, the cassette's content.
    """
    instance = connection.instance_id or ""
    replay, sandbox, endpoint = connection.replay, connection.sandbox, connection.endpoint
    if replay is not None and endpoint is not None and endpoint.api_url == replay.url:
        return f"replay {Path(replay.path).name} {replay.cassette.digest[:16]}", instance
    if sandbox is not None and endpoint is not None and endpoint.sandbox:
        return f"sandbox rows={sandbox.rows} seed={sandbox.seed} anchor={sandbox.anchor}", instance
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
    def key(tenant: str, instance: str, sql: str, **shape: Any) -> str:
        """The entry's name: a digest of where, what (the SQL, normalized) and the frame's shape."""
        what = json.dumps(
            {"tenant": tenant, "instance": instance, "sql": normalize_sql(sql), "shape": shape},
            sort_keys=True, default=str,
        )
        return hashlib.sha256(what.encode()).hexdigest()[:32]

    def get(self, key: str) -> CachedResult | None:
        """The cached result for ``key``, or None (also for an entry that cannot be read)."""
        entry = self._entry(self._meta_path(key))
        if entry is None:
            return None
        try:
            import pandas as pd

            frame = pd.read_parquet(self._data_path(key))
        except (OSError, ValueError):
            return None
        return CachedResult(_plain_objects(frame), entry)

    def fetch(
        self, scope: tuple[str, str], sql: str, run: Callable[[], Any], *, asked: bool = True,
        refresh: bool = False, say: Callable[[str], Any] = print, **shape: Any,
    ) -> Any:
        """The cached result of ``sql`` in ``scope`` (``(tenant, instance)``), or ``run()``'s,
        then kept; ``say`` gets one line about what happened (a hit's age, why not cached).

        ``refresh`` runs the query whatever is cached. A query that uses the current time is
        cached only when ``asked`` (``--cache`` on the cell, not a default), and says so.
        """
        clock = current_time_function(sql)
        if clock and not (asked or refresh):
            say(f"Not cached: the query uses {clock}, so its result changes with time; "
                "add --cache to keep it anyway.")
            return run()
        tenant, instance = scope
        key = self.key(tenant, instance, sql, **shape)
        if not refresh and (hit := self.get(key)) is not None:
            say(hit.entry.hit_line())
            return hit
        result = run()
        try:
            self.put(key, result, tenant=tenant, instance=instance, sql=sql, **shape)
        except ConfigurationError as exc:  # the result stands; only keeping it failed
            say(f"Not cached: {exc}")
            return result
        if clock:
            say(f"Cached, though the query uses {clock}: this is its result as of now.")
        return result

    def put(
        self, key: str, result: Any, *, tenant: str, instance: str, sql: str, **shape: Any
    ) -> CacheEntry:
        """Keep ``result`` (a ``query.Result``) under ``key``; returns its entry."""
        entry = CacheEntry(
            key=key, sql=normalize_sql(sql), tenant=tenant, instance=instance,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            rows=len(result.df), job_id=result.job_id,
            current_time=current_time_function(sql), shape=shape,
        )
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _replace(self._data_path(key), lambda p: result.df.to_parquet(p, index=False))
            text = json.dumps(asdict(entry), indent=1, default=str)
            _replace(self._meta_path(key), lambda p: p.write_text(text, encoding="utf-8"))
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
        return self.directory / f"{key}.json"

    def _data_path(self, key: str) -> Path:
        return self.directory / f"{key}.parquet"

    @staticmethod
    def _entry(path: Path) -> CacheEntry | None:
        try:
            return CacheEntry(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None


def _replace(path: Path, write: Any) -> None:
    """Write through ``write(temporary_path)``, then rename over ``path`` (atomic)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _plain(value: Any) -> Any:
    """Parquet gives arrays back as numpy arrays: lists again, inside structs too."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _plain_objects(frame: Any) -> Any:
    """``frame`` with its object columns' arrays turned back into lists, as the query gave them."""
    import numpy as np

    for name in frame.columns:
        column = frame[name]
        if column.dtype == object and column.map(lambda v: isinstance(v, dict | np.ndarray)).any():
            frame[name] = column.map(_plain)
    return frame
