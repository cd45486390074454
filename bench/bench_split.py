"""Benchmark: a week of traffic as one server job, and split into windows, side by side.

    python bench/bench_split.py                          # 200,000 rows, 50 ms latency
    python bench/bench_split.py --rows 500000 --latency 50 --split 1d 6h auto
    python bench/bench_split.py --rows 100000 --scan-rate 20000   # jobs take rows/rate s

Each way runs in a fresh subprocess against one sandbox started as a separate process
(`cortex-nb sandbox --latency-ms`), so the network's round trips are what a split saves: one
job pages its week one page after another (``parallel`` at a time), a split run has a few
windows' jobs (each with its pages) in flight at once. ``--scan-rate ROWS_PER_S`` gives the
sandbox's jobs a job time (``cortex-nb sandbox --scan-rate``: a job stays RUNNING its result's
rows / rate seconds, and jobs' times overlap), as a service's job time grows with what it scans:
that is what a split saves; without it the sandbox answers a job as soon as DuckDB has run it.
Prints wall seconds, rows, jobs and the ratio to the unsplit job. Not a test: run by hand.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_query import demo_credentials, sandbox

SQL = "SELECT * FROM `{instance}.firewall.traffic`"


def worker(url: str, instance: str, split: str) -> None:
    from cortex_nb import Credentials, HTTPClient, QueryService

    client = HTTPClient(url=url, credentials=Credentials(**demo_credentials(url)))
    service = QueryService(client=client)
    created = []  # one POST /query/v2/jobs per server job

    def count(response, *args, **kwargs):
        if response.request.method == "POST" and response.request.path_url.endswith("/jobs"):
            created.append(response.status_code)

    client.session.hooks["response"].append(count)
    started = time.perf_counter()
    options = {"since": "8d", "max_rows": None}
    if split != "none":
        options["split"] = split
    df = service.query(SQL.format(instance=instance), **options).df
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": len(df), "seconds": seconds, "jobs": len(created)}))


def measure(url: str, instance: str, split: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", split, "--url", url, "--instance", instance]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--latency", type=int, default=50)
    parser.add_argument("--split", nargs="+", default=["1d", "auto"])
    parser.add_argument("--scan-rate", type=float, default=None, metavar="ROWS_PER_S",
                        help="the sandbox's job time: result rows / ROWS_PER_S s (default none)")
    parser.add_argument("--instance", default="sandbox0")
    parser.add_argument("--worker")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.worker:
        worker(args.url, args.instance, args.worker)
        return
    rate = f"{args.scan_rate:,.0f}" if args.scan_rate else "-"
    print(f"{'rows':>9} {'latency':>7} {'scan/s':>7} {'split':<6} {'jobs':>5} {'seconds':>8} "
          f"{'x one job':>9}")
    extra = ["--scan-rate", str(args.scan_rate)] if args.scan_rate else []
    with sandbox(args.rows, args.latency, extra=extra) as url:
        results = {way: measure(url, args.instance, way) for way in ["none", *args.split]}
    base = results["none"].get("seconds")
    for way, r in results.items():
        if "error" in r:
            print(f"{args.rows:>9} {args.latency:>7} {rate:>7} {way:<6} error: {r['error']}")
            continue
        ratio = r["seconds"] / base if base else float("nan")
        print(f"{r['rows']:>9} {args.latency:>7} {rate:>7} {way:<6} {r['jobs']:>5} "
              f"{r['seconds']:>8.2f} {ratio:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
