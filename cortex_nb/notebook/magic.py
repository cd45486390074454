"""The ``%cortex`` line magic and ``%%cortex`` cell magic.

Thin by design: parse (``grammar.parse_cell``/``parse_line``) -> run through the library
(``connection``/``query``) -> display. What a line or cell may say is described once in
``cortex_nb.notebook.grammar`` (parsing and Tab completion read it); what each ``%cortex``
subcommand does is routed by name in ``cortex_nb.notebook.commands``; REST mode is
``cortex_nb.notebook.rest``. Options are traitlets (``%config CortexMagics.page_size = 5000``).
Every ``CortexError`` reaches the notebook as one line (``CortexCellError``), so the cell fails
(papermill and nbval stop) without a traceback and without a secret.

Line magic::

    %cortex connect sandbox [--rows N] [--seed S] [--port P] [--process]
                            (restarts it for other options; --process: in its own process)
    %cortex connect [--profile NAME] [--url URL] [--region R] [--instance ID]
    %cortex connect ... --record FILE      (write every exchange to a cassette)
    %cortex connect replay FILE            (serve a cassette offline and connect to it)
    %cortex disconnect | status | panel | history | trace [N]
    %cortex tables [PATTERN]                (the documented log types)
    %cortex columns TABLE [PATTERN]         (a log type's columns and struct subfields)
    %cortex cache list | clear             (the result cache)
    %cortex GET /query/v2/jobs [-o VAR]     (one REST request with no body)
    %cortex jobs [--server [--max N] [--state S]] | cancel ID|NAME|all | wait [ID|NAME ...]
    %cortex fetch JOB_ID [-o VAR] [--bg] [-q] [QUERY OPTIONS]
                                            (take up an existing job by its id)

Cell magic::

    %%cortex [-o VAR] [-q] [--trace] [--dry-run] [--raw] [--bg] [QUERY OPTIONS]
    SELECT ... FROM `firewall.traffic` WHERE source_ip.value = {ip}

    %%cortex --plot timeline|bar|hist [--by COLUMN] [--value COLUMN] [--bucket 1h] [--top N]
    SELECT ...                             (a chart of the rows instead of the frame)

    %%cortex GET /query/v2/jobs            (REST mode; the cell is the JSON body)

QUERY OPTIONS are the flags of ``cortex_nb.options.OPTIONS`` (``--limit N``, ``--max-rows N``,
``--page-size N``, ``--parallel N``, ``--structs value|keep|flatten``, ``--dtypes
objects|arrow``, ``--timeout SECONDS``, ``--to DIR [--overwrite]``, ``--between START END``,
``--since DURATION [--until TIME]``, ``--split DURATION|auto [--resume]``, ``--cache``,
``--refresh``). The traitlets of the same names are the notebook's defaults
(``query_defaults``); what a cell or line gives overrides them (``query_options``), and the one
``QueryOptions`` goes to the library on every path: a cell, ``--bg``, ``%cortex fetch``.

``--bg -o VAR`` returns at once: VAR holds the background query's handle (a
``BackgroundQuery``) while a status line in the cell follows it, then the DataFrame (with
``--to``, the Dataset).

A trailing ``;`` or ``-q`` keeps the cell quiet; ``%cortex [-o VAR] SELECT ...`` runs SQL on the
line, and a ``%%cortex GET /path`` cell with nothing below runs as the line magic. A result of
more than ``--max-rows`` rows (``CortexMagics.max_rows``) stops before it is downloaded;
``--to DIR`` streams it into a Parquet dataset instead and shows the dataset's handle.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from traitlets import Bool, Enum, Float, Int, TraitError, observe, validate

from cortex_nb import wire
from cortex_nb.notebook import rest
from cortex_nb.notebook.commands import run_command
from cortex_nb.notebook.completion import register_completer
from cortex_nb.notebook.connection import Connection, get_connection
from cortex_nb.notebook.errors import CortexCellError, guardrail_advice, one_line_errors
from cortex_nb.notebook.grammar import CellCommand, parse_cell, parse_line
from cortex_nb.notebook.status import BackgroundLine, ProgressLine, show_traces
from cortex_nb.options import DEFAULT_MAX_ROWS, DEFAULT_QUERY_TIMEOUT, OptionError, QueryOptions
from cortex_nb.query.background import BackgroundQuery
from cortex_nb.query.fanout import WindowsMissing, preview
from cortex_nb.query.replies import JOBS
from cortex_nb.results.cache import current_time_function
from cortex_nb.sql.params import qualify_tables, render_parameters
from cortex_nb.sql.splitting import check_splittable
from cortex_nb.sql.timefilter import bounded
from cortex_nb.times import moves_with_now

__all__ = [
    "CellCommand",
    "CortexCellError",
    "CortexMagics",
    "load_ipython_extension",
    "parse_cell",
]

# the notebook's defaults for these query options are traitlets of the same name
QUERY_DEFAULTS = ("page_size", "parallel", "structs", "dtypes", "timeout", "max_rows", "cache")


@magics_class
class CortexMagics(Magics):
    """``%cortex`` and ``%%cortex``: query the Cortex Data Lake from notebooks.

    ``Magics`` is a traitlets ``Configurable``: the traits below are ``%config`` options. The
    first seven are the notebook's query defaults (``QUERY_DEFAULTS``), checked as a query's
    options are; a cell's flags override them.
    """

    page_size = Int(10_000, help="Rows per results page (1..100000).").tag(config=True)
    parallel = Int(4, help="Results pages fetched at once when the row count is known.").tag(
        config=True
    )
    structs = Enum(
        ["value", "keep", "flatten"], "value",
        help="How {value: ...} structs become columns: their value, kept, or flattened.",
    ).tag(config=True)
    max_rows = Int(
        DEFAULT_MAX_ROWS,
        help="A result of more rows is refused before it is downloaded (0: no guardrail); "
        "--limit fetches fewer, --to DIR streams them to disk.",
    ).tag(config=True)
    dtypes = Enum(
        ["arrow", "objects"], "objects",
        help="Lists and structs in frames: Python objects, or Arrow-backed (ArrowDtype: less "
        "memory, but pandas cannot read them back from Parquet files it writes).",
    ).tag(config=True)
    timeout = Float(
        DEFAULT_QUERY_TIMEOUT, help="Seconds a query may take before it is cancelled (0: no limit)."
    ).tag(config=True)
    cache = Bool(
        False, help="Keep every query's result in the result cache and reuse it (like --cache), "
        "except for queries that use the current time.",
    ).tag(config=True)
    show_trace = Bool(False, help="Show request traces after every cell.").tag(config=True)
    progress = Bool(True, help="Show a live progress line while a query runs.").tag(config=True)
    max_background_jobs = Int(
        4, min=1, help="Background queries (%%cortex --bg) that run at once; the rest wait."
    ).tag(config=True)
    cancel_on_shutdown = Bool(
        True, help="Cancel running background queries when the kernel shuts down or restarts."
    ).tag(config=True)

    @observe("max_background_jobs", "cancel_on_shutdown")
    def _background_options_changed(self, change: Any = None) -> None:
        self.apply_background_options()

    def apply_background_options(self) -> None:
        """Hand the background options to the connection's jobs (at load and on %config)."""
        jobs = self.connection.jobs
        jobs.max_running = self.max_background_jobs
        jobs.cancel_at_exit = self.cancel_on_shutdown

    @property
    def connection(self) -> Connection:
        """The shared connection."""
        return get_connection()

    # -- the two entry points ------------------------------------------------------------------
    @line_magic
    def cortex(self, line: str) -> Any:
        """Manage the shared connection (connect, status, ...), send one REST request
        (``%cortex GET /x``) or run the SQL on the line (``%cortex [-o VAR] SELECT ...``)."""
        command = parse_line(line)
        if isinstance(command, CellCommand):
            return self._run_cell(command)
        with one_line_errors(self.connection):
            return run_command(self, command)

    @cell_magic("cortex")
    def cortex_cell(self, line: str, cell: str) -> Any:
        """Run a SQL query job (default) or a REST request ('METHOD /path' + JSON body)."""
        return self._run_cell(parse_cell(line, cell))

    def _run_cell(self, command: CellCommand) -> Any:
        """Run a parsed cell; its result goes to ``-o VAR`` and, unless quiet, to the cell."""
        if command.background and not command.dry_run:
            with one_line_errors(self.connection):
                return self._run_background(command)
        with one_line_errors(self.connection):
            run = self._run_rest if command.mode == "rest" else self._run_sql
            result = run(command)
        if command.output and result is not None:
            self.shell.user_ns[command.output] = result
        if command.quiet or not command.plot:
            return None if command.quiet else result
        with one_line_errors(self.connection):  # a chart's mistake keeps the rows in -o VAR
            return _chart(command, result)

    # -- query options -------------------------------------------------------------------------
    def query_defaults(self) -> QueryOptions:
        """The notebook's defaults for every query: the traitlets (``%config CortexMagics.*``)."""
        return QueryOptions(
            page_size=self.page_size, parallel=self.parallel, structs=self.structs,
            dtypes=self.dtypes, timeout=self.timeout, max_rows=self.max_rows, cache=self.cache,
        )

    def query_options(
        self, given: dict[str, Any], sql: str | None = None, doing: str = "%%cortex"
    ) -> QueryOptions:
        """One query's options: those a cell or line gave (``given``) over the notebook's
        defaults; ``doing`` names the magic in errors.

        The ``cache`` default (``CortexMagics.cache``) keeps every result, but not one written
        to a dataset, and not one that depends on when the query ran unless the cell asks.
        """
        defaults = self.query_defaults()
        if defaults.cache and not given.get("cache"):
            clock = current_time_function(sql) if sql else None
            if moves_with_now(given.get("between"), given.get("since"), given.get("until")):
                clock = clock or "a time window relative to now"
            if "to" in given or "split" in given or clock:
                defaults = defaults.replace(cache=False)
            if clock and "to" not in given and "split" not in given:
                print(f"Not cached: the query uses {clock}, so its result changes with time; "
                      "add --cache to keep it anyway.")
        return QueryOptions.build(defaults, doing=doing, **given)

    @validate(*QUERY_DEFAULTS)
    def _check_query_default(self, proposal: Any) -> Any:
        """A ``%config`` default is checked as a query's option is, with the same message."""
        name, value = proposal["trait"].name, proposal["value"]
        try:
            QueryOptions.build(**{name: value})
        except OptionError as exc:
            raise TraitError(str(exc)) from None
        return value

    # -- SQL and REST cells --------------------------------------------------------------------
    def _final_sql(self, command: CellCommand) -> str:
        sql = render_parameters(command.text, self.shell.user_ns)
        return qualify_tables(sql, self.connection.instance_id)

    def _run_sql(self, command: CellCommand) -> Any:
        """The cell's query: its frame, the rows as received (``--raw``), or the dataset."""
        sql = self._final_sql(command)
        if command.dry_run:  # the statement as it would be sent: time window included
            options = QueryOptions.build(doing="%%cortex", **command.options)
            if not command.quiet and (note := options.window_note()):
                print(note)
            if options.split is not None:
                return self._dry_run_split(sql, options, command.quiet)
            return self._dry_run("POST", JOBS, {"params": {"query": bounded(sql, options)[0]}})
        if command.raw:
            return self._run_raw(command, sql)
        service = self.connection.require()
        options = self.query_options(command.options, sql)
        with guardrail_advice(), partial_into(self.shell.user_ns, command.output):
            result = service.query(
                sql, options, progress=self.progress_line(command.quiet),
                say=None if command.quiet else print,
            )
        if options.to is not None:
            return result  # the Dataset's handle
        if command.trace or self.show_trace:
            self._show_traces(result.traces)
        return result.df

    def _dry_run_split(self, sql: str, options: QueryOptions, quiet: bool) -> None:
        """A split query's dry run: how many jobs, and the first window's statement."""
        statements = preview(sql, options)
        if not quiet:
            if note := check_splittable(sql).note():
                print(note)
            print(f"--split {options.split}: {len(statements)} jobs, one per window; the first "
                  "sends:")
        return self._dry_run("POST", JOBS, {"params": {"query": statements[0]}})

    def _run_raw(self, command: CellCommand, sql: str) -> list[dict[str, Any]]:
        """The rows as the service sends them (``--raw``): no frame, so no cache, no dataset."""
        given = command.options
        if given.get("to") or given.get("cache") or given.get("refresh") or given.get("split"):
            option = "--to" if given.get("to") else "--split" if given.get("split") else "--cache"
            raise CortexCellError(f"%%cortex: --raw shows JSON as received; not with {option}")
        options = self.query_options(given, sql).replace(cache=False)
        progress = self.progress_line(command.quiet)
        job = self.connection.require().start(sql, options, progress=progress)
        with guardrail_advice(), job.cancel_on_interrupt():
            return job.rows()

    def progress_line(self, quiet: bool = False) -> ProgressLine:
        """The live progress line of a query run in the cell (silent when quiet or off)."""
        return ProgressLine(self.progress and not quiet)

    def _run_rest(self, command: CellCommand) -> Any:
        return rest.run_rest(self.connection, command, command.trace or self.show_trace)

    def _dry_run(self, method: str, path: str, body: Any) -> None:
        rest.dry_run(self.connection.client, method, path, body)

    def _show_traces(self, traces: list[Any]) -> None:
        show_traces(traces)

    # -- background queries ----------------------------------------------------------------------
    def _run_background(self, command: CellCommand) -> None:
        """Start the cell's query as a background query; the cell returns at once."""
        _check_background(command)
        sql = self._final_sql(command)
        service = self.connection.require()
        options = self.query_options(command.options, sql)
        if not command.quiet and (note := options.window_note()):
            print(note)
        self.start_background(
            command.output or "", command.quiet,
            lambda **kw: service.submit_query(sql, options, name=command.output,
                                              say=None if command.quiet else print, **kw),
        )

    def start_background(self, name: str, quiet: bool, submit: Any) -> None:
        """Submit a background query (``submit(on_update=...)``), bind ``name`` to its handle
        now and to its result (the DataFrame, or with ``--to`` the Dataset) once it is done.

        The result is stored only while ``name`` still holds this query's handle: a cell run
        again, or a variable reused meanwhile, is never overwritten by an older query.
        """
        self.apply_background_options()
        status = BackgroundLine(not quiet, self.connection.secrets)
        namespace, bound = self.shell.user_ns, threading.Event()

        def on_update(query: BackgroundQuery) -> None:
            if query.state == wire.DONE:
                bound.wait(5)  # the cell binds the handle right after submitting
                if namespace.get(name) is query:
                    result = query.result()  # a Result, or with --to a Dataset
                    namespace[name] = getattr(result, "df", result)
                else:
                    status.note = f" (not stored: {name} was reassigned meanwhile)"
            status(query)

        query = submit(on_update=on_update)
        namespace[name] = query
        bound.set()
        status(query)


