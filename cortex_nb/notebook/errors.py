"""How the magic fails: one clear line in the notebook (``CortexCellError``), and the cell fails.

``one_line_errors(connection)`` turns any ``CortexError`` raised inside it into that line,
options named by their flags (``options.flag_words``), scrubbed of the connection's secrets.
The grammar, the commands and the magic all raise ``CortexCellError`` for what the user typed
wrong. ``guardrail_advice()`` words the max-rows
guardrail's error for a notebook (which flags to use, which ``%config``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from IPython.core.error import UsageError

from cortex_nb.exceptions import CortexError, ResultTooLarge
from cortex_nb.http.security import scrub
from cortex_nb.options import flag_words
from cortex_nb.query.job import too_large

if TYPE_CHECKING:
    from cortex_nb.notebook.connection import Connection

__all__ = ["GUARDRAIL_ADVICE", "CortexCellError", "guardrail_advice", "one_line_errors"]

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


@contextlib.contextmanager
def one_line_errors(connection: Connection) -> Iterator[None]:
    """Turn a CortexError into one scrubbed line (``CortexCellError``); the cell still fails."""
    try:
        yield
    except CortexError as exc:  # the message leads; the kind of error adds nothing for a reader
        raise CortexCellError(scrub(flag_words(str(exc)), connection.secrets())) from None


@contextlib.contextmanager
def guardrail_advice() -> Iterator[None]:
    """The guardrail's error, with what to do in a cell (``--limit``, ``--to``, ``--max-rows``)."""
    try:
        yield
    except ResultTooLarge as exc:
        raise too_large(
            exc.job_id or "?", exc.rows, exc.max_rows, exc.cancelled, GUARDRAIL_ADVICE
        ) from None
