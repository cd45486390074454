"""``%cortex connect``, ``disconnect``, ``status`` and ``panel``: the shared connection."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cortex_nb.exceptions import CortexError
from cortex_nb.notebook.errors import CortexCellError

if TYPE_CHECKING:
    from cortex_nb.notebook.connection import Connection
    from cortex_nb.notebook.magic import CortexMagics

__all__ = ["connect", "disconnect", "panel", "status"]


def connect(magics: CortexMagics, args: argparse.Namespace) -> None:
    """Connect to the sandbox, a tenant or a replayed cassette (``--record FILE``: record)."""
    connection = magics.connection
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
        _connect_live(connection, args)
    except CortexError:
        connection.stop_recording()
        raise


def _connect_live(connection: Connection, args: argparse.Namespace) -> None:
    """Connect to the sandbox (restarted if the options asked differ), a profile or a URL."""
    if args.target == "sandbox":
        wanted = {"rows": args.rows, "seed": args.seed, "port": args.port,
                  "process": args.process, "scan_rate": args.scan_rate}
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


def disconnect(magics: CortexMagics, args: argparse.Namespace) -> None:
    """Forget the credentials (the sandbox keeps running)."""
    magics.connection.disconnect()
    print("Disconnected.")


def status(magics: CortexMagics, args: argparse.Namespace) -> None:
    """Say where the connection goes, as whom, until when."""
    print(magics.connection.describe())


def panel(magics: CortexMagics, args: argparse.Namespace) -> Any:
    """The credentials panel, bound to the shared connection."""
    from cortex_nb.notebook.panel import CredentialsPanel

    return CredentialsPanel(connection=magics.connection)
