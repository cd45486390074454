"""What ``%cortex`` lines and ``%%cortex`` cells say: one description, read by everything else.

The description is data: ``cell_options()`` lists the options of a ``%%cortex`` line and
``subcommands()`` the ``%cortex`` subcommands with their arguments, each a ``Switch`` (a flag
present or not), an ``Option`` (a flag with a value, maybe one of some ``choices``) or a
``Positional``. The query options (``--limit``, ``--dtypes``, ``--to``...) are not written
here: ``query_flags()`` reads them from ``cortex_nb.options.OPTIONS`` (every spec with a
``flag``), for cells and for ``%cortex fetch``, so a query option added there is parsed,
completed and handed to ``QueryOptions`` by the magic with nothing to change here. From the
description come the argparse parsers (``cell_parser()``, ``line_parser()``),
``parse_cell``/``parse_line`` (which the magic calls) and Tab completion
(``cortex_nb.notebook.completion``): an option or subcommand added here is parsed and completed
without touching either. What a subcommand does is routed by name in
``cortex_nb.notebook.commands``.

Cell::

    %%cortex [-o VAR] [-q] [--trace] [--dry-run] [--limit N] [--page-size N] [--raw]
             [--structs value|keep|flatten] [--timeout SECONDS] [--bg] [--cache] [--refresh]
             [--max-rows N] [--dtypes arrow|objects] [--to DIR [--overwrite]] [--parallel N]
             [--between START END | --since DURATION [--until TIME]]
             [--plot timeline|bar|hist [--by COLUMN] [--value COLUMN] [--bucket 1h] [--top N]]
    SELECT ...                               (SQL mode)
    %%cortex GET /query/v2/jobs              (REST mode: 'METHOD /path', the cell is the body)

Line: a subcommand (``%cortex connect sandbox``), a REST request with no body
(``%cortex GET /path``) or SQL on the line (``%cortex [-o VAR] SELECT ...``); an empty line is
``status``. Mistakes are one-line ``CortexCellError``\\ s naming the magic (an unknown flag
with the closest known one).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from cortex_nb import options as specs
from cortex_nb.notebook.errors import CortexCellError
from cortex_nb.options import given_by
from cortex_nb.results.charts import KINDS

__all__ = [
    "CELL_OPTIONS",
    "CELL_REQUEST",
    "CHART_OPTIONS",
    "HTTP_METHODS",
    "SUBCOMMANDS",
    "CellCommand",
    "LineCommand",
    "Option",
    "Positional",
    "Subcommand",
    "Switch",
    "cell_options",
    "cell_parser",
    "line_parser",
    "parse_cell",
    "parse_line",
    "query_flags",
    "split_line_sql",
    "subcommands",
]

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD")


# ---- the description's parts --------------------------------------------------------------


def _dest(flags: tuple[str, ...]) -> str:
    """The attribute a flag fills, as argparse names it (``--dry-run`` -> ``dry_run``)."""
    return flags[-1].lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Switch:
    """A flag that is present or not (``--trace``); ``dest`` defaults to its long name."""

    flags: tuple[str, ...]
    help: str = ""
    default: bool | None = False
    dest: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "dest", self.dest or _dest(self.flags))

    takes_value = False  # what completion asks of every flag
    choices = ()
    values = None


@dataclass(frozen=True)
class Option:
    """A flag followed by a value of ``kind`` (one of ``choices``, if given); ``values`` names
    where completion finds values to offer when there are no choices (``"regions"``...)."""

    flags: tuple[str, ...]
    kind: type = str
    help: str = ""
    choices: tuple[str, ...] = ()
    metavar: str | tuple[str, ...] | None = None
    default: Any = None
    values: str | None = None
    dest: str = ""
    nargs: int | None = None  # values after the flag when more than one (--between START END)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dest", self.dest or _dest(self.flags))

    takes_value = True


@dataclass(frozen=True)
class Positional:
    """A value given by place (``columns TABLE``); ``nargs`` as argparse: None (one), ``?``,
    ``*`` or ``+``; ``values`` names where completion finds values (``"tables"``...)."""

    dest: str
    help: str = ""
    kind: type = str
    nargs: str | None = None
    choices: tuple[str, ...] = ()
    default: Any = None
    metavar: str | None = None
    values: str | None = None


Argument = Switch | Option | Positional


@dataclass(frozen=True)
class Subcommand:
    """A ``%cortex`` subcommand: its name, what it is for, and its arguments in order."""

    name: str
    help: str
    arguments: tuple[Argument, ...] = ()
    query_options: bool = False  # it also takes every query option (``query_flags()``)

    @property
    def options(self) -> tuple[Switch | Option, ...]:
        """Its flags (switches and options), in order."""
        return tuple(a for a in self.arguments if not isinstance(a, Positional))

    @property
    def positionals(self) -> tuple[Positional, ...]:
        """Its positional arguments, in order."""
        return tuple(a for a in self.arguments if isinstance(a, Positional))


# ---- the description ----------------------------------------------------------------------

CHART_OPTIONS: tuple[Option, ...] = (  # how a cell's rows are drawn (cortex_nb.results.charts)
    Option(("--plot",), help="draw the rows: a timeline, the top values, a histogram",
           choices=KINDS),
    Option(("--by",), metavar="COLUMN", help="with --plot: the column split, counted or binned",
           values="result_columns"),
    Option(("--value",), metavar="COLUMN", help="with --plot: sum this column, not rows",
           values="result_columns"),
    Option(("--bucket",), metavar="DURATION", help="with --plot timeline: 30s, 10min, 1h, 1d"),
    Option(("--top",), int, "with --plot: how many values are shown apart", metavar="N"),
)
CELL_OPTIONS: tuple[Switch | Option, ...] = (  # the notebook's own; query options: OPTIONS
    Option(("-o", "--output"), metavar="VAR", help="store the result in VAR"),
    Switch(("--trace",), "show the request traces"),
    Switch(("--dry-run",), "show the request, send nothing"),
    Switch(("--raw",), "JSON as received, no DataFrame"),
    Switch(("-q", "--quiet"), "show nothing (with -o VAR)"),
    Switch(("--bg",), "run as a background query (with -o VAR)", dest="background"),
    *CHART_OPTIONS,
)
CELL_REQUEST = Positional("request", "METHOD /path for REST mode", nargs="*")

_CONNECT = Subcommand("connect", "connect the shared session (sandbox, tenant, replay)", (
    Positional("target", "sandbox, replay, or none for a tenant", nargs="?",
               choices=("sandbox", "replay")),
    Positional("cassette", "the cassette file to replay", nargs="?"),
    Option(("--record",), metavar="FILE", help="write every exchange to a cassette"),
    Option(("--profile",), help="a stored profile", values="profiles"),
    Option(("--url",), help="the API URL of a tenant"),
    Option(("--region",), help="the tenant's region", values="regions"),
    Option(("--instance",), help="the tenant's instance id"),
    Option(("--rows",), int, "sandbox: traffic rows to generate"),
    Option(("--seed",), int, "sandbox: the data's seed"),
    Option(("--port",), int, "sandbox: the port (0: any free one)"),
    Option(("--scan-rate",), float, "sandbox: rows a job scans per second (0: no job time)"),
    Switch(("--process",), "sandbox: run it in its own process", default=None),
))
_BACKGROUND = (
    Subcommand("jobs", "this session's background queries, or the service's jobs", (
        Switch(("--server",), "list the service's jobs instead"),
        Option(("--max",), int, "with --server: at most N jobs", default=20),
        Option(("--state",), help="with --server: only jobs in this state"),
    )),
    Subcommand("cancel", "cancel background queries, or a job on the service", (
        Positional("targets", "a background query's name or id, a job id, or all",
                   nargs="+", metavar="ID|NAME|all"),
    )),
    Subcommand("wait", "wait for background queries to end", (
        Positional("targets", "background queries (default: every running one)",
                   nargs="*", metavar="ID|NAME"),
        Option(("--timeout",), float, "stop waiting after N seconds"),
    )),
    Subcommand("fetch", "take up an existing job by its id and fetch its rows", (
        Positional("job_id", "the job's id"),
        Option(("-o", "--output"), metavar="VAR", help="store the result in VAR"),
        Switch(("-q", "--quiet"), "show nothing (with -o VAR)"),
        Switch(("--bg",), "fetch as a background query (with -o VAR)"),
    ), query_options=True),
)
SUBCOMMANDS: tuple[Subcommand, ...] = (
    _CONNECT,
    Subcommand("trace", "show the last N request traces", (
        Positional("n", "how many", kind=int, nargs="?", default=1),
    )),
    Subcommand("cache", "the result cache: list its entries, or clear it", (
        Positional("action", "list or clear", nargs="?", choices=("list", "clear"),
                   default="list"),
    )),
    Subcommand("disconnect", "forget the credentials (the sandbox keeps running)"),
    Subcommand("status", "where the session is connected, as whom, until when"),
    Subcommand("panel", "the credentials panel"),
    Subcommand("history", "this session's request traces as a table"),
    Subcommand("tables", "the documented log types", (
        Positional("pattern", "name filter: firewall, firewall.*", nargs="?", values="tables"),
    )),
    Subcommand("columns", "a log type's columns and struct subfields", (
        Positional("table", "a log type: firewall.traffic", values="tables"),
        Positional("pattern", "column filter: source, *_ip", nargs="?", values="columns"),
    )),
    *_BACKGROUND,
)


def query_flags() -> tuple[Switch | Option, ...]:
    """The query options that have a flag (``cortex_nb.options.OPTIONS``), as the grammar's
    switches and options; each fills the attribute named as the option (``max_rows``)."""
    flags: list[Switch | Option] = []
    for spec in specs.OPTIONS:
        if spec.flag is None:
            continue
        if spec.kind is bool:  # default None: "not given", so the notebook's default holds
            flags.append(Switch((spec.flag,), spec.help, default=None, dest=spec.name))
        else:
            flags.append(Option(
                (spec.flag,), specs.flag_type(spec), spec.help,
                choices=spec.choices, dest=spec.name, metavar=specs.metavar(spec),
                nargs=spec.nargs,
            ))
    return tuple(flags)


def cell_options() -> tuple[Switch | Option, ...]:
    """The options of a ``%%cortex`` line (the notebook's, then the query options), in the
    order help and completion show them."""
    return (*CELL_OPTIONS, *query_flags())


def subcommands() -> dict[str, Subcommand]:
    """The ``%cortex`` subcommands by name, in the order completion offers them (those that
    take query options with every one of them)."""
    return {command.name: _with_query_flags(command) for command in SUBCOMMANDS}


def _with_query_flags(command: Subcommand) -> Subcommand:
    if not command.query_options:
        return command
    return dataclasses.replace(command, arguments=(*command.arguments, *query_flags()))


# ---- argparse, built from the description -------------------------------------------------


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises a one-line cell error instead of exiting the kernel."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CortexCellError(f"%{self.prog}: {specs.flag_words(message)}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise CortexCellError(message or f"%{self.prog}: see %{self.prog}? for help")


def _add(parser: argparse.ArgumentParser, argument: Argument) -> None:
    """Add one described argument to ``parser``."""
    if isinstance(argument, Switch):
        parser.add_argument(*argument.flags, dest=argument.dest, action="store_true",
                            default=argument.default, help=argument.help)
    elif isinstance(argument, Option):
        parser.add_argument(
            *argument.flags, dest=argument.dest, type=argument.kind, help=argument.help,
            choices=argument.choices or None, metavar=argument.metavar, default=argument.default,
            nargs=argument.nargs,
        )
    else:
        parser.add_argument(
            argument.dest, nargs=argument.nargs, type=argument.kind, help=argument.help,
            choices=argument.choices or None, metavar=argument.metavar, default=argument.default,
        )


def cell_parser() -> argparse.ArgumentParser:
    """The argparse parser of a ``%%cortex`` line (its errors are ``CortexCellError``)."""
    parser = _ArgumentParser(prog="%cortex", add_help=False)
    for option in (*cell_options(), CELL_REQUEST):
        _add(parser, option)
    return parser


def line_parser() -> argparse.ArgumentParser:
    """The argparse parser of a ``%cortex`` line: one subparser per subcommand."""
    parser = _ArgumentParser(prog="cortex", add_help=False)
    chooser = parser.add_subparsers(dest="command")
    for command in subcommands().values():
        sub = chooser.add_parser(command.name, add_help=False, help=command.help)
        for argument in command.arguments:
            _add(sub, argument)
    return parser


# ---- parsing ------------------------------------------------------------------------------


@dataclass
class CellCommand:
    """A parsed ``%%cortex`` cell: SQL mode or REST mode, the notebook's options, and the query
    options the cell gave (``options``, by name: what is not there was not given, so the
    notebook's default holds). ``command.limit`` reads ``options.get("limit")``."""

    mode: str  # "sql" or "rest"
    text: str  # SQL, or the JSON body (may be empty)
    method: str | None = None
    path: str | None = None
    output: str | None = None
    trace: bool = False
    dry_run: bool = False
    raw: bool = False
    quiet: bool = False
    background: bool = False
    plot: str | None = None  # a chart instead of the frame: timeline, bar or hist
    by: str | None = None
    value: str | None = None
    bucket: str | None = None
    top: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def chart_options(self) -> dict[str, Any]:
        """What the cell gave of ``--by``, ``--value``, ``--bucket`` and ``--top``, by name."""
        given = {option.dest: getattr(self, option.dest) for option in CHART_OPTIONS[1:]}
        return {name: value for name, value in given.items() if value is not None}

    def __getattr__(self, name: str) -> Any:
        """A query option by name, None when the cell did not give it (as the fields read
        before the options had one place)."""
        if name in _QUERY_OPTION_NAMES:
            return self.__dict__.get("options", {}).get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


_QUERY_OPTION_NAMES = frozenset(spec.name for spec in specs.OPTIONS)


@dataclass(frozen=True)
class LineCommand:
    """A parsed ``%cortex`` subcommand: its name and its arguments (as argparse gives them)."""

    name: str
    args: argparse.Namespace = field(default_factory=argparse.Namespace)


def _words(text: str, magic: str) -> list[str]:
    """``text`` split as a shell would (a trailing ``# note`` is a comment)."""
    try:
        return shlex.split(text, comments=True)
    except ValueError as exc:  # an unclosed quote
        raise CortexCellError(f"{magic}: {exc}") from None


def _parsed(parser: argparse.ArgumentParser, words: list[str]) -> argparse.Namespace:
    """``words`` parsed; an unknown flag is an error naming the closest known one."""
    args, unknown = parser.parse_known_args(words)
    if unknown:
        command = subcommands().get(getattr(args, "command", None) or "")
        known = command.options if command is not None else cell_options()
        flags = [flag for option in known for flag in option.flags]
        close = next((c for w in unknown for c in difflib.get_close_matches(w, flags, 1)), None)
        hint = f"; did you mean {close}?" if close else ""
        parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    return args


def parse_cell(line: str, cell: str) -> CellCommand:
    """Parse the magic line and the cell body into a ``CellCommand``."""
    args = _parsed(cell_parser(), _words(line, "%%cortex"))
    notebook = {option.dest: getattr(args, option.dest) for option in CELL_OPTIONS}
    command = {**notebook, "options": given_by(args)}
    request, body = list(args.request), cell
    if not request:  # REST mode may also be given on the cell's first line
        first, _, rest = cell.strip().partition("\n")
        if first.split(" ", 1)[0].upper() in HTTP_METHODS and "/" in first:
            request, body = first.split(), rest
    _check_chart(command, request)
    if not request:
        sql = cell.strip()
        if sql.endswith(";"):  # as in IPython: a trailing ';' keeps the cell quiet
            sql, command["quiet"] = sql.rstrip(";").rstrip(), True
        if not sql:
            raise CortexCellError("%%cortex: the cell is empty; write a SQL query or 'GET /path'")
        return CellCommand(mode="sql", text=sql, **command)
    method_ok = request[0].upper() in HTTP_METHODS
    if len(request) != 2 or not method_ok or not request[1].startswith("/"):
        raise CortexCellError(f"%%cortex: expected 'METHOD /path', got {' '.join(request)!r}")
    return CellCommand(
        mode="rest", text=body.strip(), method=request[0].upper(), path=request[1], **command
    )


def _check_chart(command: dict[str, Any], request: list[str]) -> None:
    """The chart options go with ``--plot``, and ``--plot`` with a frame the cell shows."""
    given = [o.flags[0] for o in CHART_OPTIONS[1:] if command[o.dest] is not None]
    if not command["plot"]:
        if given:
            raise CortexCellError(f"%%cortex: {given[0]} goes with --plot timeline|bar|hist")
        return
    other = next((flag for flag, on in (
        ("REST mode", bool(request)), ("--raw", command["raw"]), ("--bg", command["background"]),
        ("--to", command["options"].get("to") is not None),
    ) if on), None)
    if other:
        raise CortexCellError(f"%%cortex: --plot draws the rows of a SQL query in the cell; "
                              f"not with {other}")


def parse_line(line: str) -> CellCommand | LineCommand:
    """Parse a ``%cortex`` line: SQL or a REST request on the line (a ``CellCommand``, run as
    a cell would be), else a subcommand (``LineCommand``; an empty line is ``status``)."""
    options, sql = split_line_sql(line)
    if sql:
        return parse_cell(options, sql)
    words = _words(line, "%cortex")
    if words and words[0].upper() in HTTP_METHODS:
        return parse_cell(line, "")  # IPython refuses a cell magic with no body
    args = _parsed(line_parser(), words or ["status"])
    return LineCommand(args.command, args)


_SQL_START = re.compile(r"(?:^|\s)(?=(?:select|with)\b)", re.IGNORECASE)


def split_line_sql(line: str) -> tuple[str, str]:
    """``(options, sql)`` of a line holding SQL (``-o x SELECT ...``), else ``(line, "")``.

    The SQL is taken from the raw line (not shell-split), so its quotes arrive untouched.
    """
    match = _SQL_START.search(line)
    if match is None:
        return line, ""
    options = line[: match.start()].strip()
    if not _only_options(options.split()):  # `tables SELECT`: a command, not SQL
        return line, ""
    return options, line[match.end():].strip()


def _only_options(words: list[str]) -> bool:
    """Whether ``words`` are flags and their values only (``-o x --between START END``)."""
    values_left = 0
    for word in words:
        if word.startswith("-"):
            values_left = _values_after(word)
        elif values_left:
            values_left -= 1
        else:
            return False
    return True


def _values_after(flag: str) -> int:
    """How many values may follow ``flag`` on a line: its ``nargs``, else one."""
    for option in cell_options():
        if flag in option.flags and isinstance(option, Option) and isinstance(option.nargs, int):
            return option.nargs
    return 1
