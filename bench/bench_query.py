"""Benchmark: one query, fetched several ways from the sandbox, side by side in one run.

    python bench/bench_query.py                      # 100k and 1M rows, latency 0 and 50 ms
    python bench/bench_query.py --rows 100000 --latency 0
    python bench/bench_query.py --rows 200000 --latency 0 --before /tmp/base   # earlier code too

(a) sdk    the official SDK: QueryService.iter_job_results + pandas.json_normalize
(b) ours   cortex_nb: QueryService.query() -> typed DataFrame
(c) floor  one requests.Session downloading the same pages and parsing them with orjson
(d) wire   the wire's limit: the same pages by offset, ``parallel`` at once as ``query()`` asks
           for them, kept as bytes (only the first page's envelope is read, for ``rowsInJob``)
(e) before with ``--before DIR``: (b) run by the copy of cortex_nb in DIR (first on PYTHONPATH)
(f) parse  the wire's pages, each parsed by Arrow's JSON reader in its download thread and let
           go: the least any client that reads the JSON into columns does (``x parse``)

Each way runs in a fresh subprocess (so peak RSS is its own) against a sandbox started as a
separate process (`cortex-nb sandbox`) on the same two cores. Prints wall seconds, rows/s, the
ratio to the floor, to the wire (`x wire`, on `proc s`: the whole process, interpreter start
and imports included, as a user waits for it), to the parse floor (`x parse`, on seconds) and
to the SDK; the CPU seconds the client used (`cpu s`) and the sandbox used meanwhile (`srv
cpu`: both share the cores, so a way that needs more CPU also slows the server); peak RSS
above the interpreter baseline (after imports), the final DataFrame's deep memory use (`df
MB`) and the RSS still held when only the frame is alive (`held MB`: deep memory use leaves
out what list and dict cells hold). Not a test: run by hand.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import subprocess
import sys
import time
from contextlib import contextmanager

SQL = "SELECT * FROM `{instance}.firewall.traffic`"
PAGE = 10_000
PARALLEL = 4  # pages in flight, as QueryOptions.parallel defaults


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_seconds(pid: int | None = None) -> float:
    """User and system CPU seconds of this process (or of ``pid``, from /proc)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def demo_credentials(url: str) -> dict:
    import importlib

    try:
        tokens = importlib.import_module("cortex_nb.sandbox.service.tokens")
    except ModuleNotFoundError:  # the code before the packages (--before)
        tokens = importlib.import_module("cortex_nb.sandbox.tokens")
    return {
        "client_id": tokens.DEMO_CLIENT_ID,
        "client_secret": tokens.DEMO_CLIENT_SECRET,
        "refresh_token": tokens.DEMO_REFRESH_TOKEN,
        "token_url": url + "/api/oauth2/RequestToken",
    }


def run_floor(url: str, sql: str) -> dict:
    import orjson
    import requests

    http = requests.Session()
    creds = demo_credentials(url)
    token = http.post(creds["token_url"], json={**creds, "grant_type": "refresh_token"}).json()
    http.headers["Authorization"] = f"Bearer {token['access_token']}"
    job = http.post(url + "/query/v2/jobs", json={"params": {"query": sql}}).json()["jobId"]
    params: dict = {"maxWait": 2000, "pageSize": PAGE}
    rows = 0
    while True:
        page = orjson.loads(http.get(f"{url}/query/v2/jobResults/{job}", params=params).content)
        if page["state"] != "DONE":
            continue
        rows += len(page["page"]["result"]["data"])
        cursor = page["page"].get("pageCursor")
        if not cursor:
            return {"rows": rows}
        params = {"pageCursor": cursor, "pageSize": PAGE}


