"""Time windows of a split query: ``Window``, how a span is cut (``plan_windows``,
``auto_step``), and what is left of a span once some windows are done (``gaps``).

Windows are aligned to multiples of their length since the epoch (``--split 1h`` gives whole
hours, the first and last clipped to the span), so a window is an hour partition of a dataset
and a time bucket of an aggregate is never cut in two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cortex_nb.exceptions import ConfigurationError

__all__ = ["AUTO_STEPS", "MAX_WINDOWS", "Window", "auto_step", "gaps", "plan_windows"]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# the lengths --split auto starts from: the shortest that cuts the span into at most 24 pieces
AUTO_STEPS = tuple(
    timedelta(minutes=m) for m in (1, 5, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080)
)
AUTO_PIECES = 24
MAX_WINDOWS = 10_000  # a plan of more jobs than this is a mistake (a year in minutes)


@dataclass(frozen=True, order=True)
class Window:
    """``[start, end)`` in UTC: one job of a split query."""

    start: datetime
    end: datetime

    @property
    def length(self) -> timedelta:
        """How long the window is."""
        return self.end - self.start

    def halves(self) -> tuple[Window, Window]:
        """The window cut in two at its middle (to the second)."""
        middle = self.start + timedelta(seconds=int(self.length.total_seconds() // 2))
        return Window(self.start, middle), Window(middle, self.end)

    def label(self) -> str:
        """The window for a reader: ``2026-12-01 10:00 to 11:00 UTC``."""
        same_day = self.start.date() == self.end.date()
        end = f"{self.end:%H:%M}" if same_day else f"{self.end:%Y-%m-%d %H:%M}"
        return f"{self.start:%Y-%m-%d %H:%M} to {end} UTC"

    def as_record(self) -> dict[str, str]:
        """The window as a manifest records it (ISO times)."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}

    @classmethod
    def of_record(cls, record: dict) -> Window:
        """The window a manifest record names."""
        return cls(datetime.fromisoformat(record["start"]), datetime.fromisoformat(record["end"]))


def plan_windows(start: datetime, end: datetime, step: timedelta) -> list[Window]:
    """``[start, end)`` cut at the multiples of ``step`` since the epoch, oldest first."""
    if step <= timedelta(0):
        raise ValueError(f"a window length must be positive, not {step}")
    pieces = (end - start) / step
    if pieces > MAX_WINDOWS:
        raise ConfigurationError(
            f"--split {_words(step)} cuts {_words(end - start)} into {int(pieces):,} jobs, "
            f"more than {MAX_WINDOWS:,}: give a longer split (or auto)."
        )
    windows, cut = [], start
    while cut < end:
        following = EPOCH + ((cut - EPOCH) // step + 1) * step
        windows.append(Window(cut, min(following, end)))
        cut = windows[-1].end
    return windows


def auto_step(start: datetime, end: datetime, at_least: timedelta | None = None) -> timedelta:
    """The first guess of ``--split auto``: the shortest of ``AUTO_STEPS`` (no shorter than
    ``at_least``) that cuts the span into at most ``AUTO_PIECES`` windows."""
    floor = at_least or timedelta(0)
    for step in AUTO_STEPS:
        if step >= floor and (end - start) / step <= AUTO_PIECES:
            return step
    return max(AUTO_STEPS[-1], floor)


def gaps(start: datetime, end: datetime, done: list[Window]) -> list[tuple[datetime, datetime]]:
    """The parts of ``[start, end)`` no window of ``done`` covers, oldest first."""
    left, cut = [], start
    for window in sorted(done):
        if window.start > cut:
            left.append((cut, min(window.start, end)))
        cut = max(cut, window.end)
    if cut < end:
        left.append((cut, end))
    return [(s, e) for s, e in left if s < e]


def _words(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
