"""Query Service v2: jobs end to end, from SQL to a typed DataFrame.

Low level, with the official SDK's names and parameters (each returns ``requests.Response``):
``create_query``, ``get_job``, ``list_jobs``, ``cancel_job``, ``get_job_results`` and the
generator ``iter_job_results``. Unlike the SDK, ``iter_job_results`` handles every job state
(PENDING, RUNNING, DONE, FAILED, CANCELLED, TIMEDOUT), polls adaptively with ``maxWait`` instead
of sleeping a fixed second, and decodes each page once (``response.json()`` returns the cached
decode).

High level: ``query(sql) -> Result``. The job is created idempotently (a client-chosen
``jobId``; a 409 on a transport resend means "already created"), polled with ``maxWait`` and a
short client backoff, then paged: by cursor, or, once ``rowsInJob`` is known, by ``offset`` with
a few pages in flight at once (order preserved). Rows received must equal ``rowsInJob``, or the
call raises: nothing is silently cut. Ctrl-C cancels the job on the server and says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
import requests

from cortex_nb import __version__
from cortex_nb.exceptions import CortexError, QueryCancelled, QueryError
from cortex_nb.httpclient import HTTPClient, http_error_message, service_message
from cortex_nb.tracing import Trace, TraceLog

__all__ = ["TERMINAL_STATES", "Progress", "QueryService", "Result"]

JOBS = "/query/v2/jobs"
RESULTS = "/query/v2/jobResults"
PENDING_STATES = frozenset({"PENDING", "RUNNING"})
TERMINAL_STATES = frozenset({"DONE", "FAILED", "CANCELLED", "TIMEDOUT"})
DEFAULT_PAGE_SIZE = 10_000
MAX_PAGE_SIZE = 100_000
MAX_WAIT_MS = 2000
FIRST_BACKOFF = 0.02  # seconds; polls start fast, most sandbox and small jobs finish in ms
MAX_BACKOFF = 1.0


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

    def line(self) -> str:
        """One line for a status display."""
        total = f"/{self.rows_in_job:,}" if self.rows_in_job is not None else ""
        return (
            f"{self.state:<9} {self.rows:,}{total} rows, {self.pages} pages, "
            f"{self.elapsed:.1f} s (job {self.job_id})"
        )


@dataclass
class Result:
    """A finished query: the DataFrame and how it was obtained."""

    df: Any
    job_id: str
    rows_in_job: int
    pages: int
    elapsed: float
    sql: str
    schema: dict[str, Any] | None = None
    traces: list[Trace] = field(default_factory=list)

    def summary(self) -> str:
        """One line: rows, pages, time and job id."""
        return (
            f"{len(self.df):,} rows ({self.rows_in_job:,} in job), {self.pages} pages, "
            f"{self.elapsed:.2f} s, job {self.job_id}"
        )

    def __repr__(self) -> str:
        return f"<Result {self.summary()}>"

    def _repr_html_(self) -> str:
        return f"<p><code>{self.summary()}</code></p>" + self.df._repr_html_()


def _decode(response: requests.Response) -> Any:
    """Decode a JSON reply once and make ``response.json()`` return that decode."""
    cached = getattr(response, "cortex_json", None)
    if cached is not None:
        return cached
    try:
        payload = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise QueryError(
            f"The reply to {response.request.method} {response.url} (HTTP "
            f"{response.status_code}) is not JSON: {response.text[:80]!r}."
        ) from None
    response.cortex_json = payload
    response.json = lambda **_: payload  # the SDK decodes pages twice; we decode once
    return payload


def _job_id() -> str:
    return f"cortexnb-{uuid.uuid4()}"


class QueryService:
    """Query Service v2 client: the official SDK's calls plus ``query()`` to a DataFrame."""

    def __init__(
        self, session: HTTPClient | None = None, traces: TraceLog | None = None, **kwargs: Any
    ) -> None:
        self.session = session if session is not None else HTTPClient(**kwargs)
        credentials = self.session.credentials
        self.traces = traces or TraceLog(secrets=credentials.secrets if credentials else None)
        self.traces.attach(self.session.session)

    @property
    def url(self) -> str:
        """The API base URL."""
        return self.session.url

    # -- the SDK's calls ------------------------------------------------------------------
    def create_query(
        self, job_id: str | None = None, query_params: dict[str, Any] | None = None, **kwargs: Any
    ) -> requests.Response:
        """Submit a query job (``POST /query/v2/jobs``); resent safely when ``job_id`` is given."""
        body = dict(kwargs.pop("json", None) or {})
        if job_id is not None:
            body["jobId"] = job_id
        if query_params is not None:
            body["params"] = query_params
        body.setdefault("clientType", "cortex-nb")
        body.setdefault("clientVersion", __version__)
        kwargs.setdefault("idempotent", job_id is not None)
        return self.session.request(method="POST", path=JOBS, json=body, **kwargs)

    def get_job(self, job_id: str, **kwargs: Any) -> requests.Response:
        """Job detail (``GET /query/v2/jobs/<id>``)."""
        return self.session.request(method="GET", path=f"{JOBS}/{job_id}", **kwargs)

    def list_jobs(
        self,
        max_jobs: int | None = None,
        created_after: int | None = None,
        state: str | None = None,
        job_type: str | None = None,
        tenant_id: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """List jobs, newest first (``GET /query/v2/jobs``)."""
        params = _params(
            kwargs.pop("params", None), maxJobs=max_jobs, createdAfter=created_after,
            state=state, type=job_type, tenantId=tenant_id,
        )
        return self.session.request(method="GET", path=JOBS, params=params, **kwargs)

    def cancel_job(self, job_id: str, **kwargs: Any) -> requests.Response:
        """Cancel a job (``DELETE /query/v2/jobs/<id>``)."""
        return self.session.request(method="DELETE", path=f"{JOBS}/{job_id}", **kwargs)

    def get_job_results(
        self,
        job_id: str,
        max_wait: int | None = None,
        offset: int | None = None,
        page_cursor: str | None = None,
        page_number: int | None = None,
        page_size: int | None = None,
        result_format: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """One results page (``GET /query/v2/jobResults/<id>``); the body is not decoded here."""
        params = _params(
            kwargs.pop("params", None), maxWait=max_wait, offset=offset, pageCursor=page_cursor,
            pageNumber=page_number, pageSize=page_size, resultFormat=result_format,
        )
        return self.session.request(
            method="GET", path=f"{RESULTS}/{job_id}", params=params, **kwargs
        )

    def iter_job_results(
        self,
        job_id: str,
        max_wait: int | None = None,
        offset: int | None = None,
        page_cursor: str | None = None,
        page_number: int | None = None,
        page_size: int | None = None,
        result_format: str | None = None,
        **kwargs: Any,
    ) -> Iterator[requests.Response]:
        """Yield each DONE results page, following ``pageCursor``; raise on FAILED and the like."""
        where: dict[str, Any] = {
            "offset": offset, "page_cursor": page_cursor, "page_number": page_number
        }
        poll = _Poller()
        while True:
            response = self.get_job_results(
                job_id, max_wait=max_wait or MAX_WAIT_MS, page_size=page_size,
                result_format=result_format, **where, **kwargs,
            )
            page = self._checked_page(response, job_id)
            if page["state"] in PENDING_STATES:
                poll.wait(response)
                continue
            yield response
            cursor = page["page"].get("pageCursor")
            if not cursor:
                return
            where = {"page_cursor": cursor}  # a cursor excludes offset and page number

    # -- validation ----------------------------------------------------------------------------
    def _checked_page(self, response: requests.Response, job_id: str) -> dict[str, Any]:
        """Decode a results reply and check its shape and state; raise a clear error if wrong."""
        if not response.ok:
            self._raise_for_reply(response, f"Fetching results of job {job_id}", job_id)
        page = _decode(response)
        if not isinstance(page, dict) or not isinstance(page.get("state"), str):
            raise QueryError(f"Malformed results page for job {job_id}: no job state.", job_id)
        state = page["state"].upper()
        page["state"] = state
        if state in PENDING_STATES:
            return page
        if state != "DONE":
            self._raise_for_state(state, job_id, page)
        data = ((page.get("page") or {}).get("result") or {}).get("data")
        if not isinstance(page.get("page"), dict) or not isinstance(data, list):
            raise QueryError(
                f"Malformed results page for job {job_id}: page.result.data is not a list.",
                job_id,
            )
        declared = page.get("rowsInPage")
        if declared is not None and declared != len(data):
            raise QueryError(
                f"Malformed results page for job {job_id}: rowsInPage says {declared} but "
                f"the page holds {len(data)} rows.", job_id,
            )
        return page

    def _raise_for_state(self, state: str, job_id: str, payload: Any) -> None:
        detail = service_message(payload)
        detail = f": {detail}" if detail else ""
        if state == "CANCELLED":
            raise QueryCancelled(f"Job {job_id} was cancelled{detail}.", job_id, payload)
        if state == "TIMEDOUT":
            raise QueryError(
                f"Job {job_id} timed out on the server{detail}. Narrow the time range or add "
                "a LIMIT.", job_id, payload,
            )
        if state == "FAILED":
            raise QueryError(f"Job {job_id} failed{detail}.", job_id, payload)
        raise QueryError(f"Job {job_id} is in an unknown state {state!r}.", job_id, payload)

    def _raise_for_reply(self, response: requests.Response, doing: str, job_id: str | None) -> None:
        secrets = self.session.credentials.secrets() if self.session.credentials else []
        raise QueryError(f"{doing} failed: {http_error_message(response, secrets)}", job_id)

    # -- high level ----------------------------------------------------------------------------
    def submit(self, sql: str, job_id: str | None = None, **properties: Any) -> str:
        """Create a query job for ``sql`` and return its id (409 on a resend counts as created)."""
        job_id = job_id or _job_id()
        params: dict[str, Any] = {"query": sql, "dialect": "csql"}
        if properties:
            params["properties"] = properties
        response = self.create_query(job_id=job_id, query_params=params)
        if response.status_code == 409 and job_id:
            return job_id  # our own earlier attempt landed before the connection dropped
        if not response.ok:
            self._raise_for_reply(response, "Submitting the query", job_id)
        return str(_decode(response).get("jobId") or job_id)

    def query(
        self,
        sql: str,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        result_format: str = "valuesDictionary",
        structs: str = "value",
        max_rows: int | None = None,
        parallel: int = 4,
        progress: Callable[[Progress], None] | None = None,
        job_id: str | None = None,
        **properties: Any,
    ) -> Result:
        """Run ``sql`` as a job and return a ``Result`` holding the typed DataFrame."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise QueryError(f"page_size must be 1..{MAX_PAGE_SIZE}, not {page_size}.")
        if max_rows is not None:
            if max_rows < 1:
                raise QueryError(f"max_rows must be at least 1, not {max_rows}.")
            page_size = min(page_size, max_rows)  # fetch no more than asked for
        run = _Run(self, sql, page_size, result_format, structs, max_rows, parallel, progress)
        with self.traces.collect() as seen:
            run.job_id = self.submit(sql, job_id=job_id, **properties)
            try:
                result = run.execute()
            except KeyboardInterrupt:
                self._cancel_quietly(run.job_id)
                raise QueryCancelled(
                    f"Interrupted: job {run.job_id} was cancelled on the server "
                    f"({run.progress.rows:,} rows had arrived).", run.job_id,
                ) from None
        # other threads' requests may have been seen too: keep this job's
        result.traces = [
            t for t in seen if run.job_id in t.url or run.job_id in (t.request_body or "")
        ]
        return result

    def _cancel_quietly(self, job_id: str) -> None:
        with contextlib.suppress(CortexError):  # best effort: the interrupt message still shows
            self.cancel_job(job_id, timeout=(5, 10))


def _params(base: dict[str, Any] | None, **values: Any) -> dict[str, Any]:
    params = dict(base or {})
    params.update({k: v for k, v in values.items() if v is not None})
    return params


class _Poller:
    """Client-side backoff between polls, used only when the server answers without waiting."""

    def __init__(self) -> None:
        self.delay = FIRST_BACKOFF

    def wait(self, response: requests.Response) -> None:
        """Sleep before the next poll, unless the server already held the request."""
        held = response.elapsed.total_seconds()
        if held < MAX_WAIT_MS / 2000:  # the server did not hold the request for long
            time.sleep(self.delay)
            self.delay = min(self.delay * 2, MAX_BACKOFF)


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is no glibc."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load_malloc_trim() if sys.platform.startswith("linux") else None


def _release_freed_memory() -> None:
    """Give memory freed by finished pages back to the OS.

    Pages are downloaded (and parsed) in worker threads and freed in the main one; glibc keeps
    such memory in the threads' arenas, so without this the process's peak grew with the
    number of pages in flight instead of staying near the size of the frame.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@dataclass
class _Page:
    """One DONE results page: decoded rows (``data``), or an Arrow ``StructArray`` of them."""

    size: int
    cursor: str | None
    data: Any
    arrow: bool = False


def _page_of(payload: dict[str, Any]) -> _Page:
    data = payload["page"]["result"]["data"]
    return _Page(len(data), payload["page"].get("pageCursor"), data)


class _Run:
    """One query() call: poll to DONE, fetch pages (in parallel when possible), build the frame."""

    def __init__(
        self, service: QueryService, sql: str, page_size: int, result_format: str,
        structs: str, max_rows: int | None, parallel: int,
        progress: Callable[[Progress], None] | None,
    ) -> None:
        self.service, self.sql, self.page_size = service, sql, page_size
        self.result_format, self.max_rows = result_format, max_rows
        self.parallel = max(1, parallel)
        self.callback = progress
        self.job_id = ""
        self.started = time.monotonic()
        self.progress = Progress(job_id="", state="PENDING")
        self.structs = structs
        self.builder: Any = None

    def report(self, state: str, done: bool = False) -> None:
        """Update the progress record and hand it to the callback."""
        p = self.progress
        p.job_id, p.state, p.done = self.job_id, state, done
        p.elapsed = time.monotonic() - self.started
        if self.callback is not None:
            self.callback(p)

    def execute(self) -> Result:
        """Poll to DONE, fetch every wanted page, check the count, build the Result."""
        first = self.first_page()
        rows_in_job = int(first.get("rowsInJob", len(first["page"]["result"]["data"])))
        self.progress.rows_in_job = rows_in_job
        from cortex_nb.frames import FrameBuilder  # pandas loads only when a query runs

        self.builder = FrameBuilder(
            schema=first.get("schema"), result_format=self.result_format, structs=self.structs
        )
        wanted = rows_in_job if self.max_rows is None else min(rows_in_job, self.max_rows)
        for page in self.pages(first, wanted):
            self.add(page)
        self.check_count(wanted)
        self.report("DONE", done=True)
        df = self.builder.to_dataframe()
        if self.max_rows is not None and len(df) > self.max_rows:
            df = df.iloc[: self.max_rows]
        return Result(
            df=df, job_id=self.job_id, rows_in_job=rows_in_job, pages=self.progress.pages,
            elapsed=self.progress.elapsed, sql=self.sql, schema=first.get("schema"),
        )

    def first_page(self) -> dict[str, Any]:
        """Poll with ``maxWait`` (and a short backoff) until the first DONE page."""
        poll = _Poller()
        self.report("PENDING")
        while True:
            response = self.service.get_job_results(
                self.job_id, max_wait=MAX_WAIT_MS, page_size=self.page_size,
                result_format=self.result_format,
            )
            page = self.service._checked_page(response, self.job_id)
            if page["state"] == "DONE":
                return page
            self.report(page["state"])
            poll.wait(response)

    def pages(self, first: dict[str, Any], wanted: int) -> Iterator[_Page]:
        """The first page, then the rest by offset (in parallel) or by cursor."""
        page = _page_of(first)
        yield page
        if page.size >= wanted:
            return
        if self.parallel > 1 and "rowsInJob" in first:
            yield from self.pages_by_offset(page.size, wanted)
        else:
            yield from self.pages_by_cursor(page.cursor, page.size, wanted)

    def pages_by_cursor(self, cursor: str | None, received: int, wanted: int) -> Iterator[_Page]:
        """Follow ``pageCursor`` one page at a time."""
        while cursor and received < wanted:
            page = self.read(*self.download(page_cursor=cursor))
            received += page.size
            cursor = page.cursor
            yield page

    def pages_by_offset(self, start: int, wanted: int) -> Iterator[_Page]:
        """Fetch pages by ``offset``, a few at once, yielding them in order."""
        # Threads download (and parse, when Arrow can: its reader releases the GIL); pages are
        # checked and added here, in order, a bounded number in flight.
        offsets = iter(range(start, wanted, self.page_size))
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="cortex-page") as pool:
            in_flight: list[Future] = []
            try:
                for offset in offsets:
                    in_flight.append(pool.submit(self.download, offset=offset))
                    if len(in_flight) >= self.parallel:
                        yield self.read(*in_flight.pop(0).result())
                while in_flight:
                    yield self.read(*in_flight.pop(0).result())
            finally:
                for future in in_flight:
                    future.cancel()

    def download(self, **where: Any) -> tuple[requests.Response, Any]:
        """One results page (runs in a worker thread), parsed by Arrow when it can be."""
        response = self.service.get_job_results(
            self.job_id, page_size=self.page_size, result_format=self.result_format, **where
        )
        parsed = None
        if self.result_format == "valuesDictionary" and response.ok:
            from cortex_nb.frames import parse_page

            parsed = parse_page(response.content)
        return response, parsed

    def read(self, response: requests.Response, parsed: Any) -> _Page:
        """The page from Arrow's parse when it is sound, else through the strict checks."""
        if parsed is not None and parsed.rows_in_page in (None, len(parsed.rows)):
            return _Page(len(parsed.rows), parsed.page_cursor, parsed.rows, arrow=True)
        payload = self.service._checked_page(response, self.job_id)
        if payload["state"] != "DONE":
            raise QueryError(
                f"Job {self.job_id}: a results page came back {payload['state']} after the job "
                "was DONE. Run the query again.", self.job_id,
            )
        return _page_of(payload)

    def add(self, page: _Page) -> None:
        """Hand a page's rows to the frame builder and count them."""
        if page.arrow:
            self.builder.add_arrow_page(page.data)
        else:
            self.builder.add_page(page.data)
        page.data = None  # let the page go as soon as its columns are kept
        _release_freed_memory()
        self.progress.rows += page.size
        self.progress.pages += 1
        self.report("DONE")

    def check_count(self, expected: int) -> None:
        """Raise unless exactly the expected number of rows arrived."""
        got = self.progress.rows
        if got < expected or (self.max_rows is None and got != expected):
            raise QueryError(
                f"Job {self.job_id}: received {got:,} rows but the job has {expected:,}; "
                "refusing to return a partial result. Run the query again.", self.job_id,
            )

