"""Query Service v2 from SQL to a typed DataFrame: ``QueryService``.

Low level, with the official SDK's names and parameters (each returns ``requests.Response``):
``create_query``, ``get_job``, ``list_jobs``, ``cancel_job``, ``get_job_results`` and the
generator ``iter_job_results``. Unlike the SDK, ``iter_job_results`` handles every job state
(PENDING, RUNNING, DONE, FAILED, CANCELLED, TIMEDOUT) and polls adaptively with ``maxWait``
instead of sleeping a fixed second.

High level, every call takes one ``QueryOptions`` (``cortex_nb.options``), or options by name:
``start(sql)`` creates a ``QueryJob`` (``cortex_nb.query.job``) and ``job(job_id)`` takes one
up; ``query(sql)`` and ``fetch(job_id)`` run one to its end, and ``submit_query``/``submit_fetch``
do the same in the background (``cortex_nb.query.background``). All of them end in ``run``: the
rows become a frame (``results.collect``), a cached frame (``results.cache``) or a Parquet
dataset (``results.datasets``), as the options say. Only ``properties`` is sent to the service
with the SQL; an unknown option is refused before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import requests

from cortex_nb._version import __version__
from cortex_nb.exceptions import ConfigurationError, QueryError
from cortex_nb.http.client import HTTPClient
from cortex_nb.http.security import mask_url
from cortex_nb.http.tracing import TraceLog
from cortex_nb.options import OptionError, QueryOptions
from cortex_nb.query.background import BackgroundQueries, BackgroundQuery
from cortex_nb.query.fanout import FanOut, run_split
from cortex_nb.query.job import (
    DEFAULT_MAX_ROWS,
    Page,
    Progress,
    QueryJob,
    Result,
    _Poller,
    too_large,
)
from cortex_nb.query.replies import (
    DEFAULT_PAGE_SIZE,
    JOBS,
    MAX_WAIT_MS,
    RESULTS,
    TERMINAL_STATES,
    _chosen_job_id,
    _kind,
    check_page,
    decode_json,
    job_path,
    new_job_id,
    raise_for_reply,
)
from cortex_nb.results.cache import ResultCache
from cortex_nb.results.collect import collect_result
from cortex_nb.sql.timefilter import bounded

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


class QueryService:
    """Query Service v2 client: the official SDK's calls, query jobs, and ``query()``."""

    def __init__(
        self,
        client: HTTPClient | None = None,
        traces: TraceLog | None = None,
        *,
        session: HTTPClient | None = None,
        jobs: BackgroundQueries | None = None,
        cache_scope: Callable[[], tuple[str, str]] | None = None,
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
        self.traces = traces if traces is not None else TraceLog(  # an empty log is falsy
            secrets=credentials.secrets if credentials else None
        )
        self.traces.attach(self.client.session)
        self._jobs = jobs
        self._cache_scope = cache_scope

    @property
    def session(self) -> HTTPClient:
        """The ``HTTPClient`` (the official SDK's name for it)."""
        return self.client

    @property
    def url(self) -> str:
        """The API base URL."""
        return self.client.url

    @property
    def background(self) -> BackgroundQueries:
        """The background jobs this service's ``submit_query`` runs (created on first use)."""
        if self._jobs is None:
            self._jobs = BackgroundQueries()
        return self._jobs

    def cache_scope(self) -> tuple[str, str]:
        """``(tenant, instance)`` for result cache keys: as the connection says, else the API
        URL (masked) with no instance."""
        if self._cache_scope is not None:
            return self._cache_scope()
        return mask_url(self.url), ""

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
            page = check_page(response, job_id, self.secrets(), page_size or DEFAULT_PAGE_SIZE)
            if page.live:
                poll.wait(response)
                continue
            yield response
            cursor = page.cursor
            if not cursor:
                return
            where = {"page_cursor": cursor}  # a cursor excludes offset and page number

    # -- jobs ----------------------------------------------------------------------------------
    def submit(
        self, sql: str, job_id: str | None = None, properties: Mapping[str, Any] | None = None,
        deadline: float | None = None,
    ) -> str:
        """Create a query job for ``sql`` (with job ``properties``) and return its id; a 409 on
        a resend counts as created. ``deadline`` (``time.monotonic()``) bounds the request."""
        job_id = job_id or new_job_id()
        params: dict[str, Any] = {"query": sql, "dialect": "csql"}
        if properties:
            params["properties"] = dict(properties)
        response = self.create_query(job_id=job_id, query_params=params, deadline=deadline)
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
        self, sql: str, options: QueryOptions | None = None, /, *, job_id: str | None = None,
        progress: Callable[[Progress], None] | None = None,
        pace: Callable[[float | None], None] | None = None, **changes: Any,
    ) -> QueryJob:
        """Create a query job for ``sql`` and return it (nothing is fetched yet).

        ``options`` (a ``QueryOptions``) and ``changes`` (options by name) say how; only
        ``properties`` is sent to the service.
        """
        options = QueryOptions.build(options, doing="start()", **changes)
        if options.split is not None:
            raise OptionError(
                "start() makes one job and split= makes one per window: run it with "
                "query(sql, split=...) or submit_query(sql, split=...)."
            )
        sql, options = _bounded(sql, options)
        job = QueryJob(self, "", sql=sql, options=options, progress=progress, pace=pace)
        job.id = job.progress.job_id = job_id or new_job_id()  # known before it is created
        job.id = job.progress.job_id = job.within_deadline(
            lambda: self.submit(sql, job.id, options.properties, job.deadline)
        )
        return job

    def job(
        self, job_id: str, options: QueryOptions | None = None, /, *,
        progress: Callable[[Progress], None] | None = None,
        pace: Callable[[float | None], None] | None = None, **changes: Any,
    ) -> QueryJob:
        """An existing job, by id, to fetch its results (options as ``start``; its job
        properties were set when it was created)."""
        options = _for_existing_job(QueryOptions.build(options, doing="job()", **changes))
        job_path(JOBS, job_id)  # a bad id fails here
        return QueryJob(self, job_id, options=options, progress=progress, pace=pace)

    def query(
        self, sql: str, options: QueryOptions | None = None, /, *,
        progress: Callable[[Progress], None] | None = None, job_id: str | None = None,
        say: Callable[[str], Any] | None = None, **changes: Any,
    ) -> Any:
        """Run ``sql`` as a job: a ``Result`` holding the typed DataFrame, or with ``to=DIR``
        the ``Dataset`` its rows were streamed into.

        Options (a ``QueryOptions``, or by name; ``cortex_nb.options`` says each one):
        ``limit`` fetches at most that many rows; ``max_rows`` is the guardrail (a job with
        more rows is cancelled after its first page: ``ResultTooLarge``); ``to=DIR`` streams
        every row into a Parquet dataset instead (no guardrail); ``cache``/``refresh`` keep and
        reuse the result in the result cache (``say`` hears one line about it); ``structs``
        and ``dtypes`` shape the frame; ``properties`` are sent with the job. An interrupt
        cancels the job, and so does passing ``timeout`` seconds before the last page is in.
        """
        options = QueryOptions.build(options, doing="query()", **changes)
        if options.split is not None:  # one job per time window, put back together
            _say_note(options, say)
            return run_split(self, sql, options, progress=progress, say=say)
        sql, options = _bounded(sql, options, say)

        def make_job() -> QueryJob:
            return self.start(sql, options, job_id=job_id, progress=progress)

        return self.run(make_job, options, cache_text=sql, say=say)

    def fetch(
        self, job_id: str, options: QueryOptions | None = None, /, *,
        progress: Callable[[Progress], None] | None = None,
        say: Callable[[str], Any] | None = None, **changes: Any,
    ) -> Any:
        """The results of an existing job, by id (one started before a kernel restart, or an
        id copied from elsewhere), waiting for it to finish: a ``Result`` or, with ``to``, a
        ``Dataset``; options as ``query``. An interrupt stops waiting and leaves the job as it
        is on the service. With ``cache``, the result is kept under the job's id."""
        options = _for_existing_job(QueryOptions.build(options, doing="fetch()", **changes))
        job_path(JOBS, job_id)

        def make_job() -> QueryJob:
            return self.job(job_id, options, progress=progress)

        return self.run(make_job, options, cache_text=f"-- job {job_id}", cancel=False, say=say)

    def run(
        self, make_job: Callable[[], QueryJob], options: QueryOptions, *, cache_text: str,
        cancel: bool = True, say: Callable[[str], Any] | None = None,
    ) -> Any:
        """What ``options`` ask of the job ``make_job`` starts or takes up: its rows streamed
        into a dataset (``to``), its cached result (``cache``/``refresh``, keyed by
        ``cache_text``), or its typed frame. Every path (query, fetch, background) runs this.

        An interrupt cancels the job on the server, or with ``cancel=False`` only stops
        waiting and leaves the job as it is.
        """
        if options.to is not None:
            from cortex_nb.results.datasets import check_target, write_dataset  # pyarrow, lazily

            target = check_target(options.to, options.overwrite)  # before the job is made
            job = make_job()
            with job.cancel_on_interrupt(cancel=cancel):
                return write_dataset(job, target, options)
        if options.cache or options.refresh:
            return ResultCache().get_or_run(
                self.cache_scope(), cache_text, options,
                lambda: self._result(make_job, options, cancel), say=say or _silent,
            )
        return self._result(make_job, options, cancel)

    def result_of(
        self, make_job: Callable[[], QueryJob], structs: str | None = None, cancel: bool = True,
        dtypes: str | None = None,
    ) -> Result:
        """The ``Result`` of the job ``make_job`` starts or takes up (kept for code written
        against it; ``run`` is the one path)."""
        changes = {k: v for k, v in (("structs", structs), ("dtypes", dtypes)) if v is not None}
        return self._result(make_job, None, cancel, **changes)

    def _result(
        self, make_job: Callable[[], QueryJob], options: QueryOptions | None, cancel: bool,
        **changes: Any,
    ) -> Result:
        """The job's typed frame in a ``Result``, with this job's own traces."""
        with self.traces.collect() as seen:
            job = make_job()
            options = options or job.options
            options = options.replace(**changes) if changes else options
            with job.cancel_on_interrupt(cancel=cancel):
                result = collect_result(job, options)
        # other threads' requests may have been seen too: keep this job's
        result.traces = [t for t in seen if job.id in t.url or job.id in (t.request_body or "")]
        return result

    def submit_query(
        self, sql: str, options: QueryOptions | None = None, /, *, name: str | None = None,
        job_id: str | None = None,
        on_update: Callable[[BackgroundQuery], None] | None = None,
        say: Callable[[str], Any] | None = None, **changes: Any,
    ) -> BackgroundQuery:
        """Start ``sql`` in the background and return its handle at once (options as
        ``query``; ``name`` names it, ``on_update(handle)`` hears of every step, ``say`` the
        notes ``query`` would say before it starts).

        The handle has ``result(timeout)`` (a ``Result``, or a ``Dataset`` with ``to``),
        ``cancel()``, ``done()``, ``state`` and ``progress``.
        """
        options = QueryOptions.build(options, doing="submit_query()", **changes)
        if options.split is not None:
            FanOut(self, sql, options, say=say)  # refused here if it cannot be split
        else:
            sql, options = _bounded(sql, options)
        return self.background.submit(
            self, sql, options, name=name, job_id=job_id, on_update=on_update
        )

    def submit_fetch(
        self, job_id: str, options: QueryOptions | None = None, /, *, name: str | None = None,
        on_update: Callable[[BackgroundQuery], None] | None = None, **changes: Any,
    ) -> BackgroundQuery:
        """Fetch an existing job's results in the background; the handle as ``submit_query``."""
        options = _for_existing_job(
            QueryOptions.build(options, doing="submit_fetch()", **changes)
        )
        return self.background.take_up(self, job_id, options, name=name, on_update=on_update)

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


