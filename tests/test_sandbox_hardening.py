"""Sandbox hardening (issue 22): memory held by the whole process, workers freed at once,
pages within a budget, slow clients not starving the rest, a demo token nobody can revoke.

Sandboxes here start with small limits (``memory_limit_mb``, timeouts); time bounds are
generous (seconds, for a loaded 2-core machine) and only tell "at once" from "held up".
"""

from __future__ import annotations

import requests

from cortex_nb.sandbox import Sandbox
from tests.conftest import sandbox_client

PROMPT_S = 3.0
# a CPU-heavy expression over ~100 rows: DuckDB computes one chunk of it for seconds, deaf to
# interrupts meanwhile (memory stays small)
SLOW_CHUNK = "SELECT max(levenshtein(repeat('a', 4000) || app, repeat('b', 4000))) AS d FROM {t}"


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


def test_a_timed_out_job_frees_its_worker_while_duckdb_still_computes():
    with (
        Sandbox(rows=100, workers=1, query_timeout_ms=300, job_delay_ms=0) as sb,
        sandbox_client(sb) as api,
    ):
        slow = api.create(SLOW_CHUNK.format(t=api.traffic)).json()["jobId"]
        assert api.results(slow, maxWait=2000).json()["state"] == "TIMEDOUT"
        light = api.create("SELECT 1 AS one").json()["jobId"]
        page = api.results(light, maxWait=2000).json()  # held ~3 s behind the slow chunk before
        assert page["state"] == "DONE" and page["page"]["result"]["data"] == [{"one": 1}]


def test_a_cancelled_job_frees_its_worker_while_duckdb_still_computes():
    with Sandbox(rows=100, workers=1, job_delay_ms=0) as sb, sandbox_client(sb) as api:
        slow = api.create(SLOW_CHUNK.format(t=api.traffic)).json()["jobId"]
        api.results(slow, maxWait=300)
        assert api.http.delete(f"{sb.url}/query/v2/jobs/{slow}").json()["state"] == "CANCELLED"
        light = api.create("SELECT 1 AS one").json()["jobId"]
        assert api.results(light, maxWait=2000).json()["state"] == "DONE"
