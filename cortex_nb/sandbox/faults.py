"""Fault injection for reliability tests: forced statuses, 429 with Retry-After, dropped
connections, and a seeded random fraction of 502/503/504.

Faults hit Query API paths (``/query/``) unless an injection names another ``path_prefix``
(``"/"`` for every path, ``"/api/oauth2"`` for the token endpoint). Injections are used in the
order they were made; each answers ``count`` matching requests and is then spent.
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
    """What to do instead of answering one request."""

    status: int | None = None
    drop: bool = False
    retry_after: float | None = None
    path_prefix: str = API_PREFIX
    remaining: int = 1

    def message(self) -> str:
        """The error message of the injected reply."""
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Error"
        return f"{phrase} (injected by the sandbox)"

    def headers(self) -> dict[str, str]:
        """Extra reply headers (Retry-After for 429 and 503 when asked)."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(0, round(self.retry_after)))}


class Faults:
    """The queue of injected faults plus the random failure rate; thread-safe."""

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
        count: int = 1,
        retry_after: float | None = None,
        drop: bool = False,
        path_prefix: str | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status``, or drop them."""
        if not drop and (status is None or not 100 <= status <= 599):
            raise ValueError("inject() needs an HTTP status (100-599) or drop=True")
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        fault = Fault(None if drop else status, drop, retry_after, path_prefix or API_PREFIX, count)
        with self._lock:
            self._queue.append(fault)

    def clear(self) -> None:
        """Forget every pending injection."""
        with self._lock:
            self._queue.clear()

    def take(self, path: str) -> Fault | None:
        """The fault for a request to ``path``, if any (consumes one use)."""
        with self._lock:
            for fault in self._queue:
                if path.startswith(fault.path_prefix):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._queue.remove(fault)
                    return fault
            if (
                self.fail_rate
                and path.startswith(API_PREFIX)
                and self._random.random() < self.fail_rate
            ):
                return Fault(status=self._random.choice(RANDOM_STATUSES))
        return None
