"""What a query takes, as one frozen, checked value: ``QueryOptions``.

Every path that runs a query builds its options here and nowhere else: the Python API
(``QueryService.query/start/job/fetch/submit_query/submit_fetch``), the ``%%cortex`` magic (its
traitlets are the notebook's defaults, a cell's flags override them), and the ``cortex-nb query``
command. The cache key and datasets read the same value, so an option means the same on every
path.

``OPTIONS`` describes each option once (name, kind, allowed values, help, flag): the checks, the
magic's and the command line's flags and their completion all come from it. ``properties`` is
the only thing sent to the service (as the job's ``params.properties``); an unknown keyword is
refused before anything is sent, naming the closest option, never passed on as a property.

Zero means "none" for ``max_rows`` (no guardrail) and ``timeout`` (no time limit), as it does
on the command line and in ``%config``; in Python, ``None`` says the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from cortex_nb.exceptions import ConfigurationError
from cortex_nb.times import naive_note, parse_duration, parse_instant, resolve_window
from cortex_nb.wire import DEFAULT_PAGE_SIZE, DEFAULT_RESULT_FORMAT, MAX_PAGE_SIZE, RESULT_FORMATS

__all__ = [
    "DEFAULT_MAX_ROWS",
    "DEFAULT_QUERY_TIMEOUT",
    "OPTIONS",
    "OptionError",
    "OptionSpec",
    "QueryOptions",
    "add_arguments",
    "flag_type",
    "flag_words",
    "given",
    "given_by",
]

DEFAULT_QUERY_TIMEOUT = 3600.0  # seconds a query may take, from submit to its last page
# rows a query may bring into memory: half a million traffic rows grow the kernel by about
# 2.5 GiB (bench/bench_guardrail.py), which a 16 GB laptop holds; a million, by 4.6 GiB
DEFAULT_MAX_ROWS = 500_000
STRUCT_MODES = ("value", "keep", "flatten")
DTYPE_MODES = ("objects", "arrow")


class OptionError(ConfigurationError, TypeError):
    """An unknown option, or a value an option does not take (raised before anything is sent)."""


@dataclass(frozen=True)
class OptionSpec:
    """One query option: its kind, allowed values, help line and command-line flag."""

    name: str
    kind: type
    help: str
    choices: tuple[str, ...] = ()
    flag: str | None = None  # the --flag of the magic and the CLI (None: Python only)
    none_is_zero: bool = False  # 0 means None ("no limit")
    nargs: int | None = None  # values the flag takes when more than one (--between START END)
    metavar: str | None = None  # what the flag's value is called in help (default: by kind)


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("limit", int, "fetch at most N rows", flag="--limit"),
    OptionSpec(
        "max_rows", int, "refuse results of more than N rows in memory (0: no guardrail)",
        flag="--max-rows", none_is_zero=True,
    ),
    OptionSpec("page_size", int, f"rows per results page (1..{MAX_PAGE_SIZE:,})",
               flag="--page-size"),
    OptionSpec("parallel", int, "results pages fetched at once", flag="--parallel"),
    OptionSpec(
        "structs", str, "{value: ...} structs: their value, kept whole, or flattened",
        choices=STRUCT_MODES, flag="--structs",
    ),
    OptionSpec(
        "dtypes", str, "lists and structs: Python objects or Arrow-backed (ArrowDtype)",
        choices=DTYPE_MODES, flag="--dtypes",
    ),
    OptionSpec(
        "timeout", float, "cancel the query after N seconds (0: never)", flag="--timeout",
        none_is_zero=True,
    ),
    OptionSpec("to", str, "stream the rows into a Parquet dataset in DIR", flag="--to"),
    OptionSpec("overwrite", bool, "with --to: replace a dataset there", flag="--overwrite"),
    OptionSpec(
        "between", str, "only rows in the window [START, END) (ISO times, 'now-2h'; naive: UTC)",
        flag="--between", nargs=2, metavar=("START", "END"),
    ),
    OptionSpec("since", str, "only rows of the DURATION (24h, 7d) before now, or --until",
               flag="--since", metavar="DURATION"),
    OptionSpec("until", str, "with --since: the window ends at TIME, not now", flag="--until",
               metavar="TIME"),
    OptionSpec("cache", bool, "reuse a cached result, or keep this one", flag="--cache"),
    OptionSpec("refresh", bool, "run it again and cache the new result", flag="--refresh"),
    OptionSpec(
        "split", str, "with a window: one job per DURATION of it (1h, 30m, 1d), or auto",
        flag="--split", metavar="DURATION",
    ),
    OptionSpec("resume", bool, "with --split and --to: fetch only the windows not yet written",
               flag="--resume"),
    OptionSpec("result_format", str, "how the service sends rows", choices=RESULT_FORMATS),
    OptionSpec("properties", dict, "job properties sent to the service (params.properties)"),
)
_SPECS = {spec.name: spec for spec in OPTIONS}


@dataclass(frozen=True)
class QueryOptions:
    """Everything a query takes besides its SQL, checked when made; change with ``replace``.

    - ``limit``: fetch at most that many rows (None: all).
    - ``max_rows``: the guardrail: a result of more rows is refused before it is downloaded
      (None or 0: no guardrail). It does not apply with ``to``.
    - ``page_size``, ``parallel``: rows per results page, pages fetched at once.
    - ``structs``: ``{"value": ...}`` structs become their value, stay whole, or are flattened.
    - ``dtypes``: lists and structs as Python objects or ``ArrowDtype`` columns.
    - ``timeout``: seconds from submit to the last page, retries included (None or 0: none).
    - ``to`` (+ ``overwrite``): stream the rows into a Parquet dataset there.
    - ``between=(start, end)``, or ``since`` (a duration, e.g. ``"24h"``) with an optional
      ``until``: only rows in that time window, on each log table's time column
      (``cortex_nb.sql.timefilter``); resolved when the query is sent, so "now" is then.
    - ``cache``, ``refresh``: keep the result in the result cache and reuse it / run again.
    - ``split``: run one job per time window of that length (``"1h"``, a ``timedelta``) or
      ``"auto"`` (windows cut again while too full), the frames put together in time order.
    - ``resume`` (with ``split`` and ``to``): write only the windows the dataset still lacks.
    - ``result_format``: ``valuesDictionary`` (default) or ``valuesArray``.
    - ``properties``: job properties, the only thing sent to the service with the SQL.
    """

    limit: int | None = None
    max_rows: int | None = DEFAULT_MAX_ROWS
    page_size: int = DEFAULT_PAGE_SIZE
    parallel: int = 4
    structs: str = "value"
    dtypes: str = "objects"
    timeout: float | None = DEFAULT_QUERY_TIMEOUT
    to: str | os.PathLike[str] | None = None
    overwrite: bool = False
    between: tuple[Any, Any] | None = None
    since: str | timedelta | None = None
    until: Any = None
    cache: bool = False
    refresh: bool = False
    split: str | timedelta | None = None
    resume: bool = False
    result_format: str = DEFAULT_RESULT_FORMAT
    properties: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for spec in OPTIONS:
            value = _checked(spec, getattr(self, spec.name))
            object.__setattr__(self, spec.name, value)
        self._check_together()

    def _check_together(self) -> None:
        """Options that only make sense with, or without, another one."""
        if self.overwrite and self.to is None:
            raise OptionError("overwrite=True (--overwrite) replaces a dataset: give to=DIR too.")
        if self.to is not None and (self.cache or self.refresh):
            raise OptionError(
                "The result cache keeps DataFrames and to=DIR writes a dataset: choose one "
                "(drop cache/refresh, or to)."
            )
        try:
            resolve_window(self.between, self.since, self.until)
        except ConfigurationError as exc:
            raise OptionError(str(exc)) from None
        self._check_split()

    def _check_split(self) -> None:
        """``split`` cuts a window into jobs; ``resume`` continues such a run into a dataset."""
        if self.split is not None and self.between is None and self.since is None:
            raise OptionError(
                "split= (--split) cuts a time window into jobs: give the window too, "
                "between=(start, end) (--between START END) or since='7d' (--since 7d)."
            )
        if self.resume and (self.split is None or self.to is None):
            raise OptionError(
                "resume=True (--resume) continues a split run into a dataset: give split= "
                "(--split) and to=DIR (--to) as the first run did."
            )
        if self.resume and self.overwrite:
            raise OptionError("--resume keeps the windows already written; --overwrite replaces "
                              "them: choose one.")
        if self.split is not None and (self.cache or self.refresh):
            raise OptionError("The result cache keeps one job's result; split= (--split) runs "
                              "many: drop cache/refresh, or split.")

    # -- making ------------------------------------------------------------------------------
    @classmethod
    def build(
        cls, base: QueryOptions | Mapping[str, Any] | None = None, /, *, doing: str = "query()",
        **changes: Any,
    ) -> QueryOptions:
        """``base`` (default: the built-in defaults) with ``changes``; an unknown name is an
        ``OptionError`` naming the closest option (``doing`` says who was called)."""
        check_names(changes, doing)
        if base is None:
            return cls(**changes)
        if isinstance(base, Mapping):
            check_names(base, doing)
            return cls(**{**base, **changes})
        if not isinstance(base, QueryOptions):
            raise OptionError(
                f"{doing}: options must be a QueryOptions (or a dict of options), not "
                f"{type(base).__name__}."
            )
        return base.replace(**changes) if changes else base

    def replace(self, **changes: Any) -> QueryOptions:
        """A copy with ``changes`` (checked like a new value)."""
        check_names(changes, "QueryOptions.replace()")
        return dataclasses.replace(self, **changes)

    # -- reading -----------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """Every option by name (``properties`` as a plain dict)."""
        values = {spec.name: getattr(self, spec.name) for spec in OPTIONS}
        values["properties"] = dict(self.properties)
        return values

    def shape(self) -> dict[str, Any]:
        """What shapes a frame of the result (for cache keys): structs, dtypes, limit, format,
        and the job properties (they may change what the service returns)."""
        return {
            "structs": self.structs, "dtypes": self.dtypes, "limit": self.limit,
            "result_format": self.result_format, "properties": dict(self.properties),
        }

    def window(self, now: datetime | None = None) -> tuple[datetime, datetime] | None:
        """The time window ``[start, end)`` in UTC as of ``now`` (default: this moment), or
        None when the options name none."""
        return resolve_window(self.between, self.since, self.until, now)

    def window_note(self) -> str | None:
        """One line naming the times given without an offset (read as UTC), or None."""
        return naive_note(self.between, self.until)

    @property
    def guardrail(self) -> int | None:
        """The rows a result may bring into memory: ``max_rows``, or None when ``to`` streams
        them to disk instead."""
        return None if self.to is not None else self.max_rows

    @property
    def wanted_page_size(self) -> int:
        """The page size asked of the service: ``page_size``, or ``limit`` when smaller."""
        return self.page_size if self.limit is None else min(self.page_size, self.limit)

    def __repr__(self) -> str:
        changed = [
            f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
            if getattr(self, f.name) != _default(f)
        ]
        return f"QueryOptions({', '.join(changed)})"


def given(**values: Any) -> dict[str, Any]:
    """The options a command line gave: ``None`` means "not given" and is dropped, ``0`` means
    "none" for the options that say so (``--max-rows 0``, ``--timeout 0``)."""
    return {name: value for name, value in values.items() if value is not None}


def given_by(parsed: Any) -> dict[str, Any]:
    """The options a parsed command line gave (an argparse ``Namespace``, a parsed cell): each
    flagged option's attribute, left out when not given (None, or False for a switch)."""
    values = {spec.name: getattr(parsed, spec.name, None) for spec in OPTIONS if spec.flag}
    return given(**{name: None if value is False else value for name, value in values.items()})


