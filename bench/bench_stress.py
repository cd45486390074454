"""Stress: the sandbox under a connection burst, concurrent queries and hostile requests.

    python bench/bench_stress.py                          # 3000 rows, memory limit 512 MB
    python bench/bench_stress.py --sandbox-args "--memory-limit-mb 256"

Starts ``cortex-nb sandbox`` as its own process (so its memory is its own: ``VmRSS`` and the
peak ``VmHWM`` from /proc, Linux only) and, case by case, prints what the sandbox answered, the
job's final state, the time the case took, and the sandbox's resident and peak memory after it:

  burst          100 connections opened at once, one GET each (answer: how many got 200)
  50 queries     50 queries created at once, every result read once all are DONE
  light query    SELECT 1 while two cross joins run (ms until it is DONE)
  statements     hostile SQL (value builders, catalogs, settings, deep nesting, a 240 KB
                 statement, a result over the memory limit, a cross join then cancelled)
  http           malformed, oversized, forged or cross-site requests
  stop           SIGINT until the process has exited; then how much the sandbox printed

Only the client's standard library and requests are used, so the same script measures any
version of the sandbox (``--sandbox-args ""`` for one without the newer options). Not a test.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

FINAL = {"DONE", "FAILED", "CANCELLED", "TIMEDOUT"}
T = "`firewall.traffic`"
STATEMENTS = [
    ("repeat 1e9", "SELECT length(repeat('x', 1000000000)) AS n"),
    ("lpad 1e8", "SELECT length(lpad('a', 100000000, 'b')) AS n"),
    ("range 1e8", "SELECT list_sum(range(100000000)) AS s"),
    ("printf width", "SELECT length(printf('%500000000d', 1)) AS n"),
    ("catalog CTE", "WITH pg_settings AS (SELECT * FROM pg_settings) SELECT * FROM pg_settings"),
    ("setting", "SELECT current_setting('memory_limit') AS m"),
    ("5000 parens", "SELECT " + "(" * 5000 + "1" + ")" * 5000 + " AS x"),
    (
        "240 KB SQL",
        f"SELECT app FROM {T} WHERE dest_port IN ({', '.join(map(str, range(35_000)))})",
    ),
    (
        "over memory",
        f"SELECT a.*, b.app AS b_app FROM {T} a, {T} b WHERE MOD(b.session_id, 10) = 0",
    ),
]
CROSS_JOIN = f"SELECT COUNT(*) AS n FROM {T} a, {T} b, {T} c"


class Sandbox:
    """``cortex-nb sandbox`` as a subprocess, with a token and its memory figures."""

    def __init__(self, rows: int, extra: list[str]) -> None:
        command = [sys.executable, "-m", "cortex_nb.cli", "sandbox", "--port", "0"]
        self.stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 (read at the end)
        self.proc = subprocess.Popen(
            [*command, "--rows", str(rows), *extra],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        banner = "".join(iter(self.proc.stdout.readline, "Press Ctrl-C to stop.\n"))
        self.url = re.search(r"listening on (http://\S+)", banner).group(1)
        self.port = int(self.url.rsplit(":", 1)[1])
        fields = dict(re.findall(r"^\s+(client_\w+|refresh_token):\s+(\S+)", banner, re.M))
        grant = {**fields, "grant_type": "refresh_token"}
        reply = requests.post(f"{self.url}/api/oauth2/RequestToken", json=grant, timeout=30)
        self.token = reply.json()["access_token"]
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {self.token}"

    def memory_mb(self) -> tuple[float, float]:
        """(resident, peak resident) MiB of the sandbox process."""
        with open(f"/proc/{self.proc.pid}/status") as status:
            values = dict(line.split(":", 1) for line in status)
        return tuple(int(values[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))

    def create(self, sql: str) -> requests.Response:
        body = {"params": {"query": sql}}
        return self.http.post(f"{self.url}/query/v2/jobs", json=body, timeout=120)

    def final(self, job_id: str, seconds: float = 60) -> dict:
        """The results page once the job is final, or the last one after ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            reply = self.http.get(
                f"{self.url}/query/v2/jobResults/{job_id}",
                params={"maxWait": 2000, "pageSize": 100_000},
                timeout=60,
            )
            page = reply.json()
            if reply.status_code != 200 or page["state"] in FINAL or time.monotonic() > deadline:
                return page

    def cancel(self, job_id: str) -> requests.Response:
        return self.http.delete(f"{self.url}/query/v2/jobs/{job_id}", timeout=60)

    def stop(self) -> float:
        """Seconds from SIGINT to exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=120)
        return time.monotonic() - started

    def printed(self) -> str:
        """What the sandbox printed on stderr: lines and tracebacks."""
        self.stderr.seek(0)
        text = self.stderr.read()
        return f"{text.count(chr(10))} lines, {text.count('Traceback')} tracebacks"


def timed(function, *args):
    started = time.monotonic()
    value = function(*args)
    return value, (time.monotonic() - started) * 1000


def burst(sb: Sandbox, n: int = 100) -> tuple[str, str]:
    gate = threading.Barrier(n)

    def one(_: int) -> str:
        gate.wait(timeout=60)
        try:
            headers = {"Authorization": f"Bearer {sb.token}"}
            reply = requests.get(f"{sb.url}/query/v2/jobs", headers=headers, timeout=10)
            return str(reply.status_code)
        except requests.RequestException as error:
            return type(error).__name__

    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(one, range(n)))
    return f"{answers.count('200')}/{n} ok", ",".join(sorted(set(answers) - {"200"})) or "-"


def fifty_queries(sb: Sandbox, n: int = 50) -> tuple[str, str]:
    def create(i: int) -> str | None:
        sql = f"SELECT session_id FROM {T} WHERE MOD(session_id, {n}) = {i}"
        try:
            return sb.create(sql).json()["jobId"]
        except requests.ConnectionError:  # reset by the server
            return None

    with ThreadPoolExecutor(n) as pool:
        job_ids = [job_id for job_id in pool.map(create, range(n)) if job_id]
        states = [sb.final(job_id, 120).get("state") for job_id in job_ids]
        pages = list(pool.map(lambda j: sb.final(j, 5), job_ids))  # all read after all are done
    got = sum(1 for page in pages if page.get("page", {}).get("result", {}).get("data"))
    return f"{got}/{n} rows", f"{states.count('DONE')}/{len(job_ids)} DONE"


def light_after_heavy(sb: Sandbox) -> tuple[str, str]:
    heavy = [sb.create(CROSS_JOIN).json()["jobId"] for _ in range(2)]
    time.sleep(1)
    started = time.monotonic()
    light = sb.create("SELECT 1 AS one").json()["jobId"]
    state = sb.final(light, 30).get("state", "?")
    light_ms = (time.monotonic() - started) * 1000
    for job_id in heavy:
        sb.cancel(job_id)
    return f"in {light_ms:.0f} ms", state


def statement(sb: Sandbox, sql: str) -> tuple[str, str]:
    try:
        created = sb.create(sql)
    except requests.ConnectionError:
        return "dropped", "-"
    if created.status_code != 201:
        return str(created.status_code), "-"
    return "201", sb.final(created.json()["jobId"], 120).get("state", "?")


def cancelled_cross_join(sb: Sandbox) -> tuple[str, str]:
    job_id = sb.create(CROSS_JOIN).json()["jobId"]
    time.sleep(1)
    reply, ms = timed(sb.cancel, job_id)
    return f"cancel {ms:.0f} ms", reply.json().get("state", "?")


def raw(sb: Sandbox, data: bytes) -> str:
    """The status line's code of a raw request, or what went wrong."""
    try:
        with socket.create_connection(("127.0.0.1", sb.port), timeout=10) as sock:
            sock.sendall(data)
            head = sock.recv(200).split(b"\r\n", 1)[0].decode("latin-1")
    except OSError as error:
        return type(error).__name__
    return head.split()[1] if head.startswith("HTTP/") else "dropped"


