"""The wire module: one description of Query Service v2 that the client and the sandbox share.

The results envelope is checked by ``wire.parse_results`` (a table of malformed fields, each an
error naming the field, and good pages of every shape); the sandbox's real replies over HTTP
parse with it in every state the sandbox produces; the Arrow fast path refuses every page the
strict path refuses, fed the same bytes.
"""

from __future__ import annotations

import copy
import json

import orjson
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cortex_nb import wire
from cortex_nb.exceptions import CortexError, QueryError
from cortex_nb.http.client import HTTPClient
from cortex_nb.http.endpoints import DEFAULT_TOKEN_URL
from cortex_nb.query import background
from cortex_nb.query.service import QueryService
from cortex_nb.results import frames

from .test_sandbox_jobs import SLOW_SQL, wait_for

JOB = "j1"


def done(rows=None, **fields) -> dict:
    """A good DONE page of ``rows`` (two by default), its fields replaced by ``fields``."""
    rows = [{"a": 1}, {"a": 2}] if rows is None else rows
    payload = {
        "jobId": JOB, "state": "DONE", "resultFormat": "valuesDictionary",
        "rowsInJob": 5, "rowsInPage": len(rows),
        "schema": {"fields": [{"name": "a", "type": "INTEGER"}]},
        "page": {"pageCursor": "next-2", "result": {"data": rows}},
    }
    for dotted, value in fields.items():
        *path, last = dotted.split("__")
        target = payload
        for key in path:
            target = target[key]
        if value is _ABSENT:
            del target[last]
        else:
            target[last] = value
    return payload


_ABSENT = object()

MALFORMED = [  # (payload, the end of the error's message after "for job j1: ")
    (done(state=_ABSENT), "no job state."),
    (done(state=7), "no job state."),
    (done(page=_ABSENT), "page is null, not an object."),
    (done(page=None), "page is null, not an object."),
    (done(page=[1]), "page is a list, not an object."),
    (done(page="x"), "page is a string, not an object."),
    (done(page__result=None), "page.result is null, not an object."),
    (done(page__result=[]), "page.result is a list, not an object."),
    (done(page__result__data=None), "page.result.data is null, not a list."),
    (done(page__result__data={}), "page.result.data is an object, not a list."),
    (done(page__result__data=_ABSENT), "page.result.data is null, not a list."),
    (done(page__pageCursor=7), "page.pageCursor is a number, not a string."),
    (done(page__pageCursor=["c"]), "page.pageCursor is a list, not a string."),
    (done(page__pageCursor=True), "page.pageCursor is a boolean, not a string."),
    (done(schema=[]), "schema is a list, not an object."),
    (done(schema=5), "schema is a number, not an object."),
    (done(rowsInJob=None), "rowsInJob is null, not a row count."),
    (done(rowsInJob=[1]), "rowsInJob is a list, not a row count."),
    (done(rowsInJob="5"), "rowsInJob is a string, not a row count."),
    (done(rowsInJob=-1), "rowsInJob is a negative number, not a row count."),
    (done(rowsInJob=5.0), "rowsInJob is a number, not a row count."),
    (done(rowsInJob=True), "rowsInJob is a boolean, not a row count."),
    (done(rowsInPage={}), "rowsInPage is an object, not a row count."),
    (done(rowsInPage=None), "rowsInPage is null, not a row count."),
    (done(rowsInPage=2.0), "rowsInPage is a number, not a row count."),
    (done(rowsInPage=3), "rowsInPage says 3 but the page holds 2 rows."),
]


# -- the envelope, checked -------------------------------------------------------------------
@pytest.mark.parametrize(("payload", "problem"), MALFORMED)
def test_a_malformed_page_is_an_error_naming_the_field(payload, problem):
    with pytest.raises(QueryError) as caught:
        wire.parse_results(payload, JOB)
    assert str(caught.value).startswith(f"Malformed results page for job {JOB}: {problem}")
    assert caught.value.job_id == JOB


def test_a_payload_that_is_not_an_object_has_no_job_state():
    for payload in (None, [done()], "DONE"):
        with pytest.raises(QueryError, match=f"Malformed results page for job {JOB}: no job"):
            wire.parse_results(payload, JOB)


