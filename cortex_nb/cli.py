"""The ``cortex-nb`` command.

Subcommands register themselves in ``_SUBCOMMANDS``: each has an ``add_<name>_arguments(parser)``
and a ``run_<name>(args) -> int``. Errors print one line to stderr (``cortex-nb: error: ...``)
and exit with status 2, without a traceback.

    cortex-nb sandbox [--host 127.0.0.1] [--port 8080] [--rows N] [--seed S]
                      [--latency-ms MS] [--fail-rate P]
    cortex-nb profiles list | show NAME | delete NAME
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

PROG = "cortex-nb"


class CommandError(Exception):
    """A failure to report as one line and exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Report ``message`` on one line and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


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


def run_sandbox(args: argparse.Namespace) -> int:
    """Serve the sandbox until Ctrl-C (SIGINT) or SIGTERM."""
    if not _is_loopback(args.host):
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
        )
    except ValueError as error:
        raise CommandError(str(error)) from None
    try:
        return sandbox.start()
    except OSError as error:
        reason = error.strerror or error
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {reason}") from None


def add_profiles_arguments(parser: argparse.ArgumentParser) -> None:
    """``cortex-nb profiles`` passes its words on to ``cortex_nb.profiles.main``."""
    parser.add_argument("words", nargs=argparse.REMAINDER, help="list | show NAME | delete NAME")


def run_profiles(args: argparse.Namespace) -> int:
    """Stored credential profiles (the command lives in cortex_nb.profiles)."""
    from cortex_nb.profiles import main as profiles_main

    return profiles_main(args.words)


_SUBCOMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "sandbox": (
        "serve an offline Cortex Data Lake on this machine",
        add_sandbox_arguments,
        run_sandbox,
    ),
    "profiles": ("list, show or delete stored profiles", add_profiles_arguments, run_profiles),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = _Parser(prog=PROG, description="Cortex Data Lake from Jupyter.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (summary, add_arguments, run) in _SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cortex-nb`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as leaving:  # argparse has printed usage and the error line
        return int(leaving.code or 0)
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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
