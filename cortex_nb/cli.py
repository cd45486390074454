"""The ``cortex-nb`` command.

Subcommands register themselves in ``_SUBCOMMANDS``: each has an ``add_<name>_arguments(parser)``
and a ``run_<name>(args) -> int``. Errors print one line to stderr (``cortex-nb: error: ...``)
and exit with status 2, without a traceback.

    cortex-nb sandbox [--host 127.0.0.1] [--port 8080] [--rows N] [--seed S]
                      [--latency-ms MS] [--fail-rate P] [--scan-rate ROWS_PER_S]
    cortex-nb profiles list | show NAME | delete NAME
    cortex-nb lab [--dir notebooks] [--port 8888] [--no-browser] [JUPYTER ARGS...]
    cortex-nb query SQL [--sandbox | --profile NAME | --url URL] [--instance ID]
                        [--output FILE.csv|.json|.parquet | DIR] [--overwrite]
                        [query options: --limit N --max-rows N --page-size N --parallel N
                         --structs S --dtypes D --timeout SECONDS --cache --refresh]

``query --output DIR`` (a directory, or a path without a suffix) streams the rows into a Parquet
dataset (``cortex_nb.results.datasets``) without holding them in memory; the file outputs build the
DataFrame first, so results over ``--max-rows`` are refused before they are downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cortex_nb.http.security import is_loopback
from cortex_nb.options import add_arguments, flag_words

PROG = "cortex-nb"


class CommandError(Exception):
    """A failure to report as one line and exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Report ``message`` on one line and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {in_cli_words(message)} (see --help)\n")


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cortex-nb sandbox``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument("--port", type=int, default=8080, help="port (0 picks a free one)")
    parser.add_argument("--rows", type=int, default=100_000, help="traffic rows to generate")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic logs")
    parser.add_argument("--latency-ms", type=float, default=0, help="delay added to every request")
    parser.add_argument(
        "--fail-rate",
        type=float,
        default=0.0,
        help="fraction of API requests answering 502/503/504",
    )
    parser.add_argument("--instance-id", default="sandbox0", help="tenant id in table names")
    parser.add_argument(
        "--query-timeout-ms",
        type=int,
        default=120_000,
        help="a job times out after this long (a request's shorter timeoutMs wins)",
    )
    parser.add_argument(
        "--memory-limit-mb",
        type=int,
        default=None,
        help="DuckDB memory for logs, queries and kept results (default: a quarter of RAM)",
    )
    parser.add_argument("--workers", type=int, default=4, help="jobs that run at once")
    parser.add_argument(
        "--scan-rate",
        type=float,
        default=None,
        metavar="ROWS_PER_S",
        help="model job time: a job stays RUNNING (result rows / ROWS_PER_S) s (default: none)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="print one line per server-side error"
    )


def run_sandbox(args: argparse.Namespace) -> int:
    """Serve the sandbox until Ctrl-C (SIGINT) or SIGTERM."""
    if not is_loopback(args.host):
        print(
            f"{PROG}: warning: listening on {args.host}: the sandbox is reachable from other "
            "machines and its demo credentials are public",
            file=sys.stderr,
        )
    with _stop_signals() as stop:
        sandbox = _start_sandbox(args)
        try:
            _print_banner(sandbox)
            while not stop.wait(0.5):
                pass
        finally:
            sandbox.stop()
    print("sandbox stopped", flush=True)
    return 0


def _start_sandbox(args: argparse.Namespace) -> Any:
    from cortex_nb.sandbox import Sandbox

    try:
        sandbox = Sandbox(
            host=args.host,
            port=args.port,
            rows=args.rows,
            seed=args.seed,
            latency_ms=args.latency_ms,
            fail_rate=args.fail_rate,
            instance_id=args.instance_id,
            query_timeout_ms=args.query_timeout_ms,
            memory_limit_mb=args.memory_limit_mb,
            workers=args.workers,
            verbose=args.verbose,
            scan_rate=args.scan_rate,
        )
    except ValueError as error:
        raise CommandError(_in_sandbox_flags(str(error), args)) from None
    try:
        return sandbox.start()
    except ValueError as error:  # the rows do not fit in the memory limit
        raise CommandError(_in_sandbox_flags(str(error), args)) from None
    except OSError as error:
        reason = error.strerror or error
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {reason}") from None


def _in_sandbox_flags(message: str, args: argparse.Namespace) -> str:
    """A ``Sandbox`` error in this command's words: a leading ``scan_rate must ...`` and a
    ``memory_limit_mb=64`` name the flags typed (``--scan-rate``, ``--memory-limit-mb 64``)."""
    flags = {name: "--" + name.replace("_", "-") for name in vars(args)}  # argparse's dest rule
    message = re.sub(r"^(\w+)(?= must\b)", lambda m: flags.get(m[1], m[1]), message)
    return re.sub(r"\b(\w+)=", lambda m: f"{flags[m[1]]} " if m[1] in flags else m[0], message)


