"""Sandbox queries reach the log tables only: DuckDB's catalogs, settings and functions are
refused whatever names or CTEs stand around them; value-building functions are bounded; deep
nesting is a 400 on a connection that stays open."""

from __future__ import annotations

import http.client
import json
import time

import pytest

HOSTILE = {
    # DuckDB's catalogs and views, plain or dressed up
    "information_schema": "SELECT * FROM information_schema.tables",
    "system catalog": "SELECT * FROM system.main.duckdb_tables",
    "results catalog": "SELECT * FROM memory.results.r1",
    "internal catalog": "SELECT * FROM sandbox.firewall.traffic",
    "pg view": "SELECT name, setting FROM pg_settings",
    "self-named CTE": "WITH pg_settings AS (SELECT * FROM pg_settings) SELECT * FROM pg_settings",
    "CTE out of scope": (
        "SELECT * FROM (WITH duckdb_tables AS (SELECT 1 AS a) SELECT * FROM duckdb_tables) AS x, "
        "duckdb_tables"
    ),
    "later sibling CTE": (
        "WITH a AS (SELECT * FROM duckdb_views), duckdb_views AS (SELECT 1 AS v) SELECT * FROM a"
    ),
    "table function": "SELECT * FROM duckdb_settings()",
    "describe": "SELECT * FROM (DESCRIBE firewall.traffic)",
    # settings, state and introspection functions, and names DuckDB reads as functions
    "current_setting": "SELECT current_setting('memory_limit') AS m",
    "setting in a CTE": "WITH s AS (SELECT current_setting('threads') AS t) SELECT * FROM s",
    "getvariable": "SELECT getvariable('x') AS v",
    "version": "SELECT version() AS v",
    "current_schema": "SELECT CURRENT_SCHEMA() AS s",
    "bare user": "SELECT user AS u",
    "current_user": "SELECT current_user AS u",
    "sleep": "SELECT pg_sleep(100) AS s",
    "nextval": "SELECT nextval('seq') AS n",
    # functions that build a value too large for the memory limit
    "repeat": "SELECT length(repeat('x', 1000000000)) AS n",
    "nested repeat": "SELECT repeat(repeat('ab', 100), 100) AS r",
    "lpad": "SELECT lpad('a', 100000000, 'b') AS p",
    "range": "SELECT list_sum(range(100000000)) AS s",
    "printf width": "SELECT printf('%1000000000d', 1) AS p",
    "builder in a lambda": "SELECT list_transform(range(1000), x -> lpad('a', 9000, 'b')) AS l",
    "reduce": "SELECT list_reduce([1, 2], (a, b) -> a + b) AS r",
}


@pytest.mark.parametrize("sql", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_statements_are_refused_with_400(sandbox_api, sql):
    r = sandbox_api.create(sql)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["errorCode"] == 400


ALLOWED = {
    "CTE named like a DuckDB view": (
        "WITH duckdb_tables AS (SELECT 1 AS a) SELECT * FROM duckdb_tables",
        [{"a": 1}],
    ),
    "recursive CTE": (
        "WITH RECURSIVE t AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM t WHERE n < 3) "
        "SELECT SUM(n) AS s FROM t",
        [{"s": 6}],
    ),
    "bounded builders": (
        "SELECT lpad('7', 3, '0') AS p, repeat('-', 3) AS r, ARRAY_LENGTH(GENERATE_ARRAY(1, 5)) "
        "AS n",
        [{"p": "007", "r": "---", "n": 5}],
    ),
    "lambda without builders": (
        "SELECT list_transform([1, 2], x -> x * 10) AS l",
        [{"l": [10, 20]}],
    ),
}


@pytest.mark.parametrize(("sql", "rows"), ALLOWED.values(), ids=ALLOWED.keys())
def test_ordinary_sql_around_those_names_still_works(sandbox_api, sql, rows):
    assert sandbox_api.rows(sql) == rows


def test_a_log_table_inside_a_cte_is_mapped(sandbox_api):
    sql = f"WITH t AS (SELECT app FROM {sandbox_api.traffic}) SELECT COUNT(*) AS n FROM t"
    assert sandbox_api.rows(sql)[0]["n"] > 0


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT " + "(" * 5000 + "1" + ")" * 5000 + " AS x",
        "SELECT " + "CASE WHEN 1 = 1 THEN " * 400 + "1" + " END" * 400 + " AS x",
        "SELECT * FROM " + "(SELECT * FROM " * 400 + "`firewall.traffic`" + ")" * 400,
        "SELECT " + " + ".join(["dest_port"] * 3000) + " AS s FROM `firewall.traffic`",
    ],
    ids=["parentheses", "case", "subqueries", "long sum"],
)
def test_deep_nesting_is_a_400_and_the_connection_stays_open(sandbox, sql):
    headers = {
        "Authorization": f"Bearer {sandbox.issue_access_token()}",
        "Content-Type": "application/json",
    }
    connection = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=30)
    try:
        body = json.dumps({"params": {"query": sql}})
        connection.request("POST", "/query/v2/jobs", body=body, headers=headers)
        reply = connection.getresponse()
        answer = json.loads(reply.read())
        if reply.status == 201:  # checked later than creation waits (a loaded machine): FAILED
            answer = _final_detail(connection, answer["jobId"], headers)
        else:
            assert reply.status == 400, answer
        message = answer["errors"][0]["message"]
        assert "nested" in message or "depth" in message, message
        connection.request("GET", "/query/v2/jobs?maxJobs=1", headers=headers)  # same socket
        assert connection.getresponse().status == 200
    finally:
        connection.close()


def _final_detail(connection, job_id: str, headers: dict) -> dict:
    """The job's detail once it has ended (bounded: 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        connection.request("GET", f"/query/v2/jobs/{job_id}", headers=headers)
        detail = json.loads(connection.getresponse().read())
        if detail["state"] not in ("PENDING", "RUNNING"):
            assert detail["state"] == "FAILED", detail
            return detail
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end within 30 s")


def test_a_deeply_nested_json_body_is_a_400(sandbox, sandbox_http):
    body = '{"params": ' + "[" * 5000 + "]" * 5000 + "}"
    r = sandbox_http.post(
        f"{sandbox.url}/query/v2/jobs", data=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["errors"][0]["errorCode"] == 400
