"""Charts of a query's rows: a timeline, the top values of a column, a histogram.

A chart is a Vega-Lite 5 specification (plain JSON) that JupyterLab, Jupyter Notebook 7 and
VS Code draw with the Vega they bundle: no Python dependency, no script from a CDN, so it
draws offline and from a saved notebook with no kernel. The rows are counted here with pandas
and only the counts go into the spec (a week of rows becomes a few hundred bars), so a saved
notebook stays small and the same rows always give the same JSON. Timelines zoom and pan on
the time axis (scroll, drag; double-click resets), every mark has a tooltip, and a legend
entry, when clicked, picks out its series. A viewer that draws no Vega-Lite shows the
chart's one-line summary instead.

    plot(df, "timeline", by="app")          # rows per time bucket, one colour per app (top 10)
    plot(df, "bar", by="app", top=20)       # the 20 most frequent apps
    plot(df, "bar", by="src", value="sessions")   # an aggregated frame: its values, not counts
    plot(df, "hist", by="bytes_sent")       # the distribution of a numeric column
    result.plot("timeline", bucket="10min") # the same on a query's Result

Mistakes are ``ChartError`` (an unknown column is ``UnknownNameError``, with the closest
names); an empty result is a chart that says "no rows".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cortex_nb import catalog
from cortex_nb.exceptions import ConfigurationError, CortexError, UnknownNameError
from cortex_nb.times import parse_duration
from cortex_nb.words import plural

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["KINDS", "VEGA_LITE_MIMETYPE", "Chart", "ChartError", "parse_bucket", "plot"]

KINDS = ("timeline", "bar", "hist")
VEGA_LITE_MIMETYPE = "application/vnd.vegalite.v5+json"  # what JupyterLab 4 draws natively
SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
WIDTH, HEIGHT = 640, 260
MAX_BUCKETS = 2_000  # bars a timeline may hold: beyond that a browser struggles and nobody reads
TARGET_BUCKETS = 120  # an automatic bucket gives at most this many
OTHER, NONE = "(other)", "(none)"
_LADDER = (1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600,
           86_400, 604_800)  # seconds: the buckets an automatic timeline picks from
# what each kind takes besides ``by``; anything else given is a mistake worth a word
_TAKES = {"timeline": {"value", "bucket", "top", "time"}, "bar": {"value", "top"},
          "hist": {"bins"}}


class ChartError(CortexError, ValueError):
    """A chart cannot be drawn from these rows with these arguments (the message says why)."""


@dataclass(frozen=True)
class Chart:
    """A drawn chart: its Vega-Lite ``spec`` and a one-line ``summary`` of what it shows."""

    kind: str
    spec: dict[str, Any]
    summary: str

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """What a notebook stores and shows: the spec, and the summary where Vega is absent.

        The metadata asks JupyterLab for SVG rather than a canvas: crisp when printed or
        zoomed, and each mark an element (JupyterLab also stores a PNG of what it drew, which
        GitHub and nbviewer then show).
        """
        data = {VEGA_LITE_MIMETYPE: self.spec, "text/plain": self.summary}
        return data, {VEGA_LITE_MIMETYPE: {"embed_options": {"renderer": "svg"}}}

    def to_dict(self) -> dict[str, Any]:
        """A copy of the Vega-Lite spec, to change or to hand to ``altair.Chart.from_dict``."""
        return copy.deepcopy(self.spec)

    def __repr__(self) -> str:
        return f"<Chart {self.summary}>"


def plot(
    data: Any, kind: str = "timeline", *, by: str | None = None, value: str | None = None,
    bucket: str | None = None, top: int | None = None, bins: int | None = None,
    time: str | None = None, title: str | None = None,
) -> Chart:
    """Chart a query's rows (a DataFrame, or a ``Result``): ``kind`` is one of ``KINDS``.

    ``by``: the column split into colours (timeline), counted (bar) or binned (hist);
    ``value``: a numeric column summed instead of counting rows; ``bucket``: a timeline's
    bucket (``30s``, ``10min``, ``1h``, ``1d``; default: about a hundred buckets over the
    span); ``top``: how many values are shown apart (default 10, the rest is "(other)" in a
    timeline); ``bins``: a histogram's bins (default 30); ``time``: the time column (default:
    the catalog's time column, ``time_generated`` or ``event_time``, else the first timestamp
    column); ``title`` replaces the chart's own.
    """
    df = getattr(data, "df", data)  # a Result charts its frame
    _check_kind(kind, {"value": value, "bucket": bucket, "top": top, "bins": bins, "time": time})
    for role, name in (("split by", by), ("sum", value), ("use as time", time)):
        if name is not None:
            _require_column(df, name, role)
    return _DRAW[kind](df, by=by, value=value, bucket=bucket, top=top, bins=bins, time=time,
                       title=title)


def _check_kind(kind: str, extras: dict[str, Any]) -> None:
    """``kind`` is known and takes every argument given."""
    if kind not in KINDS:
        close = catalog.did_you_mean(catalog.closest(kind, KINDS))
        raise ChartError(f"no chart kind {kind!r}; {close or 'the kinds are'} "
                         f"({', '.join(KINDS)})")
    for name, given in extras.items():
        if given is not None and name not in _TAKES[kind]:
            takers = [k for k in KINDS if name in _TAKES[k]]
            raise ChartError(f"a {kind} chart takes no {name}; {name} goes with "
                             f"{' and '.join(takers)} charts")


def _require_column(df: pd.DataFrame, name: str, role: str) -> None:
    """``name`` is a column of ``df``, else an error naming the closest ones."""
    if name in df.columns:
        return
    columns = [str(c) for c in df.columns]
    close = catalog.closest(name, columns)
    hint = catalog.did_you_mean(close) or _some_columns(columns)
    raise UnknownNameError(f"no column `{name}` in the result to {role}; {hint}", tuple(close))


def _some_columns(columns: list[str], shown: int = 8) -> str:
    """The result's columns for a message: all of a few, the first ``shown`` of many."""
    if len(columns) <= shown:
        return f"the columns are {', '.join(columns) or 'none'}"
    return (f"the result has {len(columns)} columns ({', '.join(columns[:shown])}, ...; "
            "df.columns lists them)")


