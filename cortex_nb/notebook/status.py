"""What a cell shows besides its result: live status lines, updated in place (a query's
progress, a background query's state), and request traces."""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from typing import Any

from IPython.display import HTML, display

from cortex_nb import wire
from cortex_nb.http.security import scrub
from cortex_nb.notebook.errors import GUARDRAIL_ADVICE
from cortex_nb.query.background import FINAL_STATES, BackgroundQuery

__all__ = ["BackgroundLine", "ProgressLine", "show_traces"]


class ProgressLine:
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


class BackgroundLine:
    """The live status line of a background cell, updated in place from the query's thread."""

    def __init__(self, enabled: bool, secrets: Callable[[], list[str]]) -> None:
        self.secrets = secrets
        self.handle: Any = None
        self.last = 0.0
        self.note = ""  # added to the final line (the result could not be stored)
        self.ended = False
        self._lock = threading.Lock()  # the cell and the query's thread both update the line
        if enabled:  # shown now, from the cell itself, so the line lands in that cell
            self.handle = display({"text/plain": "submitting..."}, raw=True, display_id=True)

    def __call__(self, query: BackgroundQuery) -> None:
        with self._lock:
            final = query.state in FINAL_STATES
            now = time.monotonic()
            if self.handle is None or self.ended or (not final and now - self.last < 0.25):
                return
            self.last, self.ended = now, final
            line = query.line(f"%cortex cancel {query.name or query.id}", GUARDRAIL_ADVICE)
            text = scrub(line, self.secrets()) + self.note
            bundle = {"text/plain": text}
            if final and query.state != wire.DONE:  # a failure stands out, as a cell's error would
                bundle["text/html"] = f'<pre style="color:#cf222e">{html.escape(text)}</pre>'
            self.handle.update(bundle, raw=True)


def show_traces(traces: list[Any]) -> None:
    """Show request traces inline as collapsible HTML (nothing when there are none)."""
    from cortex_nb.http.tracing import render_traces_html

    if traces:
        display(HTML(render_traces_html(traces)))
