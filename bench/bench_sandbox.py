"""Benchmark: how fast the sandbox serves a large result, against the cost of JSON encoding.

    python bench/bench_sandbox.py                   # 1M traffic rows, pages of 10000
    python bench/bench_sandbox.py --rows 100000 --page-size 10000

Rows (all ``firewall.traffic`` columns, ``SELECT *``):

  generate      build the synthetic tables in DuckDB (sandbox start)
  execute       create the job and wait until DONE (DuckDB also renders each row's JSON here)
  serve dict    page through every row over HTTP (one keep-alive connection), cursor paging,
                ``valuesDictionary``; the client only reads the bytes, it parses nothing
  serve array   the same with ``valuesArray`` (rendered per page from the typed columns)
  floor         ``orjson.dumps`` of the same rows, page by page, already as Python objects in
                this process: the cost of JSON encoding alone, no database, no HTTP

The sandbox runs in this process (its own threads), so client and server share the 2 cores.
Not a test: run by hand and quote the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import resource
import time
import urllib.parse

import orjson
import requests

from cortex_nb.sandbox import Sandbox

SQL = "SELECT * FROM `{instance}.firewall.traffic`"


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def authorised_session(sandbox: Sandbox) -> requests.Session:
    """A keep-alive session with a bearer token from the refresh grant."""
    grant = {**sandbox.credentials(), "grant_type": "refresh_token"}
    token = requests.post(sandbox.token_url, json=grant, timeout=30).json()["access_token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def run_job(sandbox: Sandbox, http: requests.Session) -> str:
    """Create the benchmark job and wait until it is DONE; return its id."""
    body = {"params": {"query": SQL.format(instance=sandbox.instance_id)}}
    job_id = http.post(f"{sandbox.url}/query/v2/jobs", json=body, timeout=30).json()["jobId"]
    while True:
        page = http.get(
            f"{sandbox.url}/query/v2/jobResults/{job_id}",
            params={"maxWait": 2000, "pageSize": 1},
            timeout=30,
        ).json()
        if page["state"] == "DONE":
            return job_id
        assert page["state"] in ("PENDING", "RUNNING"), page


def iter_pages(sandbox: Sandbox, token: str, job_id: str, page_size: int, fmt: str):
    """Yield the raw bytes of every results page, following pageCursor.

    A bare keep-alive ``http.client`` connection reads each body in one call, so the figure is
    the server's, not a client library's (``requests`` adds about a third on top).
    """
    connection = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=60)
    params = {"pageSize": page_size, "resultFormat": fmt}
    try:
        while True:
            path = f"/query/v2/jobResults/{job_id}?{urllib.parse.urlencode(params)}"
            connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            reply = connection.getresponse()
            body = reply.read()
            assert reply.status == 200, body[:200]
            yield body
            cursor = _cursor_of(body)
            if cursor is None:
                return
            params = {"pageCursor": cursor, "resultFormat": fmt}
    finally:
        connection.close()


def _cursor_of(body: bytes) -> str | None:
    """The page cursor without decoding the rows (it precedes ``"result"``)."""
    head = body[body.index(b'"page":{') : body.index(b',"result":')] + b"}"
    return orjson.loads(head[len(b'"page":') :])["pageCursor"]


def serve(sandbox: Sandbox, token: str, job_id: str, page_size: int, fmt: str):
    """(seconds, rows, bytes) to download every page in ``fmt``."""
    started, rows, size = time.perf_counter(), 0, 0
    for body in iter_pages(sandbox, token, job_id, page_size, fmt):
        size += len(body)
        rows += int(body[body.index(b'"rowsInPage":') + 13 : body.index(b',"schema"')])
    return time.perf_counter() - started, rows, size


def floor(sandbox: Sandbox, token: str, job_id: str, page_size: int) -> float:
    """Seconds orjson.dumps takes for the same rows, page by page (parsing is not timed)."""
    spent = 0.0
    for body in iter_pages(sandbox, token, job_id, page_size, "valuesDictionary"):
        rows = orjson.loads(body)["page"]["result"]["data"]
        started = time.perf_counter()
        orjson.dumps(rows)
        spent += time.perf_counter() - started
    return spent


def main() -> None:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--page-size", type=int, default=10_000)
    args = parser.parse_args()

    started = time.perf_counter()
    with Sandbox(rows=args.rows, seed=7) as sandbox, authorised_session(sandbox) as http:
        table = [("generate", time.perf_counter() - started, args.rows, None)]
        started = time.perf_counter()
        job_id = run_job(sandbox, http)
        token = http.headers["Authorization"].split()[1]
        table.append(("execute", time.perf_counter() - started, args.rows, None))
        for label, fmt in (("serve dict", "valuesDictionary"), ("serve array", "valuesArray")):
            seconds, rows, size = serve(sandbox, token, job_id, args.page_size, fmt)
            assert rows == args.rows, (rows, args.rows)
            table.append((label, seconds, rows, size))
        table.append(("floor", floor(sandbox, token, job_id, args.page_size), args.rows, None))
    print_table(table, args)


def print_table(table: list[tuple], args: argparse.Namespace) -> None:
    """Print the measurements with rows/s and MB/s."""
    print(f"sandbox: {args.rows:,} traffic rows, SELECT *, pages of {args.page_size:,}")
    print(f"{'step':<12} {'seconds':>8} {'rows/s':>12} {'MB/s':>8}")
    for label, seconds, rows, size in table:
        mb = f"{size / seconds / 1e6:8.0f}" if size else f"{'':>8}"
        print(f"{label:<12} {seconds:8.2f} {rows / seconds:12,.0f} {mb}")
    print(f"peak RSS {peak_rss_mb():,.0f} MiB")


if __name__ == "__main__":
    main()