# ---- timeline -------------------------------------------------------------------------------


def parse_bucket(text: str) -> int:
    """The whole seconds of a bucket written ``30s``, ``10min``, ``1h``, ``1d`` or ``1w`` (read
    as every duration is: ``cortex_nb.times.parse_duration``)."""
    try:
        seconds = parse_duration(text).total_seconds()
    except ConfigurationError:
        seconds = 0
    if seconds < 1 or seconds != int(seconds):
        raise ChartError(f"bucket {text!r} is not a duration; write 30s, 10min, 1h or 1d")
    return int(seconds)


def duration_text(seconds: int) -> str:
    """``1h``, ``10min``, ``30s``, ``1d``: the shortest exact spelling of ``seconds``."""
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def time_column(df: pd.DataFrame, name: str | None = None) -> str:
    """The column a timeline counts along: ``name``, else the catalog's time column of a log
    type (``time_generated``, ``event_time``), else the first timestamp column."""
    import pandas as pd

    stamps = [c for c in df.columns if pd.api.types.is_datetime64_any_dtype(df[c])]
    if name is not None:
        if name not in stamps:
            raise ChartError(f"column `{name}` holds no timestamps ({df[name].dtype}); "
                             f"timestamp columns: {', '.join(map(str, stamps)) or 'none'}")
        return name
    preferred = {t.time_column for t in catalog.tables()}
    found = [c for c in stamps if c in preferred] or stamps
    if not found:
        raise ChartError("the result has no time column for a timeline: select a timestamp "
                         "such as time_generated, or draw a bar or hist chart")
    return found[0]


def _utc(times: pd.Series) -> pd.Series:
    """``times`` in UTC (naive times are taken as UTC, as the service sends them)."""
    if times.dt.tz is None:
        return times.dt.tz_localize("UTC")
    return times.dt.tz_convert("UTC")


def _auto_bucket(span_seconds: float) -> int:
    """The smallest bucket of the ladder that covers ``span_seconds`` in few enough bars."""
    return next((s for s in _LADDER if span_seconds / s <= TARGET_BUCKETS), _LADDER[-1])


def _bucket_seconds(times: pd.Series, bucket: str | None) -> int:
    """The bucket asked for (bounded in count over the span), or an automatic one."""
    span = (times.max() - times.min()).total_seconds()
    if bucket is None:
        return _auto_bucket(span)
    seconds = parse_bucket(bucket)
    if span / seconds > MAX_BUCKETS:
        least = duration_text(_auto_bucket(span * TARGET_BUCKETS / MAX_BUCKETS))
        raise ChartError(f"{bucket} buckets over {duration_text(int(span) or 1)} make more than "
                         f"{MAX_BUCKETS:,} bars; use a bucket of {least} or more")
    return seconds


