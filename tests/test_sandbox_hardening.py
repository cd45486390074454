"""Sandbox hardening (issue 22): memory held by the whole process, workers freed at once,
pages within a budget, slow clients not starving the rest, a demo token nobody can revoke.

Sandboxes here start with small limits (``memory_limit_mb``, timeouts); time bounds are
generous (seconds, for a loaded 2-core machine) and only tell "at once" from "held up".
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from cortex_nb.sandbox import Sandbox, server
from cortex_nb.sandbox.service import policy
from tests.conftest import sandbox_client

# strings grown by nested functions: 1 MB a row from a 10,000-character literal (issue 22)
NESTED_GROWTH = (
    "SELECT replace(replace(repeat('a', 10000) || app, 'a', 'aaaaaaaaaa'), 'a', 'aaaaaaaaaa') "
    "AS n FROM `firewall.traffic`"
)
# the same, 4 MB a row: DuckDB frees one chunk of it for seconds after an interrupt
SLOW_TO_LET_GO = (
    "SELECT replace(replace(replace(repeat('a', 10000) || app, 'a', 'aaaaaaaaaa'), 'a', "
    "'aaaaaaaaaa'), 'a', 'aaaa') AS n FROM `firewall.traffic`"
)
# run in a fresh interpreter: its peak RSS (VmHWM) is the sandbox's
IN_A_SUBPROCESS = """
import json, sys, threading, requests
from cortex_nb.sandbox import Sandbox
rows, limit, work = json.loads(sys.argv[1])
def peak_mb():
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    return int(status.split()[0]) // 1024
seen = []
with Sandbox(rows=rows, memory_limit_mb=limit, job_delay_ms=0, query_timeout_ms=20000) as sb:
    http = requests.Session()
    http.headers["Authorization"] = "Bearer " + sb.issue_access_token()
    def query(sql):
        r = http.post(sb.url + "/query/v2/jobs", json={"params": {"query": sql}})
        if r.status_code != 201:
            return seen.append([r.status_code, r.text])
        page = sb.url + "/query/v2/jobResults/" + r.json()["jobId"]
        while (state := http.get(page, params={"maxWait": 2000, "pageSize": 1}).json()["state"]) in (
            "PENDING", "RUNNING"):
            pass
        seen.append([state, r.json()["jobId"]])
    def page(job_id, offset, size):
        url = sb.url + "/query/v2/jobResults/" + job_id
        with requests.Session() as own:
            own.headers.update(http.headers)
            r = own.get(url, params={"offset": offset, "pageSize": size})
            seen.append([r.status_code, r.headers.get("Retry-After"), r.text[:200]])
    def run(calls):
        threads = [threading.Thread(target=call, args=args) for call, args in calls]
        [t.start() for t in threads]
        [t.join() for t in threads]
    if work["kind"] == "queries":
        run([(query, (sql,)) for sql in work["sql"]])
    else:
        query("SELECT * FROM `firewall.traffic`")
        job_id, size = seen.pop()[1], work["size"]
        run([(page, (job_id, n * size % rows, size)) for n in range(work["clients"])])