def run_wire(url: str, sql: str, parse: bool = False) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    import orjson
    import requests

    http = requests.Session()
    http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=PARALLEL))
    creds = demo_credentials(url)
    token = http.post(creds["token_url"], json={**creds, "grant_type": "refresh_token"}).json()
    http.headers["Authorization"] = f"Bearer {token['access_token']}"
    job = http.post(url + "/query/v2/jobs", json={"params": {"query": sql}}).json()["jobId"]
    results = f"{url}/query/v2/jobResults/{job}"
    while True:  # the first page says how many rows there are; the rest stay bytes
        first = orjson.loads(http.get(results, params={"maxWait": 2000, "pageSize": PAGE}).content)
        if first["state"] == "DONE":
            break
    total = first["rowsInJob"]

    def page_bytes(offset: int) -> int:
        content = http.get(results, params={"offset": offset, "pageSize": PAGE}).content
        if parse:
            arrow_rows(content)
        return len(content)

    with ThreadPoolExecutor(PARALLEL) as pool:
        size = sum(pool.map(page_bytes, range(len(first["page"]["result"]["data"]), total, PAGE)))
    return {"rows": total, "bytes": size}


def arrow_rows(content: bytes) -> int:
    """Parse one page as ``query()`` does (Arrow's JSON reader, one block, the system pool)."""
    import pyarrow as pa
    import pyarrow.json as pj

    options = pj.ReadOptions(use_threads=False, block_size=len(content) + 1)
    table = pj.read_json(
        pa.BufferReader(content), read_options=options, memory_pool=pa.system_memory_pool()
    )
    return table.num_rows


def run_parse(url: str, sql: str) -> dict:
    return run_wire(url, sql, parse=True)


def run_sdk(url: str, sql: str) -> dict:
    import pandas as pd
    from pan_cortex_data_lake import Credentials, HTTPClient, QueryService

    creds = demo_credentials(url)
    host, port = url.rsplit(":", 1)
    # The SDK appends its port to every URL and the token path to token_url; its Credentials
    # pass extra keywords (port) to their own HTTPClient.
    sdk_creds = Credentials(
        client_id=creds["client_id"], client_secret=creds["client_secret"],
        refresh_token=creds["refresh_token"], token_url=host, port=int(port),
        storage_params={"memory_storage": True},
    )
    service = QueryService(session=HTTPClient(url=host, port=int(port), credentials=sdk_creds))
    job = service.create_query(query_params={"query": sql}).json()["jobId"]
    rows: list = []
    for r in service.iter_job_results(job_id=job, page_size=PAGE, result_format="valuesDictionary"):
        rows.extend(r.json()["page"]["result"]["data"])
    df = pd.json_normalize(rows)
    del rows
    return {"rows": len(df), "df": df}


def run_ours(url: str, sql: str) -> dict:
    from cortex_nb import Credentials, HTTPClient, QueryService

    client = HTTPClient(url=url, credentials=Credentials(**demo_credentials(url)))
    # no guardrail: the benchmark's sizes pass the default max_rows on purpose
    df = QueryService(client=client).query(sql, page_size=PAGE, max_rows=None).df
    client.close()
    return {"rows": len(df), "df": df}


WAYS = {
    "sdk": run_sdk, "ours": run_ours, "floor": run_floor, "wire": run_wire, "before": run_ours,
    "parse": run_parse,
}


def worker(way: str, url: str, sql: str) -> None:
    """Run one way in this process and print a JSON line of measurements."""
    import orjson  # noqa: F401  -- imports first, so the baseline includes the libraries
    import pandas  # noqa: F401
    import requests  # noqa: F401

    if way not in ("floor", "wire", "parse"):
        import pan_cortex_data_lake  # noqa: F401
        import pyarrow  # noqa: F401
    baseline, cpu_before = rss_mb(), cpu_seconds()
    started = time.perf_counter()
    out = WAYS[way](url, sql)
    out.update(seconds=time.perf_counter() - started, peak_mb=peak_mb() - baseline,
               cpu=cpu_seconds() - cpu_before, finished_at=time.time())
    df = out.pop("df", None)
    if df is not None:
        # deep memory_usage counts a list or dict cell's container, not what it holds; the RSS
        # still held once only the frame is alive is its full size in memory
        gc.collect()
        out.update(df_mb=df.memory_usage(deep=True).sum() / 2**20, held_mb=rss_mb() - baseline)
    print(json.dumps(out), flush=True)
    # a notebook does not wait for the interpreter to free the frame at exit: neither does
    # ``proc s`` (freeing a million rows' Python objects took about 2 s)
    os._exit(0)


SERVERS: dict[str, int] = {}  # a running sandbox's URL -> its process id (for its CPU time)