def add_profiles_arguments(parser: argparse.ArgumentParser) -> None:
    """``cortex-nb profiles`` passes its words on to ``cortex_nb.http.profiles.main``."""
    parser.add_argument("words", nargs=argparse.REMAINDER, help="list | show NAME | delete NAME")


def run_profiles(args: argparse.Namespace) -> int:
    """Stored credential profiles (the command lives in cortex_nb.http.profiles)."""
    from cortex_nb.http.profiles import main as profiles_main

    return profiles_main(args.words)


def add_lab_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cortex-nb lab``."""
    parser.add_argument("--dir", help="folder to open (default: ./notebooks when it exists)")
    parser.add_argument("--port", type=int, default=8888, help="JupyterLab port")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.set_defaults(passes_unknown_options=True)  # the rest goes to JupyterLab


def run_lab(args: argparse.Namespace) -> int:
    """JupyterLab on the notebooks; each notebook starts its sandbox (%cortex connect sandbox)."""
    if importlib.util.find_spec("jupyterlab") is None:
        raise CommandError('JupyterLab is not installed; run: pip install -e ".[lab]"')
    folder = Path(args.dir) if args.dir else Path("notebooks")
    if args.dir and not folder.is_dir():
        raise CommandError(f"no folder {folder}; give --dir an existing folder")
    folder = folder if folder.is_dir() else Path.cwd()
    command = [
        sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder.resolve()}",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={args.port}",
        *(["--no-browser"] if args.no_browser else []),
        *(["--allow-root"] if _is_root() else []),  # containers (CI, Docker) often run as root
        *args.unknown_options,
    ]
    print(
        f"Starting JupyterLab on {folder.resolve()} (its URL follows). Notebooks connect to an "
        "offline sandbox with `%cortex connect sandbox`; Ctrl-C stops.",
        flush=True,
    )
    with _stop_signals() as stop:  # Ctrl-C or SIGTERM: stop JupyterLab too, then leave
        lab = subprocess.Popen(command)
        while lab.poll() is None and not stop.wait(0.5):
            pass
        if lab.poll() is None:
            lab.terminate()
            lab.wait(timeout=30)
            return 0
    return lab.returncode


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def add_query_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cortex-nb query``."""
    parser.add_argument("sql", help="the csql query (table names may omit the instance id)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--sandbox", action="store_true", help="run against an in-process sandbox")
    where.add_argument("--profile", help="stored profile to connect with")
    where.add_argument("--url", help="API URL (credentials from PAN_* variables)")
    parser.add_argument("--instance", help="instance id to complete table names with")
    parser.add_argument(
        "--output", type=Path,
        help="write FILE.csv, .json or .parquet, or stream into a Parquet dataset DIR",
    )
    # the query options, as the magic has them (cortex_nb.options); --output DIR is --to
    add_arguments(parser, exclude=("to",))


FILE_OUTPUTS = (".csv", ".json", ".parquet")
GUARDRAIL_ADVICE = (
    "Fetch fewer (--limit N, or WHERE/LIMIT in the SQL), stream them to a dataset "
    "(--output DIR), or raise the guardrail (--max-rows N; 0: none)."
)


def run_query(args: argparse.Namespace) -> int:
    """Run one query and print the table (or write it to --output)."""
    from cortex_nb.exceptions import CortexError, ResultTooLarge
    from cortex_nb.query.job import too_large

    _check_output(args.output)
    try:
        _query_options(args)  # a bad option is refused before connecting
        if _is_dataset_output(args.output):
            started = datetime.now(timezone.utc).replace(microsecond=0)  # as "created" is
            dataset = _run_on_connection(args, _write_dataset)
            written = datetime.fromisoformat(dataset.manifest["created"]) >= started
            print(f"{'wrote' if written else 'already there:'} {dataset.summary()}",
                  file=sys.stderr)
            return 0
        df = _run_on_connection(args, _query_frame)
    except ResultTooLarge as error:
        advice = GUARDRAIL_ADVICE
        raise CommandError(
            str(too_large(error.job_id or "?", error.rows, error.max_rows, error.cancelled, advice))
        ) from None
    except CortexError as error:
        raise CommandError(in_cli_words(str(error))) from None
    if args.output is None:
        print(df.to_string(max_rows=60, max_colwidth=40))
        return 0
    writers = {".csv": df.to_csv, ".json": df.to_json, ".parquet": df.to_parquet}
    writers[args.output.suffix.lower()](args.output)
    print(f"wrote {len(df):,} rows to {args.output}", file=sys.stderr)
    return 0


# The command line says --output DIR where the library's messages say to=DIR or --to.
_CLI_WORDING = (
    (re.compile(r"\bto=DIR\b|--to\b"), "--output DIR"),
    (re.compile(r"the rows of the others are in the error's \.result \(and in the -o variable\)"),
     "the others' rows are kept only with --output DIR: run it so, then with --resume to fetch "
     "only the missing windows"),
)


