"""Replies of the Query Service, checked: JSON decoded once, HTTP errors as ``QueryError`` with
the service's message first, results pages checked field by field, job ids safe in URL paths.
"""

from __future__ import annotations

import functools
import re
import uuid
from typing import Any
from urllib.parse import quote

import orjson
import requests

from cortex_nb.exceptions import QueryCancelled, QueryError
from cortex_nb.http.client import http_error_message, service_message
from cortex_nb.sql import guide as dataguide
from cortex_nb.wire import (  # noqa: F401 (named from here by the job and the service)
    DEFAULT_PAGE_SIZE,
    JOBS,
    MAX_PAGE_SIZE,
    MAX_WAIT_MS,
    PENDING_STATES,
    RESULTS,
    TERMINAL_STATES,
)

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
    "rows_in_job",
]

_UNSAFE_ID = re.compile(r"[/?#\\\s\x00-\x1f\x7f]|\.\.")
_JSON_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}

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


