"""The Query Service v2 wire format, written once for the client and the sandbox.

What both sides must agree on (CORTEX_API.md): the API paths, the job states, the page limits
and result formats, and the results envelope::

    {"jobId", "state", "resultFormat", "rowsInJob"?, "rowsInPage"?, "schema"?,
     "page": {"pageCursor": str | null, "result": {"data": [rows] | null}}}

``parse_results`` checks a decoded envelope field by field and returns a ``ResultsPage``; the
client's reply checks and its Arrow fast path both go through it, so a page one refuses the
other never accepts. ``results_envelope`` builds the same envelope for the sandbox's replies.
Before any parser sees a page's bytes, ``check_reply_shape`` measures them (``reply_shape``):
nesting deeper than ``MAX_NESTING`` (a parser's stack would not survive it) or far more rows
than asked (decoding them would take many times the reply's size) is refused undecoded.

The sandbox may import this module: it describes the service, not our client. It imports
nothing heavy and nothing of the client (only ``cortex_nb.exceptions``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cortex_nb.exceptions import QueryError

__all__ = [
    "CANCELLED",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_RESULT_FORMAT",
    "DONE",
    "FAILED",
    "FINAL_STATES",
    "JOBS",
    "JOB_ID",
    "LIVE_STATES",
    "MAX_JOB_ID_LENGTH",
    "MAX_NESTING",
    "MAX_PAGE_SIZE",
    "MAX_ROW_BYTES",
    "MAX_WAIT_MS",
    "OAUTH_PATHS",
    "PENDING",
    "RESULTS",
    "RESULT_FORMATS",
    "REVOKE_PATH",
    "ROW_SLACK",
    "RUNNING",
    "STATES",
    "TIMEDOUT",
    "TOKEN_PATH",
    "VALUES_ARRAY",
    "VALUES_DICTIONARY",
    "ReplyShape",
    "ResultsPage",
    "check_reply_shape",
    "job_path",
    "json_kind",
    "page_bytes",
    "parse_results",
    "reply_shape",
    "results_envelope",
    "splice_rows",
    "state_named",
]

# -- paths ---------------------------------------------------------------------------------------
JOBS = "/query/v2/jobs"  # POST creates, GET lists; JOBS/<id>: GET detail, DELETE cancels
RESULTS = "/query/v2/jobResults"  # RESULTS/<id>: GET one results page
OAUTH_PATHS = "/api/oauth2/"  # the token endpoints live under it (on the API host or the IdP's)
TOKEN_PATH = OAUTH_PATHS + "RequestToken"
REVOKE_PATH = OAUTH_PATHS + "RevokeToken"
# a client-chosen jobId (documented); ids the service chooses are only checked for URL safety
JOB_ID = re.compile(r"[A-Za-z0-9-]{1,1000}")
MAX_JOB_ID_LENGTH = 1000


def job_path(base: str, job_id: str) -> str:
    """``base/<job_id>``, the id escaped so it stays one path segment."""
    if not isinstance(job_id, str) or job_id in ("", ".", ".."):
        raise QueryError(
            f"{job_id!r} is not a job id; use the jobId the service gave the query.", None
        )
    return f"{base}/{quote(job_id, safe='')}"


# -- job states ----------------------------------------------------------------------------------
PENDING, RUNNING, DONE = "PENDING", "RUNNING", "DONE"
FAILED, CANCELLED, TIMEDOUT = "FAILED", "CANCELLED", "TIMEDOUT"
STATES = (PENDING, RUNNING, DONE, FAILED, CANCELLED, TIMEDOUT)  # in the order a job lives them
LIVE_STATES = frozenset({PENDING, RUNNING})  # the job is still working: ask again
FINAL_STATES = frozenset({DONE, FAILED, CANCELLED, TIMEDOUT})  # it will not change any more


def state_named(text: str) -> str | None:
    """The state ``text`` names, in any case, ``canceled`` included; None for no state."""
    state = text.upper()
    state = CANCELLED if state == "CANCELED" else state
    return state if state in STATES else None


# -- page limits and formats ---------------------------------------------------------------------
DEFAULT_PAGE_SIZE = 10_000  # rows per results page when a request does not say
MAX_PAGE_SIZE = 100_000
MAX_WAIT_MS = 2000  # the longest a results request may be held for its page (maxWait)
VALUES_DICTIONARY, VALUES_ARRAY = "valuesDictionary", "valuesArray"  # rows as objects, as lists
RESULT_FORMATS = (VALUES_DICTIONARY, VALUES_ARRAY)
DEFAULT_RESULT_FORMAT = VALUES_DICTIONARY


# -- the results envelope ------------------------------------------------------------------------
@dataclass(frozen=True)
class ResultsPage:
    """One results reply, checked: its state and, for DONE, its rows and what it says of them.

    ``rows`` is ``page.result.data`` (None unless DONE); ``rows_in_job`` is None when the reply
    does not say; ``payload`` is the decoded envelope as it came.
    """

    state: str
    rows: Any = None
    rows_in_page: int = 0
    rows_in_job: int | None = None
    cursor: str | None = None
    schema: dict[str, Any] | None = None
    payload: Any = None

    @property
    def live(self) -> bool:
        """True while the job is still working (PENDING, RUNNING): ask again."""
        return self.state in LIVE_STATES

    @property
    def total_rows(self) -> int:
        """The rows the job has: ``rowsInJob``, or this page's own count when it does not say."""
        return self.rows_in_page if self.rows_in_job is None else self.rows_in_job


