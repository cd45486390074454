"""Benchmark: what a server that ignores ``pageSize`` costs the client (issue 22).

    python bench/bench_hostile_pages.py                      # 1M, 4M and 12M-row first pages
    python bench/bench_hostile_pages.py --rows 12000000

A small local server answers a query's first results page with ``--rows`` tiny rows
(``{"a":1}``, 8 bytes each: 12M rows is the issue's 96 MB page) where 10,000 were asked.
For each size, fresh subprocesses stand in for the kernel, each way:

    checked    ``QueryService.query`` as it is: the page is measured (``wire.reply_shape``)
               and refused before it is decoded
    decoded    what the client did before: the same bytes decoded by ``orjson`` (the guardrail
               could only fire after that)

and it prints the reply's size, the peak resident memory above the start (VmHWM) and the time.
Then the cost of the check on honest pages: ``reply_shape`` over pages of 10,000 and 100,000
sandbox traffic rows, beside ``orjson.loads`` of the same bytes.

Not a test: run by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def status_mb(field: str) -> float:
    """This process's ``VmRSS`` or ``VmHWM`` from /proc, in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024


def hostile_page(rows: int) -> bytes:
    """A DONE first page holding ``rows`` tiny rows, whatever page size was asked."""
    data = b'{"a":1},' * (rows - 1) + b'{"a":1}'
    head = b'{"jobId":"j1","state":"DONE","rowsInJob":%d,"rowsInPage":%d,' % (rows, rows)
    return head + b'"page":{"pageCursor":null,"result":{"data":[' + data + b"]}}}"


def serve(body: bytes) -> int:
    """Serve ``body`` as every results page (and accept job creation and cancels); the port."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._send(201, b'{"jobId":"j1"}')

        def do_DELETE(self) -> None:
            self._send(200, b"{}")

        def do_GET(self) -> None:
            self._send(200, body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def worker(rows: int, way: str) -> dict:
    """In the stand-in kernel: one way at one size; the measurements as a dict."""
    import orjson
    import pandas  # noqa: F401  (a kernel that runs queries has these loaded)

    from cortex_nb import CortexError, HTTPClient
    from cortex_nb.query.service import QueryService

    start = status_mb("VmRSS")  # the page the server holds counts: the client reads a copy
    body = hostile_page(rows)
    port = serve(body) if way == "checked" else 0
    started, outcome = time.perf_counter(), "returned"
    if way == "checked":
        client = HTTPClient(url="http://127.0.0.1", port=port, max_retries=0)
        try:
            QueryService(client=client).query("SELECT 1", page_size=10_000)
        except CortexError as exc:
            outcome = str(exc)[:58]
    else:
        decoded = orjson.loads(body)
        outcome = f"decoded {len(decoded['page']['result']['data']):,} rows"
    return {
        "rows": rows, "way": way, "reply_mb": len(body) / 2**20,
        "peak_mb": status_mb("VmHWM") - start, "seconds": time.perf_counter() - started,
        "outcome": outcome,
    }


def measure(rows: int, way: str) -> dict:
    """One way at one size, in a fresh subprocess."""
    cmd = [sys.executable, __file__, "--worker", str(rows), way]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def scan_cost(rows: int) -> tuple[float, float, float]:
    """MB, seconds of ``reply_shape`` and seconds of ``orjson.loads`` for an honest page of
    ``rows`` sandbox traffic rows."""
    import orjson

    from cortex_nb import Credentials, HTTPClient
    from cortex_nb.query.service import QueryService
    from cortex_nb.sandbox import Sandbox
    from cortex_nb.wire import reply_shape

    with Sandbox(port=0, rows=rows) as sandbox:
        credentials = Credentials(**sandbox.credentials(), environ={})
        service = QueryService(client=HTTPClient(url=sandbox.url, credentials=credentials))
        job = service.start(f"SELECT * FROM `{sandbox.instance_id}.firewall.traffic`",
                            page_size=rows, max_rows=None)
        job.wait()
        body = service.get_job_results(job.id, page_size=rows).content
    started = time.perf_counter()
    reply_shape(body)
    scanned = time.perf_counter() - started
    started = time.perf_counter()
    orjson.loads(body)
    return len(body) / 2**20, scanned, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000, 12_000_000])
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(int(args.worker[0]), args.worker[1])))
        return
    print(f"{'rows':>12} {'way':<8} {'reply MB':>9} {'peak MB':>9} {'s':>6}  outcome")
    for rows in args.rows:
        for way in ("checked", "decoded"):
            r = measure(rows, way)
            print(f"{r['rows']:>12,} {way:<8} {r['reply_mb']:>9,.0f} {r['peak_mb']:>9,.0f} "
                  f"{r['seconds']:>6.2f}  {r['outcome']}", flush=True)
    print(f"\n{'honest page':>12} {'MB':>7} {'scan s':>8} {'orjson s':>9}")
    for rows in (10_000, 100_000):
        mb, scanned, decoded = scan_cost(rows)
        print(f"{rows:>12,} {mb:>7.1f} {scanned:>8.3f} {decoded:>9.3f}", flush=True)


if __name__ == "__main__":
    main()
