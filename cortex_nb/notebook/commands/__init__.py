"""What each ``%cortex`` subcommand does, routed by name: ``COMMANDS[name](magics, args)``.

The grammar (``cortex_nb.notebook.grammar``) says what a subcommand takes; this table says which
function runs it, given the ``CortexMagics`` and the parsed arguments. A new subcommand is a
``Subcommand`` in the grammar plus a handler here (a test holds the two to the same names).
The handlers live by concern: ``connect`` (the shared connection), ``lookups`` (log types,
columns, traces, the result cache) and ``background`` (background queries, jobs by id).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from cortex_nb.notebook.commands import background, connect, lookups
from cortex_nb.notebook.grammar import LineCommand

if TYPE_CHECKING:
    from cortex_nb.notebook.magic import CortexMagics

__all__ = ["COMMANDS", "Handler", "run_command"]

Handler = Callable[["CortexMagics", argparse.Namespace], Any]

COMMANDS: Mapping[str, Handler] = MappingProxyType({
    "connect": connect.connect,
    "disconnect": connect.disconnect,
    "status": connect.status,
    "panel": connect.panel,
    "history": lookups.history,
    "trace": lookups.trace,
    "tables": lookups.tables,
    "columns": lookups.columns,
    "cache": lookups.cache,
    "jobs": background.jobs,
    "cancel": background.cancel,
    "wait": background.wait,
    "fetch": background.fetch,
})


def run_command(magics: CortexMagics, command: LineCommand) -> Any:
    """Run a parsed ``%cortex`` subcommand; what it returns is the cell's result."""
    return COMMANDS[command.name](magics, command.args)