def _chart(command: CellCommand, df: Any) -> Any:
    """The chart ``--plot`` asks for, of the cell's frame (``-o VAR`` still gets the frame)."""
    if df is None:  # a dry run sent nothing
        return None
    from cortex_nb.results.charts import plot

    return plot(df, command.plot, **command.chart_options())


@contextlib.contextmanager
def partial_into(namespace: dict[str, Any], name: str | None) -> Iterator[None]:
    """A split query with windows missing still fails the cell; ``-o NAME`` gets the frame of
    the windows that came back, and the error says so."""
    try:
        yield
    except WindowsMissing as exc:
        if not name or exc.result is None:
            raise
        namespace[name] = exc.result.df
        raise WindowsMissing(
            str(exc).replace("in the error's .result (and in the -o variable)", f"in {name}"),
            exc.result, exc.missing,
        ) from None


def _check_background(command: CellCommand) -> None:
    """``--bg`` runs SQL into a variable; say so when the cell asks for something else."""
    if command.mode != "sql":
        raise CortexCellError("%%cortex --bg runs SQL queries; send REST requests without --bg.")
    if not command.output:
        raise CortexCellError("%%cortex --bg needs -o NAME, the variable that gets the result.")
    if command.raw or command.trace:
        option = "--raw" if command.raw else "--trace"
        raise CortexCellError(
            f"%%cortex --bg does not take {option}; run the cell without --bg, or see "
            "%cortex trace once the job is done."
        )


