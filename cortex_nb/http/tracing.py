"""Request traces: what was sent and received, redacted before it is stored, shown three ways.

A ``TraceLog`` observes a ``requests.Session`` through its response hook (``attach``); the
request path knows nothing about it. Each reply becomes a ``Trace`` holding method, URL, status,
elapsed time, ``x-request-id``, headers and bodies (truncated), the transport retries urllib3
made, and a note for refreshes and 401 resends. Secrets are masked *before* a trace is stored:
sensitive headers, sensitive JSON keys at any depth, ``key=value`` pairs, bearer tokens, and
any exact secret value the log was told about or the session announced
(``security.announce_secrets``), wherever it stands: URL, reason, any header, bodies.

A trace renders as collapsible HTML in notebooks (``_repr_html_``), as text in terminals
(``str``) and as an equivalent ``curl`` command with the token as ``$TOKEN`` (``to_curl``).
"""

from __future__ import annotations

import contextlib
import html
import json
import shlex
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import requests

from cortex_nb.http.security import (
    SENSITIVE_HEADERS,
    mask_values,
    redact_headers,
    redact_json,
    scrub,
    secrets_of,
)

__all__ = ["Trace", "TraceLog", "render_traces_html"]

BODY_LIMIT = 2000  # characters of each body kept in a trace
_KIND_NOTES = {"token": "token refresh"}
_CURL_SKIP = frozenset({"user-agent", "accept-encoding", "connection", "content-length"})


@dataclass
class Trace:
    """One HTTP exchange, with every secret already masked."""

    method: str
    url: str
    status: int
    reason: str
    elapsed_ms: float
    request_id: str | None
    request_headers: dict[str, str]
    request_body: str | None
    response_headers: dict[str, str]
    response_body: str | None
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    retries: list[str] = field(default_factory=list)
    note: str | None = None
    kind: str = "api"

    def as_record(self) -> dict[str, Any]:
        """A flat dict for a DataFrame row."""
        record = asdict(self)
        record["retries"] = len(self.retries)
        return record

    def summary(self) -> str:
        """One line: method, URL, status, time, request id and notes."""
        line = f"{self.method} {self.url} -> {self.status} {self.reason} ({self.elapsed_ms:.0f} ms)"
        if self.request_id:
            line += f" x-request-id={self.request_id}"
        if self.retries:
            line += f" after {len(self.retries)} transport retries"
        if self.note:
            line += f" [{self.note}]"
        return line

    def __str__(self) -> str:
        parts = [self.summary(), "  request headers:"]
        parts += [f"    {k}: {v}" for k, v in self.request_headers.items()]
        if self.request_body:
            parts += ["  request body:", f"    {self.request_body}"]
        parts.append("  response headers:")
        parts += [f"    {k}: {v}" for k, v in self.response_headers.items()]
        if self.response_body:
            parts += ["  response body:", f"    {self.response_body}"]
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        return render_traces_html([self])

    def to_curl(self) -> str:
        """An equivalent curl command; the bearer token is the shell variable ``$TOKEN``."""
        words = ["curl", "-X", self.method, shlex.quote(self.url)]
        for name, value in self.request_headers.items():
            if name.lower() in _CURL_SKIP:
                continue
            if name.lower() == "authorization":
                words += ["-H", '"Authorization: Bearer $TOKEN"']
            elif name.lower() not in SENSITIVE_HEADERS:
                words += ["-H", shlex.quote(f"{name}: {value}")]
        if self.request_body:
            words += ["--data-raw", shlex.quote(self.request_body)]
        return " ".join(words)


def _status_class(status: int) -> str:
    return "ok" if status < 400 else "err"


def render_traces_html(traces: Iterable[Trace]) -> str:
    """Collapsible HTML (``<details>``) for a list of traces."""
    blocks = []
    for t in traces:
        body = html.escape(str(t).split("\n", 1)[1] if "\n" in str(t) else "")
        curl = html.escape(t.to_curl())
        color = "#1a7f37" if _status_class(t.status) == "ok" else "#cf222e"
        blocks.append(
            f'<details class="cortex-trace"><summary style="font-family:monospace">'
            f'<span style="color:{color}">{t.status}</span> {html.escape(t.summary())}</summary>'
            f'<pre style="font-size:85%">{body}</pre>'
            f'<pre style="font-size:85%"># curl\n{curl}</pre></details>'
        )
    return "\n".join(blocks)