def _series_labels(column: pd.Series, keep: list[str] | None = None) -> pd.Series:
    """The values of ``column`` as text labels: missing ones ``(none)``; outside ``keep``
    (when given) ``(other)``."""
    labels = column.astype("string").fillna(NONE).astype(object)
    if keep is not None:
        labels = labels.where(labels.isin(keep), OTHER)
    return labels


def _top_labels(labels: pd.Series, weights: pd.Series | None, top: int) -> list[str]:
    """The ``top`` labels by row count (or by the sum of ``weights``), largest first."""
    totals = labels.value_counts() if weights is None else weights.groupby(labels).sum()
    ordered = totals.sort_values(ascending=False, kind="stable")
    return [str(label) for label in ordered.index[:top]]


def _bucket_transform(seconds: int) -> list[dict[str, Any]]:
    """Vega-Lite transforms that give each bar its end and its tooltip's ``window`` (``2026-12-05
    10:00 to 11:00 UTC``), computed in the browser so the saved rows stay short."""
    clock = "%H:%M:%S" if seconds % 60 else "%H:%M"
    end = clock if seconds < 86_400 else f"%Y-%m-%d {clock}"
    window = (f"utcFormat(toDate(datum.start), '%Y-%m-%d {clock}') + ' to ' + "
              f"utcFormat(datum.end, '{end}') + ' UTC'")
    return [{"calculate": f"toDate(datum.start) + {seconds * 1000}", "as": "end"},
            {"calculate": window, "as": "window"}]


def _iso(stamp: pd.Timestamp) -> str:
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _timeline(df: pd.DataFrame, *, by: str | None, value: str | None, bucket: str | None,
              top: int | None, time: str | None, title: str | None, **_: Any) -> Chart:
    """Rows (or the sum of ``value``) per time bucket, stacked by the top values of ``by``."""
    column = time_column(df, time)
    weights = _numeric(df, value) if value else None
    counted = value or "rows"
    if df[column].notna().sum() == 0:
        return _no_rows("timeline", title or f"{counted} over time")
    times = _utc(df[column])
    seconds = _bucket_seconds(times.dropna(), bucket)
    keep, labels, distinct = _timeline_series(df, by, weights, top)
    frame = {"start": times.dt.floor(f"{seconds}s"), "series": labels}
    grouped = _grouped(frame, weights, ["start", "series"])
    rows = _stacked(grouped, keep)
    every = duration_text(seconds)
    name = title or f"{counted} per {every}" + (f" by {by}" if by else "")
    summary = _timeline_summary(len(df), every, by, keep, distinct, times)
    return Chart("timeline", _timeline_spec(rows, name, by, keep, counted, seconds),
                 summary)


def _timeline_series(df: pd.DataFrame, by: str | None, weights: pd.Series | None,
                     top: int | None) -> tuple[list[str], Any, int]:
    """The series a timeline draws (the top values of ``by``, then ``(other)``), each row's
    series label, and how many distinct values ``by`` holds."""
    if by is None:
        return [], "rows", 0
    labels = _series_labels(df[by])
    keep = _top_labels(labels, weights, _positive(top, 10, "top"))
    distinct = labels.nunique()
    if distinct > len(keep):
        keep.append(OTHER)
    return keep, _series_labels(df[by], keep), distinct


def _stacked(grouped: pd.Series, order: list[str]) -> list[dict[str, Any]]:
    """One rect per (bucket, series), stacked from zero in ``order`` within each bucket.

    Stacked here rather than by Vega-Lite: a bar whose x runs from a start to an end is drawn
    as a horizontal range there, and the order of the stack must follow the legend's.
    """
    rank = {label: i for i, label in enumerate(order)}
    rows: list[dict[str, Any]] = []
    base: int | float = 0
    bucket = None
    ordered = sorted(grouped.items(), key=lambda item: (item[0][0], rank.get(item[0][1], 0)))
    for (start, series), n in ordered:
        base = 0 if start != bucket else base
        bucket, count = start, _number(n)
        rows.append({"start": _iso(start), "series": series, "count": count, "y0": base,
                     "y1": base + count})
        base += count
    return rows


def _grouped(frame: dict[str, Any], weights: pd.Series | None, keys: list[str]) -> pd.Series:
    """Row counts (or sums of ``weights``) per combination of ``keys``, in key order."""
    import pandas as pd

    table = pd.DataFrame(frame)
    table["n"] = 1 if weights is None else weights.fillna(0).to_numpy()
    table = table.dropna(subset=keys)
    return table.groupby(keys, sort=True, observed=True)["n"].sum()