def parse_results(payload: Any, job_id: str = "", *, rows: Any = None) -> ResultsPage:
    """A decoded results reply, checked field by field; a ``QueryError`` names a bad field.

    Any known state is returned (the caller decides what FAILED and the like mean); only a
    DONE reply's page is checked. ``rows``, given, are the page's rows read apart from the
    envelope (the Arrow fast path reads ``page.result.data`` itself and leaves it out of
    ``payload``): every other rule still applies.
    """
    state = _state(payload, job_id)
    if state != DONE:
        return ResultsPage(state, payload=payload)
    body = _field(payload, "page", dict, job_id)
    result = _field(body, "result", dict, job_id, "page.")
    if rows is None:
        rows = _field(result, "data", list, job_id, "page.result.")
    cursor = _optional(body, "pageCursor", str, job_id, "page.")
    schema = _optional(payload, "schema", dict, job_id)
    rows_in_job = _row_count(payload, "rowsInJob", job_id)
    declared = _row_count(payload, "rowsInPage", job_id)
    if declared is not None and declared != len(rows):
        raise QueryError(
            f"Malformed results page for job {job_id}: rowsInPage says {declared} but "
            f"the page holds {len(rows)} rows.", job_id,
        )
    return ResultsPage(DONE, rows, len(rows), rows_in_job, cursor, schema, payload)


def results_envelope(
    job_id: str, state: str, result_format: str = DEFAULT_RESULT_FORMAT, *,
    data: list[Any] | None = None, rows_in_page: int | None = None,
    rows_in_job: int | None = None, schema: dict[str, Any] | None = None,
    cursor: str | None = None, errors: list[Any] | None = None,
) -> dict[str, Any]:
    """A results reply as the service sends it, ``page`` last (see ``splice_rows``).

    A DONE reply carries ``data`` (default: none yet), ``rowsInPage`` (default: ``len(data)``),
    ``rowsInJob`` and ``schema``; any other state has null data and no counts.
    """
    envelope: dict[str, Any] = {"jobId": job_id, "state": state, "resultFormat": result_format}
    if state == DONE:
        data = [] if data is None else data
        if rows_in_job is not None:
            envelope["rowsInJob"] = rows_in_job
        envelope["rowsInPage"] = len(data) if rows_in_page is None else rows_in_page
        if schema is not None:
            envelope["schema"] = schema
    else:
        data, cursor = None, None
    if errors:
        envelope["errors"] = errors
    envelope["page"] = {"pageCursor": cursor, "result": {"data": data}}
    return envelope


# -- a reply's shape, measured before it is parsed ----------------------------------------------
# Arrays and objects one reply may nest, envelope included: the service's nest fewer than 10
# (envelope 4, a row, a struct, a list of structs); Arrow's JSON reader dies of a stack overflow
# near 20,000 and Python code walking values raises RecursionError near 1,000.
MAX_NESTING = 64
# Items 4 deep that are not rows (a schema's field entries, errors) a page may hold besides
# the rows asked.
ROW_SLACK = 4096
# The most one row may take in a reply: a wide log row is a few kB of JSON. With the envelope
# allowance, it bounds the bytes a page of the size asked may take (``page_bytes``).
MAX_ROW_BYTES = 64 * 1024
_ENVELOPE_BYTES = 1024 * 1024
_ROWS_DEPTH = 4  # {envelope {page {result [data: the rows are the items of a list 4 deep
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{},')))
_SCAN_CHUNK = 4 << 20


@dataclass(frozen=True)
class ReplyShape:
    """What a JSON reply's bytes say of its structure, strings left out.

    ``depth``: how deep arrays and objects nest; ``rows``: an upper bound on the rows of
    ``page.result.data`` (every item of every array or object 4 deep).
    """

    depth: int
    rows: int


def reply_shape(content: bytes) -> ReplyShape:
    """Measure a reply's nesting and rows without parsing it: C-speed byte filters, then
    numpy over the brackets and commas left (and quotes, when some string holds either), a
    few megabytes at a time."""
    import numpy as np  # lazily: only replies with rows need it, and pandas brings it

    # an escaped quote: drop escapes first, so none ends a string (a regular expression finds
    # the pair several times faster than ``in`` on pages full of quotes; most have none, but
    # many hold backslashes: a ``domain\\user`` in every row)
    if b"\\" in content and _ESCAPED_QUOTE.search(content):
        content = content.replace(b"\\\\", b"").replace(b'\\"', b"")
    # two quotes side by side go together (no string between them holds structure): dropping
    # them leaves every other character as far inside or outside strings as it was
    marks = content.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    quoted = b'"' in marks  # some string holds a bracket or a comma
    steps = _steps()
    depth = deepest = rows = quotes = 0
    for start in range(0, len(marks), _SCAN_CHUNK):
        chunk = np.frombuffer(marks, np.uint8, min(_SCAN_CHUNK, len(marks) - start), start)
        step = np.take(steps, chunk)
        commas = chunk == ord(",")
        if quoted:  # structure counts only outside strings
            quote = chunk == ord('"')
            inside = (np.cumsum(quote, dtype=np.int32) + quotes) & 1 == 1
            inside |= quote
            step[inside] = 0
            commas &= ~inside
            quotes += int(np.count_nonzero(quote))
        levels = np.cumsum(step, dtype=np.int32) + depth
        deepest = max(deepest, int(levels.max()))
        # a comma 4 deep, or a list or object opening there: an item of a list 4 deep
        rows += int(np.count_nonzero((levels == _ROWS_DEPTH) & ((step == 1) | commas)))
        depth = int(levels[-1])
    return ReplyShape(deepest, rows)


