"""Replies of the Query Service, checked: JSON decoded once, HTTP errors as ``QueryError`` with
the service's message first, results pages checked field by field (by ``cortex_nb.wire``, the
one description of the envelope), job ids safe in URL paths.
"""

from __future__ import annotations

import functools
import re
import uuid
from typing import Any

import orjson
import requests

from cortex_nb.exceptions import QueryCancelled, QueryError
from cortex_nb.http.client import http_error_message, service_message
from cortex_nb.sql import guide as dataguide
from cortex_nb.wire import (  # noqa: F401 (named from here by the service)
    CANCELLED,
    DEFAULT_PAGE_SIZE,
    DONE,
    JOBS,
    MAX_JOB_ID_LENGTH,
    MAX_WAIT_MS,
    RESULTS,
    TIMEDOUT,
    ResultsPage,
    check_reply_shape,
    job_path,
    parse_results,
)
from cortex_nb.wire import FINAL_STATES as TERMINAL_STATES  # the names replies had
from cortex_nb.wire import LIVE_STATES as PENDING_STATES
from cortex_nb.wire import json_kind as _kind  # noqa: F401

__all__ = [
    "JOBS",
    "PENDING_STATES",
    "RESULTS",
    "TERMINAL_STATES",
    "check_page",
    "decode_json",
    "job_path",
    "new_job_id",
    "raise_for_reply",
]

_UNSAFE_ID = re.compile(r"[/?#\\\s\x00-\x1f\x7f]|\.\.")


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


def _chosen_job_id(value: Any, ours: str) -> str:
    """The job id the service chose (when it ignored ours), if it is safe in a URL path."""
    if (
        isinstance(value, str) and len(value) <= MAX_JOB_ID_LENGTH
        and not _UNSAFE_ID.search(value)
    ):
        return value
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    raise QueryError(
        f"Submitting the query: the reply's jobId {shown} is not a usable job id (a string "
        f"of at most {MAX_JOB_ID_LENGTH} characters, without '/', '?', '#', '..' or white "
        f"space). The job may exist on the service under our id {ours}.", ours,
    )


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
    message = http_error_message(response, secrets, doing, explain)
    raise QueryError(message, job_id, {"status": response.status_code})  # status: who is at fault


def check_page(
    response: requests.Response, job_id: str, secrets: list[str], rows_asked: int | None = None
) -> ResultsPage:
    """A results reply decoded and checked (``wire.parse_results``): its state, and for DONE
    the page's shape.

    PENDING and RUNNING come back as they are; FAILED, CANCELLED, TIMEDOUT and unknown states
    raise, as do an HTTP error and a malformed page (the error names the field). Before it is
    decoded, a reply nested too deep, or with far more rows than ``rows_asked`` (the page size
    asked), is refused (``wire.check_reply_shape``).
    """
    if not response.ok:
        raise_for_reply(response, f"fetching results of job {job_id}", job_id, secrets)
    check_reply_shape(response.content, job_id, rows_asked)
    page = parse_results(decode_json(response, f"Fetching results of job {job_id}"), job_id)
    if page.state != DONE and not page.live:
        _raise_for_state(page.state, job_id, page.payload)
    return page


def _raise_for_state(state: str, job_id: str, payload: Any) -> None:
    """Raise for a job that ended without results: cancelled, timed out or failed."""
    detail = service_message(payload)
    detail = f": {detail}" if detail else ""
    if state == CANCELLED:
        raise QueryCancelled(f"Job {job_id} was cancelled{detail}.", job_id, payload)
    if state == TIMEDOUT:
        raise QueryError(
            f"Job {job_id} timed out on the server{detail}. Narrow the time range or add "
            "a LIMIT.", job_id, payload,
        )
    raise QueryError(f"Job {job_id} failed{detail}.", job_id, payload)


