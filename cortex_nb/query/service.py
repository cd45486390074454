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
``cortex_nb.results.datasets.Dataset`` on disk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import requests

from cortex_nb._version import __version__
from cortex_nb.exceptions import ConfigurationError, QueryError
from cortex_nb.http.client import HTTPClient
from cortex_nb.http.tracing import TraceLog
from cortex_nb.query.job import (
    DEFAULT_MAX_ROWS,
    DEFAULT_QUERY_TIMEOUT,
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
    PENDING_STATES,
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

if TYPE_CHECKING:
    from cortex_nb.query.background import BackgroundJobs, BackgroundQuery

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
        self.traces = traces if traces is not None else TraceLog(  # an empty log is falsy
            secrets=credentials.secrets if credentials else None
        )
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
            from cortex_nb.query.background import BackgroundJobs

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
        from cortex_nb.results.datasets import check_target, write_dataset

        target = check_target(to, overwrite)  # before the job: a refusal costs nothing
        job = self.start(sql, **options)
        with job.cancel_on_interrupt():
            return write_dataset(job, target, overwrite=overwrite, structs=structs)


def _params(base: dict[str, Any] | None, **values: Any) -> dict[str, Any]:
    params = dict(base or {})
    params.update({k: v for k, v in values.items() if v is not None})
    return params


