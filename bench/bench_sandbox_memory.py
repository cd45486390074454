"""Benchmark: the sandbox's peak memory against its memory limit, under hostile load (issue 22).

    python bench/bench_sandbox_memory.py                                  # 30,000 rows, 512 MB
    python bench/bench_sandbox_memory.py --rows 100000 --limit-mb 1024 --clients 24 --page 100000

Each scenario runs a fresh sandbox in its own interpreter and reports that process's peak
resident memory (VmHWM) and the replies it gave:

  nested growth   4 jobs at once of replace(replace(repeat('a', 10000) || app, ...)): strings of
                  1 MB a row, built outside DuckDB's memory accounting
  pages           --clients requests at once for pages of --page rows of SELECT * (read in place)

Not a test: run by hand and quote the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys

NESTED_GROWTH = (
    "SELECT replace(replace(repeat('a', 10000) || app, 'a', 'aaaaaaaaaa'), 'a', 'aaaaaaaaaa') "
    "AS n FROM `firewall.traffic`"
)
SCENARIO = """
import json, sys, threading, requests
from cortex_nb.sandbox import Sandbox
rows, limit, work = json.loads(sys.argv[1])
replies = []
def peak_mb():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024
def query(http, url, sql):
    r = http.post(url + "/query/v2/jobs", json={"params": {"query": sql}})
    if r.status_code != 201:
        return replies.append(str(r.status_code)), None
    results = url + "/query/v2/jobResults/" + r.json()["jobId"]
    while (page := http.get(results, params={"maxWait": 2000, "pageSize": 1}).json())[
            "state"] in ("PENDING", "RUNNING"):
        pass
    replies.append(page["state"])
    return r.json()["jobId"]
def page(headers, url, offset, size):
    with requests.Session() as own:
        own.headers.update(headers)
        r = own.get(url, params={"offset": offset, "pageSize": size})
        replies.append(str(r.status_code))
def at_once(calls):
    threads = [threading.Thread(target=call, args=args) for call, args in calls]
    [t.start() for t in threads]
    [t.join() for t in threads]
with Sandbox(rows=rows, memory_limit_mb=limit, job_delay_ms=0) as sb:
    http = requests.Session()
    http.headers["Authorization"] = "Bearer " + sb.issue_access_token()
    if work["sql"]:
        at_once([(query, (http, sb.url, work["sql"])) for _ in range(work["jobs"])])
    else:
        job_id = query(http, sb.url, "SELECT * FROM `firewall.traffic`")
        replies.clear()
        url, size = sb.url + "/query/v2/jobResults/" + job_id, work["page"]
        offsets = [n * size % rows for n in range(work["clients"])]
        at_once([(page, (http.headers, url, offset, size)) for offset in offsets])
print(json.dumps({"peak_mb": peak_mb(), "replies": replies}))
"""


def run(rows: int, limit_mb: int, work: dict) -> dict:
    """One scenario in a fresh interpreter: its peak memory and replies."""
    done = subprocess.run(
        [sys.executable, "-c", SCENARIO, json.dumps([rows, limit_mb, work])],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        return {"peak_mb": 0, "replies": [f"crashed: {done.stderr.strip().splitlines()[-1:]}"]}
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--limit-mb", type=int, default=512)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--page", type=int, default=10_000)
    args = parser.parse_args()
    scenarios = {
        "nested growth": {"sql": NESTED_GROWTH, "jobs": 4},
        "pages": {"sql": None, "clients": args.clients, "page": args.page},
    }
    print(f"sandbox: {args.rows:,} rows, memory limit {args.limit_mb:,} MB")
    print(f"{'scenario':<15}{'peak MB':>9}{'x limit':>9}  replies")
    for name, work in scenarios.items():
        result = run(args.rows, args.limit_mb, work)
        counts = collections.Counter(result["replies"])
        shown = ", ".join(f"{n} x {reply}" for reply, n in sorted(counts.items()))
        ratio = result["peak_mb"] / args.limit_mb
        print(f"{name:<15}{result['peak_mb']:>9,}{ratio:>9.2f}  {shown}")


if __name__ == "__main__":
    main()
