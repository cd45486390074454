"""What times and durations analysts write, read as UTC: the time window a query names.

``parse_instant`` reads a moment (ISO strings with or without an offset, datetimes, pandas
Timestamps, ``'now'``, ``'now-2h'``), ``parse_duration`` a span (``'90s'``, ``'24h'``, ``'7d'``,
``'1w'``), and ``resolve_window`` turns ``between``/``since``/``until`` into one absolute
half-open window ``[start, end)``. A time without an offset is UTC; ``naive_note`` names the
ones read so. Pure Python, no SQL: the options check their values here, and
``cortex_nb.sql.timefilter`` writes the window into a statement.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from cortex_nb.exceptions import ConfigurationError

__all__ = [
    "DURATION_FORMS",
    "INSTANT_FORMS",
    "moves_with_now",
    "naive_note",
    "parse_duration",
    "parse_instant",
    "resolve_window",
    "utc",
]

INSTANT_FORMS = (
    "an ISO time ('2026-12-01', '2026-12-01T10:00', '2026-12-01T10:00+02:00'), a datetime or "
    "pandas Timestamp, 'now', or 'now-2h'"
)
DURATION_FORMS = "a number and a unit: '90s', '15m', '24h', '7d', '1w' (or a timedelta)"
LONGEST = timedelta(days=36_525)  # a century: longer spans are typing mistakes
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(sec|min|[smhdw])", re.IGNORECASE)
_RELATIVE = re.compile(r"now\s*(?:([+-])\s*(.+))?", re.IGNORECASE)


# ---- reading times and durations ----------------------------------------------------------


def parse_duration(value: Any) -> timedelta:
    """A positive span of time from ``'90s'``, ``'15m'``, ``'24h'``, ``'7d'``, ``'1w'`` or a
    ``timedelta``; anything else is a ``ConfigurationError`` naming the accepted forms."""
    if isinstance(value, timedelta):
        span = value
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = float(match[1]) * _UNIT_SECONDS[match[2].lower()]
        span = timedelta(seconds=min(seconds, LONGEST.total_seconds() + 1))
    else:
        raise ConfigurationError(f"Cannot read {value!r} as a duration: use {DURATION_FORMS}.")
    if span <= timedelta(0) or span > LONGEST:
        raise ConfigurationError(
            f"A duration must be positive and at most {LONGEST.days:,}d, not {value!r}: "
            "e.g. '24h'."
        )
    return span


def parse_instant(value: Any, now: datetime | None = None) -> datetime:
    """The moment ``value`` names, as an aware UTC datetime: an ISO string, a ``datetime``,
    ``date`` or pandas ``Timestamp``, ``'now'`` or ``'now-2h'`` (from ``now``, default the
    current time); a time without an offset is UTC."""
    if isinstance(value, str) and (match := _RELATIVE.fullmatch(value.strip())):
        moment = utc(now) if now is not None else datetime.now(timezone.utc)
        if match[1] is None:
            return moment
        try:
            span = parse_duration(match[2])
        except ConfigurationError:
            raise ConfigurationError(
                f"Cannot read {value!r} as a time: use {INSTANT_FORMS}."
            ) from None
        return moment - span if match[1] == "-" else moment + span
    return utc(_as_datetime(value))


def _as_datetime(value: Any) -> datetime:
    """``value`` as a datetime (maybe naive), or a ``ConfigurationError`` naming the forms."""
    if hasattr(value, "to_pydatetime"):  # a pandas Timestamp: drop the nanoseconds quietly
        value = value.to_pydatetime(warn=False)
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, time())
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ConfigurationError(f"Cannot read {value!r} as a time: use {INSTANT_FORMS}.")


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive one is taken to be UTC already."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _is_naive(value: Any) -> bool:
    """Whether ``value`` is a time given without an offset (read as UTC)."""
    if isinstance(value, str) and _RELATIVE.fullmatch(value.strip()):
        return False
    try:
        moment = _as_datetime(value)
    except ConfigurationError:
        return False
    return moment.tzinfo is None or moment.utcoffset() is None


def naive_note(between: Iterable[Any] | None = None, until: Any = None) -> str | None:
    """One line saying which of the given times had no offset and were read as UTC (None
    when every time was explicit)."""
    given = [*(between or ()), *([] if until is None else [until])]
    naive = [str(value) for value in given if _is_naive(value)]
    if not naive:
        return None
    return f"Time window: {', '.join(naive)} read as UTC (no offset given)."


# ---- the window --------------------------------------------------------------------------


def resolve_window(
    between: Iterable[Any] | None = None, since: Any = None, until: Any = None,
    now: datetime | None = None,
) -> tuple[datetime, datetime] | None:
    """The half-open window ``[start, end)`` the options name, in UTC (None: no window).

    ``between=(start, end)``, or ``since=DURATION`` reaching back from ``until`` (default now);
    relative times (``'now-2h'``) are read against the same ``now``. Contradictory or empty
    windows are a one-line ``ConfigurationError``.
    """
    if between is None and since is None:
        if until is not None:
            raise ConfigurationError(
                "until= (--until) ends a window that since= (--since) starts: give "
                "since='24h' (--since 24h) too."
            )
        return None
    if between is not None and (since is not None or until is not None):
        raise ConfigurationError(
            "Give between=(start, end) (--between START END) or since= (--since) with until= "
            "(--until), not both."
        )
    now = utc(now) if now is not None else datetime.now(timezone.utc)
    try:
        start, end = _ends(between, since, until, now)
    except OverflowError:
        raise ConfigurationError(
            "The time window reaches outside the years 1 to 9999: check its times."
        ) from None
    if start >= end:
        raise ConfigurationError(
            f"The time window is empty: it starts at {start.isoformat()} and ends at "
            f"{end.isoformat()}; the start must come first."
        )
    return start, end


def moves_with_now(between: Iterable[Any] | None = None, since: Any = None, until: Any = None
                   ) -> bool:
    """Whether the window is read against the current time (``since`` with no ``until``, or an
    end written ``'now...'``): its rows change with the moment the query is sent."""
    ends = [*(between or ()), until]
    relative = any(isinstance(end, str) and _RELATIVE.fullmatch(end.strip()) for end in ends)
    return relative or (since is not None and until is None)


def _ends(between: Any, since: Any, until: Any, now: datetime) -> tuple[datetime, datetime]:
    """The window's two ends, from ``between`` or from ``since`` and ``until``."""
    if between is None:
        end = parse_instant(until, now) if until is not None else now
        return end - parse_duration(since), end
    pair = tuple(between) if isinstance(between, list | tuple) else ()
    if len(pair) != 2:
        raise ConfigurationError(
            f"between takes two times (start, end), not {between!r}: e.g. "
            "between=('2026-12-01', '2026-12-02')."
        )
    return parse_instant(pair[0], now), parse_instant(pair[1], now)
