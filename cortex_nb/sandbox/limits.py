"""The sandbox's resource limits: their defaults, and the checks of the values given.

The memory limit defaults to a quarter of the memory this process may use: the machine's, or
its container's when a cgroup sets less (Binder gives a notebook about 2 GB on a large host).
It is the whole sandbox's: DuckDB (the logs, running queries, kept results) gets
``DUCKDB_SHARE`` of it, results pages being rendered and sent ``PAGES_SHARE``, and the rest is
left for Python itself and for the values DuckDB builds outside its own accounting (``policy``
bounds those).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DEFAULT_QUERY_TIMEOUT_MS = 120_000
DUCKDB_SHARE = 0.6
PAGES_SHARE = 0.25
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def default_memory_limit_mb() -> int:
    """A quarter of the usable memory, at least 256 MB (2 GB when it cannot be read)."""
    usable = usable_memory_bytes()
    return 2048 if usable is None else max(256, usable // 4 // 2**20)


def usable_memory_bytes() -> int | None:
    """The machine's physical memory, or its container's limit when that is lower."""
    sizes = []
    with contextlib.suppress(ValueError, OSError, AttributeError):  # no sysconf: Windows
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    for path in CGROUP_LIMITS:
        with contextlib.suppress(OSError, ValueError, IndexError):  # absent, or "max"
            sizes.append(int(Path(path).read_text().split()[0]))
    return min(sizes) if sizes else None


def check_settings(
    rows: int,
    latency_ms: float,
    threads: int,
    workers: int,
    memory_limit_mb: int | None,
    query_timeout_ms: int | None,
    scan_rate: float | None = None,
) -> None:
    """ValueError for a setting the sandbox cannot run with; its message starts with the
    setting's name (``scan_rate must be ...``), which the command line turns into its flag."""
    if rows < 100:
        raise ValueError(f"rows must be at least 100, not {rows}")
    if not latency_ms >= 0:  # NaN too: a request would sleep NaN seconds
        raise ValueError(f"latency_ms must be 0 or more, not {latency_ms}")
    for name, count in (("threads", threads), ("workers", workers)):
        if count < 1:
            raise ValueError(f"{name} must be at least 1, not {count}")
    if memory_limit_mb is not None and memory_limit_mb < 64:
        raise ValueError(f"memory_limit_mb must be at least 64, not {memory_limit_mb}")
    if query_timeout_ms is not None and query_timeout_ms < 1:
        raise ValueError(f"query_timeout_ms must be positive, not {query_timeout_ms}")
    if scan_rate is not None and not scan_rate >= 0:  # NaN too
        raise ValueError(
            f"scan_rate must be rows per second, 0 or more (0: no job time), not {scan_rate}"
        )


def duckdb_memory_mb(memory_limit_mb: int) -> int:
    """DuckDB's own memory limit within the sandbox's."""
    return max(32, int(memory_limit_mb * DUCKDB_SHARE))


def page_budget_bytes(memory_limit_mb: int) -> int:
    """Bytes of results pages that may be in flight (rendered, not yet sent) at once."""
    return int(memory_limit_mb * PAGES_SHARE * 2**20)
