"""Fault injection for reliability tests: forced statuses, 429 with Retry-After, dropped
connections, and a seeded random fraction of 502/503/504.

Faults hit Query API paths (``/query/``) unless an injection names another ``path_prefix``
(``"/"`` for every path, ``"/api/oauth2"`` for the token endpoint). Injections are used in the
order they were made; each answers ``count`` matching requests and is then spent. A status or
drop injection lasts one request unless ``count`` says otherwise; a latency-only injection
(``latency_ms`` without a status) delays every matching request until ``clear()``.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from http import HTTPStatus

API_PREFIX = "/query/"
RANDOM_STATUSES = (502, 503, 504)


@dataclass
class Fault:
    """What to do to matching requests: delay them, answer a status, or drop them."""

    status: int | None = None
    drop: bool = False
    retry_after: float | None = None
    latency_ms: float = 0
    path_prefix: str = API_PREFIX
    remaining: int | None = 1  # None: until clear()

    @property
    def answers(self) -> bool:
        """True when the fault replaces the reply (a status or a drop), not only delays it."""
        return self.drop or self.status is not None

    def message(self) -> str:
        """The error message of the injected reply."""
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Error"
        return f"{phrase} (injected by the sandbox)"

    def headers(self) -> dict[str, str]:
        """Extra reply headers (Retry-After when asked)."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(0, round(self.retry_after)))}


class Faults:
    """The injected faults plus the random failure rate; thread-safe."""

    def __init__(self, fail_rate: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be between 0 and 1, not {fail_rate}")
        self.fail_rate = fail_rate
        self._random = random.Random(seed)
        self._queue: list[Fault] = []
        self._lock = threading.Lock()

    def inject(
        self,
        status: int | None = None,
        count: int | None = None,
        retry_after: float | None = None,
        drop: bool = False,
        path_prefix: str | None = None,
        latency_ms: float = 0,
    ) -> None:
        """Add a fault; ``count`` defaults to 1 for a status or drop, unlimited for latency."""
        if status is not None and not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status (100-599), not {status}")
        if status is None and not drop and latency_ms <= 0:
            raise ValueError("inject() needs a status, drop=True or latency_ms")
        if count is not None and count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        if count is None and (drop or status is not None):
            count = 1
        prefix = path_prefix or API_PREFIX
        fault = Fault(None if drop else status, drop, retry_after, latency_ms, prefix, count)
        with self._lock:
            self._queue.append(fault)

    def clear(self) -> None:
        """Forget every injection."""
        with self._lock:
            self._queue.clear()

    def take(self, path: str) -> tuple[float, Fault | None]:
        """(delay in ms, fault that replaces the reply or None) for a request to ``path``."""
        delay, answer = 0.0, None
        with self._lock:
            for fault in list(self._queue):
                if not path.startswith(fault.path_prefix) or (fault.answers and answer):
                    continue
                delay += fault.latency_ms
                answer = fault if fault.answers else answer
                self._spend(fault)
            if answer is None and self._random_failure(path):
                answer = Fault(status=self._random.choice(RANDOM_STATUSES))
        return delay, answer

    def _spend(self, fault: Fault) -> None:
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._queue.remove(fault)

    def _random_failure(self, path: str) -> bool:
        if not self.fail_rate or not path.startswith(API_PREFIX):
            return False
        return self._random.random() < self.fail_rate
