"""Hostile results pages: nothing a server sends can kill the kernel, blow up its memory or
cut a result short without an error.

Each test talks to a small in-process server on 127.0.0.1 (pytest-httpserver). A page that
used to crash the interpreter (a value nested 20,000 deep, which Arrow's JSON reader cannot
survive) is served to a child process, so a crash fails the test instead of killing pytest.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cortex_nb import CortexError, HTTPClient, QueryError
from cortex_nb.query.service import QueryService
from cortex_nb.wire import MAX_NESTING, page_bytes, reply_shape

JOB = "j1"
RESULTS = f"/query/v2/jobResults/{JOB}"


@pytest.fixture()
def service(httpserver: HTTPServer) -> QueryService:
    """A fake service with one job, j1 (its results are up to the test)."""
    httpserver.expect_request("/query/v2/jobs", method="POST").respond_with_json(
        {"jobId": JOB}, status=201
    )
    httpserver.expect_request(f"/query/v2/jobs/{JOB}", method="DELETE").respond_with_json({})
    client = HTTPClient(url="http://127.0.0.1", port=httpserver.port, max_retries=0)
    return QueryService(client=client)


def envelope(data: list, cursor: str | None = None, **counts) -> dict:
    return {"jobId": JOB, "state": "DONE", **counts,
            "page": {"pageCursor": cursor, "result": {"data": data}}}


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def two_pages(second: str, first: dict | None = None):
    """A handler: ``first`` (default: two rows, a cursor, rowsInJob 4), then the raw
    ``second`` for the cursor."""
    first = first or envelope([{"a": 0}, {"a": 1}], "c1", rowsInJob=4, rowsInPage=2)

    def handler(request: Request) -> Response:
        later = request.args.get("pageCursor") or request.args.get("offset")
        body = second if later else json.dumps(first)
        return Response(body, content_type="application/json")

    return handler


def later_page_with(value: str) -> str:
    """A second page (rows 2 and 3) whose second row's ``b`` is ``value`` (raw JSON)."""
    return (
        '{"jobId": "j1", "state": "DONE", "rowsInJob": 4, "rowsInPage": 2, "page": '
        '{"pageCursor": null, "result": {"data": [{"a": 2}, {"a": 3, "b": ' + value + "}]}}}"
    )


# -- nesting -----------------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import sys
    from pytest_httpserver import HTTPServer
    from werkzeug import Response
    from cortex_nb import CortexError, HTTPClient
    from cortex_nb.query.service import QueryService

    first = ('{"jobId": "j1", "state": "DONE", "rowsInJob": 4, "rowsInPage": 2, "page": '
             '{"pageCursor": "c1", "result": {"data": [{"a": 0}, {"a": 1}]}}}')
    deep = "[" * 20000 + "1" + "]" * 20000
    second = first.replace('"c1"', 'null').replace('{"a": 1}', '{"a": 1, "b": %s}' % deep)
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    server.expect_request("/query/v2/jobs", method="POST").respond_with_json({"jobId": "j1"})
    server.expect_request("/query/v2/jobs/j1", method="DELETE").respond_with_json({})
    server.expect_request("/query/v2/jobResults/j1").respond_with_handler(
        lambda request: Response(second if request.args.get("pageCursor") else first)
    )
    client = HTTPClient(url="http://127.0.0.1", port=server.port, max_retries=0)
    try:
        QueryService(client=client).query("SELECT 1", parallel=1)
    except CortexError as exc:
        print("CortexError:", exc)
    finally:
        server.stop()
