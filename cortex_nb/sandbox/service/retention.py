"""How long the sandbox keeps job results: by age and by total size, as a service does.

A finished job's result table stays for ``max_age_s`` seconds (default one hour) while the
results kept together stay under ``max_bytes`` (default half the sandbox's memory limit); past
either bound the oldest results are dropped first, except the newest one, which is always kept
so that its client can read it. A result's size is the bytes of its rendered JSON rows, about
what a client downloads. Results of cancelled, failed or timed-out jobs are never kept. Reading
an expired result answers 404 ``Results of job <id> expired; run the query again``.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Protocol

from cortex_nb.sandbox.service.engine import ResultSet


class HasResult(Protocol):
    """A job as retention sees it: a result that may be taken away."""

    result: ResultSet | None
    lock: threading.Lock


class Retention:
    """The kept results, oldest first; thread-safe."""

    def __init__(
        self,
        drop: Callable[[ResultSet], None],
        max_age_s: float = 3600,
        max_bytes: int = 512 * 2**20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age_s, self.max_bytes = max_age_s, max_bytes
        self._drop, self._clock = drop, clock
        self._kept: collections.deque[tuple[float, int, HasResult]] = collections.deque()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def kept_bytes(self) -> int:
        """Total size of the results kept now."""
        with self._lock:
            return self._bytes

    def keep(self, job: HasResult) -> None:
        """Keep ``job``'s result (just finished), then drop what is past the bounds."""
        size = job.result.size if job.result is not None else 0
        with self._lock:
            self._kept.append((self._clock(), size, job))
            self._bytes += size
        self.expire()

    def expire(self) -> None:
        """Drop results older than ``max_age_s`` or beyond ``max_bytes``, oldest first."""
        expired = []
        with self._lock:
            while self._kept and self._past_bounds():
                expired.append(self._pop())
        for job in expired:
            self._take(job)

    def clear(self) -> None:
        """Drop every kept result."""
        with self._lock:
            expired = [self._pop() for _ in range(len(self._kept))]
        for job in expired:
            self._take(job)

    def _past_bounds(self) -> bool:
        too_old = self._clock() - self._kept[0][0] > self.max_age_s
        too_big = self._bytes > self.max_bytes and len(self._kept) > 1  # keep the newest
        return too_old or too_big

    def _pop(self) -> HasResult:
        _, size, job = self._kept.popleft()
        self._bytes -= size
        return job

    def _take(self, job: HasResult) -> None:
        with job.lock:
            result, job.result = job.result, None
        if result is not None:
            self._drop(result)