def empty_cell_to_line_magic(lines: list[str]) -> list[str]:
    """Rewrite a ``%%cortex GET /path`` cell with nothing below into the line magic.

    IPython refuses a cell magic whose body is empty, yet that is how a bodyless REST request
    reads best (and how the README shows it); as a line magic it runs the same.
    """
    if not lines or not lines[0].startswith("%%cortex") or any(x.strip() for x in lines[1:]):
        return lines
    return [lines[0][1:]]


def drop_refused_defaults(config: Any) -> None:
    """Take out of the shell's configuration the ``CortexMagics`` defaults a query would refuse.

    ``%config`` keeps a value its trait refused in the shell's configuration, and an ipython
    profile may hold one: left there, the next ``%load_ext``/``%reload_ext`` would fail on it.
    Each one is logged with the option's message and the default is used instead."""
    section = config.get("CortexMagics", {}) if hasattr(config, "get") else {}
    for name in [n for n in QUERY_DEFAULTS if n in section]:
        try:
            QueryOptions.build(**{name: section[name]})
        except OptionError as exc:
            del section[name]
            logging.getLogger(__name__).warning("%s (CortexMagics.%s: the default is used)",
                                                exc, name)


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics with IPython (``%load_ext cortex_nb``)."""
    drop_refused_defaults(ipython.config)
    magics = CortexMagics(shell=ipython)
    magics.apply_background_options()
    ipython.register_magics(magics)
    ipython.configurables.append(magics)  # so that %config CortexMagics.<option> finds it
    cleanup = ipython.input_transformers_cleanup
    if empty_cell_to_line_magic not in cleanup:  # %load_ext twice must not add it twice
        cleanup.append(empty_cell_to_line_magic)
    register_completer(ipython)
