"""One query job on the service: its state and progress, its pages, its cancel.

A ``QueryJob`` is created by ``QueryService.start(sql)`` or taken up by
``QueryService.job(job_id)``. It polls with ``maxWait`` and a short client backoff, then pages:
by cursor, or, once ``rowsInJob`` is known, by ``offset`` with a few pages in flight at once
(order preserved). Every page is checked in one place, each decoded once; rows received must
equal ``rowsInJob`` or it raises: nothing is silently cut. Interrupted (Ctrl-C) inside
``cancel_on_interrupt()``, it cancels itself on the server and says so.

A result too big for memory is refused before it is downloaded: the first page tells
``rowsInJob``, and above ``max_rows`` the job is cancelled and ``ResultTooLarge`` raised.
A first page with a ``pageCursor`` but no ``rowsInJob`` leaves the count unknown: the cursor
is followed to its end (progress shows no total), the guardrail counts rows as they arrive,
and the count is known once the last page is in; never a silently short result.
A job always ends: past its deadline (``timeout=`` seconds), or when the pages stop making
progress (a cursor seen twice, a page that adds no rows, pages that end short of ``rowsInJob``),
it cancels itself on the server and raises ``QueryError``. The deadline bounds each request
too (``HTTPClient.request(deadline=)``): a reply held by the server, the transport's retries
and a ``Retry-After`` longer than the time left all end at it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import requests

from cortex_nb.exceptions import (
    CortexError,
    QueryCancelled,
    QueryError,
    ResultTooLarge,
    TransportError,
)
from cortex_nb.http.transport import RETRY_STATUSES, retry_after_seconds
from cortex_nb.options import DEFAULT_MAX_ROWS, DEFAULT_QUERY_TIMEOUT, QueryOptions
from cortex_nb.query.replies import check_page
from cortex_nb.results.collect import Result, collect_result
from cortex_nb.wire import (
    CANCELLED,
    DONE,
    FAILED,
    MAX_WAIT_MS,
    PENDING,
    RUNNING,
    VALUES_DICTIONARY,
    ResultsPage,
    page_bytes,
)
from cortex_nb.words import plural

if TYPE_CHECKING:
    from cortex_nb.query.service import QueryService

__all__ = [
    "DEFAULT_MAX_ROWS",
    "DEFAULT_QUERY_TIMEOUT",
    "Page",
    "Progress",
    "QueryJob",
    "Result",
    "plural",
    "too_large",
]

FIRST_BACKOFF = 0.02  # seconds; polls start fast, most sandbox and small jobs finish in ms
MAX_BACKOFF = 1.0
CANCEL_TIMEOUT = (5, 10)  # seconds: a cancel on the way out must not hold the user long
GUARDRAIL_ADVICE = (
    "Fetch fewer (limit=N, or WHERE/LIMIT in the SQL), stream them to disk (to='DIR'), or "
    "raise max_rows (None: no guardrail)."
)
_HANDED_OUT = ResultsPage(DONE)  # stands for a first page already handed out (or refused)
_Reply = TypeVar("_Reply")
_ALL = sys.maxsize  # the rows wanted of a job whose count is unknown, with no limit


@dataclass
class Progress:
    """Where a query stands: handed to the ``progress`` callback after every step."""

    job_id: str
    state: str
    rows: int = 0
    rows_in_job: int | None = None
    pages: int = 0
    elapsed: float = 0.0
    done: bool = False

    def line(self, how_to_stop: str = "interrupt the kernel to stop") -> str:
        """One line for a status display: what is happening, how far, and how to stop."""
        total = self.rows_in_job
        rows = f"{self.rows:,}/{total:,} rows" if total is not None else plural(self.rows, "row")
        text = (
            f"{self.phase:<11} {rows}, {plural(self.pages, 'page')}, {self.elapsed:.1f} s "
            f"(job {self.job_id})"
        )
        return text if self.done or not how_to_stop else f"{text} · {how_to_stop}"

    @property
    def phase(self) -> str:
        """The state in words: queued, running, downloading, done, cancelled, failed..."""
        if self.state == DONE:
            return "done" if self.done else "downloading"
        return _PHASES.get(self.state, self.state.lower())


_PHASES = {"WAITING": "waiting", PENDING: "queued", RUNNING: "running", CANCELLED: "cancelled"}


def too_large(
    job_id: str, rows: int, max_rows: int, cancelled: bool, advice: str = GUARDRAIL_ADVICE,
    pages: int = 1,
) -> ResultTooLarge:
    """The one-line error of the guardrail: how many rows (``rowsInJob``, or ``limit`` when
    smaller; at least that many after ``pages`` pages when the job does not say), the
    guardrail, and what to do."""
    said = "cancelled the job on the server" if cancelled else "could not cancel the job"
    bring = f"{rows:,}" if pages == 1 else f"at least {rows:,}"
    after = "its first page" if pages == 1 else f"{pages:,} pages"
    return ResultTooLarge(
        f"Job {job_id} would bring {bring} rows into memory, more than max_rows={max_rows:,}: "
        f"stopped after {after} and {said}. {advice}",
        job_id, rows, max_rows, cancelled,
    )


class _Poller:
    """Client-side backoff between polls, used only when the server answers without waiting.

    ``stop``, once set (the job was cancelled), cuts the sleep short.
    """

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.delay = FIRST_BACKOFF
        self.stop = stop or threading.Event()

    def wait(self, response: requests.Response) -> None:
        """Sleep before the next poll, unless the server already held the request."""
        held = response.elapsed.total_seconds()
        if held < MAX_WAIT_MS / 2000:  # the server did not hold the request for long
            self.stop.wait(self.delay)
            self.delay = min(self.delay * 2, MAX_BACKOFF)


# -- the job -------------------------------------------------------------------------------------
@dataclass
class Page:
    """One DONE results page: its rows (decoded, or an Arrow ``StructArray``) and its cursor."""

    rows: Any
    size: int
    cursor: str | None
    arrow: bool = False

    @classmethod
    def of(cls, results: ResultsPage) -> Page:
        """The page of a checked DONE reply."""
        return cls(results.rows, results.rows_in_page, results.cursor)


class QueryJob:
    """A query job on the service: its id, state and progress; its pages; its cancel.

    ``limit`` fetches at most that many rows (the page size shrinks to it); ``parallel`` pages
    are fetched at once by offset when the row count is known; ``progress`` is called with the
    ``Progress`` record after every step; past ``timeout`` seconds (None: no limit) the job is
    cancelled and ``QueryError`` raised. ``pace``, when given, is called before every request
    with the job's deadline (background jobs wait there, no longer than that, while the service
    asks everyone to back off). Once ``cancel()``
    was called, from any thread, the job's own loop stops at its next step (``QueryCancelled``).
    With ``max_rows``, a job that would bring more rows than that is cancelled once its first
    page tells the count (``ResultTooLarge``).
    """

    def __init__(
        self, service: QueryService, job_id: str, *, sql: str | None = None,
        options: QueryOptions | None = None,
        progress: Callable[[Progress], None] | None = None,
        pace: Callable[[float | None], None] | None = None,
    ) -> None:
        self.service, self.id, self.sql = service, job_id, sql
        self.options = options if options is not None else QueryOptions()
        self.callback = progress
        self.progress = Progress(job_id=job_id, state=PENDING)
        self.rows_in_job: int | None = None
        self.schema: dict[str, Any] | None = None
        self._first: ResultsPage | None = None
        self._started = time.monotonic()
        timeout = self.options.timeout
        self._deadline = None if timeout is None else self._started + timeout
        self.pace = pace
        self._cancelled = threading.Event()

    # the options this job reads, by their old attribute names
    limit = property(lambda self: self.options.limit, doc="Fetch at most this many rows.")
    max_rows = property(lambda self: self.options.guardrail, doc="The guardrail (None: none).")
    parallel = property(lambda self: self.options.parallel, doc="Pages fetched at once.")
    timeout = property(lambda self: self.options.timeout, doc="Seconds allowed (None: none).")
    result_format = property(lambda self: self.options.result_format, doc="How rows come.")
    page_size = property(
        lambda self: self.options.wanted_page_size, doc="Rows asked per page (limit caps it)."
    )

    @property
    def state(self) -> str:
        """The job's last known state (PENDING, RUNNING, DONE, ...)."""
        return self.progress.state

    @property
    def pages(self) -> int:
        """Results pages received so far."""
        return self.progress.pages

    @property
    def wanted_rows(self) -> int:
        """The rows this job hands out: ``rowsInJob``, or ``limit`` when smaller (once known)."""
        return self._wanted()

    def __repr__(self) -> str:
        return f"<QueryJob {self.id} {self.progress.line()}>"

    # -- states and pages ------------------------------------------------------------------------
    def wait(self) -> None:
        """Poll with ``maxWait`` (and a short backoff) until the job is DONE; raise if it fails."""
        if self._first is not None:
            return
        poll = _Poller(self._cancelled)
        self._report(PENDING)
        while True:
            self._before_request()
            response = self._results(max_wait=MAX_WAIT_MS)
            page = self._check(response)
            if not page.live:
                break
            self._report(page.state)
            poll.wait(response)
        self._first = page
        # a cursor with no rowsInJob: the count is unknown until the cursor ends
        self.rows_in_job = page.rows_in_job if page.cursor else page.total_rows
        self.progress.rows_in_job = self.rows_in_job
        self.schema = page.schema
        self._refuse_if_too_large()
        self._report(DONE)

    def _refuse_if_too_large(self) -> None:
        """The guardrail: cancel the job and raise when it would bring more than ``max_rows``
        (a job that does not tell its count is checked as its pages arrive)."""
        wanted = self._wanted()
        if self.max_rows is None or wanted <= self.max_rows or self.rows_in_job is None:
            return
        self._first = _HANDED_OUT  # nothing of it is handed out
        cancelled = self.cancel()
        self._report(CANCELLED, done=True)
        raise too_large(self.id, wanted, self.max_rows, cancelled)

    def _refuse_if_past_guardrail(self) -> None:
        """The guardrail for a job of unknown count: raise once more than ``max_rows`` came."""
        got = min(self.progress.rows, self._wanted())
        if self.max_rows is None or self.rows_in_job is not None or got <= self.max_rows:
            return
        cancelled = self.cancel()
        self._report(CANCELLED, done=True)
        raise too_large(self.id, got, self.max_rows, cancelled, pages=self.pages)

    def iter_pages(self, *, arrow: bool = True) -> Iterator[Page]:
        """Every wanted page in order, checked; raise unless exactly the wanted rows arrived.

        ``arrow`` lets pages after the first be parsed by Arrow in the download threads (rows
        then come as a ``StructArray``); without it every page's rows are decoded JSON.
        """
        self.wait()
        first, self._first = self._first, _HANDED_OUT  # the first page is handed out once
        if first is _HANDED_OUT:
            raise QueryError(f"Job {self.id}: its pages were already read; start it again.")
        wanted = self._wanted()
        for page in self._pages(Page.of(first), wanted, arrow and self._arrow_ok()):
            self.progress.rows += page.size
            self.progress.pages += 1
            self._refuse_if_past_guardrail()
            self._report(DONE)
            yield page
        self._check_count(wanted)
        self._report(DONE, done=True)

    def rows(self) -> list[Any]:
        """Every wanted row as decoded JSON, as the service sent them."""
        rows: list[Any] = []
        for page in self.iter_pages(arrow=False):
            rows.extend(page.rows)
        return rows[: self.limit] if self.limit is not None else rows

    def result(self, **changes: Any) -> Result:
        """Every wanted row as a typed DataFrame, in a ``Result`` (``changes``: options that
        shape the frame, e.g. ``structs="keep"``, over the job's own)."""
        options = self.options.replace(**changes) if changes else self.options
        return collect_result(self, options)

    # -- cancelling ------------------------------------------------------------------------------
    def cancel(self) -> bool:
        """Ask the service to cancel the job; True when it accepted. Never raises.

        The job's own loop (in whatever thread) stops before its next request.
        """
        self._cancelled.set()
        with contextlib.suppress(CortexError):
            return self.service.cancel_job(self.id, timeout=CANCEL_TIMEOUT).ok
        return False

    @contextlib.contextmanager
    def cancel_on_interrupt(self, cancel: bool = True) -> Iterator[QueryJob]:
        """Inside, an interrupt (Ctrl-C) cancels the job and becomes ``QueryCancelled``; any
        failure ends the progress (``failed``, ``cancelled``) before it is raised.

        With ``cancel=False`` (a job taken up by id) an interrupt only stops waiting: the job
        is left as it is on the service and the error says how to fetch it again.
        """
        try:
            yield self
        except QueryError as exc:
            if not self.progress.done:
                cancelled = isinstance(exc, QueryCancelled)
                self._report(CANCELLED if cancelled else FAILED, done=True)
            raise
        except KeyboardInterrupt:
            if not cancel:
                self._report("STOPPED", done=True)
                raise QueryError(
                    f"Interrupted: stopped fetching job {self.id}; it was left as it is on the "
                    f"service (fetch it again with %cortex fetch {self.id}).", self.id,
                ) from None
            cancelled = self.cancel()
            self._report(CANCELLED, done=True)
            said = "was cancelled on the server" if cancelled else "could not be cancelled"
            raise QueryCancelled(
                f"Interrupted: job {self.id} {said} ({self.progress.rows:,} rows had arrived).",
                self.id,
            ) from None

    # -- giving up -------------------------------------------------------------------------------
    def _give_up(self, problem: str, advice: str) -> QueryError:
        """Cancel the job on the server; the error to raise says what went wrong and what to do."""
        said = "cancelled it on the server" if self.cancel() else "could not cancel it"
        return QueryError(f"Job {self.id}: {problem}; {said}. {advice}", self.id)

    def _before_request(self) -> None:
        """Before every request: stop if cancelled, keep the pace, give up past the deadline."""
        self._stop_if_cancelled()
        if self.pace is not None:
            self.pace(self._deadline)
            self._stop_if_cancelled()
        self._check_time()

    def _stop_if_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise QueryCancelled(
                f"Job {self.id} was cancelled ({self.progress.rows:,} rows had arrived).", self.id
            )

    def _check_time(self, waiting: float = 0.0) -> None:
        """Give up once the deadline has passed, or when ``waiting`` seconds more (what the
        service asked with ``Retry-After``) would pass it."""
        if self._deadline is None or time.monotonic() + waiting < self._deadline:
            return
        asked = f"; the service asked to wait {waiting:g} s more (Retry-After)" if waiting else ""
        raise self._give_up(
            f"not finished within {self.timeout:g} s ({self.state}, "
            f"{self.progress.rows:,} rows received{asked})",
            "Allow more time (query(timeout=...), %%cortex --timeout) or narrow the query.",
        )

    @property
    def deadline(self) -> float | None:
        """When the job's time runs out (``time.monotonic()``), None for no timeout."""
        return self._deadline

    def within_deadline(self, send: Callable[[], _Reply]) -> _Reply:
        """What ``send()`` returns; past the deadline (a request cut short by it, or a reply
        asking to wait beyond it) the job gives up instead (cancelled, ``QueryError``)."""
        try:
            reply = send()
        except TransportError:
            self._check_time()
            raise
        if getattr(reply, "status_code", None) in RETRY_STATUSES:  # retries stopped: why?
            self._check_time(retry_after_seconds(reply.headers.get("Retry-After")))
        return reply

    # -- inside ----------------------------------------------------------------------------------
    def _report(self, state: str, done: bool = False) -> None:
        p = self.progress
        p.job_id, p.state, p.done = self.id, state, done
        p.elapsed = time.monotonic() - self._started
        if self.callback is not None:
            self.callback(p)

    def _wanted(self) -> int:
        total = _ALL if self.rows_in_job is None and self._first is not None else self.rows_in_job
        total = total or 0
        return total if self.limit is None else min(total, self.limit)

    def _arrow_ok(self) -> bool:
        return self.result_format == VALUES_DICTIONARY

    def _check(self, response: requests.Response) -> ResultsPage:
        """A results reply checked (``replies.check_page``), no bigger than the page asked."""
        return check_page(response, self.id, self.service.secrets(), self.page_size)

    def _results(self, **where: Any) -> requests.Response:
        return self.within_deadline(lambda: self.service.get_job_results(
            self.id, page_size=self.page_size, result_format=self.result_format,
            deadline=self._deadline, max_reply_bytes=page_bytes(self.page_size), **where,
        ))

    def _pages(self, first: Page, wanted: int, arrow: bool) -> Iterator[Page]:
        """The first page, then the rest by offset (in parallel) or by cursor."""
        yield first
        if first.size >= wanted:
            return
        if self.parallel > 1 and self.rows_in_job is not None:
            yield from self._pages_by_offset(first.size, wanted, arrow)
        else:
            yield from self._pages_by_cursor(first.cursor, first.size, wanted, arrow)

    def _pages_by_cursor(
        self, cursor: str | None, received: int, wanted: int, arrow: bool
    ) -> Iterator[Page]:
        seen = {cursor}
        while cursor and received < wanted:
            self._before_request()
            page = self._read(*self._download(arrow, page_cursor=cursor))
            if page.cursor in seen:  # the service is going round in circles
                raise self._give_up(
                    f"the service sent page cursor {page.cursor[:40]!r} a second time",
                    "Run the query again; if it repeats, report it with the job id.",
                )
            seen.add(page.cursor)
            received += page.size
            cursor = page.cursor
            yield page

    def _pages_by_offset(self, start: int, wanted: int, arrow: bool) -> Iterator[Page]:
        # Threads download (and parse, when Arrow can: its reader releases the GIL); pages are
        # checked and handed out here, in order, a bounded number in flight.
        offsets = iter(range(start, wanted, self.page_size))
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="cortex-page") as pool:
            in_flight: list[Future] = []
            try:
                for offset in offsets:
                    self._before_request()
                    in_flight.append(pool.submit(self._download, arrow, offset=offset))
                    if len(in_flight) >= self.parallel:
                        yield self._read(*in_flight.pop(0).result())
                while in_flight:
                    yield self._read(*in_flight.pop(0).result())
            finally:
                for future in in_flight:
                    future.cancel()

    def _download(self, arrow: bool, **where: Any) -> tuple[requests.Response, Any]:
        """One results page (runs in a worker thread), parsed by Arrow when it may be."""
        response = self._results(**where)
        parsed = None
        if arrow and response.ok:
            from cortex_nb.results.frames import parse_page

            parsed = parse_page(response.content, self.page_size)
        return response, parsed

    def _read(self, response: requests.Response, parsed: Any) -> Page:
        """A page after the first, from Arrow's parse when there is one, else the strict checks.

        Arrow's parse went through the same envelope checks (``wire.parse_results``): a page
        they refuse has none, and the strict checks say why. A page that adds no rows is given
        up on: every page after the first is asked for only while rows are still missing.
        """
        if parsed is not None:
            page = Page(parsed.rows, len(parsed.rows), parsed.page_cursor, arrow=True)
        else:
            results = self._check(response)
            if results.state != DONE:
                raise QueryError(
                    f"Job {self.id}: a results page came back {results.state} after the job "
                    "was DONE. Run the query again.", self.id,
                )
            page = Page.of(results)
        if page.size == 0 and (page.cursor or self.rows_in_job is not None):
            wanted = self._wanted()
            of = f" of {wanted:,}" if wanted != _ALL else ""
            raise self._give_up(
                f"a results page added no rows ({self.progress.rows:,}{of} received)",
                "Run the query again.",
            )
        return page

    def _check_count(self, expected: int) -> None:
        got = self.progress.rows
        if self.rows_in_job is None:  # the cursor ended: now the count is known
            if self.limit is None or got < self.limit:
                self.rows_in_job = self.progress.rows_in_job = got
            return
        if got < expected or (self.limit is None and got != expected):
            raise self._give_up(
                f"received {got:,} rows but the job has {expected:,}",
                "Refusing to return a partial result; run the query again.",
            )