def _timeline_summary(rows: int, every: str, by: str | None, keep: list[str], distinct: int,
                      times: pd.Series) -> str:
    """``timeline of 2,000 rows per 1h by app (top 10 of 35), 2026-11-29 00:34 to ... UTC``."""
    split = ""
    if by is not None:
        shown = len(keep) - (OTHER in keep)
        split = f" by {by} " + (f"(top {shown} of {distinct})" if OTHER in keep
                                 else f"({plural(distinct, 'value')})")
    span = f"{times.min():%Y-%m-%d %H:%M} to {times.max():%Y-%m-%d %H:%M} UTC"
    return f"timeline of {plural(rows, 'row')} per {every}{split}, {span}"


def _timeline_spec(rows: list[dict[str, Any]], title: str, by: str | None, order: list[str],
                   counted: str, seconds: int) -> dict[str, Any]:
    """A stacked bar per bucket; the time axis zooms and pans; the legend picks a series."""
    encoding: dict[str, Any] = {
        "x": {"field": "start", "type": "temporal", "title": "time (UTC)",
              "scale": {"type": "utc"}, "axis": {"format": _TIME_LABELS}},
        "x2": {"field": "end"},
        "y": {"field": "y1", "type": "quantitative", "title": counted},
        "y2": {"field": "y0"},
        "tooltip": [{"field": "window", "title": "time"},
                    *([{"field": "series", "title": by}] if by else []),
                    {"field": "count", "title": counted, "format": ","}],
    }
    params: list[dict[str, Any]] = [
        {"name": "zoom", "select": {"type": "interval", "encodings": ["x"]}, "bind": "scales"},
    ]
    if by:
        encoding["color"] = {"field": "series", "type": "nominal", "title": by,
                             "sort": order, "scale": {"domain": order}}
        encoding["opacity"] = {"condition": {"param": "pick", "value": 1}, "value": 0.2}
        params.append({"name": "pick", "select": {"type": "point", "fields": ["series"]},
                       "bind": "legend"})
    else:
        encoding["color"] = {"value": "#4c78a8"}
    return {**_spec(title, rows, _RECT, encoding, params), "transform": _bucket_transform(seconds)}


# ---- bar ----------------------------------------------------------------------------------


def _bar(df: pd.DataFrame, *, by: str | None, value: str | None, top: int | None,
         title: str | None, **_: Any) -> Chart:
    """The ``top`` values of ``by``, by row count (or by the sum of ``value``), largest first."""
    by = by or _first_category(df)
    weights = _numeric(df, value) if value else None
    counted = value or "rows"
    if df.empty:
        return _no_rows("bar", title or f"{counted} by {by}")
    labels = _series_labels(df[by])
    count = _positive(top, 10, "top")
    keep = _top_labels(labels, weights, count)
    totals = _grouped({"series": labels}, weights, ["series"])
    rows = [{"series": label, "count": _number(totals[label])} for label in keep]
    distinct = labels.nunique()
    shown = f"top {len(keep)} of {distinct}" if distinct > len(keep) else f"{distinct}"
    summary = f"bar chart of {counted} by {by}: {shown} values, from {plural(len(df), 'row')}"
    name = title or f"{counted} by {by}" + (f" (top {len(keep)} of {distinct})"
                                             if distinct > len(keep) else "")
    return Chart("bar", _bar_spec(rows, name, by, counted), summary)


def _first_category(df: pd.DataFrame) -> str:
    """The first column that holds categories (text, booleans), for a bar chart of nothing named."""
    import pandas as pd

    types = pd.api.types
    for column in df.columns:
        kind = df[column].dtype
        if types.is_bool_dtype(kind) or not (
            types.is_numeric_dtype(kind) or types.is_datetime64_any_dtype(kind)
        ):
            return str(column)
    raise ChartError("a bar chart counts the values of a column; name one with by= (--by in a "
                     "cell): the result holds only numbers and times")


def _bar_spec(rows: list[dict[str, Any]], title: str, by: str, counted: str) -> dict[str, Any]:
    """Horizontal bars, largest on top, each with its value in a tooltip."""
    encoding = {
        "y": {"field": "series", "type": "nominal", "title": by, "sort": "-x"},
        "x": {"field": "count", "type": "quantitative", "title": counted},
        "color": {"value": "#4c78a8"},
        "tooltip": [{"field": "series", "title": by},
                    {"field": "count", "title": counted, "format": ","}],
    }
    spec = _spec(title, rows, {"type": "bar"}, encoding, [])
    spec["height"] = {"step": 18}  # one readable row per value, however many there are
    return spec


# ---- histogram ------------------------------------------------------------------------------