def http_bytes(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """A raw HTTP/1.1 request (headers written as given, nothing added)."""
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode() + body


def http_cases(sb: Sandbox) -> list[tuple[str, str]]:
    own = {"Host": "127.0.0.1", "Authorization": f"Bearer {sb.token}"}
    job_id = sb.create(f"SELECT session_id FROM {T}").json()["jobId"]
    sb.final(job_id)
    forged = base64.urlsafe_b64encode(json.dumps([job_id, -5, 10]).encode()).decode()
    revoke = b"client_id=sandbox-client&client_secret=sandbox-secret&token=sandbox-refresh-token"
    form = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": len(revoke)}
    requests_ = [
        ("bad length", http_bytes("POST", "/query/v2/jobs", {**own, "Content-Length": "x"})),
        (
            "3 MB body",
            http_bytes(
                "POST", "/query/v2/jobs", {**own, "Content-Length": 3_000_000}, b"x" * 3_000_000
            ),
        ),
        (
            "forged cursor",
            http_bytes("GET", f"/query/v2/jobResults/{job_id}?pageCursor={forged}", own),
        ),
        ("OPTIONS", http_bytes("OPTIONS", "/query/v2/jobs", own)),
        ("rebound Host", http_bytes("GET", "/query/v2/jobs", {**own, "Host": "evil.example"})),
        (
            "cross-site revoke",
            http_bytes(
                "POST",
                "/api/oauth2/RevokeToken",
                {"Host": "127.0.0.1", "Origin": "http://evil.example", **form},
                revoke,
            ),
        ),
    ]
    return [(label, raw(sb, data)) for label, data in requests_]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument(
        "--sandbox-args", default="--memory-limit-mb 512", help="extra cortex-nb sandbox options"
    )
    args = parser.parse_args()
    sb = Sandbox(args.rows, args.sandbox_args.split())
    rows = []

    def case(label: str, function, *call_args) -> None:
        (answer, state), ms = timed(function, sb, *call_args)
        rows.append((label, answer, state, ms, *sb.memory_mb()))
        print_row(rows[-1])

    print(f"sandbox: {args.rows:,} rows, options {args.sandbox_args!r}, pid {sb.proc.pid}")
    print(f"{'case':<18} {'answer':<16} {'state':<12} {'ms':>8} {'RSS MB':>8} {'peak MB':>8}")
    print_row(("start", "-", "-", 0, *sb.memory_mb()))
    case("burst 100", burst)
    case("50 queries", fifty_queries)
    case("light after heavy", light_after_heavy)
    for label, sql in STATEMENTS:
        case(label, statement, sql)
    case("cross join", cancelled_cross_join)
    for label, answer in http_cases(sb):
        rows.append((label, answer, "-", 0, *sb.memory_mb()))
        print_row(rows[-1])
    peak = sb.memory_mb()[1]
    seconds = sb.stop()
    print_row(("stop (SIGINT)", f"exit {sb.proc.returncode}", "-", seconds * 1000, 0, peak))
    print(f"sandbox stderr: {sb.printed()}")


def print_row(row: tuple) -> None:
    label, answer, state, ms, rss, peak = row
    print(f"{label:<18} {answer:<16} {state:<12} {ms:8.0f} {rss:8.0f} {peak:8.0f}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