def test_an_unknown_state_is_an_error_that_says_so():
    with pytest.raises(QueryError, match="Job j1 is in an unknown state 'WEIRD'") as caught:
        wire.parse_results(done(state="weird"), JOB)
    assert caught.value.details["state"] == "weird"


def test_a_done_page_with_a_cursor():
    page = wire.parse_results(done(), JOB)
    assert (page.state, page.rows, page.cursor) == ("DONE", [{"a": 1}, {"a": 2}], "next-2")
    assert (page.rows_in_page, page.rows_in_job, page.total_rows) == (2, 5, 5)
    assert page.schema == {"fields": [{"name": "a", "type": "INTEGER"}]}
    assert not page.live and page.payload["jobId"] == JOB


def test_the_last_page_and_a_page_that_does_not_count():
    last = wire.parse_results(done(page__pageCursor=None, rowsInJob=2), JOB)
    assert last.cursor is None and last.total_rows == 2
    bare = wire.parse_results(
        done(rowsInJob=_ABSENT, rowsInPage=_ABSENT, schema=_ABSENT, page__pageCursor=_ABSENT),
        JOB,
    )
    assert (bare.rows_in_job, bare.total_rows, bare.schema, bare.cursor) == (None, 2, None, None)


def test_an_empty_page_and_a_values_array_page():
    empty = wire.parse_results(done([], rowsInJob=0), JOB)
    assert (empty.rows, empty.rows_in_page, empty.total_rows) == ([], 0, 0)
    lists = wire.parse_results(done([[1, "x"], [2, "y"]], resultFormat="valuesArray"), JOB)
    assert lists.rows == [[1, "x"], [2, "y"]] and lists.rows_in_page == 2


@pytest.mark.parametrize("state", ["PENDING", "RUNNING", "running"])
def test_a_live_page_needs_no_page(state):
    page = wire.parse_results({"jobId": JOB, "state": state}, JOB)
    assert page.live and page.state == state.upper()
    assert (page.rows, page.rows_in_page, page.cursor) == (None, 0, None)


@pytest.mark.parametrize(
    ("said", "state"),
    [("FAILED", "FAILED"), ("TIMEDOUT", "TIMEDOUT"), ("CANCELLED", "CANCELLED"),
     ("canceled", "CANCELLED"), ("done", "DONE")],
)
def test_states_are_read_in_any_case_and_either_spelling(said, state):
    payload = {"jobId": JOB, "state": said, "errors": [{"message": "no"}]}
    if state == "DONE":
        payload = done(state=said)
    page = wire.parse_results(payload, JOB)
    assert page.state == state and not page.live
    assert page.payload is payload  # what the service said (errors included) is kept


def test_rows_read_apart_from_the_envelope_follow_the_same_rules():
    envelope = done(page__result__data=_ABSENT)
    assert wire.parse_results(envelope, JOB, rows=[{"a": 1}, {"a": 2}]).rows_in_page == 2
    with pytest.raises(QueryError, match="rowsInPage says 2 but the page holds 1 rows"):
        wire.parse_results(envelope, JOB, rows=[{"a": 1}])
    with pytest.raises(QueryError, match="schema is a number"):
        wire.parse_results(done(schema=5), JOB, rows=[{"a": 1}, {"a": 2}])


# -- the envelope, built -----------------------------------------------------------------------
@pytest.mark.parametrize("state", wire.STATES)
def test_a_built_envelope_parses_back(state):
    errors = [{"errorCode": 400, "message": "no"}] if state in ("FAILED", "TIMEDOUT") else None
    envelope = wire.results_envelope(
        JOB, state, data=[{"a": 1}], rows_in_job=3, schema={"fields": []}, cursor="c",
        errors=errors,
    )
    page = wire.parse_results(orjson.loads(orjson.dumps(envelope)), JOB)
    assert page.state == state and list(envelope)[-1] == "page"
    if state == "DONE":
        assert (page.rows, page.rows_in_job, page.cursor) == ([{"a": 1}], 3, "c")
    else:
        assert envelope["page"] == {"pageCursor": None, "result": {"data": None}}
        assert envelope.get("errors") == errors and "rowsInJob" not in envelope


