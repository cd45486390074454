"""Routes of the sandbox: the OAuth2 endpoints and Query Service v2, as CORTEX_API.md describes.

``Api.handle`` maps a parsed ``Request`` to a ``Reply`` without any HTTP machinery, so the server
stays a thin transport. Replies are JSON; errors use the documented shapes: IdP style
(``{"error", "error_description"}``) on the token endpoint and ``{"errors": [{"errorCode",
"message", "context"?}]}`` on the Query API.

Results paging (limits, formats and the reply's envelope from ``cortex_nb.wire``): ``pageSize``
(default: the job's ``defaultPageSize`` property or ``DEFAULT_PAGE_SIZE``, at most
``MAX_PAGE_SIZE``), ``offset`` (row to start at), ``pageNumber`` (0-based page index at the
default page size; ``pageSize`` is then ignored), ``pageCursor`` (opaque and signed, see
``cursors``; a ``pageSize`` given with it wins). A cursor combined with ``offset`` or
``pageNumber``, a cursor the sandbox did not issue, and an offset or page number past 2^53 are
400s. Every DONE page carries the cursor of the next page, null on the last one. Expired
results (see ``retention``) answer 404; rows read in place never expire. Pages in flight stay
within a budget of bytes (``budget``): a page that finds no room in time, or that DuckDB has no
memory to render, answers 503 with ``Retry-After``. ``createdAfter`` in job lists is epoch
milliseconds (values below 10^11 are taken as seconds).

Job creation checks the request body here and leaves the statement to the job's worker; it
waits up to ``CHECK_WAIT_S`` for that check, answering 400 when the statement was refused in
that time and 201 otherwise (a statement refused later makes the job FAILED, with the same
message in ``errors``). So creating a job answers promptly whatever the SQL.
"""

from __future__ import annotations

import collections
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import orjson

from cortex_nb import wire
from cortex_nb.sandbox.service.budget import PageBudget, page_cost
from cortex_nb.sandbox.service.cursors import CursorCodec
from cortex_nb.sandbox.service.engine import Engine, ResultSet
from cortex_nb.sandbox.service.jobs import DuplicateJob, Job, JobManager
from cortex_nb.sandbox.service.tokens import OAuthError, TokenAuthority
from cortex_nb.wire import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, RESULT_FORMATS

CHECK_WAIT_S = 0.5  # how long job creation waits for the worker's check of the statement
MAX_ROW = 2**53  # offsets and page numbers beyond this are refused
BUSY = {"Retry-After": "1"}


@dataclass
class Reply:
    """An HTTP reply: status, JSON body bytes, extra headers; ``on_sent`` is called once the
    reply is written (or failed to be)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    on_sent: Callable[[], None] | None = None


@dataclass
class Request:
    """A parsed HTTP request as the routes see it (header names lower-case)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    json: object = None
    form: dict[str, str] | None = None

    @classmethod
    def parse(cls, method: str, target: str, headers: dict[str, str], body: bytes) -> Request:
        """Split the target and decode a JSON or form body."""
        url = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        request = cls(method.upper(), url.path, query, headers, body)
        if body:
            if "application/x-www-form-urlencoded" in headers.get("content-type", ""):
                request.form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
            else:
                try:
                    request.json = orjson.loads(body)
                except orjson.JSONDecodeError:
                    request.form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
        return request


