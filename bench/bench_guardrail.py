"""Benchmark: what a traffic frame of the guardrail's size costs the kernel, with the sandbox
in the kernel's process and in its own.

    python bench/bench_guardrail.py                          # 250,000, 500,000 and 1,000,000 rows
    python bench/bench_guardrail.py --rows 1000000

For each size and each way, a fresh subprocess stands in for the kernel: it imports what a
kernel running ``%load_ext cortex_nb`` has, connects as ``%cortex connect sandbox [--process]``
does (``Connection.connect_sandbox``), then runs ``SELECT *`` over ``firewall.traffic`` into a
DataFrame with the default options (the guardrail off, to reach the size). It prints:

    frame MB     the frame's ``memory_usage(deep=True)``
    held MB      the kernel's resident memory with the frame alive, above its start
    peak MB      the kernel's peak resident memory (VmHWM), above its start: what the
                 machine must have free for the query to finish
    sandbox MB   the sandbox child's peak (``--process`` only; in-process it is in the kernel's)
    machine MB   what the query needs of the machine at its peak: kernel peak + sandbox peak

Not a test: run by hand. Sizes up to the machine's memory (1M rows needs about 4 GB free).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

WAYS = {"in-process": False, "--process": True}
COLUMNS = ("frame_mb", "held_mb", "peak_mb", "sandbox_mb", "machine_mb")


def status_mb(pid: int | str, field: str) -> float:
    """A process's ``VmRSS`` or ``VmHWM`` from /proc, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024


def worker(rows: int, process: bool) -> dict:
    """In the stand-in kernel: connect, query, measure; the measurements as a dict."""
    import pandas  # noqa: F401  (a kernel that runs queries has these loaded)
    import pyarrow  # noqa: F401

    import cortex_nb  # noqa: F401
    from cortex_nb.notebook.connection import Connection

    start = status_mb("self", "VmRSS")
    connection = Connection()
    connection.connect_sandbox(rows=rows, process=process)
    sql = f"SELECT * FROM `{connection.instance_id}.firewall.traffic`"
    df = connection.require().query(sql, max_rows=None).df
    pid = getattr(connection.sandbox, "pid", None)
    measured = {
        "rows": len(df),
        "frame_mb": df.memory_usage(deep=True).sum() / 2**20,
        "held_mb": status_mb("self", "VmRSS") - start,
        "peak_mb": status_mb("self", "VmHWM") - start,
        "sandbox_mb": 0.0 if pid is None else status_mb(pid, "VmHWM"),
    }
    connection.stop_sandbox()
    measured["machine_mb"] = measured["peak_mb"] + measured["sandbox_mb"]
    return measured


def measure(rows: int, process: bool, script: str = __file__) -> dict:
    """One way at one size, in a fresh subprocess running ``script --worker`` (this bench's
    worker, or another bench's that takes the same two arguments): its last JSON line."""
    cmd = [sys.executable, script, "--worker", str(rows), str(int(process))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[250_000, 500_000, 1_000_000])
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], bool(args.worker[1]))))
        return
    print(f"{'rows':>10} {'sandbox':<12}" + "".join(f"{c.replace('_', ' '):>12}" for c in COLUMNS))
    for rows in args.rows:
        for way, process in WAYS.items():
            r = measure(rows, process)
            print(f"{r['rows']:>10,} {way:<12}" + "".join(f"{r[c]:>12,.0f}" for c in COLUMNS),
                  flush=True)


if __name__ == "__main__":
    main()
