"""The bytes of results pages in flight: rendered to JSON and not yet sent, across requests.

A page of 100,000 rows is a hundred megabytes of JSON, held a few times over while it is
rendered, spliced into its envelope and written; two dozen at once would pass any memory limit.
``PageBudget`` admits a page when the estimated bytes fit beside those in flight (a page alone
is always admitted, however large, so every page can be served); otherwise the request waits up
to ``wait_s`` for pages ahead of it to go out, then is refused (the route answers 503 with
``Retry-After``).
"""

from __future__ import annotations

import threading
import time

WAIT_S = 2.0  # how long a page waits for room before the request is refused
COPIES = 3  # a page's JSON is held about this many times over while rendered and sent
ROW_OVERHEAD = 64  # bytes per row besides its JSON (a Python string each, while rendered)


def page_cost(row_bytes: int, rows: int) -> int:
    """The bytes a page of ``rows`` rows of about ``row_bytes`` each holds while in flight."""
    return COPIES * (row_bytes + ROW_OVERHEAD) * rows


class PageBudget:
    """Bytes of pages in flight, kept within ``max_bytes`` (thread-safe)."""

    def __init__(self, max_bytes: int, wait_s: float = WAIT_S) -> None:
        self.max_bytes, self.wait_s = max_bytes, wait_s
        self._in_flight = 0
        self._room = threading.Condition()

    @property
    def in_flight(self) -> int:
        """Bytes reserved now."""
        with self._room:
            return self._in_flight

    def reserve(self, cost: int) -> bool:
        """Reserve ``cost`` bytes, waiting up to ``wait_s`` for room; False when none came."""
        deadline = time.monotonic() + self.wait_s
        with self._room:
            while self._in_flight and self._in_flight + cost > self.max_bytes:
                left = deadline - time.monotonic()
                if left <= 0 or not self._room.wait(left):
                    return False
            self._in_flight += cost
            return True

    def release(self, cost: int) -> None:
        """Give back ``cost`` bytes once their page is sent (or was never rendered)."""
        with self._room:
            self._in_flight -= cost
            self._room.notify_all()
