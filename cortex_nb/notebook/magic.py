"""The ``%cortex`` line magic and ``%%cortex`` cell magic.

Thin by design: parse (``parse_cell``) -> run through the library (``connection``/``query``) ->
display. Options are traitlets (``%config CortexMagics.page_size = 5000``). Every
``CortexError`` reaches the notebook as one line (``CortexCellError``), so the cell fails (papermill
and nbval stop) without a traceback and without a secret.

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
    %cortex fetch JOB_ID [-o VAR] [--bg] [-q] [--limit N] [--structs S] [--timeout SECONDS]

Cell magic::

    %%cortex [-o VAR] [-q] [--trace] [--dry-run] [--limit N] [--page-size N] [--raw]
             [--structs value|keep|flatten] [--timeout SECONDS] [--bg] [--cache] [--refresh]
             [--max-rows N] [--dtypes arrow|objects] [--to DIR [--overwrite]]
    SELECT ... FROM `firewall.traffic` WHERE source_ip.value = {ip}

    %%cortex GET /query/v2/jobs            (REST mode; the cell is the JSON body)

``--bg -o VAR`` returns at once: VAR holds the job's handle (a ``BackgroundQuery``) while a
status line in the cell follows the job, then the DataFrame.

A trailing ``;`` or ``-q`` keeps the cell quiet; ``%cortex [-o VAR] SELECT ...`` runs SQL on the
line, and a ``%%cortex GET /path`` cell with nothing below runs as the line magic. A result of
more than ``--max-rows`` rows (``CortexMagics.max_rows``) stops before it is downloaded;
``--to DIR`` streams it into a Parquet dataset instead and shows the dataset's handle.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import re
import shlex
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.display import HTML, display
from traitlets import Bool, Enum, Float, Int, observe

from cortex_nb.exceptions import CortexError, QueryError, ResultTooLarge
from cortex_nb.http.security import mask_url, scrub
from cortex_nb.notebook.connection import Connection, get_connection
from cortex_nb.options import DEFAULT_MAX_ROWS, DEFAULT_QUERY_TIMEOUT, QueryOptions, given_by
from cortex_nb.query.background import FINAL_STATES, BackgroundQuery
from cortex_nb.query.job import too_large
from cortex_nb.query.replies import JOBS, raise_for_reply
from cortex_nb.results.cache import current_time_function
from cortex_nb.sql.params import qualify_tables, render_parameters

__all__ = ["CellCommand", "CortexCellError", "CortexMagics", "load_ipython_extension", "parse_cell"]

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD")
GUARDRAIL_ADVICE = (
    "Fetch fewer (--limit N, or WHERE/LIMIT in the SQL), stream them to disk (--to DIR), or "
    "raise the guardrail (--max-rows N, %config CortexMagics.max_rows = N; 0: none)."
)


class CortexCellError(UsageError):
    """One clear line in the notebook, and the cell fails.

    A plain ``UsageError`` only prints to stderr: papermill sees the failed reply but nbval,
    which watches for error outputs, does not. A subclass takes IPython's ordinary traceback
    path, where ``_render_traceback_`` replaces the traceback with this one line, and the
    kernel publishes a real error output that every runner sees.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[0;31m{self}\x1b[0m"]


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises a one-line cell error instead of exiting the kernel."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CortexCellError(f"%{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise CortexCellError(message or f"%{self.prog}: see %{self.prog}? for help")


def _cell_parser() -> _ArgumentParser:
    p = _ArgumentParser(prog="%cortex", add_help=False)
    p.add_argument("-o", "--output", metavar="VAR", help="store the result in VAR")
    p.add_argument("--trace", action="store_true", help="show the request traces")
    p.add_argument("--dry-run", action="store_true", help="show the request, send nothing")
    p.add_argument("--limit", type=int, help="fetch at most N rows")
    p.add_argument("--page-size", type=int, help="rows per results page")
    p.add_argument("--raw", action="store_true", help="JSON as received, no DataFrame")
    p.add_argument(
        "--structs", choices=["value", "keep", "flatten"],
        help="{value: ...} structs: their value, kept whole, or flattened (this cell only)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="show nothing (with -o VAR)")
    p.add_argument("--timeout", type=float, help="cancel the query after N seconds (0: never)")
    p.add_argument("--bg", action="store_true", help="run in the background (with -o VAR)")
    p.add_argument("--cache", action="store_true", help="reuse a cached result, or keep this one")
    p.add_argument("--refresh", action="store_true", help="run it again and cache the new result")
    p.add_argument("--max-rows", type=int, help="refuse results over N rows in memory (0: never)")
    p.add_argument(
        "--dtypes", choices=["arrow", "objects"],
        help="lists and structs: Arrow-backed (ArrowDtype) or Python objects (this cell only)",
    )
    p.add_argument("--to", metavar="DIR", help="stream the rows into a Parquet dataset in DIR")
    p.add_argument("--overwrite", action="store_true", help="with --to: replace a dataset")
    p.add_argument("request", nargs="*", help="METHOD /path for REST mode")
    return p


@dataclass
class CellCommand:
    """A parsed ``%%cortex`` cell: SQL mode or REST mode, with its options."""

    mode: str  # "sql" or "rest"
    text: str  # SQL, or the JSON body (may be empty)
    method: str | None = None
    path: str | None = None
    output: str | None = None
    trace: bool = False
    dry_run: bool = False
    limit: int | None = None
    page_size: int | None = None
    raw: bool = False
    quiet: bool = False
    structs: str | None = None
    timeout: float | None = None
    background: bool = False
    cache: bool = False
    refresh: bool = False
    max_rows: int | None = None
    dtypes: str | None = None
    to: str | None = None
    overwrite: bool = False


def parse_cell(line: str, cell: str) -> CellCommand:
    """Parse the magic line and the cell body into a ``CellCommand``."""
    try:
        args = _cell_parser().parse_args(shlex.split(line, comments=True))
    except ValueError as exc:
        raise CortexCellError(f"%%cortex: {exc}") from None
    request, body = list(args.request), cell
    if not request:  # REST mode may also be given on the cell's first line
        first, _, rest = cell.strip().partition("\n")
        if first.split(" ", 1)[0].upper() in HTTP_METHODS and "/" in first:
            request, body = first.split(), rest
    options = {
        "output": args.output, "trace": args.trace, "dry_run": args.dry_run,
        "limit": args.limit, "page_size": args.page_size, "raw": args.raw, "quiet": args.quiet,
        "structs": args.structs, "timeout": args.timeout, "background": args.bg,
        "cache": args.cache, "refresh": args.refresh, "max_rows": args.max_rows,
        "dtypes": args.dtypes, "to": args.to, "overwrite": args.overwrite,
    }
    if not request:
        sql = cell.strip()
        if sql.endswith(";"):  # as in IPython: a trailing ';' keeps the cell quiet
            sql, options["quiet"] = sql.rstrip(";").rstrip(), True
        if not sql:
            raise CortexCellError("%%cortex: the cell is empty; write a SQL query or 'GET /path'")
        return CellCommand(mode="sql", text=sql, **options)
    method_ok = request[0].upper() in HTTP_METHODS
    if len(request) != 2 or not method_ok or not request[1].startswith("/"):
        raise CortexCellError(f"%%cortex: expected 'METHOD /path', got {' '.join(request)!r}")
    return CellCommand(
        mode="rest", text=body.strip(), method=request[0].upper(), path=request[1], **options
    )


def _line_parser() -> _ArgumentParser:
    p = _ArgumentParser(prog="cortex", add_help=False)
    sub = p.add_subparsers(dest="command")
    connect = sub.add_parser("connect", add_help=False)
    connect.add_argument("target", nargs="?", choices=["sandbox", "replay"])
    connect.add_argument("cassette", nargs="?", help="the cassette file to replay")
    connect.add_argument("--record", metavar="FILE", help="write every exchange to a cassette")
    connect.add_argument("--profile")
    connect.add_argument("--url")
    connect.add_argument("--region")
    connect.add_argument("--instance")
    connect.add_argument("--rows", type=int)
    connect.add_argument("--seed", type=int)
    connect.add_argument("--port", type=int)
    connect.add_argument("--process", action="store_true", default=None)
    trace = sub.add_parser("trace", add_help=False)
    trace.add_argument("n", nargs="?", type=int, default=1)
    cache = sub.add_parser("cache", add_help=False)
    cache.add_argument("action", nargs="?", choices=["list", "clear"], default="list")
    for name in ("disconnect", "status", "panel", "history"):
        sub.add_parser(name, add_help=False)
    tables = sub.add_parser("tables", add_help=False)
    tables.add_argument("pattern", nargs="?", help="name filter: firewall, firewall.*")
    columns = sub.add_parser("columns", add_help=False)
    columns.add_argument("table", help="a log type: firewall.traffic")
    columns.add_argument("pattern", nargs="?", help="column filter: source, *_ip")
    _add_background_commands(sub)
    return p


def _add_background_commands(sub: Any) -> None:
    """``jobs``, ``cancel``, ``wait`` and ``fetch``: background queries, and jobs by id."""
    jobs = sub.add_parser("jobs", add_help=False)
    jobs.add_argument("--server", action="store_true")
    jobs.add_argument("--max", type=int, default=20)
    jobs.add_argument("--state")
    cancel = sub.add_parser("cancel", add_help=False)
    cancel.add_argument("targets", nargs="+", metavar="ID|NAME|all")
    wait = sub.add_parser("wait", add_help=False)
    wait.add_argument("targets", nargs="*", metavar="ID|NAME")
    wait.add_argument("--timeout", type=float)
    fetch = sub.add_parser("fetch", add_help=False)
    fetch.add_argument("job_id")
    fetch.add_argument("-o", "--output")
    fetch.add_argument("-q", "--quiet", action="store_true")
    fetch.add_argument("--bg", action="store_true")
    fetch.add_argument("--limit", type=int)
    fetch.add_argument("--structs", choices=["value", "keep", "flatten"])
    fetch.add_argument("--timeout", type=float)


class _ProgressLine:
    """A live, throttled status line (updated in place in notebooks)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.handle: Any = None
        self.last = 0.0

    def __call__(self, progress: Any) -> None:
        now = time.monotonic()
        if not self.enabled or (not progress.done and now - self.last < 0.25):
            return
        self.last = now
        text = progress.line()
        if self.handle is None:
            self.handle = display({"text/plain": text}, raw=True, display_id=True)
        else:
            self.handle.update({"text/plain": text}, raw=True)


class _BackgroundLine:
    """The live status line of a background cell, updated in place from the job's thread."""

    def __init__(self, enabled: bool, secrets: Any) -> None:
        self.secrets = secrets
        self.handle: Any = None
        self.last = 0.0
        self.note = ""  # added to the final line (the result could not be stored)
        self.ended = False
        self._lock = threading.Lock()  # the cell and the job's thread both update the line
        if enabled:  # shown now, from the cell itself, so the line lands in that cell
            self.handle = display({"text/plain": "submitting..."}, raw=True, display_id=True)

    def __call__(self, job: BackgroundQuery) -> None:
        with self._lock:
            final = job.state in FINAL_STATES
            now = time.monotonic()
            if self.handle is None or self.ended or (not final and now - self.last < 0.25):
                return
            self.last, self.ended = now, final
            line = job.line(f"%cortex cancel {job.name or job.id}")
            text = scrub(line, self.secrets()) + self.note
            bundle = {"text/plain": text}
            if final and job.state != "DONE":  # a failure stands out, as a cell's error would
                bundle["text/html"] = f'<pre style="color:#cf222e">{html.escape(text)}</pre>'
            self.handle.update(bundle, raw=True)


@magics_class
class CortexMagics(Magics):
    """``%cortex`` and ``%%cortex``: query the Cortex Data Lake from notebooks.

    ``Magics`` is a traitlets ``Configurable``: the traits below are ``%config`` options.
    """

    page_size = Int(10_000, help="Rows per results page (1..100000).").tag(config=True)
    parallel = Int(4, help="Results pages fetched at once when the row count is known.").tag(
        config=True
    )
    structs = Enum(
        ["value", "keep", "flatten"], "value",
        help="How {value: ...} structs become columns: their value, kept, or flattened.",
    ).tag(config=True)
    show_trace = Bool(False, help="Show request traces after every cell.").tag(config=True)
    progress = Bool(True, help="Show a live progress line while a query runs.").tag(config=True)
    timeout = Float(
        DEFAULT_QUERY_TIMEOUT, help="Seconds a query may take before it is cancelled (0: no limit)."
    ).tag(config=True)
    cache = Bool(
        False, help="Keep every query's result in the result cache and reuse it (like --cache), "
        "except for queries that use the current time.",
    ).tag(config=True)
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

    @property
    def connection(self) -> Connection:
        """The shared connection."""
        return get_connection()

    # -- line magic ----------------------------------------------------------------------------
    @line_magic
    def cortex(self, line: str) -> Any:
        """Manage the shared connection (connect, status, ...), send one REST request
        (``%cortex GET /x``) or run the SQL on the line (``%cortex [-o VAR] SELECT ...``)."""
        options, sql = split_line_sql(line)
        if sql:
            return self.cortex_cell(options, sql)
        words = shlex.split(line, comments=True)  # a trailing "# note" is a comment
        if words and words[0].upper() in HTTP_METHODS:
            return self.cortex_cell(line, "")  # IPython refuses a cell magic with no body
        args = _line_parser().parse_args(words or ["status"])
        with _one_line_errors(self.connection):
            return getattr(self, f"_do_{args.command}")(args)

    def _do_connect(self, args: argparse.Namespace) -> None:
        connection = self.connection
        if (args.target == "replay") != bool(args.cassette):
            raise CortexCellError("%cortex connect: give a cassette as `connect replay FILE`.")
        if args.target == "replay":
            if args.record:
                raise CortexCellError("%cortex connect: a replay cannot be recorded (--record).")
            connection.connect_replay(args.cassette)
            print(connection.replay.describe())
            return
        connection.stop_recording()
        if args.record:
            recorder = connection.record(args.record)
            print(f"Recording to {recorder.path} (without tokens, secrets or the instance id).")
        try:
            self._connect_live(connection, args)
        except CortexError:
            connection.stop_recording()
            raise

    def _connect_live(self, connection: Connection, args: argparse.Namespace) -> None:
        if args.target == "sandbox":
            wanted = {
                "rows": args.rows, "seed": args.seed, "port": args.port, "process": args.process
            }
            options = {k: v for k, v in wanted.items() if v is not None}
            changes = connection.sandbox_changes(**options)
            connection.connect_sandbox(**options)
            if changes:
                print(f"Restarted the sandbox for the options asked ({changes}).")
        elif args.profile:
            connection.connect_profile(args.profile, url=args.url)
        else:
            endpoint = connection.endpoint_for(args.region, args.url, instance_id=args.instance)
            connection.connect(endpoint=endpoint)
        print(connection.describe())

    def _do_disconnect(self, args: argparse.Namespace) -> None:
        self.connection.disconnect()
        print("Disconnected.")

    def _do_status(self, args: argparse.Namespace) -> None:
        print(self.connection.describe())

    def _do_panel(self, args: argparse.Namespace) -> Any:
        from cortex_nb.notebook.panel import CredentialsPanel

        return CredentialsPanel(connection=self.connection)

    def _do_history(self, args: argparse.Namespace) -> Any:
        from cortex_nb.notebook.display import ShortFrame

        return ShortFrame(self.connection.traces.to_frame())

    def _do_trace(self, args: argparse.Namespace) -> None:
        self._show_traces(self.connection.traces.last(args.n))

    def _do_tables(self, args: argparse.Namespace) -> Any:
        from cortex_nb.notebook.display import FullFrame
        from cortex_nb.sql.guide import tables

        return FullFrame(tables(args.pattern))

    def _do_columns(self, args: argparse.Namespace) -> Any:
        from cortex_nb.notebook.display import FullFrame
        from cortex_nb.sql.guide import columns

        return FullFrame(columns(args.table, args.pattern))

    def _do_cache(self, args: argparse.Namespace) -> Any:
        from cortex_nb.notebook.display import ShortFrame
        from cortex_nb.results.cache import ResultCache

        cache = ResultCache()
        if args.action == "clear":
            print(f"Removed {cache.clear()} cached results from {cache.directory}.")
            return None
        return ShortFrame(cache.to_frame())

    # -- cell magic ----------------------------------------------------------------------------
    @cell_magic("cortex")
    def cortex_cell(self, line: str, cell: str) -> Any:
        """Run a SQL query job (default) or a REST request ('METHOD /path' + JSON body)."""
        command = parse_cell(line, cell)
        if command.background and not command.dry_run:
            with _one_line_errors(self.connection):
                return self._run_background(command)
        with _one_line_errors(self.connection):
            run = self._run_rest if command.mode == "rest" else self._run_sql
            result = run(command)
        if command.output and result is not None:
            self.shell.user_ns[command.output] = result
        return None if command.quiet else result

    def _final_sql(self, command: CellCommand) -> str:
        sql = render_parameters(command.text, self.shell.user_ns)
        return qualify_tables(sql, self.connection.instance_id)

    def _run_sql(self, command: CellCommand) -> Any:
        sql = self._final_sql(command)
        if command.dry_run:
            return self._dry_run("POST", JOBS, {"params": {"query": sql}})
        if command.raw and (command.to or command.cache or command.refresh):
            option = "--to" if command.to else "--cache"
            raise CortexCellError(f"%%cortex: --raw shows JSON as received; not with {option}")
        service = self.connection.require()
        options = self.query_options(given_by(command), sql)
        progress = _ProgressLine(self.progress and not command.quiet)
        with _guardrail_advice():
            if command.raw:
                job = service.start(sql, options.replace(cache=False, refresh=False),
                                    progress=progress)
                with job.cancel_on_interrupt():
                    return job.rows()
            result = service.query(
                sql, options, progress=progress, say=None if command.quiet else print
            )
        if options.to is not None:
            return result  # the Dataset's handle
        if command.trace or self.show_trace:
            self._show_traces(result.traces)
        return result.df

    def query_defaults(self) -> QueryOptions:
        """The notebook's defaults for every query: the traitlets (``%config CortexMagics.*``)."""
        return QueryOptions(
            page_size=self.page_size, parallel=self.parallel, structs=self.structs,
            dtypes=self.dtypes, timeout=self.timeout, max_rows=self.max_rows, cache=self.cache,
        )

    def query_options(self, given: dict[str, Any], sql: str | None = None) -> QueryOptions:
        """One query's options: the cell's (``given``) over the notebook's defaults.

        The ``cache`` default (``CortexMagics.cache``) keeps every result, but not one written
        to a dataset, and not one that depends on when the query ran unless the cell asks.
        """
        defaults = self.query_defaults()
        if defaults.cache and not given.get("cache"):
            clock = current_time_function(sql) if sql else None
            if "to" in given or clock:
                defaults = defaults.replace(cache=False)
            if clock and "to" not in given:
                print(f"Not cached: the query uses {clock}, so its result changes with time; "
                      "add --cache to keep it anyway.")
        return QueryOptions.build(defaults, doing="%%cortex", **given)

    def _run_rest(self, command: CellCommand) -> Any:
        body = _json_body(command.text)
        if command.dry_run:
            return self._dry_run(command.method or "GET", command.path or "/", body)
        client = self.connection.require().client
        with self.connection.traces.collect() as seen:
            response = client.request(method=command.method, path=command.path, json=body)
        if command.trace or self.show_trace:
            self._show_traces(seen)
        return _rest_output(response, command.raw, command.limit)

    def _dry_run(self, method: str, path: str, body: Any) -> None:
        client = self.connection.client
        base = mask_url(client.url) if client is not None else "<not connected>"
        print(f"{method} {base}{path}")
        print("Authorization: Bearer $TOKEN")
        if body is not None:
            print(json.dumps(body, indent=2))
        print("(dry run: nothing was sent)")

    def _show_traces(self, traces: list[Any]) -> None:
        from cortex_nb.http.tracing import render_traces_html

        if traces:
            display(HTML(render_traces_html(traces)))

    # -- background queries ----------------------------------------------------------------------
    def _run_background(self, command: CellCommand) -> None:
        """Start the cell's query in a worker thread; the cell returns at once."""
        _check_background(command)
        sql = self._final_sql(command)
        service = self.connection.require()
        options = self.query_options(given_by(command), sql)
        self._start_background(
            command.output or "", command.quiet,
            lambda **kw: service.submit_query(sql, options, name=command.output, **kw),
        )

    def _start_background(self, name: str, quiet: bool, submit: Any) -> None:
        """Submit, bind ``name`` to the handle now and to the DataFrame when the job is done.

        The result is stored only while ``name`` still holds this job's handle: a cell run
        again, or a variable reused meanwhile, is never overwritten by an older job.
        """
        self.apply_background_options()
        status = _BackgroundLine(not quiet, self.connection.secrets)
        namespace, bound = self.shell.user_ns, threading.Event()

        def on_update(job: BackgroundQuery) -> None:
            if job.state == "DONE":
                bound.wait(5)  # the cell binds the handle right after submitting
                if namespace.get(name) is job:
                    result = job.result()  # a Result, or with --to a Dataset
                    namespace[name] = getattr(result, "df", result)
                else:
                    status.note = f" (not stored: {name} was reassigned meanwhile)"
            status(job)

        job = submit(on_update=on_update)
        namespace[name] = job
        bound.set()
        status(job)

    def _do_jobs(self, args: argparse.Namespace) -> Any:
        if args.server:
            return _server_jobs(self.connection.require().recent_jobs(args.max, args.state))
        jobs = self.connection.jobs
        if not len(jobs):
            print("No background queries in this session (%%cortex --bg -o NAME starts one).")
            return None
        return jobs.to_frame()

    def _do_cancel(self, args: argparse.Namespace) -> None:
        jobs = self.connection.jobs
        for target in args.targets:
            if target.lower() == "all":
                cancelled = jobs.cancel_all()
                if not cancelled:
                    print("No background query was running.")
                _report_cancelled(cancelled)
            elif (job := jobs.find(target)) is not None:
                if job.cancel():
                    _report_cancelled([job])
                else:
                    print(f"{job.name or job.id} had already ended: {job.line()}")
            else:  # a job id from elsewhere: cancel it on the service
                service = self.connection.require()
                response = service.cancel_job(target)
                if not response.ok:
                    raise_for_reply(response, f"cancelling job {target}", target,
                                    service.secrets())
                print(f"Cancelled job {target} on the service.")

    def _do_wait(self, args: argparse.Namespace) -> None:
        jobs = self.connection.jobs
        waited = [_find_job(jobs, t) for t in args.targets] if args.targets else jobs.active()
        try:
            for job in waited:
                job.result(args.timeout)  # raises what the job ended with
        except KeyboardInterrupt:
            raise CortexCellError(
                "Stopped waiting; the background queries go on (%cortex jobs lists them)."
            ) from None

    def _do_fetch(self, args: argparse.Namespace) -> Any:
        service = self.connection.require()
        options = self.query_options(given_by(args))
        if args.bg:
            if not args.output:
                raise CortexCellError("%cortex fetch --bg needs -o NAME, the variable to fill.")
            self._start_background(
                args.output, args.quiet,
                lambda **kw: service.submit_fetch(args.job_id, options, name=args.output, **kw),
            )
            return None
        progress = _ProgressLine(self.progress and not args.quiet)
        with _guardrail_advice():
            result = service.fetch(
                args.job_id, options, progress=progress, say=None if args.quiet else print
            )
        value = getattr(result, "df", result)  # a Dataset with --to
        if args.output:
            self.shell.user_ns[args.output] = value
        return None if args.quiet else value


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
    if command.cache or command.refresh:
        raise CortexCellError(
            "%%cortex --bg does not use the result cache; run a cached query without --bg."
        )


def _find_job(jobs: Any, key: str) -> BackgroundQuery:
    job = jobs.find(key)
    if job is None:
        raise QueryError(
            f"No background query {key!r} in this session; %cortex jobs lists them "
            "(%cortex fetch JOB_ID takes up a job from elsewhere)."
        )
    return job


def _report_cancelled(jobs: list[BackgroundQuery]) -> None:
    """Wait a moment for each cancelled job to stop, then say how it ended."""
    for job in jobs:
        job.wait(10)  # the worker stops at its next step; the service answers at once
        print(f"{job.name or job.id}: {job.line()}")


def _server_jobs(jobs: list[dict[str, Any]]) -> Any:
    """The list endpoint's jobs as a DataFrame (times as UTC datetimes, full job ids)."""
    import pandas as pd

    from cortex_nb.notebook.display import with_epoch_ms_times

    frame = with_epoch_ms_times(pd.json_normalize(jobs))
    wanted = ["jobId", "state", "submitTime", "startTime", "endTime", "statistics.runTimeMs",
              "params.query"]
    return frame[[c for c in wanted if c in frame.columns]] if len(frame) else frame


def _json_body(text: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CortexCellError(f"%%cortex: the cell body is not valid JSON ({exc})") from None


def _rest_output(response: Any, raw: bool, limit: int | None) -> Any:
    """The reply as a DataFrame when it is a list of records (job times as UTC datetimes),
    else its JSON (or text)."""
    try:
        payload = response.json()
    except ValueError:
        return response.text
    if not response.ok:
        print(f"HTTP {response.status_code} {response.reason}")
    if isinstance(payload, list) and all(isinstance(r, dict) for r in payload):
        if raw:
            return payload[:limit] if limit else payload
        import pandas as pd

        from cortex_nb.notebook.display import ShortFrame, with_epoch_ms_times

        frame = with_epoch_ms_times(pd.json_normalize(payload))
        return ShortFrame(frame.head(limit) if limit else frame)
    return _PrettyJSON(payload)


class _PrettyJSON:
    """Shows decoded JSON indented; ``.data`` holds the value."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __repr__(self) -> str:
        return json.dumps(self.data, indent=2, default=str)

    def _repr_json_(self) -> Any:
        return self.data


@contextlib.contextmanager
def _guardrail_advice() -> Iterator[None]:
    """The guardrail's error, with what to do in a cell (``--limit``, ``--to``, ``--max-rows``)."""
    try:
        yield
    except ResultTooLarge as exc:
        raise too_large(
            exc.job_id or "?", exc.rows, exc.max_rows, exc.cancelled, GUARDRAIL_ADVICE
        ) from None


@contextlib.contextmanager
def _one_line_errors(connection: Connection) -> Iterator[None]:
    """Turn a CortexError into one scrubbed line (``CortexCellError``); the cell still fails."""
    try:
        yield
    except CortexError as exc:  # the message leads; the kind of error adds nothing for a reader
        raise CortexCellError(scrub(str(exc), connection.secrets())) from None


_SQL_START = re.compile(r"(?:^|\s)(?=(?:select|with)\b)", re.IGNORECASE)


def split_line_sql(line: str) -> tuple[str, str]:
    """``(options, sql)`` of a line holding SQL (``-o x SELECT ...``), else ``(line, "")``.

    The SQL is taken from the raw line (not shell-split), so its quotes arrive untouched.
    """
    match = _SQL_START.search(line)
    if match is None:
        return line, ""
    options = line[: match.start()].strip()
    words = options.split()
    # before the SQL only options and their values (`-o x`): else it is a command, not SQL
    if not all(w.startswith("-") or (i and words[i - 1].startswith("-"))
               for i, w in enumerate(words)):
        return line, ""
    return options, line[match.end():].strip()


def empty_cell_to_line_magic(lines: list[str]) -> list[str]:
    """Rewrite a ``%%cortex GET /path`` cell with nothing below into the line magic.

    IPython refuses a cell magic whose body is empty, yet that is how a bodyless REST request
    reads best (and how the README shows it); as a line magic it runs the same.
    """
    if not lines or not lines[0].startswith("%%cortex") or any(x.strip() for x in lines[1:]):
        return lines
    return [lines[0][1:]]


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics with IPython (``%load_ext cortex_nb``)."""
    magics = CortexMagics(shell=ipython)
    magics.apply_background_options()
    ipython.register_magics(magics)
    ipython.configurables.append(magics)  # so that %config CortexMagics.<option> finds it
    cleanup = ipython.input_transformers_cleanup
    if empty_cell_to_line_magic not in cleanup:  # %load_ext twice must not add it twice
        cleanup.append(empty_cell_to_line_magic)
    from cortex_nb.notebook.completion import register_completer

    register_completer(ipython)