def in_cli_words(message: str) -> str:
    """``message`` with the options named by this command's flags (``options.flag_words``,
    then ``_CLI_WORDING``)."""
    message = flag_words(message)
    for pattern, flags in _CLI_WORDING:
        message = pattern.sub(flags, message)
    return message


def _is_dataset_output(output: Path | None) -> bool:
    """Whether ``--output`` names a dataset directory: an existing one, or no suffix."""
    return output is not None and (output.is_dir() or not output.suffix)


def _check_output(output: Path | None) -> None:
    """A clear error for an ``--output`` that is neither a known file type nor a directory."""
    if output is None or _is_dataset_output(output):
        return
    if output.suffix.lower() not in FILE_OUTPUTS:
        raise CommandError(
            f"--output must end in .csv, .json or .parquet, or name a directory (no suffix) "
            f"for a Parquet dataset, not {output}"
        )


def _run_on_connection(args: argparse.Namespace, run: Callable[..., Any]) -> Any:
    """Connect as the options say, run ``run(service, sql, args)``, then disconnect."""
    from cortex_nb.notebook.connection import Connection
    from cortex_nb.sql.params import qualify_tables

    connection = Connection()
    try:
        if args.sandbox:
            connection.connect_sandbox(rows=10_000)
        elif args.profile:
            connection.connect_profile(args.profile)
        else:
            connection.connect(endpoint=connection.endpoint_for(url=args.url))
        sql = qualify_tables(args.sql, args.instance or connection.instance_id)
        return run(connection.require(), sql, args)
    finally:
        connection.disconnect()
        connection.stop_sandbox()


def _query_options(args: argparse.Namespace) -> Any:
    """The query's options from the command line (``--output DIR`` is the dataset's ``to``)."""
    from cortex_nb.options import QueryOptions, given_by

    given = given_by(args)
    if _is_dataset_output(args.output):
        given["to"] = args.output
    return QueryOptions.build(doing="cortex-nb query", **given)


def _query_frame(service: Any, sql: str, args: argparse.Namespace) -> Any:
    """The result as a DataFrame (refused over --max-rows)."""
    progress = _stderr_progress if sys.stderr.isatty() else None
    return service.query(sql, _query_options(args), progress=progress, say=_say).df


def _write_dataset(service: Any, sql: str, args: argparse.Namespace) -> Any:
    """The result streamed into the Parquet dataset at --output."""
    progress = _stderr_progress if sys.stderr.isatty() else None
    return service.query(sql, _query_options(args), progress=progress, say=_say)


def _say(line: str) -> None:
    """A note (the result cache's, a time window's, a split's) on stderr: stdout holds the
    table."""
    print(line, file=sys.stderr)


def _stderr_progress(progress: Any) -> None:
    end = "\n" if progress.done else "\r"
    print(progress.line(), end=end, file=sys.stderr, flush=True)


_SUBCOMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "sandbox": (
        "serve an offline Cortex Data Lake on this machine",
        add_sandbox_arguments,
        run_sandbox,
    ),
    "profiles": ("list, show or delete stored profiles", add_profiles_arguments, run_profiles),
    "lab": ("open JupyterLab on the notebooks", add_lab_arguments, run_lab),
    "query": ("run one query and print or save the result", add_query_arguments, run_query),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = _Parser(prog=PROG, description="Cortex Data Lake from Jupyter.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (summary, add_options, run) in _SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        add_options(sub)
        sub.set_defaults(run=run)
    return parser


def _closest(parser: argparse.ArgumentParser, args: argparse.Namespace, unknown: list) -> str:
    """``; did you mean --page-size?`` for a misspelt flag of the subcommand, else ""."""
    sub = parser._subparsers._group_actions[0].choices.get(args.command)
    flags = [s for action in getattr(sub, "_actions", []) for s in action.option_strings]
    for word in unknown:
        close = difflib.get_close_matches(word.split("=")[0], flags, n=1, cutoff=0.7)
        if word.startswith("--") and close:
            return f"; did you mean {close[0]}?"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cortex-nb`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown and not getattr(args, "passes_unknown_options", False):
            hint = _closest(parser, args, unknown)
            parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    except SystemExit as leaving:  # argparse has printed usage and the error line
        return int(leaving.code or 0)
    args.unknown_options = unknown
    try:
        return args.run(args)
    except CommandError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def _print_banner(sandbox: Any) -> None:
    creds = sandbox.credentials()
    lines = [
        f"Cortex Data Lake sandbox listening on {sandbox.url}",
        f"  instance id:   {sandbox.instance_id}   (tables like "
        f"`{sandbox.instance_id}.firewall.traffic`)",
        f"  token url:     {creds['token_url']}",
        f"  client_id:     {creds['client_id']}",
        f"  client_secret: {creds['client_secret']}   (demo values, not secrets)",
        f"  refresh_token: {creds['refresh_token']}",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), flush=True)


@contextlib.contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while inside (installed before anything is printed)."""
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
