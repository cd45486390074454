"""How tables look in a notebook: long ids shortened on screen only, epoch times as datetimes.

The data stay whole: ``ShortFrame`` is a DataFrame whose *display* shortens long id-like
tokens (job ids, request ids, the ids inside URLs), so ``%cortex history`` fits the page while
every value can still be copied from the frame itself.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

__all__ = ["FullFrame", "ShortFrame", "shorten_ids", "with_epoch_ms_times"]

# an id-like token: long runs of letters, digits, '-' and '_' (uuids, job ids, request ids)
_LONG_ID = re.compile(r"[A-Za-z0-9_-]{24,}")
# Query Service job details carry these as epoch milliseconds
EPOCH_MS_COLUMNS = ("submitTime", "startTime", "endTime", "createdAfter")


def shorten_ids(text: Any) -> Any:
    """``text`` with every long id-like token cut to its start and end (``cortexnb-1b2…9f3e``)."""
    if not isinstance(text, str):
        return text
    return _LONG_ID.sub(lambda m: f"{m.group()[:12]}…{m.group()[-4:]}", text)


class ShortFrame(pd.DataFrame):
    """A DataFrame shown with long ids shortened; anything derived from it is a plain frame."""

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        return pd.DataFrame

    def _shown(self) -> pd.DataFrame:
        shown = pd.DataFrame(self, copy=True)
        for name in shown.columns:
            if shown[name].dtype == object or pd.api.types.is_string_dtype(shown[name]):
                shown[name] = shown[name].map(shorten_ids)
        return shown

    def __repr__(self) -> str:
        return repr(self._shown())

    def _repr_html_(self) -> str | None:
        return self._shown()._repr_html_()


class FullFrame(pd.DataFrame):
    """A DataFrame shown whole: every row and column, text not cut (listings to read through)."""

    _WHOLE = ("display.max_rows", None, "display.max_columns", None, "display.max_colwidth",
              None, "display.expand_frame_repr", False)

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        return pd.DataFrame

    def __repr__(self) -> str:
        with pd.option_context(*self._WHOLE):
            return repr(pd.DataFrame(self))

    def _repr_html_(self) -> str | None:
        with pd.option_context(*self._WHOLE):
            return pd.DataFrame(self)._repr_html_()


def with_epoch_ms_times(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the job detail time columns (epoch ms) as UTC datetimes."""
    for name in EPOCH_MS_COLUMNS:
        if name in frame.columns and pd.api.types.is_numeric_dtype(frame[name]):
            frame[name] = pd.to_datetime(frame[name], unit="ms", utc=True)
    return frame