class BadRequest(Exception):
    """A Query API request the service refuses; becomes an ``errors`` reply."""

    def __init__(
        self,
        status: int,
        message: str,
        context: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.context = status, message, context
        self.headers = headers or {}


def json_reply(status: int, body: object, headers: dict[str, str] | None = None) -> Reply:
    """A reply with ``body`` encoded as JSON."""
    return Reply(status, orjson.dumps(body), headers or {})


def error_reply(
    status: int, message: str, context: str | None = None, headers: dict[str, str] | None = None
) -> Reply:
    """A Query API error reply: ``{"errors": [{"errorCode", "message", "context"?}]}``."""
    item = {"errorCode": status, "message": message}
    if context:
        item["context"] = context
    return json_reply(status, {"errors": [item]}, headers)


def refusal_reply(path: str, status: int, message: str, headers: dict | None = None) -> Reply:
    """A refusal in the shape of the endpoint: IdP style on OAuth2 paths, else ``errors``."""
    if path.startswith(wire.OAUTH_PATHS):
        return json_reply(status, {"error": "access_denied", "error_description": message}, headers)
    return error_reply(status, message, headers=headers)


@dataclass(frozen=True)
class Paging:
    """Where a results page starts, how long it is, and in which format."""

    offset: int
    size: int
    values_array: bool
    result_format: str
    max_wait_ms: int


class Api:
    """The sandbox's routes over an engine, a job manager and a token authority."""

    def __init__(
        self,
        engine: Engine,
        jobs: JobManager,
        tokens: TokenAuthority,
        instance_id: str,
        query_rate_limit: int = 5000,
        budget: PageBudget | None = None,
    ) -> None:
        self.engine, self.jobs, self.tokens = engine, jobs, tokens
        self.budget = budget or PageBudget(2**62)
        self.instance_id = instance_id
        self.cursors = CursorCodec()
        self._rate = RateLimit(query_rate_limit, 3600)
        self._routes: list[tuple[str, re.Pattern, Callable[..., Reply], bool]] = [
            ("POST", _path(wire.TOKEN_PATH), self.request_token, False),
            ("POST", _path(wire.REVOKE_PATH), self.revoke_token, False),
            ("POST", _path(wire.JOBS), self.create_job, True),
            ("GET", _path(wire.JOBS), self.list_jobs, True),
            ("GET", _path(wire.JOBS, job=True), self.get_job, True),
            ("DELETE", _path(wire.JOBS, job=True), self.cancel_job, True),
            ("GET", _path(wire.RESULTS, job=True), self.job_results, True),
        ]

    def handle(self, request: Request) -> Reply:
        """Route ``request`` and turn refusals into their documented error replies."""
        path = request.path.rstrip("/") or "/"
        matches = [(route, m) for route in self._routes if (m := route[1].fullmatch(path))]
        if not matches:
            return error_reply(404, f"No such endpoint: {request.path}")
        chosen = [(route, m) for route, m in matches if route[0] == request.method]
        if not chosen:
            methods = ", ".join(sorted({route[0] for route, _ in matches}))
            return error_reply(
                405, f"Method {request.method} not allowed here", headers={"Allow": methods}
            )
        (_, _, handler, needs_token), match = chosen[0]
        try:
            if needs_token:
                self._authenticate(request)
            args = [urllib.parse.unquote(g) for g in match.groups()]
            return handler(request, *args)
        except BadRequest as refused:
            return error_reply(refused.status, refused.message, refused.context, refused.headers)
        except OAuthError as refused:
            return json_reply(refused.status, refused.body())

    # ---- OAuth2 ---------------------------------------------------------------------------

    def request_token(self, request: Request) -> Reply:
        """POST /api/oauth2/RequestToken (JSON or form body)."""
        return json_reply(200, self.tokens.grant(_token_form(request)))

    def revoke_token(self, request: Request) -> Reply:
        """POST /api/oauth2/RevokeToken."""
        return json_reply(200, self.tokens.revoke(_token_form(request)))

    def _authenticate(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        problem = (
            "missing bearer token"
            if scheme.lower() != "bearer" or not token.strip()
            else self.tokens.check(token.strip())
        )
        if problem:
            challenge = f'Bearer error="invalid_token", error_description="{problem}"'
            raise BadRequest(
                401, f"Unauthorized: {problem}", headers={"WWW-Authenticate": challenge}
            )

    # ---- jobs -----------------------------------------------------------------------------

    def create_job(self, request: Request) -> Reply:
        """POST /query/v2/jobs: 201 with the job id, 400 bad query, 409 duplicate id."""
        body = request.json if isinstance(request.json, dict) else None
        if body is None:
            raise BadRequest(400, "The request body must be a JSON object with params.query")
        job_id, params, properties = _job_request(body)
        if job_id is not None and self.jobs.get(job_id) is not None:
            raise BadRequest(409, f"Job {job_id} already exists", context=job_id)
        wait = self._rate.take()
        if wait is not None:
            raise BadRequest(
                429,
                f"Too many queries: the limit is {self._rate.limit} an hour",
                headers={"Retry-After": str(wait)},
            )
        try:
            job = self.jobs.submit(job_id, params, properties.get("timeoutMs"))
        except DuplicateJob:
            raise BadRequest(409, f"Job {job_id} already exists", context=job_id) from None
        if job.checked.wait(CHECK_WAIT_S) and job.rejection is not None:
            self.jobs.forget(job)
            raise BadRequest(400, job.rejection.message, job.rejection.context)
        return json_reply(201, {"jobId": job.job_id, "uri": wire.job_path(wire.JOBS, job.job_id)})

    def get_job(self, request: Request, job_id: str) -> Reply:
        """GET /query/v2/jobs/<id>: the job detail."""
        job = self._job(job_id)
        return json_reply(200, job.detail(job.observe()))

    def cancel_job(self, request: Request, job_id: str) -> Reply:
        """DELETE /query/v2/jobs/<id>: cancel (a finished job stays as it is)."""
        job = self._job(job_id)
        self.jobs.cancel(job)
        return json_reply(200, job.detail(job.peek()))

    def list_jobs(self, request: Request) -> Reply:
        """GET /query/v2/jobs: a JSON array of job details, newest first, filtered."""
        q = request.query
        tenant = q.get("tenantId")
        if tenant and tenant != self.instance_id:
            raise BadRequest(
                403, f"Forbidden: tenant {tenant} is not this instance ({self.instance_id})"
            )
        max_jobs = _int_param(q, "maxJobs", minimum=1)
        created_after = _int_param(q, "createdAfter", minimum=0)
        if created_after is not None and created_after < 10**11:
            created_after *= 1000
        wanted = _state_param(q.get("state"))
        listed = []
        for job in self.jobs.newest_first():
            state = job.peek()
            if (wanted and state != wanted) or (created_after and job.submit_ms <= created_after):
                continue
            listed.append(job.detail(state))
            if max_jobs and len(listed) >= max_jobs:
                break
        return json_reply(200, listed)

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise BadRequest(404, f"Job not found: {job_id}", context=job_id)
        return job

    # ---- results --------------------------------------------------------------------------

    def job_results(self, request: Request, job_id: str) -> Reply:
        """GET /query/v2/jobResults/<id>: a status page until DONE, then pages of rows."""
        job = self._job(job_id)
        paging = _paging(request.query, job, self.cursors)
        if paging.max_wait_ms > 0:
            job.finished.wait(paging.max_wait_ms / 1000)
            state = job.observe(waited=True)
        else:
            state = job.observe()
        if state != wire.DONE:
            return json_reply(200, _status_page(job, state, paging.result_format))
        return self._done_page(job, paging)

    def _done_page(self, job: Job, paging: Paging) -> Reply:
        result = self.jobs.result_of(job)
        if result is None:
            raise _expired(job)
        in_page = max(0, min(paging.size, result.rows - paging.offset))
        cost = page_cost(result.row_bytes, in_page)
        if not self.budget.reserve(cost):
            message = "The sandbox is sending too many large results pages at once; retry shortly"
            raise BadRequest(503, message, headers=BUSY)
        try:
            body = self._page_body(job, result, paging, in_page)
        except BaseException:
            self.budget.release(cost)
            raise
        return Reply(200, body, on_sent=lambda: self.budget.release(cost))

    def _page_body(self, job: Job, result: ResultSet, paging: Paging, in_page: int) -> bytes:
        """The DONE page's JSON: its envelope with the rows spliced in."""
        rows = self._render(job, result, paging)
        end = paging.offset + paging.size
        cursor = self.cursors.encode(job.job_id, end, paging.size) if end < result.rows else None
        envelope = wire.results_envelope(
            job.job_id, wire.DONE, paging.result_format, rows_in_page=in_page,
            rows_in_job=result.rows, schema={"fields": result.schema}, cursor=cursor,
        )  # fmt: skip
        return wire.splice_rows(orjson.dumps(envelope), rows)

    def _render(self, job: Job, result: ResultSet, paging: Paging) -> bytes:
        try:
            return self.engine.page(result, paging.offset, paging.size, paging.values_array)
        except duckdb.OutOfMemoryException:
            message = "The sandbox has no memory left to render this page now; retry shortly"
            raise BadRequest(503, message, headers=BUSY) from None
        except duckdb.Error:
            if result.table and job.result is not result:  # dropped by retention meanwhile
                raise _expired(job) from None
            raise


def _expired(job: Job) -> BadRequest:
    return BadRequest(
        404, f"Results of job {job.job_id} expired; run the query again", context=job.job_id
    )


class RateLimit:
    """At most ``limit`` events per ``window`` seconds; thread-safe."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def take(self) -> int | None:
        """Count one event, or return the seconds to wait when over the limit."""
        now = time.monotonic()
        with self._lock:
            while self._times and self._times[0] <= now - self.window:
                self._times.popleft()
            if len(self._times) >= self.limit:
                return int(self._times[0] + self.window - now) + 1
            self._times.append(now)
        return None


def _token_form(request: Request) -> dict:
    form = request.json if isinstance(request.json, dict) else request.form
    if not form:
        raise OAuthError("invalid_request", "expected a JSON or form body with grant_type")
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _job_request(body: dict) -> tuple[str | None, dict, dict]:
    """(jobId, params as stored, properties) from a create body; BadRequest when invalid."""
    job_id = body.get("jobId")
    if job_id is not None and not (isinstance(job_id, str) and wire.JOB_ID.fullmatch(job_id)):
        raise BadRequest(
            400, "jobId must be 1 to 1000 letters, digits or '-'", context=str(job_id)[:100]
        )
    params = body.get("params")
    query = params.get("query") if isinstance(params, dict) else None
    if not isinstance(query, str) or not query.strip():
        raise BadRequest(400, "params.query is required: the SQL text of the query")
    key = "dialect" if params.get("dialect") else "language"
    dialect = params.get(key) or "csql"
    if not isinstance(dialect, str) or dialect.lower() != "csql":
        raise BadRequest(
            400,
            f"Unsupported dialect {dialect!r} (params.{key}): only csql is supported; "
            'send "dialect": "csql" or leave it out',
            context=str(dialect)[:100],
        )
    properties = params.get("properties") or {}
    if not isinstance(properties, dict):
        raise BadRequest(400, "params.properties must be an object")
    for name in ("timeoutMs", "defaultPageSize", "maxWait"):
        value = properties.get(name)
        if value is not None and not (isinstance(value, int) and value > 0):
            raise BadRequest(400, f"params.properties.{name} must be a positive integer")
    if (properties.get("defaultPageSize") or 0) > MAX_PAGE_SIZE:
        raise BadRequest(400, f"defaultPageSize must be at most {MAX_PAGE_SIZE}")
    stored = {"query": query, "dialect": "csql", "properties": properties}
    return job_id, stored, properties


def _int_param(
    query: dict[str, str], name: str, minimum: int = 0, maximum: int | None = None
) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(400, f"{name} must be an integer, not {text!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = (
            f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        )
        raise BadRequest(400, f"{name} must be {bounds}, not {value}")
    return value


def _state_param(text: str | None) -> str | None:
    if not text:
        return None
    state = wire.state_named(text)
    if state is None:
        raise BadRequest(400, f"Unknown state {text!r}; use one of {', '.join(wire.STATES)}")
    return state


def _paging(query: dict[str, str], job: Job, cursors: CursorCodec) -> Paging:
    """Read and check the results parameters (400 on conflicts or bad values)."""
    result_format = query.get("resultFormat") or wire.DEFAULT_RESULT_FORMAT
    if result_format not in RESULT_FORMATS:
        raise BadRequest(
            400, f"resultFormat must be {' or '.join(RESULT_FORMATS)}, not {result_format!r}"
        )
    max_wait = min(_int_param(query, "maxWait") or 0, wire.MAX_WAIT_MS)
    cursor, number = query.get("pageCursor"), _int_param(query, "pageNumber", maximum=MAX_ROW)
    offset = _int_param(query, "offset", maximum=MAX_ROW)
    if cursor and (number is not None or offset is not None):
        raise BadRequest(400, "pageCursor cannot be combined with pageNumber or offset")
    default_size = job.params["properties"].get("defaultPageSize") or DEFAULT_PAGE_SIZE
    size = _int_param(query, "pageSize", minimum=1, maximum=MAX_PAGE_SIZE)
    if cursor:
        try:
            owner, start, cursor_size = cursors.decode(cursor)
        except ValueError:
            raise BadRequest(400, "Invalid pageCursor", context=cursor[:100]) from None
        if owner != job.job_id:
            raise BadRequest(400, "pageCursor belongs to another job", context=cursor[:100])
        start, size = start, size or cursor_size
    elif number is not None:
        start, size = min(number * default_size, MAX_ROW), default_size
    else:
        start, size = offset or 0, size or default_size
    return Paging(start, size, result_format == wire.VALUES_ARRAY, result_format, max_wait)


def _status_page(job: Job, state: str, result_format: str) -> dict:
    """The results reply while a job is not DONE (``data`` null)."""
    errors = job.errors if state in (wire.FAILED, wire.TIMEDOUT) else None
    return wire.results_envelope(job.job_id, state, result_format, errors=errors)


def _path(base: str, job: bool = False) -> re.Pattern:
    """A route's path pattern: ``base``, or ``base/<job id>`` with the id as its group."""
    return re.compile(re.escape(base) + (r"/([^/]+)" if job else ""))