""")


def test_a_page_nested_20000_deep_is_an_error_not_a_crash():
    child = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, f"the client died ({child.returncode}): {child.stderr[-500:]}"
    assert "CortexError: " in child.stdout
    assert f"nests arrays and objects more than {MAX_NESTING} deep" in child.stdout
    assert "job j1" in child.stdout


@pytest.mark.parametrize("depth", [900, MAX_NESTING])
def test_a_deep_value_on_any_page_is_a_query_error_naming_job_and_depth(
    httpserver, service, depth
):
    httpserver.expect_request(RESULTS).respond_with_handler(
        two_pages(later_page_with(nested(depth)))
    )
    for run in (
        lambda: service.query("SELECT 1", parallel=1),  # later pages: Arrow's fast path
        lambda: service.start("SELECT 1", parallel=1).rows(),  # later pages: orjson
    ):
        with pytest.raises(QueryError, match=f"more than {MAX_NESTING} deep") as info:
            run()
        assert "job j1" in str(info.value) and info.value.job_id == JOB


def test_a_first_page_nested_too_deep_is_refused_before_it_is_parsed(httpserver, service):
    first = later_page_with(nested(5000)).replace('"rowsInJob": 4', '"rowsInJob": 2')
    httpserver.expect_request(RESULTS).respond_with_data(first, content_type="application/json")
    with pytest.raises(QueryError, match=f"more than {MAX_NESTING} deep"):
        service.query("SELECT 1")


def test_values_nested_as_deep_as_real_ones_still_arrive(httpserver, service):
    shallow = '{"value": [{"x": [1, 2]}], "s": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"[["}'
    httpserver.expect_request(RESULTS).respond_with_handler(two_pages(later_page_with(shallow)))
    df = service.query("SELECT 1", parallel=1, structs="keep").df
    assert df["a"].tolist() == [0, 1, 2, 3]


def test_the_shape_scan_skips_brackets_inside_strings():
    text = json.dumps({"a": ["[[[{{{", '\\"[[', {"b": [1, 2]}], "c": "]]]]"}).encode()
    assert reply_shape(text).depth == 4
    assert reply_shape(b"[" * 70 + b"]" * 70).depth == 70


def _shape_of(value: object, level: int = 0) -> tuple[int, int]:
    """Depth and rows as ``reply_shape`` defines them, from the parsed value."""
    if not isinstance(value, (list, dict)):
        return level, 0
    items = list(value.values() if isinstance(value, dict) else value)
    depth, rows = level + 1, max(1, len(items)) if level + 1 == 4 else 0
    for item in items:
        inner_depth, inner_rows = _shape_of(item, level + 1)
        depth, rows = max(depth, inner_depth), rows + inner_rows
    return depth, rows


TRICKY = ["acme\\alice", 'say "hi"', "a\\", "\\\"[{", "[,]", "{", "", "\\n", "é", "\\\\\""]


def test_the_shape_scan_agrees_with_a_parser_on_strings_with_escapes_and_brackets():
    # domain\\user names, escaped quotes and backslashes ending strings, brackets in strings:
    # each takes a different path through the byte filters
    rng = random.Random(3)

    def value(level: int) -> object:
        kind = rng.randrange(5 if level < 7 else 2)
        if kind == 0:
            return rng.choice(TRICKY) + rng.choice(TRICKY)
        if kind == 1:
            return rng.randrange(-5, 5)
        if kind == 2:
            return [value(level + 1) for _ in range(rng.randrange(4))]
        return {rng.choice(TRICKY) + str(i): value(level + 1) for i in range(rng.randrange(4))}

    for _ in range(300):
        page = {"state": "DONE", "page": {"result": {"data": [value(4) for _ in range(5)]}}}
        encoded = json.dumps(page, ensure_ascii=rng.random() < 0.5).encode()
        shape = reply_shape(encoded)
        assert (shape.depth, shape.rows) == _shape_of(page), encoded


# -- pages bigger than asked -------------------------------------------------------------------
def test_a_first_page_far_bigger_than_asked_is_refused_before_it_is_decoded(httpserver, service):
    rows = [{"a": i} for i in range(50_000)]
    httpserver.expect_request(RESULTS).respond_with_json(
        envelope(rows, rowsInJob=50_000, rowsInPage=50_000)
    )
    with pytest.raises(QueryError) as info:
        service.query("SELECT 1", max_rows=1000, page_size=1000)
    message = str(info.value)
    assert "job j1" in message and "50,000 rows" in message and "1,000 asked" in message
    assert "not JSON" not in message
    request, _ = httpserver.log[1]
    assert request.args["pageSize"] == "1000"


def test_a_later_page_bigger_than_asked_is_refused_too(httpserver, service):
    second = json.dumps(envelope([{"a": i} for i in range(20_000)], rowsInPage=20_000))
    first = envelope([{"a": 0}, {"a": 1}], "c1", rowsInJob=20_002, rowsInPage=2)
    httpserver.expect_request(RESULTS).respond_with_handler(two_pages(second, first))
    with pytest.raises(QueryError, match=r"20,000 rows, more than the 10,000 asked"):
        service.query("SELECT 1", parallel=1, page_size=10_000, max_rows=None)


def test_a_page_of_the_size_asked_is_taken(httpserver, service):
    rows = [{"a": i} for i in range(1000)]
    httpserver.expect_request(RESULTS).respond_with_json(
        envelope(rows, rowsInJob=1000, rowsInPage=1000, schema={"fields": [
            {"name": "a", "type": "INTEGER", "mode": "NULLABLE"}
        ]})
    )
    assert len(service.query("SELECT 1", page_size=1000).df) == 1000


# -- a page cursor with no row count -----------------------------------------------------------
def pages_without_counts():
    first = envelope([{"a": 0}, {"a": 1}], "c1")
    return two_pages(json.dumps(envelope([{"a": 2}, {"a": 3}])), first)


def test_a_cursor_without_rows_in_job_is_followed_to_the_end(httpserver, service):
    httpserver.expect_request(RESULTS).respond_with_handler(pages_without_counts())
    seen = []
    result = service.query("SELECT 1", progress=lambda p: seen.append(p.line()))
    assert result.df["a"].tolist() == [0, 1, 2, 3]
    assert result.rows_in_job == 4 and result.pages == 2
    assert any("2 rows, 1 page" in line for line in seen)  # no total while it is unknown


def test_a_cursor_without_rows_in_job_reaches_every_path(httpserver, service, tmp_path):
    httpserver.expect_request(RESULTS).respond_with_handler(pages_without_counts())
    assert [r["a"] for r in service.start("SELECT 1").rows()] == [0, 1, 2, 3]
    dataset = service.query("SELECT 1", to=tmp_path / "ds")
    assert dataset.to_pandas()["a"].tolist() == [0, 1, 2, 3]
    assert service.submit_query("SELECT 1").result(timeout=60).df["a"].tolist() == [0, 1, 2, 3]
    assert service.query("SELECT 1", limit=3).df["a"].tolist() == [0, 1, 2]


def test_a_cursor_without_rows_in_job_still_has_the_guardrail(httpserver, service):
    httpserver.expect_request(RESULTS).respond_with_handler(pages_without_counts())
    with pytest.raises(CortexError, match="more than max_rows=3"):
        service.query("SELECT 1", max_rows=3)


def assert_survives(content: str) -> None:
    """Arrow's fast path, given ``content`` in a child process, does not kill it."""
    code = f"from cortex_nb.results.frames import parse_page; print(parse_page({content!r}.encode()))"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert child.returncode == 0, f"parse_page died ({child.returncode})"