def add_arguments(parser: Any, exclude: tuple[str, ...] = ()) -> None:
    """Add every flagged option to an ``argparse`` parser (``dest`` is the option's name,
    default None: "not given"), so that a new option reaches every command line at once."""
    for spec in OPTIONS:
        if spec.flag is None or spec.name in exclude:
            continue
        if spec.kind is bool:
            parser.add_argument(spec.flag, dest=spec.name, action="store_true", default=None,
                                help=spec.help)
        else:
            parser.add_argument(
                spec.flag, dest=spec.name, type=flag_type(spec), choices=spec.choices or None,
                default=None, help=spec.help, nargs=spec.nargs, metavar=metavar(spec),
            )


def metavar(spec: OptionSpec) -> str | tuple[str, ...] | None:
    """What a flag's value is called in help: the spec's own name for it, else by kind."""
    if spec.choices:
        return None
    return spec.metavar or _METAVARS.get(spec.kind, "VALUE")


_METAVARS = {int: "N", float: "SECONDS", str: "DIR"}


def check_names(values: Mapping[str, Any], doing: str) -> None:
    """Refuse a name that is not an option, naming the closest one."""
    for name in values:
        if name not in _SPECS:
            raise OptionError(_unknown(name, doing))


def _unknown(name: str, doing: str) -> str:
    close = difflib.get_close_matches(name, list(_SPECS), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (
        f"{doing} got an unknown option {name!r}: {hint}Options: {', '.join(_SPECS)}. Job "
        "properties for the service go in properties={...}."
    )


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


# -- checking one option ---------------------------------------------------------------------
def _checked(spec: OptionSpec, value: Any) -> Any:
    """``value`` as ``spec`` takes it (0 -> None where zero means none), or ``OptionError``."""
    return _CHECKS[spec.name](spec, value)


def _whole(spec: OptionSpec, value: Any, low: int = 1, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"{spec.name} must be a whole number, not {value!r}.")
    if value < low or (high is not None and value > high):
        span = f"{low:,}..{high:,}" if high is not None else f"at least {low:,}"
        raise OptionError(f"{spec.name} must be {span}, not {value!r}.")
    return value


def _optional_whole(spec: OptionSpec, value: Any) -> int | None:
    if value is None or (spec.none_is_zero and value == 0 and not isinstance(value, bool)):
        return None
    return _whole(spec, value)


def _seconds(spec: OptionSpec, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise OptionError(f"{spec.name} must be seconds (a number, or None), not {value!r}.")
    if value == 0:
        return None
    if value < 0:
        raise OptionError(f"{spec.name} must be positive seconds (0 or None: no limit), "
                          f"not {value!r}.")
    return float(value)


def _choice(spec: OptionSpec, value: Any) -> str:
    if value not in spec.choices:
        raise OptionError(
            f"{spec.name}={value!r}: use {', '.join(repr(c) for c in spec.choices)}."
        )
    return value


def _flag(spec: OptionSpec, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f"{spec.name} must be True or False, not {value!r}.")
    return value


def _path(spec: OptionSpec, value: Any) -> str | os.PathLike[str] | None:
    if value is None or isinstance(value, str | os.PathLike):
        if isinstance(value, str) and not value.strip():
            raise OptionError("to must name a directory for the dataset, not an empty string.")
        return value
    raise OptionError(f"to must be a directory path (str or Path), not {type(value).__name__}.")


def _instants(spec: OptionSpec, value: Any) -> tuple[Any, Any] | None:
    """``between``: None, or two times that ``parse_instant`` reads (kept as given: 'now-2h'
    is read when the query is sent)."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple) or len(value) != 2:
        raise OptionError(
            f"between takes two times (start, end), not {value!r}: e.g. "
            "between=('2026-12-01', '2026-12-02') or --between 2026-12-01 2026-12-02."
        )
    for moment in value:
        _instant(spec, moment)
    return tuple(value)


def _kept_once_read(reader: Callable[[Any], Any]) -> Callable[[OptionSpec, Any], Any]:
    """A check that keeps a value as given (``'now-2h'`` is read when the query is sent) once
    ``reader`` can read it; None passes."""

    def check(spec: OptionSpec, value: Any) -> Any:
        if value is not None:
            try:
                reader(value)
            except ConfigurationError as exc:
                raise OptionError(f"{spec.name}: {exc}") from None
        return value

    return check


_instant = _kept_once_read(parse_instant)  # ``until``, or one end of ``between``
_duration = _kept_once_read(parse_duration)  # ``since``


def _split(spec: OptionSpec, value: Any) -> str | timedelta | None:
    """A window length ``parse_duration`` reads (``"1h"``, a ``timedelta``), or ``"auto"``."""
    if value is None or value == "auto":
        return value
    try:
        parse_duration(value)  # positive, or refused
    except ConfigurationError:
        pass
    else:
        return value
    raise OptionError(
        f"split must be a window length such as '1h', '30m' or '1d' (or a timedelta), or "
        f"'auto', not {value!r}."
    )


def _properties(spec: OptionSpec, value: Any) -> Mapping[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise OptionError(
            "properties must be a dict of job properties with string keys, e.g. "
            "properties={'maxRows': 10}."
        )
    return MappingProxyType(dict(value))


_CHECKS: dict[str, Callable[[OptionSpec, Any], Any]] = {
    "limit": lambda spec, v: None if v is None else _whole(spec, v),
    "max_rows": _optional_whole,
    "page_size": lambda spec, v: _whole(spec, v, 1, MAX_PAGE_SIZE),
    "parallel": lambda spec, v: _whole(spec, v, 1, 64),
    "structs": _choice,
    "dtypes": _choice,
    "timeout": _seconds,
    "to": _path,
    "overwrite": _flag,
    "between": _instants,
    "since": _duration,
    "until": _instant,
    "cache": _flag,
    "refresh": _flag,
    "split": _split,
    "resume": _flag,
    "result_format": _choice,
    "properties": _properties,
}


# ---- the flags' words: the magic and the command line --------------------------------------
# The library's messages name an option both ways, for Python and for the flags ("resume=True
# (--resume)", "since='24h' (--since 24h)"), and a check's message starts with the option's
# name ("parallel must be ..."). A cell or a command line has only flags: ``flag_words`` keeps
# those words, and words argparse's own messages about a flag the same way.
_FLAGS = {spec.name: spec.flag for spec in OPTIONS if spec.flag}
_BY_FLAG = {spec.flag: spec for spec in OPTIONS if spec.flag}
_WORDING: tuple[tuple[re.Pattern[str], Any], ...] = (
    (re.compile(r"^argument ([-\w]+): expected .*"), lambda m: _needs(m.group(1))),
    (re.compile(r"^argument ([-\w]+): (?=must\b)"), r"\1 "),
    (re.compile(r"^argument ([-\w]+): "), r"\1: "),
    (re.compile(r" \(or a timedelta\)"), ""),
    (re.compile(r"^(\w+)(?= must\b|:)"), lambda m: _FLAGS.get(m.group(1), m.group(1))),
    (re.compile(r" \((\w+)=[^()]*\)"), lambda m: "" if m.group(1) in _FLAGS else m.group(0)),
    (re.compile(r"\b\w+=(?:\([^()]*\)|'[^']*'|\S*) \((--[^()]+)\)"), r"\1"),
    (re.compile(r"\bdrop cache/refresh, or (\w+)"), r"drop --cache/--refresh, or --\1"),
)


def flag_words(message: str) -> str:
    """``message`` as a cell or a command line says it: options by their flags only."""
    for pattern, words in _WORDING:
        message = pattern.sub(words, message)
    return message


def _needs(flag: str) -> str:
    """What a flag given without (all) its values needed: ``--between needs two values:
    --between START END``."""
    spec = _BY_FLAG.get(flag)
    names = metavar(spec) if spec is not None else None
    if not names:
        return f"{flag} needs a value"
    names = (names,) if isinstance(names, str) else names
    count = "a value" if len(names) == 1 else "two values" if len(names) == 2 else "values"
    return f"{flag} needs {count}: {flag} {' '.join(names)}"


def flag_type(spec: OptionSpec) -> Callable[[str], Any]:
    """What argparse makes of one value of ``spec``'s flag; a value it cannot take is an
    ``ArgumentTypeError`` that says what the flag takes (the option's check does the rest)."""
    if spec.name == "between":
        return _between_value
    if spec.choices or spec.kind not in _NUMBERS:
        return str
    kind, words = _NUMBERS[spec.kind]

    def number(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {words}, not {text!r}") from None

    return number


_NUMBERS = {int: (int, "a whole number"), float: (float, "seconds (a number)")}


def _between_value(text: str) -> str:
    """One end of ``--between``, kept as written once it reads as a time: the value after a
    lone START is often the SQL, so the message says what the flag takes."""
    try:
        parse_instant(text)
    except ConfigurationError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time; it takes two, START and END (ISO times, 'now', "
            "'now-2h'), e.g. --between 2026-12-01 now"
        ) from None
    return text