print(json.dumps({"peak_mb": peak_mb(), "seen": seen}))
"""


def run_sandbox(rows: int, limit_mb: int, work: dict) -> dict:
    """Start a sandbox in a fresh interpreter, do ``work`` on it, return its peak and replies."""
    argument = json.dumps([rows, limit_mb, work])
    done = subprocess.run(
        [sys.executable, "-c", IN_A_SUBPROCESS, argument],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def revoke(sb: Sandbox, token: str) -> requests.Response:
    creds = sb.credentials()
    form = {"client_id": creds["client_id"], "client_secret": creds["client_secret"]}
    return requests.post(f"{sb.url}/api/oauth2/RevokeToken", data={**form, "token": token})


# ---- the demo refresh token -------------------------------------------------------------------


def test_revoking_the_demo_refresh_token_does_not_lock_out_new_clients(sandbox):
    creds = sandbox.credentials()
    assert revoke(sandbox, creds["refresh_token"]).status_code == 200
    grant = {**sandbox.credentials(), "grant_type": "refresh_token"}
    r = requests.post(sandbox.token_url, json=grant, timeout=10)
    assert r.status_code == 200 and r.json()["access_token"]


# ---- a stopped job frees its worker at once ---------------------------------------------------


def test_a_timed_out_job_frees_its_worker_while_duckdb_still_lets_go(monkeypatch):
    monkeypatch.setattr(policy, "MAX_BUILT_CHARS", 10**9, raising=False)  # let a slow statement through
    with (
        Sandbox(rows=100, workers=1, query_timeout_ms=300, job_delay_ms=0) as sb,
        sandbox_client(sb) as api,
    ):
        slow = api.create(SLOW_TO_LET_GO).json()["jobId"]
        assert api.results(slow, maxWait=2000).json()["state"] == "TIMEDOUT"
        light = api.create("SELECT 1 AS one").json()["jobId"]
        page = api.results(light, maxWait=1000).json()  # held 2-3 s behind the slow one before
        assert page["state"] == "DONE" and page["page"]["result"]["data"] == [{"one": 1}]
        sb.jobs.get(slow).released.wait(30)  # DuckDB lets go before the interpreter may exit


# ---- the memory limit holds for the whole process ---------------------------------------------


def test_strings_grown_by_nested_functions_are_refused_when_the_job_is_created(sandbox_api):
    r = sandbox_api.create(NESTED_GROWTH)
    assert r.status_code == 400
    message = r.json()["errors"][0]["message"]
    assert message.startswith("replace() may build a string of about 1,100,000 characters")


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("SELECT concat(repeat('a', 9000), repeat('b', 9000), repeat('c', 9000)) AS c", "concat()"),
        ("SELECT repeat('a', 9000) || repeat('b', 9000) || repeat('c', 9000) AS c", "||"),
        ("SELECT regexp_replace(app, '', repeat('x', 100)) AS r FROM `firewall.traffic`", "regexp"),
        ("SELECT replace(lpad(app, 10000, 'a'), 'a', 'aaaa') AS r FROM `firewall.traffic`", "replace"),
    ],
)
def test_every_way_of_growing_a_string_counts(sandbox_api, sql, named):
    r = sandbox_api.create(sql)
    assert r.status_code == 400 and r.json()["errors"][0]["message"].startswith(named)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT lpad(app, 3000, '-') || rpad(app, 3000, '-') AS padded FROM `firewall.traffic`",
        "SELECT replace(app, 'a', 'AA') AS doubled FROM `firewall.traffic`",
        "SELECT regexp_replace(app, '[aeiou]', '*') AS masked FROM `firewall.traffic`",
    ],
)
def test_strings_of_modest_growth_still_run(sandbox_api, sql):
    assert sandbox_api.run(sql, pageSize=1)["state"] == "DONE"


def test_nested_growth_stays_within_twice_the_memory_limit():
    run = run_sandbox(1000, 256, {"kind": "queries", "sql": [NESTED_GROWTH]})
    assert run["peak_mb"] < 2 * 256, run["peak_mb"]  # 524 MB before
    assert [status for status, _ in run["seen"]] == [400]


def test_concurrent_large_pages_stay_within_twice_the_memory_limit_and_never_expire():
    run = run_sandbox(30_000, 512, {"kind": "pages", "clients": 24, "size": 5000})
    assert run["peak_mb"] < 2 * 512, run["peak_mb"]
    statuses = sorted(status for status, _, _ in run["seen"])
    assert 200 in statuses and set(statuses) <= {200, 503}, run["seen"]  # 404 "expired" before
    assert all(retry == "1" for status, retry, _ in run["seen"] if status == 503)


# ---- slow clients -----------------------------------------------------------------------------


def test_clients_trickling_their_requests_do_not_starve_the_others(monkeypatch):
    monkeypatch.setattr(server, "MAX_CONNECTIONS", 8)
    with Sandbox(rows=100) as sb, contextlib.ExitStack() as stack:
        for _ in range(12):  # more than the connections allowed, each one byte into a request
            slow = stack.enter_context(socket.create_connection(("127.0.0.1", sb.port)))
            slow.sendall(b"G")
        grant = {**sb.credentials(), "grant_type": "refresh_token"}
        for _ in range(3):  # 503 "too many open connections" for a minute before
            r = requests.post(sb.token_url, json=grant, timeout=10)
            assert r.status_code == 200, r.text


def test_connections_all_being_answered_still_refuse_a_new_one_with_503(monkeypatch):
    monkeypatch.setattr(server, "MAX_CONNECTIONS", 2)
    with Sandbox(rows=100) as sb:
        sb.inject(latency_ms=2000)  # every API request is held while it is being answered
        url = f"{sb.url}/query/v2/jobs"
        held = [threading.Thread(target=requests.get, args=(url,)) for _ in range(2)]
        for thread in held:
            thread.start()
        time.sleep(0.5)  # both read and held (2 s), neither answered yet
        r = requests.get(url, timeout=10)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        for thread in held:
            thread.join(10)