def test_rows_encoded_apart_are_spliced_into_the_data():
    envelope = wire.results_envelope(JOB, "DONE", rows_in_page=2, rows_in_job=2)
    body = wire.splice_rows(orjson.dumps(envelope), b'{"a":1},{"a":2}')
    page = wire.parse_results(orjson.loads(body), JOB)
    assert page.rows == [{"a": 1}, {"a": 2}] and page.total_rows == 2
    running = orjson.dumps(wire.results_envelope(JOB, "RUNNING"))
    with pytest.raises(ValueError, match="DONE envelope with empty data"):
        wire.splice_rows(running, b'{"a":1}')


# -- paths, states, limits ---------------------------------------------------------------------
def test_job_paths_keep_the_id_one_segment():
    assert wire.job_path(wire.JOBS, "a/b c") == "/query/v2/jobs/a%2Fb%20c"
    assert wire.job_path(wire.RESULTS, JOB) == "/query/v2/jobResults/j1"
    for bad in ("", ".", "..", None, 7):
        with pytest.raises(QueryError, match="is not a job id"):
            wire.job_path(wire.JOBS, bad)


def test_both_sides_name_the_same_token_path(sandbox):
    assert DEFAULT_TOKEN_URL.endswith(wire.TOKEN_PATH)
    assert sandbox.token_url == sandbox.url + wire.TOKEN_PATH
    assert wire.TOKEN_PATH.startswith(wire.OAUTH_PATHS)


def test_states_are_one_vocabulary():
    assert set(wire.STATES) == wire.LIVE_STATES | wire.FINAL_STATES
    assert not wire.LIVE_STATES & wire.FINAL_STATES
    assert [wire.state_named(s) for s in ("Pending", "CANCELED", "canceled", "nope")] == [
        "PENDING", "CANCELLED", "CANCELLED", None,
    ]
    # a background handle adds its own states around the service's, and ends in three of them
    assert background.FINAL_STATES < wire.FINAL_STATES
    assert {background.WAITING, background.DOWNLOADING}.isdisjoint(wire.STATES)


def test_page_limits_are_checked_by_both_sides(sandbox_api):
    job_id = sandbox_api.create("SELECT 1 AS x").json()["jobId"]
    too_big = sandbox_api.results(job_id, maxWait=wire.MAX_WAIT_MS, pageSize=wire.MAX_PAGE_SIZE + 1)
    assert too_big.status_code == 400 and str(wire.MAX_PAGE_SIZE) in too_big.text
    service = QueryService(client=HTTPClient(url=sandbox_api.sandbox.url))
    sandbox_api.sandbox.clear()
    with pytest.raises(CortexError, match=r"page_size.*100,?000"):  # refused before sending
        service.job(job_id, page_size=wire.MAX_PAGE_SIZE + 1).wait()
    assert sandbox_api.sandbox.requests == []


# -- the sandbox's replies parse with the wire, in every state ---------------------------------
def test_the_sandbox_replies_parse_in_every_state(sandbox, sandbox_api):
    seen = {}

    def read(job_id: str, **params) -> wire.ResultsPage:
        page = wire.parse_results(sandbox_api.results(job_id, **params).json(), job_id)
        seen[page.state] = page
        return page

    slow = sandbox_api.create(SLOW_SQL.format(t=sandbox_api.traffic)).json()["jobId"]
    wait_for(lambda: sandbox.jobs.get(slow).state == "RUNNING")
    assert read(slow).state == "PENDING" and read(slow).state == "RUNNING"
    sandbox_api.http.delete(sandbox.url + wire.job_path(wire.JOBS, slow))
    assert read(slow).state == "CANCELLED"
    failing = sandbox_api.create(f"SELECT CAST(app AS INT64) AS n FROM {sandbox_api.traffic}")
    assert read(failing.json()["jobId"], maxWait=2000).payload["errors"]
    timing_out = sandbox_api.create(
        SLOW_SQL.format(t=sandbox_api.traffic), params={"properties": {"timeoutMs": 1}}
    )
    assert read(timing_out.json()["jobId"], maxWait=2000).payload["errors"]
    assert set(seen) == set(wire.STATES) - {"DONE"}