def _body_text(body: Any, secrets: list[str], limit: int = BODY_LIMIT) -> str | None:
    """Decode, redact and truncate a request or response body for storage."""
    if not body:
        return None
    if not isinstance(body, bytes | str):
        return f"<{type(body).__name__} body not captured>"
    window = limit * 4  # parse whole bodies up to this size, so JSON keys are redacted exactly
    text = body[:window].decode("utf-8", "replace") if isinstance(body, bytes) else body[:window]
    if len(body) <= window:
        # not JSON (or nested past what Python's parser takes): the text scrubber below
        # still masks key=value pairs and bearer tokens
        with contextlib.suppress(ValueError, RecursionError):
            text = json.dumps(redact_json(json.loads(text)), separators=(",", ":"))
    text = scrub(text, secrets)
    return text if len(text) <= limit else text[:limit] + f"... [{len(body) - limit} more]"


def _retry_outcome(entry: Any) -> str:
    if entry.status:
        return str(entry.status)
    return type(entry.error).__name__ if entry.error else "?"


def _transport_retries(response: requests.Response) -> list[str]:
    retries = getattr(getattr(response, "raw", None), "retries", None)
    history = getattr(retries, "history", None) or ()
    return [f"{entry.method} {_retry_outcome(entry)}" for entry in history]


class TraceLog:
    """A bounded, thread-safe history of traces, fed by requests' response hooks."""

    def __init__(
        self, maxlen: int = 500, secrets: Callable[[], Iterable[str]] | None = None
    ) -> None:
        self._traces: deque[Trace] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._secrets = secrets or (lambda: ())
        self.listeners: list[Callable[[Trace], None]] = []

    def attach(self, session: requests.Session, kind: str = "api") -> None:
        """Record every reply ``session`` receives."""

        def hook(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
            # Hooks run before requests reads the body; reading it here is what requests does
            # next anyway, except for streamed replies, which are left unread.
            stream = bool(kwargs.get("stream"))
            self.record(response, kind=kind, stream=stream, secrets=secrets_of(session))
            return response

        hook.cortex_trace_log = self  # lets attach() avoid double registration
        hooks = session.hooks.setdefault("response", [])
        if not any(getattr(h, "cortex_trace_log", None) is self for h in hooks):
            hooks.append(hook)

    def record(
        self, response: requests.Response, kind: str = "api", stream: bool = False,
        secrets: Iterable[str] = (),
    ) -> Trace:
        """Build a redacted trace from ``response`` and store it; ``secrets`` are masked as
        well as those the log knows."""
        secrets = [s for s in (*self._secrets(), *secrets) if s]
        request = response.request
        request_id = response.headers.get("x-request-id")
        trace = Trace(
            method=request.method or "?",
            url=scrub(request.url or "", secrets),
            status=response.status_code,
            reason=mask_values(response.reason or "", secrets),
            elapsed_ms=response.elapsed.total_seconds() * 1000,
            request_id=mask_values(request_id, secrets) if request_id else request_id,
            request_headers=redact_headers(request.headers, secrets),
            request_body=_body_text(request.body, secrets),
            response_headers=redact_headers(response.headers, secrets),
            response_body=None if stream else _body_text(response.content, secrets),
            retries=_transport_retries(response),
            note=getattr(request, "cortex_note", None) or _KIND_NOTES.get(kind),
            kind=kind,
        )
        with self._lock:
            self._traces.append(trace)
        for listener in list(self.listeners):
            listener(trace)
        return trace

    @contextlib.contextmanager
    def collect(self) -> Iterator[list[Trace]]:
        """Gather every trace recorded while inside, however many the bounded history keeps."""
        found: list[Trace] = []
        self.listeners.append(found.append)
        try:
            yield found
        finally:
            self.listeners.remove(found.append)

    def __len__(self) -> int:
        return len(self._traces)

    def __iter__(self):
        with self._lock:
            return iter(list(self._traces))

    def last(self, n: int = 1) -> list[Trace]:
        """The ``n`` most recent traces, oldest first."""
        with self._lock:
            return list(self._traces)[-n:] if n > 0 else []

    def clear(self) -> None:
        """Forget every trace."""
        with self._lock:
            self._traces.clear()

    def to_frame(self) -> Any:
        """The history as a pandas DataFrame, one row per request."""
        import pandas as pd

        columns = ["started", "kind", "method", "url", "status", "elapsed_ms", "request_id",
                   "retries", "note"]
        rows = [{k: t.as_record()[k] for k in columns} for t in self]
        frame = pd.DataFrame(rows, columns=columns)
        # absent notes and request ids are empty text, not NaN
        return frame.fillna({"note": "", "request_id": ""})