@contextmanager
def sandbox(rows: int, latency: int, *, extra: list[str] | None = None):
    cmd = [sys.executable, "-m", "cortex_nb.cli", "sandbox", "--port", "0", "--rows", str(rows),
           "--latency-ms", str(latency), *(extra or [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        url = None
        for line in proc.stdout:
            match = re.search(r"http://127\.0\.0\.1:\d+", line)
            if match:
                url = match.group(0)
                break
        if url is None:
            raise SystemExit("the sandbox did not print its URL")
        SERVERS[url] = proc.pid
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def measure(way: str, url: str, instance: str, before: str | None = None) -> dict:
    """Run one way in a fresh process: its JSON line, with the process's wall time (``proc``)."""
    cmd = [sys.executable, __file__, "--worker", way, "--url", url, "--instance", instance]
    env, cwd = None, None
    if way == "before":
        path = os.pathsep.join([before, os.environ.get("PYTHONPATH", "")])
        env, cwd = {**os.environ, "PYTHONPATH": path}, before
    server = SERVERS.get(url)
    server_cpu = cpu_seconds(server) if server else float("nan")
    started = time.time()  # the worker's own clock says when its rows were in
    result = worker_result(cmd, env, cwd)
    if "error" not in result:  # what it measures afterwards (memory) is no one's wait
        result["proc"] = result.pop("finished_at") - started
        result["server_cpu"] = (cpu_seconds(server) if server else float("nan")) - server_cpu
    return result


def worker_result(cmd: list[str], env: dict | None = None, cwd: str | None = None) -> dict:
    """Run a benchmark worker process; its last stdout line (JSON), or its last error line."""
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd=cwd)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="sizes (default 100k, 1M)")
    parser.add_argument("--latency", type=int, action="append", help="ms (default 0, 50)")
    parser.add_argument("--instance", default="sandbox0")
    parser.add_argument("--worker", choices=sorted(WAYS))
    parser.add_argument("--url")
    parser.add_argument("--before", help="a copy of the earlier code (the folder holding its "
                        "cortex_nb/), run as a fourth way")
    parser.add_argument("--skip", action="append", default=[], choices=["sdk", "floor", "parse"],
                        help="leave a way out (the SDK takes long and much memory)")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.url, SQL.format(instance=args.instance))
        return
    print(f"{'rows':>9} {'latency':>7} {'way':<6} {'seconds':>8} {'proc s':>7} {'rows/s':>10} "
          f"{'x floor':>7} {'x wire':>6} {'x parse':>7} {'x sdk':>6} {'cpu s':>6} {'srv cpu':>7} "
          f"{'peak MB':>8} {'df MB':>7} {'held MB':>8}")
    for rows in args.rows or [100_000, 1_000_000]:
        for latency in args.latency or [0, 50]:
            with sandbox(rows, latency) as url:
                ways = ("wire", "parse", "floor", "sdk", "ours")
                ways = tuple(w for w in ways if w not in args.skip)
                ways += ("before",) if args.before else ()
                results = {way: measure(way, url, args.instance, args.before) for way in ways}
            for way, r in results.items():
                if "error" in r:
                    print(f"{rows:>9} {latency:>7} {way:<6} error: {r['error']}")
                    continue
                floor = results.get("floor", {}).get("seconds")
                wire = results["wire"].get("proc")
                sdk = results.get("sdk", {}).get("seconds")
                parse = results.get("parse", {}).get("seconds")
                print(
                    f"{r['rows']:>9} {latency:>7} {way:<6} {r['seconds']:>8.2f} {r['proc']:>7.2f} "
                    f"{r['rows'] / r['seconds']:>10,.0f} "
                    f"{r['seconds'] / floor if floor else float('nan'):>7.2f} "
                    f"{r['proc'] / wire if wire else float('nan'):>6.2f} "
                    f"{r['seconds'] / parse if parse else float('nan'):>7.2f} "
                    f"{sdk / r['seconds'] if sdk else float('nan'):>6.2f} "
                    f"{r['cpu']:>6.1f} {r['server_cpu']:>7.1f} "
                    f"{r['peak_mb']:>8.0f} {r.get('df_mb', float('nan')):>7.0f} "
                    f"{r.get('held_mb', float('nan')):>8.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