# -- later pages that are not objects ----------------------------------------------------------
def later(**changes) -> str:
    second = envelope([{"a": 2}, {"a": 3}], rowsInJob=4, rowsInPage=2)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        target = second
        for key in path:
            target = target[key]
        target[last] = value
    return json.dumps(second)


@pytest.mark.parametrize(
    ("second", "field"),
    [
        (later(page=None), "page is null, not an object"),
        (later(page=[1]), "page is a list, not an object"),
        (later(page="x"), "page is a string, not an object"),
        (later(page__result=None), "page.result is null, not an object"),
        (later(page__result=7), "page.result is a number, not an object"),
        (later(page__result=[{}]), "page.result is a list, not an object"),
        (later(page__result__data={"a": 2}), "page.result.data is an object, not a list"),
        ("null", "no job state"),  # Arrow's reader used to die of a segmentation fault
        (" \n null", "no job state"),
        ("[1]", "no job state"),
        ('"x"', "no job state"),
    ],
)
def test_a_later_page_that_is_not_an_object_names_the_field_on_every_path(
    httpserver, service, tmp_path, second, field
):
    if second.strip() == "null":
        assert_survives(second)
    httpserver.expect_request(RESULTS).respond_with_handler(two_pages(second))
    runs = {
        "frame (Arrow)": lambda: service.query("SELECT 1", parallel=1),
        "rows": lambda: service.start("SELECT 1", parallel=1).rows(),
        "frame by offset": lambda: service.query("SELECT 1", parallel=2),
        "dataset": lambda: service.query("SELECT 1", parallel=1, to=tmp_path / "ds"),
        "background": lambda: service.submit_query("SELECT 1", parallel=1).result(timeout=60),
    }
    for name, run in runs.items():
        with pytest.raises(CortexError) as info:
            run()
        assert f"Malformed results page for job j1: {field}" in str(info.value), name


def test_a_page_more_bytes_than_its_rows_asked_can_take_is_not_read_to_the_end(
    httpserver, service
):
    huge = envelope([{"a": "x" * (page_bytes(1) + 1)}], rowsInJob=1, rowsInPage=1)
    httpserver.expect_request(RESULTS).respond_with_json(huge)
    with pytest.raises(CortexError, match=f"larger than {page_bytes(1):,} bytes"):
        service.query("SELECT 1", limit=1)
    assert len(service.query("SELECT 1", limit=10_000).df) == 1  # room for 10,000 rows