def _bounded(
    sql: str, options: QueryOptions, say: Callable[[str], Any] | None = None
) -> tuple[str, QueryOptions]:
    """``sql`` bounded to the options' time window as of now, and the options without it (the
    statement carries it from here: a job, its cache key and its dataset all see the same
    one); ``say`` hears which times were read as UTC."""
    _say_note(options, say)
    return bounded(sql, options)


def _say_note(options: QueryOptions, say: Callable[[str], Any] | None) -> None:
    """Tell ``say`` which times of the window were read as UTC."""
    note = options.window_note()
    if note and say is not None:
        say(note)


def _for_existing_job(options: QueryOptions) -> QueryOptions:
    """``options`` for a job that already exists: its statement and properties were set when
    it was made."""
    if options.window() is not None:
        raise OptionError(
            "A job taken up by id already exists: its statement (and any time window) was set "
            "when it was created; drop between/since/until."
        )
    if options.properties:
        raise OptionError(
            "A job taken up by id already exists: its job properties were set when it was "
            "created; drop properties=."
        )
    return options


def _silent(line: str) -> None:
    """Hears the result cache's notes and says nothing (the Python API's default)."""


def _params(base: dict[str, Any] | None, **values: Any) -> dict[str, Any]:
    params = dict(base or {})
    params.update({k: v for k, v in values.items() if v is not None})
    return params