@pytest.mark.parametrize("result_format", wire.RESULT_FORMATS)
def test_the_sandbox_pages_parse_page_by_page(sandbox_api, result_format):
    sql = f"SELECT app, source_ip FROM {sandbox_api.traffic} LIMIT 2500"
    job_id = sandbox_api.create(sql).json()["jobId"]
    params = {"maxWait": 2000, "pageSize": 1000, "resultFormat": result_format}
    pages = [wire.parse_results(sandbox_api.results(job_id, **params).json(), job_id)]
    while pages[-1].cursor:
        reply = sandbox_api.results(job_id, pageCursor=pages[-1].cursor, resultFormat=result_format)
        pages.append(wire.parse_results(reply.json(), job_id))
    assert [p.rows_in_page for p in pages] == [1000, 1000, 500]
    assert {p.total_rows for p in pages} == {2500} and pages[0].schema["fields"]
    assert all(p.state == "DONE" and isinstance(p.rows, list) for p in pages)


# -- the strict path and the Arrow fast path agree ---------------------------------------------
def strict(content: bytes) -> wire.ResultsPage:
    """What the strict path makes of a page's bytes (``check_page``: orjson, then the wire)."""
    return wire.parse_results(orjson.loads(content), JOB)


BAD_BYTES = [  # pages Arrow can read, that the strict path refuses
    *(orjson.dumps(payload) for payload, _ in MALFORMED),
    b"\xef\xbb\xbf" + orjson.dumps(done()),  # a byte order mark: not JSON to orjson
    orjson.dumps(done()).replace(b'"rowsInPage":2', b'"rowsInPage":NaN'),
    orjson.dumps(done()).replace(b'"rowsInJob":5', b'"rowsInJob":Infinity'),
    orjson.dumps(done()).replace(b'"schema":{', b'"schema":{"x":NaN,'),
    orjson.dumps(done([{"a": "ok"}, {"a": "ok"}])).replace(b"ok", b"\xff\xfe", 1),  # not UTF-8
]


@pytest.mark.parametrize("content", BAD_BYTES)
def test_a_page_the_strict_path_refuses_the_arrow_path_refuses(content):
    with pytest.raises((QueryError, orjson.JSONDecodeError)):
        strict(content)
    assert frames.parse_page(content) is None


def test_a_page_both_paths_take_reads_the_same():
    content = orjson.dumps(done([{"a": 1, "s": "café"}, {"a": 2, "s": None}]))
    fast, slow = frames.parse_page(content), strict(content)
    assert (fast.state, fast.page_cursor, fast.rows_in_page) == (slow.state, slow.cursor, 2)
    assert fast.rows.to_pylist() == slow.rows


def malformed_second_page(httpserver: HTTPServer, second: bytes) -> QueryService:
    """A fake service whose job j1 has a good first page and then ``second`` (by cursor)."""
    httpserver.expect_request(wire.JOBS, method="POST").respond_with_json(
        {"jobId": JOB, "uri": wire.job_path(wire.JOBS, JOB)}, status=201
    )
    httpserver.expect_request(wire.job_path(wire.JOBS, JOB), method="DELETE").respond_with_json({})

    def results(request: Request) -> Response:
        if request.args.get("pageCursor"):
            return Response(second, content_type="application/json")
        first = done([{"a": 0}], rowsInJob=2, rowsInPage=1, page__pageCursor="c1")
        return Response(json.dumps(first), content_type="application/json")

    httpserver.expect_request(wire.job_path(wire.RESULTS, JOB)).respond_with_handler(results)
    return QueryService(client=HTTPClient(url="http://127.0.0.1", port=httpserver.port))


@pytest.mark.parametrize(
    ("second", "error"),
    [
        (done([{"a": 1}], rowsInJob=2, rowsInPage=1.0), "rowsInPage is a number, not a row"),
        (done([{"a": 1}], rowsInJob=2, rowsInPage=None), "rowsInPage is null, not a row count"),
        (done([{"a": 1}], rowsInJob=-1, rowsInPage=1), "rowsInJob is a negative number"),
        (done([{"a": 1}], rowsInJob=2, schema=5), "schema is a number, not an object"),
        (done([{"a": 1}], rowsInJob=2, page="x"), "page is a string, not an object"),
        (b"\xef\xbb\xbf" + orjson.dumps(done([{"a": 1}], rowsInJob=2)), "is not JSON"),
    ],
)
def test_a_query_refuses_a_later_page_the_strict_path_refuses(httpserver, second, error):
    body = second if isinstance(second, bytes) else orjson.dumps(copy.deepcopy(second))
    service = malformed_second_page(httpserver, body)
    with pytest.raises(QueryError, match=error):
        service.query("SELECT 1", parallel=1)