_ESCAPED_QUOTE = re.compile(rb'\\"')


@functools.cache
def _steps() -> Any:
    """How each structure byte moves the nesting level: +1 opens, -1 closes, 0 otherwise."""
    import numpy as np

    steps = np.zeros(256, np.int8)
    steps[list(b"[{")], steps[list(b"]}")] = 1, -1
    return steps


def page_bytes(rows_asked: int) -> int:
    """The most bytes a results reply of ``rows_asked`` rows may take (read no further)."""
    return rows_asked * MAX_ROW_BYTES + _ENVELOPE_BYTES


def check_reply_shape(content: bytes, job_id: str, rows_asked: int | None = None) -> None:
    """A ``QueryError`` for a results reply nested deeper than ``MAX_NESTING``, or holding far
    more rows than the ``rows_asked`` (the page size); nothing for any other."""
    shape = reply_shape(content)
    doing = f"Fetching results of job {job_id}"
    if shape.depth > MAX_NESTING:
        raise QueryError(
            f"{doing}: the reply nests arrays and objects more than {MAX_NESTING} deep "
            f"({shape.depth:,} levels); refusing to parse it. The service's replies nest "
            "fewer than 10: run the query again, and report it with the job id if it repeats.",
            job_id,
        )
    if rows_asked is not None and shape.rows > rows_asked + ROW_SLACK:
        raise QueryError(
            f"{doing}: the page holds about {shape.rows:,} rows, more than the "
            f"{rows_asked:,} asked (pageSize); refusing to decode it ({len(content):,} bytes). "
            "The service ignored the page size: ask for smaller pages (page_size=) or report "
            "it with the job id.", job_id,
        )


_OPEN_DATA, _CLOSE_DATA = b"[", b"]}}}"  # an encoded DONE envelope with no data yet ends "[]}}}"


def splice_rows(encoded: bytes, rows: bytes) -> bytes:
    """An encoded DONE envelope (``results_envelope``, no data yet) with rows already encoded
    as JSON (``row,row,...``) put in ``page.result.data``: a server need not decode them."""
    if not encoded.endswith(_OPEN_DATA + _CLOSE_DATA):
        raise ValueError("splice_rows needs a compact encoded DONE envelope with empty data")
    return b"".join((encoded[: -len(_CLOSE_DATA)], rows, _CLOSE_DATA))  # rows copied once


_JSON_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, in JSON's words (for messages)."""
    if value is None:
        return "null"
    return _JSON_KINDS.get(type(value), "a number" if isinstance(value, int | float) else "?")


def _state(payload: Any, job_id: str) -> str:
    """The reply's job state, upper case; a ``QueryError`` when absent or unknown."""
    if not isinstance(payload, dict) or not isinstance(payload.get("state"), str):
        raise QueryError(f"Malformed results page for job {job_id}: no job state.", job_id)
    state = state_named(payload["state"])
    if state is None:
        raise QueryError(
            f"Job {job_id} is in an unknown state {payload['state'].upper()!r}.", job_id, payload
        )
    return state


def _field(payload: dict[str, Any], name: str, kind: type, job_id: str, where: str = "") -> Any:
    """``payload[name]`` if it is of ``kind``, else a ``QueryError`` naming the field."""
    value = payload.get(name)
    if not isinstance(value, kind):
        raise QueryError(
            f"Malformed results page for job {job_id}: {where}{name} is {json_kind(value)}, "
            f"not {_JSON_KINDS[kind]}. The service sent something unexpected; run the query "
            "again.", job_id,
        )
    return value


def _optional(payload: dict[str, Any], name: str, kind: type, job_id: str, where: str = "") -> Any:
    """``payload[name]`` if it is null, absent or of ``kind``; else as ``_field``."""
    return None if payload.get(name) is None else _field(payload, name, kind, job_id, where)


def _row_count(payload: dict[str, Any], name: str, job_id: str) -> int | None:
    """A row count field (``rowsInJob``, ``rowsInPage``): None when absent, else an int >= 0."""
    if name not in payload:
        return None
    value = payload[name]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    negative = isinstance(value, int | float) and value < 0
    shown = "a negative number" if negative else json_kind(value)
    raise QueryError(
        f"Malformed results page for job {job_id}: {name} is {shown}, not a row count.", job_id
    )
