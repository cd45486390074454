"""Query Service v2: jobs end to end, from SQL to a typed DataFrame.

Low level, with the official SDK's names and parameters (each returns ``requests.Response``):
``create_query``, ``get_job``, ``list_jobs``, ``cancel_job``, ``get_job_results`` and the
generator ``iter_job_results``. Unlike the SDK, ``iter_job_results`` handles every job state
(PENDING, RUNNING, DONE, FAILED, CANCELLED, TIMEDOUT) and polls adaptively with ``maxWait``
instead of sleeping a fixed second.

A ``QueryJob`` is one job on the service: ``QueryService.start(sql)`` creates it (idempotently:
a client-chosen ``jobId``, so a 409 on a transport resend means "already created") and
``QueryService.job(job_id)`` takes up an existing one. It polls with ``maxWait`` and a short
client backoff, then pages: by cursor, or, once ``rowsInJob`` is known, by ``offset`` with a few
pages in flight at once (order preserved). Every page is checked in one place, each decoded
once; rows received must equal ``rowsInJob`` or it raises: nothing is silently cut. Interrupted
(Ctrl-C) inside ``cancel_on_interrupt()``, it cancels itself on the server and says so.

A result too big for memory is refused before it is downloaded: the first page tells
``rowsInJob``, and above ``max_rows`` (``query()``'s default: ``DEFAULT_MAX_ROWS``) the job is
cancelled and ``ResultTooLarge`` raised, saying how many rows there are and what to do
(``limit=`` fetches at most that many rows; ``to=DIR`` streams them to a Parquet dataset).

A job always ends: past its deadline (``timeout=`` seconds), or when the pages stop making
progress (a cursor seen twice, a page that adds no rows, pages that end short of ``rowsInJob``),
it cancels itself on the server and raises ``QueryError``. Replies of the wrong shape raise an
error naming the field; job ids the service chooses are checked and escaped in paths.
``QueryService.query(sql) -> Result`` is a job turned into a DataFrame (or, with ``to=DIR``, a
``cortex_nb.datasets.Dataset`` on disk).
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
import requests

from cortex_nb import dataguide
from cortex_nb._version import __version__
from cortex_nb.exceptions import (
    ConfigurationError,
    CortexError,
    QueryCancelled,
    QueryError,
    ResultTooLarge,
)
from cortex_nb.httpclient import HTTPClient, http_error_message, service_message
from cortex_nb.tracing import Trace, TraceLog

if TYPE_CHECKING:
    from cortex_nb.background import BackgroundJobs, BackgroundQuery

__all__ = [
    "DEFAULT_MAX_ROWS",
    "TERMINAL_STATES",
    "Page",
    "Progress",
    "QueryJob",
    "QueryService",
    "Result",
    "too_large",
]

JOBS = "/query/v2/jobs"
RESULTS = "/query/v2/jobResults"
PENDING_STATES = frozenset({"PENDING", "RUNNING"})
TERMINAL_STATES = frozenset({"DONE", "FAILED", "CANCELLED", "TIMEDOUT"})
DEFAULT_PAGE_SIZE = 10_000
MAX_PAGE_SIZE = 100_000
MAX_WAIT_MS = 2000
FIRST_BACKOFF = 0.02  # seconds; polls start fast, most sandbox and small jobs finish in ms
MAX_BACKOFF = 1.0
CANCEL_TIMEOUT = (5, 10)  # seconds: a cancel on the way out must not hold the user long
DEFAULT_QUERY_TIMEOUT = 3600.0  # seconds a query may take, from submit to its last page
# rows a query may bring into memory: a traffic frame of a million rows takes about 1 GB
DEFAULT_MAX_ROWS = 1_000_000
GUARDRAIL_ADVICE = (
    "Fetch fewer (limit=N, or WHERE/LIMIT in the SQL), stream them to disk (to='DIR'), or "
    "raise max_rows (None: no guardrail)."
)
# what a job id the service chose may not hold: it goes into URL paths
_UNSAFE_ID = re.compile(r"[/?#\\\s\x00-\x1f\x7f]|\.\.")
_JSON_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}


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
        if self.state == "DONE":
            return "done" if self.done else "downloading"
        return _PHASES.get(self.state, self.state.lower())


_PHASES = {
    "WAITING": "waiting", "PENDING": "queued", "RUNNING": "running", "CANCELLED": "cancelled",
}


def plural(count: int, noun: str) -> str:
    """``1 page``, ``2 pages``, ``1,000 rows``."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


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
            f"{plural(len(self.df), 'row')} ({self.rows_in_job:,} in job), "
            f"{plural(self.pages, 'page')}, {self.elapsed:.2f} s, job {self.job_id}"
        )

    def __repr__(self) -> str:
        return f"<Result {self.summary()}>"

    def _repr_html_(self) -> str:
        return f"<p><code>{self.summary()}</code></p>" + self.df._repr_html_()


