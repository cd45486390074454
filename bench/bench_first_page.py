"""Benchmark: time to the first results page of a million-row ``SELECT *``, before and after.

    python bench/bench_first_page.py --before /tmp/base    # a checkout of the earlier code
    python bench/bench_first_page.py --rows 100000         # only the code in this tree

For each version of the code (``--before DIR`` puts that copy of ``cortex_nb`` first on
``PYTHONPATH``; ``after`` is this tree) a sandbox runs in its own process
(``cortex-nb sandbox --rows N``) and a plain ``requests`` client, in this process:

    first page   creates the job ``SELECT *`` over ``firewall.traffic`` and asks for results
                 with ``maxWait`` until the bytes of a DONE page of 10,000 rows have arrived:
                 what a user waits for before anything shows (and when the ``max_rows``
                 guardrail speaks); the best of ``--repeat`` jobs (more than one may not
                 fit in the earlier sandbox's memory: it kept every result's JSON)
    all pages    then reads every other page of the last job by cursor on one connection
                 (bytes only, nothing parsed)

It prints both times, the sandbox process's peak RSS (``VmHWM``) over the whole run, and the
ratio after / before. The sandbox runs from a neutral folder, so that ``python -m`` imports the
code asked for. Not a test: run by hand.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_stream import sandbox, vm_hwm_mb

SQL = "SELECT * FROM `sandbox0.firewall.traffic`"
PAGE = 10_000


def sandbox_of(rows: int, code: Path | None):
    """``cortex-nb sandbox`` in its own process, from ``code`` if given; yields (url, pid)."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")])
    here = code or Path(__file__).resolve().parents[1]  # `-m` puts the cwd first on sys.path
    return sandbox("--rows", str(rows), env=env, cwd=here)


def authorised(url: str) -> requests.Session:
    from cortex_nb.sandbox.service.tokens import (
        DEMO_CLIENT_ID,
        DEMO_CLIENT_SECRET,
        DEMO_REFRESH_TOKEN,
    )

    grant = {"client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET,
             "refresh_token": DEMO_REFRESH_TOKEN, "grant_type": "refresh_token"}
    token = requests.post(url + "/api/oauth2/RequestToken", json=grant, timeout=30).json()
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token['access_token']}"
    return http


def first_page(http: requests.Session, url: str) -> tuple[str, bytes, float]:
    """Create the job and wait for its first DONE page: (results URL, page bytes, seconds)."""
    started = time.perf_counter()
    job = http.post(url + "/query/v2/jobs", json={"params": {"query": SQL}}, timeout=60).json()
    results = f"{url}/query/v2/jobResults/{job['jobId']}"
    while True:
        reply = http.get(results, params={"maxWait": 2000, "pageSize": PAGE}, timeout=600)
        state = re.search(rb'"state":"(\w+)"', reply.content[:300])
        if state is None or state.group(1) not in (b"PENDING", b"RUNNING", b"DONE"):
            raise SystemExit(f"the job did not finish: {reply.content[:300]!r}")
        if state.group(1) == b"DONE":
            return results, reply.content, time.perf_counter() - started


def time_pages(url: str, repeat: int) -> dict:
    """Best seconds to the first DONE page, then seconds to the last page; rows seen."""
    http = authorised(url)
    firsts = []
    for _ in range(repeat):
        started = time.perf_counter()
        results, content, seconds = first_page(http, url)
        firsts.append(seconds)
    rows, cursor = 0, None
    while True:
        cursor = re.search(rb'"pageCursor":(null|"[^"]*")', content).group(1)
        cursor = None if cursor == b"null" else cursor.decode().strip('"')
        rows += int(re.search(rb'"rowsInPage":(\d+)', content).group(1))
        if cursor is None:
            break
        content = http.get(results, params={"pageCursor": cursor}, timeout=600).content
    return {"first": min(firsts), "all": time.perf_counter() - started, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--before", type=Path, help="a copy of the earlier code (its parent dir)")
    parser.add_argument("--repeat", type=int, default=1, help="jobs timed to their first page")
    args = parser.parse_args()
    versions = ([("before", args.before)] if args.before else []) + [("after", None)]
    results = {}
    for label, code in versions:
        with sandbox_of(args.rows, code) as (url, pid):
            results[label] = time_pages(url, args.repeat)
            results[label]["server_mb"] = vm_hwm_mb(pid)
        print(f"# {label}: {results[label]}", file=sys.stderr)
    print(f"{'rows':>10} {'code':<16} {'first page s':>13} {'all pages s':>12} {'sandbox MB':>11}")
    for label, r in results.items():
        print(f"{r['rows']:>10,} {label:<16} {r['first']:>13.2f} {r['all']:>12.2f} "
              f"{r['server_mb']:>11,.0f}")
    if "before" in results:
        a, b = results["after"], results["before"]
        print(f"{a['rows']:>10,} {'after / before':<16} {a['first'] / b['first']:>13.2f} "
              f"{a['all'] / b['all']:>12.2f} {a['server_mb'] / b['server_mb']:>11.2f}")


if __name__ == "__main__":
    main()
