"""``%cortex tables``, ``columns``, ``history``, ``trace`` and ``cache``: things to look at."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cortex_nb.notebook.status import show_traces

if TYPE_CHECKING:
    from cortex_nb.notebook.magic import CortexMagics

__all__ = ["cache", "columns", "history", "tables", "trace"]


def tables(magics: CortexMagics, args: argparse.Namespace) -> Any:
    """The documented log types (those matching the pattern, if given)."""
    from cortex_nb.notebook.display import FullFrame
    from cortex_nb.sql.guide import tables as log_types

    return FullFrame(log_types(args.pattern))


def columns(magics: CortexMagics, args: argparse.Namespace) -> Any:
    """A log type's columns and struct subfields (those matching the pattern, if given)."""
    from cortex_nb.notebook.display import FullFrame
    from cortex_nb.sql.guide import columns as log_columns

    return FullFrame(log_columns(args.table, args.pattern))


def history(magics: CortexMagics, args: argparse.Namespace) -> Any:
    """This session's request traces as a table (long ids shortened on screen)."""
    from cortex_nb.notebook.display import ShortFrame

    return ShortFrame(magics.connection.traces.to_frame())


def trace(magics: CortexMagics, args: argparse.Namespace) -> None:
    """Show the last ``n`` request traces inline."""
    show_traces(magics.connection.traces.last(args.n))


def cache(magics: CortexMagics, args: argparse.Namespace) -> Any:
    """The result cache's entries as a table, or (``clear``) remove them all."""
    from cortex_nb.notebook.display import ShortFrame
    from cortex_nb.results.cache import ResultCache

    results = ResultCache()
    if args.action == "clear":
        print(f"Removed {results.clear()} cached results from {results.directory}.")
        return None
    return ShortFrame(results.to_frame())