def too_large(
    job_id: str, rows: int, max_rows: int, cancelled: bool, advice: str = GUARDRAIL_ADVICE
) -> ResultTooLarge:
    """The one-line error of the guardrail: how many rows (``rowsInJob``, or ``limit`` when
    smaller), the guardrail, and what to do."""
    said = "cancelled the job on the server" if cancelled else "could not cancel the job"
    return ResultTooLarge(
        f"Job {job_id} would bring {rows:,} rows into memory, more than max_rows={max_rows:,}: "
        f"stopped after its first page and {said}. {advice}",
        job_id, rows, max_rows, cancelled,
    )


def decode_json(response: requests.Response, doing: str = "") -> Any:
    """The reply's JSON body, decoded once by orjson; a clear ``QueryError`` if it is not JSON."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        request = response.request
        raise QueryError(
            f"{doing or 'The reply'}: {request.method if request else '?'} {response.url} "
            f"(HTTP {response.status_code}) is not JSON: {response.text[:80]!r}."
        ) from None


def new_job_id() -> str:
    """A fresh client-chosen job id (``cortexnb-<uuid4>``): known before the job is created."""
    return f"cortexnb-{uuid.uuid4()}"


class QueryService:
    """Query Service v2 client: the official SDK's calls, query jobs, and ``query()``."""

    def __init__(
        self,
        client: HTTPClient | None = None,
        traces: TraceLog | None = None,
        *,
        session: HTTPClient | None = None,
        jobs: BackgroundJobs | None = None,
        **client_kwargs: Any,
    ) -> None:
        if session is not None:  # the official SDK's name for the client
            if client is not None and client is not session:
                raise ConfigurationError("Give client= or session= (its SDK name), not both.")
            client = session
        if client is not None and client_kwargs:
            raise ConfigurationError(
                f"QueryService got a client and client keywords ({', '.join(client_kwargs)}); "
                "give one or the other."
            )
        self.client = client if client is not None else HTTPClient(**client_kwargs)
        credentials = self.client.credentials
        self.traces = traces or TraceLog(secrets=credentials.secrets if credentials else None)
        self.traces.attach(self.client.session)
        self._jobs = jobs

    @property
    def session(self) -> HTTPClient:
        """The ``HTTPClient`` (the official SDK's name for it)."""
        return self.client

    @property
    def url(self) -> str:
        """The API base URL."""
        return self.client.url

    @property
    def background(self) -> BackgroundJobs:
        """The background jobs this service's ``submit_query`` runs (created on first use)."""
        if self._jobs is None:
            from cortex_nb.background import BackgroundJobs

            self._jobs = BackgroundJobs()
        return self._jobs

    def secrets(self) -> list[str]:
        """The client's secret values, for scrubbing messages."""
        credentials = self.client.credentials
        return credentials.secrets() if credentials is not None else []

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
        return self.client.request(method="POST", path=JOBS, json=body, **kwargs)

    def get_job(self, job_id: str, **kwargs: Any) -> requests.Response:
        """Job detail (``GET /query/v2/jobs/<id>``)."""
        return self.client.request(method="GET", path=job_path(JOBS, job_id), **kwargs)

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
        return self.client.request(method="GET", path=JOBS, params=params, **kwargs)

    def cancel_job(self, job_id: str, **kwargs: Any) -> requests.Response:
        """Cancel a job (``DELETE /query/v2/jobs/<id>``)."""
        return self.client.request(method="DELETE", path=job_path(JOBS, job_id), **kwargs)

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
        return self.client.request(
            method="GET", path=job_path(RESULTS, job_id), params=params, **kwargs
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
            page = check_page(response, job_id, self.secrets())
            if page["state"] in PENDING_STATES:
                poll.wait(response)
                continue
            yield response
            cursor = page["page"].get("pageCursor")
            if not cursor:
                return
            where = {"page_cursor": cursor}  # a cursor excludes offset and page number

    # -- jobs ----------------------------------------------------------------------------------
    def submit(self, sql: str, job_id: str | None = None, **properties: Any) -> str:
        """Create a query job for ``sql`` and return its id (409 on a resend counts as created)."""
        job_id = job_id or new_job_id()
        params: dict[str, Any] = {"query": sql, "dialect": "csql"}
        if properties:
            params["properties"] = properties
        response = self.create_query(job_id=job_id, query_params=params)
        if response.status_code == 409 and job_id:
            return job_id  # our own earlier attempt landed before the connection dropped
        if not response.ok:
            raise_for_reply(response, "submitting the query", job_id, self.secrets(), sql=sql)
        reply = decode_json(response, "Submitting the query")
        if not isinstance(reply, dict):
            raise QueryError(
                f"Submitting the query: the reply to POST {JOBS} is {_kind(reply)}, not an "
                "object with a jobId.", job_id,
            )
        chosen = reply.get("jobId")
        return job_id if chosen in (None, "") else _chosen_job_id(chosen, job_id)

    def start(
        self, sql: str, *, job_id: str | None = None, page_size: int = DEFAULT_PAGE_SIZE,
        result_format: str = "valuesDictionary", limit: int | None = None, parallel: int = 4,
        progress: Callable[[Progress], None] | None = None,
        timeout: float | None = DEFAULT_QUERY_TIMEOUT, max_rows: int | None = None,
        pace: Callable[[], None] | None = None,
        **properties: Any,
    ) -> QueryJob:
        """Create a query job for ``sql`` and return it (nothing is fetched yet)."""
        job = QueryJob(
            self, "", sql=sql, page_size=page_size, result_format=result_format, limit=limit,
            parallel=parallel, progress=progress, timeout=timeout, max_rows=max_rows,
            pace=pace,
        )  # checks the paging options before anything is sent
        job.id = job.progress.job_id = self.submit(sql, job_id=job_id, **properties)
        return job

    def job(self, job_id: str, **options: Any) -> QueryJob:
        """An existing job, by id, to fetch its results (options as ``start``)."""
        return QueryJob(self, job_id, **options)

    def query(
        self,
        sql: str,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        result_format: str = "valuesDictionary",
        structs: str = "value",
        limit: int | None = None,
        max_rows: int | None = DEFAULT_MAX_ROWS,
        parallel: int = 4,
        progress: Callable[[Progress], None] | None = None,
        job_id: str | None = None,
        timeout: float | None = DEFAULT_QUERY_TIMEOUT,
        dtypes: str | None = None,
        to: Any = None,
        overwrite: bool = False,
        **properties: Any,
    ) -> Any:
        """Run ``sql`` as a job and return a ``Result`` holding the typed DataFrame.

        ``limit`` fetches at most that many rows. ``max_rows`` is the guardrail: a job with more
        rows than that (None: no guardrail) is cancelled after its first page and raises
        ``ResultTooLarge``. ``to=DIR`` streams every row into a Parquet dataset there instead
        and returns its ``Dataset`` (no guardrail: memory holds a few pages; an existing
        dataset is replaced only with ``overwrite``). ``dtypes`` is the frame's mode for lists
        and structs (``"objects"``, the default, or ``"arrow"``). An interrupt cancels the job,
        and so does passing ``timeout`` seconds (None: no limit) before the last page is in.
        """
        if to is not None:
            return self._query_to_dataset(
                sql, to, overwrite=overwrite, structs=structs, limit=limit, page_size=page_size,
                result_format=result_format, parallel=parallel, progress=progress,
                job_id=job_id, timeout=timeout, **properties,
            )
        return self.result_of(
            lambda: self.start(
                sql, job_id=job_id, page_size=page_size, result_format=result_format,
                limit=limit, parallel=parallel, progress=progress, timeout=timeout,
                max_rows=max_rows, **properties,
            ),
            structs=structs, dtypes=dtypes,
        )

    def result_of(
        self, make_job: Callable[[], QueryJob], structs: str = "value", cancel: bool = True,
        dtypes: str | None = None,
    ) -> Result:
        """The ``Result`` of the job ``make_job`` starts or takes up, with its own traces.

        An interrupt cancels the job on the server, or with ``cancel=False`` only stops
        waiting and leaves the job as it is.
        """
        with self.traces.collect() as seen:
            job = make_job()
            with job.cancel_on_interrupt(cancel=cancel):
                result = job.result(structs=structs, dtypes=dtypes)
        # other threads' requests may have been seen too: keep this job's
        result.traces = [t for t in seen if job.id in t.url or job.id in (t.request_body or "")]
        return result

    def fetch(self, job_id: str, *, structs: str = "value", **options: Any) -> Result:
        """The results of an existing job, by id (one started before a kernel restart, or an
        id copied from elsewhere), waiting for it to finish; options as ``start``.

        An interrupt stops waiting and leaves the job as it is on the service.
        """
        return self.result_of(
            lambda: self.job(job_id, **options), structs=structs, cancel=False
        )

    def submit_query(self, sql: str, **options: Any) -> BackgroundQuery:
        """Start ``sql`` in the background and return its handle at once.

        The handle has ``result(timeout)``, ``cancel()``, ``done()``, ``state`` and
        ``progress``; options as ``BackgroundJobs.submit`` (``name``, ``structs``,
        ``max_rows``, ``timeout``, ``on_update``...).
        """
        return self.background.submit(self, sql, **options)

    def submit_fetch(self, job_id: str, **options: Any) -> BackgroundQuery:
        """Fetch an existing job's results in the background; the handle as ``submit_query``."""
        return self.background.take_up(self, job_id, **options)

    def recent_jobs(self, max_jobs: int = 20, state: str | None = None) -> list[dict[str, Any]]:
        """The tenant's recent jobs, newest first, as the list endpoint describes them."""
        response = self.list_jobs(max_jobs=max_jobs, state=state)
        if not response.ok:
            raise_for_reply(response, "listing jobs", None, self.secrets())
        jobs = decode_json(response, "Listing jobs")
        if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
            raise QueryError(
                f"Listing jobs: the reply to GET {JOBS} is {_kind(jobs)}, not a list of jobs."
            )
        return jobs

    def _query_to_dataset(
        self, sql: str, to: Any, *, overwrite: bool, structs: str, **options: Any
    ) -> Any:
        """Run ``sql`` and stream its pages into a Parquet dataset at ``to``."""
        from cortex_nb.datasets import check_target, write_dataset

        target = check_target(to, overwrite)  # before the job: a refusal costs nothing
        job = self.start(sql, **options)
        with job.cancel_on_interrupt():
            return write_dataset(job, target, overwrite=overwrite, structs=structs)


def job_path(base: str, job_id: str) -> str:
    """``base/<job_id>``, the id escaped so it stays one path segment."""
    if not isinstance(job_id, str) or job_id in ("", ".", ".."):
        raise QueryError(
            f"{job_id!r} is not a job id; use the jobId the service gave the query.", None
        )
    return f"{base}/{quote(job_id, safe='')}"


def _chosen_job_id(value: Any, ours: str) -> str:
    """The job id the service chose (when it ignored ours), if it is safe in a URL path."""
    if isinstance(value, str) and len(value) <= 1000 and not _UNSAFE_ID.search(value):
        return value
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    raise QueryError(
        f"Submitting the query: the reply's jobId {shown} is not a usable job id (a string "
        "of at most 1000 characters, without '/', '?', '#', '..' or white space). The job "
        f"may exist on the service under our id {ours}.", ours,
    )


def _kind(value: Any) -> str:
    """What a decoded JSON value is, in JSON's words (for messages)."""
    if value is None:
        return "null"
    return _JSON_KINDS.get(type(value), "a number" if isinstance(value, int | float) else "?")


def _params(base: dict[str, Any] | None, **values: Any) -> dict[str, Any]:
    params = dict(base or {})
    params.update({k: v for k, v in values.items() if v is not None})
    return params


# -- checking replies ----------------------------------------------------------------------------
def raise_for_reply(
    response: requests.Response, doing: str, job_id: str | None, secrets: list[str],
    sql: str | None = None,
) -> None:
    """Raise a ``QueryError`` for a non-2xx reply: the service's message first, then the rest.

    Given the ``sql`` it refused, the message also shows where (a caret under the SQL line)
    and, for an unknown table or column, the closest catalog names.
    """
    explain = None if sql is None else functools.partial(dataguide.explain, sql=sql)
    raise QueryError(http_error_message(response, secrets, doing, explain), job_id)


def check_page(response: requests.Response, job_id: str, secrets: list[str]) -> dict[str, Any]:
    """A results reply decoded and checked: its state, and for DONE the page's shape.

    PENDING and RUNNING come back as they are; FAILED, CANCELLED, TIMEDOUT and unknown states
    raise, as do an HTTP error and a malformed page (the error names the field).
    """
    if not response.ok:
        raise_for_reply(response, f"fetching results of job {job_id}", job_id, secrets)
    page = decode_json(response, f"Fetching results of job {job_id}")
    if not isinstance(page, dict) or not isinstance(page.get("state"), str):
        raise QueryError(f"Malformed results page for job {job_id}: no job state.", job_id)
    state = page["state"] = page["state"].upper()
    if state in PENDING_STATES:
        return page
    if state != "DONE":
        _raise_for_state(state, job_id, page)
    body = _field(page, "page", dict, job_id)
    result = _field(body, "result", dict, job_id, "page.")
    data = _field(result, "data", list, job_id, "page.result.")
    if body.get("pageCursor") is not None:
        _field(body, "pageCursor", str, job_id, "page.")
    if page.get("schema") is not None:
        _field(page, "schema", dict, job_id)
    rows_in_job(page, job_id)
    declared = _row_count(page, "rowsInPage", job_id)
    if declared is not None and declared != len(data):
        raise QueryError(
            f"Malformed results page for job {job_id}: rowsInPage says {declared} but "
            f"the page holds {len(data)} rows.", job_id,
        )
    return page


def _field(payload: dict[str, Any], name: str, kind: type, job_id: str, where: str = "") -> Any:
    """``payload[name]`` if it is of ``kind``, else a ``QueryError`` naming the field."""
    value = payload.get(name)
    if not isinstance(value, kind):
        raise QueryError(
            f"Malformed results page for job {job_id}: {where}{name} is {_kind(value)}, not "
            f"{_JSON_KINDS[kind]}. The service sent something unexpected; run the query again.",
            job_id,
        )
    return value


def _row_count(payload: dict[str, Any], name: str, job_id: str) -> int | None:
    """A row count field (``rowsInJob``, ``rowsInPage``): None when absent, else an int >= 0."""
    if name not in payload:
        return None
    value = payload[name]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    shown = "a negative number" if isinstance(value, int | float) and value < 0 else _kind(value)
    raise QueryError(
        f"Malformed results page for job {job_id}: {name} is {shown}, not a row count.", job_id
    )


def rows_in_job(page: dict[str, Any], job_id: str) -> int:
    """The rows a checked DONE page says the job has (its own row count when it does not say)."""
    count = _row_count(page, "rowsInJob", job_id)
    return len(page["page"]["result"]["data"]) if count is None else count


def _raise_for_state(state: str, job_id: str, payload: Any) -> None:
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
    def of(cls, payload: dict[str, Any]) -> Page:
        """The page in a checked DONE payload."""
        data = payload["page"]["result"]["data"]
        return cls(data, len(data), payload["page"].get("pageCursor"))


class QueryJob:
    """A query job on the service: its id, state and progress; its pages; its cancel.

    ``limit`` fetches at most that many rows (the page size shrinks to it); ``parallel`` pages
    are fetched at once by offset when the row count is known; ``progress`` is called with the
    ``Progress`` record after every step; past ``timeout`` seconds (None: no limit) the job is
    cancelled and ``QueryError`` raised. ``pace``, when given, is called before every request
    (background jobs wait there while the service asks everyone to back off). Once ``cancel()``
    was called, from any thread, the job's own loop stops at its next step (``QueryCancelled``).
    With ``max_rows``, a job that would bring more rows than that is cancelled once its first
    page tells the count (``ResultTooLarge``).
    """

    def __init__(
        self, service: QueryService, job_id: str, *, sql: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE, result_format: str = "valuesDictionary",
        limit: int | None = None, parallel: int = 4,
        progress: Callable[[Progress], None] | None = None,
        timeout: float | None = DEFAULT_QUERY_TIMEOUT, max_rows: int | None = None,
        pace: Callable[[], None] | None = None,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise QueryError(f"page_size must be 1..{MAX_PAGE_SIZE}, not {page_size}.")
        if limit is not None and limit < 1:
            raise QueryError(f"limit must be at least 1, not {limit}.")
        if max_rows is not None and max_rows < 1:
            raise QueryError(f"max_rows must be at least 1 (None: no guardrail), not {max_rows}.")
        if timeout is not None and not timeout > 0:
            raise QueryError(f"timeout must be positive seconds (or None), not {timeout}.")
        self.service, self.id, self.sql = service, job_id, sql
        self.page_size = page_size if limit is None else min(page_size, limit)
        self.result_format, self.limit, self.max_rows = result_format, limit, max_rows
        self.parallel = max(1, parallel)
        self.callback = progress
        self.progress = Progress(job_id=job_id, state="PENDING")
        self.rows_in_job: int | None = None
        self.schema: dict[str, Any] | None = None
        self._first: dict[str, Any] | None = None
        self._started = time.monotonic()
        self.timeout = timeout
        self._deadline = None if timeout is None else self._started + timeout
        self.pace = pace
        self._cancelled = threading.Event()

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
        self._report("PENDING")
        while True:
            self._before_request()
            response = self._results(max_wait=MAX_WAIT_MS)
            page = check_page(response, self.id, self.service.secrets())
            if page["state"] == "DONE":
                break
            self._report(page["state"])
            poll.wait(response)
        self._first = page
        self.rows_in_job = rows_in_job(page, self.id)
        self.progress.rows_in_job = self.rows_in_job
        self.schema = page.get("schema")
        self._refuse_if_too_large()
        self._report("DONE")

    def _refuse_if_too_large(self) -> None:
        """The guardrail: cancel the job and raise when it would bring more than ``max_rows``."""
        wanted = self._wanted()
        if self.max_rows is None or wanted <= self.max_rows:
            return
        self._first = {}  # nothing of it is handed out
        cancelled = self.cancel()
        self._report("CANCELLED", done=True)
        raise too_large(self.id, wanted, self.max_rows, cancelled)

    def iter_pages(self, *, arrow: bool = True) -> Iterator[Page]:
        """Every wanted page in order, checked; raise unless exactly the wanted rows arrived.

        ``arrow`` lets pages after the first be parsed by Arrow in the download threads (rows
        then come as a ``StructArray``); without it every page's rows are decoded JSON.
        """
        self.wait()
        first, self._first = self._first, {}  # the first page is handed out once
        if not first:
            raise QueryError(f"Job {self.id}: its pages were already read; start it again.")
        wanted = self._wanted()
        for page in self._pages(Page.of(first), wanted, arrow and self._arrow_ok()):
            self.progress.rows += page.size
            self.progress.pages += 1
            self._report("DONE")
            yield page
        self._check_count(wanted)
        self._report("DONE", done=True)

    def rows(self) -> list[Any]:
        """Every wanted row as decoded JSON, as the service sent them."""
        rows: list[Any] = []
        for page in self.iter_pages(arrow=False):
            rows.extend(page.rows)
        return rows[: self.limit] if self.limit is not None else rows

    def result(self, structs: str = "value", dtypes: str | None = None) -> Result:
        """Every wanted row as a typed DataFrame, in a ``Result`` (``dtypes``: see
        ``FrameBuilder``; None is its default)."""
        from cortex_nb.frames import DEFAULT_DTYPES, FrameBuilder  # pandas loads when used

        self.wait()
        builder = FrameBuilder(
            schema=self.schema, result_format=self.result_format, structs=structs,
            known_types=dataguide.known_types(self.sql) if self.sql else None,
            dtypes=dtypes or DEFAULT_DTYPES,
        )
        for page in self.iter_pages():
            if page.arrow:
                builder.add_arrow_page(page.rows)
            else:
                builder.add_page(page.rows)
            page.rows = None  # let the page go as soon as its columns are kept
        df = builder.to_dataframe()
        if self.limit is not None and len(df) > self.limit:
            df = df.iloc[: self.limit]
        return Result(
            df=df, job_id=self.id, rows_in_job=self.rows_in_job or 0, pages=self.pages,
            elapsed=self.progress.elapsed, sql=self.sql or "", schema=self.schema,
        )

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
                self._report("CANCELLED" if cancelled else "FAILED", done=True)
            raise
        except KeyboardInterrupt:
            if not cancel:
                self._report("STOPPED", done=True)
                raise QueryError(
                    f"Interrupted: stopped fetching job {self.id}; it was left as it is on the "
                    f"service (fetch it again with %cortex fetch {self.id}).", self.id,
                ) from None
            cancelled = self.cancel()
            self._report("CANCELLED", done=True)
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
            self.pace()
            self._stop_if_cancelled()
        self._check_time()

    def _stop_if_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise QueryCancelled(
                f"Job {self.id} was cancelled ({self.progress.rows:,} rows had arrived).", self.id
            )

    def _check_time(self) -> None:
        """Give up once the deadline has passed."""
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise self._give_up(
                f"not finished within {self.timeout:g} s ({self.state}, "
                f"{self.progress.rows:,} rows received)",
                "Allow more time (query(timeout=...), %%cortex --timeout) or narrow the query.",
            )

    # -- inside ----------------------------------------------------------------------------------
    def _report(self, state: str, done: bool = False) -> None:
        p = self.progress
        p.job_id, p.state, p.done = self.id, state, done
        p.elapsed = time.monotonic() - self._started
        if self.callback is not None:
            self.callback(p)

    def _wanted(self) -> int:
        total = self.rows_in_job or 0
        return total if self.limit is None else min(total, self.limit)

    def _arrow_ok(self) -> bool:
        return self.result_format == "valuesDictionary"

    def _results(self, **where: Any) -> requests.Response:
        return self.service.get_job_results(
            self.id, page_size=self.page_size, result_format=self.result_format, **where
        )

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
            from cortex_nb.frames import parse_page

            parsed = parse_page(response.content)
        return response, parsed

    def _read(self, response: requests.Response, parsed: Any) -> Page:
        """A page after the first, from Arrow's parse when it is sound, else the strict checks.

        A page that adds no rows is given up on: every page after the first is asked for only
        while rows are still missing.
        """
        if _arrow_page_ok(parsed):
            page = Page(parsed.rows, len(parsed.rows), parsed.page_cursor, arrow=True)
        else:
            payload = check_page(response, self.id, self.service.secrets())
            if payload["state"] != "DONE":
                raise QueryError(
                    f"Job {self.id}: a results page came back {payload['state']} after the job "
                    "was DONE. Run the query again.", self.id,
                )
            page = Page.of(payload)
        if page.size == 0:
            raise self._give_up(
                f"a results page added no rows ({self.progress.rows:,} of "
                f"{self._wanted():,} received)", "Run the query again.",
            )
        return page

    def _check_count(self, expected: int) -> None:
        got = self.progress.rows
        if got < expected or (self.limit is None and got != expected):
            raise self._give_up(
                f"received {got:,} rows but the job has {expected:,}",
                "Refusing to return a partial result; run the query again.",
            )


def _arrow_page_ok(parsed: Any) -> bool:
    """True when Arrow's parse of a page can stand for the strict checks."""
    return (
        parsed is not None
        and parsed.rows_in_page in (None, len(parsed.rows))
        and isinstance(parsed.page_cursor, str | None)
    )
