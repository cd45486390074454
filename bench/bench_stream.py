"""Benchmark: a big result streamed to a Parquet dataset, against the untyped floor.

    python bench/bench_stream.py                       # 10,000,000 rows
    python bench/bench_stream.py --rows 1000000
    python bench/bench_stream.py --rows 5000000 --copies 2 --memory-limit-mb 8192

``--copies K`` reads the table K times (``UNION ALL``): K x ROWS result rows from a sandbox that
generated ROWS (generating the logs peaks at about 1.5 GB per million rows in the sandbox).

The sandbox runs in its own process (``cortex-nb sandbox --rows N``); the query selects ten
traffic columns (timestamps, IP and enum structs, ports, strings, counters), pages of 10,000.
Each way runs in a fresh subprocess, one after the other against the same sandbox:

    floor    one ``requests.Session`` reading the pages by cursor and parsing each with
             ``orjson``: no typing, nothing kept, nothing written
    stream   ``QueryService.query(sql, to=DIR)``: typed pages written to hive-partitioned
             Parquet with a manifest (``cortex_nb.results.datasets``)
    frame    ``QueryService.query(sql, max_rows=None)``: the same rows as one DataFrame in
             memory (only with ``--frame``: it needs memory in proportion to the result)

It prints seconds, rows/s, the ratio to the floor's time, the client's peak RSS (whole process,
and above its baseline after imports), and for ``stream`` the dataset's size on disk and files.
The sandbox's own peak (``VmHWM``) is printed once at the end. Not a test: run by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_query import (  # the same helpers and floor
    demo_credentials,
    peak_mb,
    rss_mb,
    worker_result,
)
from bench_query import run_floor as read_pages_untyped

SQL = (
    "SELECT time_generated, source_ip, dest_ip, source_port, dest_port, protocol, action, app, "
    "bytes_sent, bytes_received FROM `{instance}.firewall.traffic`"
)
PAGE = 10_000


def query_sql(instance: str, copies: int) -> str:
    """The benchmark query: the ten columns, the table read ``copies`` times."""
    return " UNION ALL ".join([SQL.format(instance=instance)] * copies)


def run_floor(url: str, sql: str, _: Path) -> dict:
    return read_pages_untyped(url, sql)  # pages of 10,000 by cursor, orjson, nothing kept


def service(url: str):
    from cortex_nb import Credentials, HTTPClient
    from cortex_nb.query.service import QueryService

    client = HTTPClient(url=url, credentials=Credentials(**demo_credentials(url)))
    return QueryService(client=client)


def run_stream(url: str, sql: str, target: Path) -> dict:
    dataset = service(url).query(sql, to=target, page_size=PAGE)
    size = sum(f.stat().st_size for f in dataset.files)
    return {"rows": dataset.rows, "disk_mb": size / 2**20, "files": len(dataset.files)}


def run_frame(url: str, sql: str, _: Path) -> dict:
    df = service(url).query(sql, page_size=PAGE, max_rows=None).df
    return {"rows": len(df)}


WAYS = {"floor": run_floor, "stream": run_stream, "frame": run_frame}


def worker(way: str, url: str, sql: str, target: Path) -> None:
    """Run one way in this process and print a JSON line of measurements."""
    import orjson  # noqa: F401  -- imports first, so the baseline includes the libraries
    import requests  # noqa: F401

    if way != "floor":
        import cortex_nb.results.datasets  # noqa: F401
    baseline = rss_mb()
    started = time.perf_counter()
    out = WAYS[way](url, sql, target)
    out.update(seconds=time.perf_counter() - started, peak_mb=peak_mb(),
               above_mb=peak_mb() - baseline)
    print(json.dumps(out))


@contextmanager
def sandbox(*options: str, env: dict | None = None, cwd: Path | None = None):
    """``cortex-nb sandbox --port 0 OPTIONS`` in its own process; yields (url, pid)."""
    cmd = [sys.executable, "-m", "cortex_nb.cli", "sandbox", "--port", "0", *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=cwd)
    try:
        for line in proc.stdout:
            match = re.search(r"http://127\.0\.0\.1:\d+", line)
            if match:
                yield match.group(0), proc.pid
                break
        else:
            raise SystemExit("the sandbox did not print its URL")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def vm_hwm_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def measure(way: str, url: str, args: argparse.Namespace, target: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", way, "--url", url, "--instance", args.instance,
           "--copies", str(args.copies), "--target", str(target)]
    return worker_result(cmd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--copies", type=int, default=1, help="read the table K times")
    parser.add_argument("--memory-limit-mb", type=int, help="the sandbox's DuckDB memory")
    parser.add_argument("--frame", action="store_true", help="also build the frame in memory")
    parser.add_argument("--instance", default="sandbox0")
    parser.add_argument("--worker", choices=sorted(WAYS))
    parser.add_argument("--url")
    parser.add_argument("--target", type=Path)
    args = parser.parse_args()
    sql = query_sql(args.instance, args.copies)
    if args.worker:
        worker(args.worker, args.url, sql, args.target)
        return
    ways = ["floor", "stream", *(["frame"] if args.frame else [])]
    scratch = Path(tempfile.mkdtemp(prefix="bench_stream_"))
    started = time.perf_counter()
    try:
        memory = ["--memory-limit-mb", str(args.memory_limit_mb)] if args.memory_limit_mb else []
        options = ["--rows", str(args.rows), "--query-timeout-ms", "3600000", *memory]
        with sandbox(*options) as (url, pid):
            print(f"# sandbox with {args.rows:,} rows ready in "
                  f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
            results = {way: measure(way, url, args, scratch / way) for way in ways}
            server_peak = vm_hwm_mb(pid)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{'rows':>11} {'way':<7} {'seconds':>8} {'rows/s':>9} {'x floor':>8} "
          f"{'peak MB':>8} {'above MB':>9} {'disk MB':>8} {'files':>6}")
    floor = results["floor"].get("seconds")
    for way, r in results.items():
        if "error" in r:
            print(f"{args.rows * args.copies:>11,} {way:<7} error: {r['error']}")
            continue
        print(
            f"{r['rows']:>11,} {way:<7} {r['seconds']:>8.1f} {r['rows'] / r['seconds']:>9,.0f} "
            f"{r['seconds'] / floor if floor else float('nan'):>8.2f} {r['peak_mb']:>8,.0f} "
            f"{r['above_mb']:>9,.0f} {r.get('disk_mb', float('nan')):>8,.0f} "
            f"{r.get('files', float('nan')):>6}"
        )
    print(f"sandbox process peak RSS (VmHWM): {server_peak:,.0f} MB")


if __name__ == "__main__":
    main()
