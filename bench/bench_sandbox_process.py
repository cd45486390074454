"""Benchmark: the notebook's sandbox in the kernel's process or in its own, side by side.

    python bench/bench_sandbox_process.py                 # 1,000,000 rows
    python bench/bench_sandbox_process.py --rows 100000

Each way runs in a fresh subprocess standing in for the kernel: it connects the way
``%cortex connect sandbox [--process]`` does (``Connection.connect_sandbox``), then runs a
``SELECT *`` over ``firewall.traffic`` into a DataFrame with ``query()``:

    in-process    the sandbox's threads and DuckDB live in the kernel (the default)
    own process   ``process=True``: the sandbox is a child process

It prints the seconds to connect (data generation included) and to query, the kernel's peak
RSS, the sandbox child's peak RSS (``VmHWM``, own process only) and the ratios own / in-process.
Not a test: run by hand.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_guardrail import measure, status_mb  # the same worker process and /proc reading

WAYS = {"in-process": False, "own process": True}


def worker(rows: int, process: bool) -> None:
    """Connect, query, print a JSON line of measurements."""
    from cortex_nb.notebook.connection import Connection

    connection = Connection()
    started = time.perf_counter()
    connection.connect_sandbox(rows=rows, process=process)
    connected = time.perf_counter() - started
    sql = f"SELECT * FROM `{connection.instance_id}.firewall.traffic`"
    started = time.perf_counter()
    df = connection.require().query(sql, max_rows=None).df
    queried = time.perf_counter() - started
    pid = getattr(connection.sandbox, "pid", None)
    server = float("nan") if pid is None else status_mb(pid, "VmHWM")
    connection.stop_sandbox()
    print(json.dumps({
        "rows": len(df), "connect_s": connected, "query_s": queried, "server_mb": server,
        "kernel_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], bool(args.worker[1]))
        return
    results = {way: measure(args.rows, process, __file__) for way, process in WAYS.items()}
    columns = ("connect_s", "query_s", "kernel_mb", "server_mb")
    print(f"{'rows':>10} {'sandbox':<22}" + "".join(f"{c:>11}" for c in columns))
    for way, r in results.items():
        print(f"{r['rows']:>10,} {way:<22}" + "".join(f"{r[c]:>11,.1f}" for c in columns))
    own, inside = results["own process"], results["in-process"]
    ratios = "".join(f"{own[c] / inside[c]:>11.2f}" for c in columns[:3])
    print(f"{own['rows']:>10,} {'own / in-process':<22}" + ratios)


if __name__ == "__main__":
    main()