def _hist(df: pd.DataFrame, *, by: str | None, bins: int | None, title: str | None,
          **_: Any) -> Chart:
    """How the values of the numeric column ``by`` are spread, in ``bins`` equal bins."""
    import numpy as np

    by = by or _first_number(df)
    values = _numeric(df, by).dropna().astype(float)
    if values.empty:
        return _no_rows("hist", title or f"distribution of {by}")
    counts, edges = np.histogram(values.to_numpy(), bins=_positive(bins, 30, "bins"))
    rows = [{"start": _number(lo), "end": _number(hi), "count": int(n),
             "range": f"{_number(lo):,} to {_number(hi):,}"}
            for n, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True)]
    summary = (f"histogram of {by}: {plural(len(values), 'value')} in {len(rows)} bins, "
               f"{_number(edges[0]):,} to {_number(edges[-1]):,}")
    return Chart("hist", _hist_spec(rows, title or f"distribution of {by}", by), summary)


def _first_number(df: pd.DataFrame) -> str:
    """The first numeric column, for a histogram of nothing named."""
    import pandas as pd

    for column in df.columns:
        kind = df[column].dtype
        if pd.api.types.is_numeric_dtype(kind) and not pd.api.types.is_bool_dtype(kind):
            return str(column)
    raise ChartError("a histogram needs a numeric column and the result has none; "
                     "draw a bar chart of a column's values instead")


def _hist_spec(rows: list[dict[str, Any]], title: str, by: str) -> dict[str, Any]:
    """One bar per bin; the value axis zooms and pans."""
    encoding = {
        "x": {"field": "start", "type": "quantitative", "title": by},
        "x2": {"field": "end"},
        "y": {"field": "count", "type": "quantitative", "title": "rows"},
        "y2": {"datum": 0},
        "color": {"value": "#4c78a8"},
        "tooltip": [{"field": "range", "title": by},
                    {"field": "count", "title": "rows", "format": ","}],
    }
    params = [{"name": "zoom", "select": {"type": "interval", "encodings": ["x"]},
               "bind": "scales"}]
    return _spec(title, rows, _RECT, encoding, params)


# ---- shared -------------------------------------------------------------------------------


def _numeric(df: pd.DataFrame, name: str) -> pd.Series:
    """The numeric column ``name`` (booleans and text refused with a one-line reason)."""
    import pandas as pd

    kind = df[name].dtype
    if pd.api.types.is_numeric_dtype(kind) and not pd.api.types.is_bool_dtype(kind):
        return df[name]
    advice = "draw a timeline" if pd.api.types.is_datetime64_any_dtype(kind) else \
        f"count its values with a bar chart (by={name!r})"
    raise ChartError(f"column `{name}` is not numeric ({kind}); {advice}")


def _positive(given: int | None, default: int, name: str) -> int:
    if given is None:
        return default
    if int(given) < 1:
        raise ChartError(f"{name} must be 1 or more, not {given}")
    return int(given)


def _number(value: Any) -> int | float:
    """A count or sum as JSON has it: whole numbers as ints, others rounded to 6 places."""
    number = float(value)
    return int(number) if number.is_integer() else round(number, 6)


def _no_rows(kind: str, title: str) -> Chart:
    """A chart that says "no rows": an empty result is an answer, not a failure."""
    encoding = {"text": {"field": "text"}}
    mark = {"type": "text", "fontSize": 16, "color": "#888"}
    spec = _spec(title, [{"text": "no rows"}], mark, encoding, [])
    return Chart(kind, spec, f"{kind}: no rows")


def _spec(title: str, rows: list[dict[str, Any]], mark: dict[str, Any],
          encoding: dict[str, Any], params: list[dict[str, Any]]) -> dict[str, Any]:
    """The Vega-Lite spec around a chart's rows, mark and encoding."""
    spec: dict[str, Any] = {
        "$schema": SCHEMA, "title": title, "width": WIDTH, "height": HEIGHT,
        "data": {"values": rows}, "mark": mark, "encoding": encoding,
    }
    if params:
        spec["params"] = params
    return spec


# a bar from x to x2 and y2 to y; clipped, so bars zoomed past the axis are not drawn over it
_RECT = {"type": "rect", "stroke": "white", "strokeWidth": 0.5, "clip": True}
# time axis labels as a log reader writes them: 24-hour clock, the date where the day changes
_TIME_LABELS = {"year": "%Y", "month": "%b %d", "week": "%b %d", "date": "%b %d",
                "hours": "%H:%M", "minutes": "%H:%M", "seconds": "%H:%M:%S",
                "milliseconds": "%H:%M:%S.%L"}
_DRAW = {"timeline": _timeline, "bar": _bar, "hist": _hist}
