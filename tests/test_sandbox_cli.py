"""`cortex-nb sandbox` as a real subprocess: banner, queries, clean stop on SIGINT; CLI errors."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from cortex_nb.cli import main

# the installed console script when there is one (it tests the entry point), else the module
SCRIPT = Path(sys.executable).with_name("cortex-nb")
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "cortex_nb.cli"]


def start_cli(*args: str) -> tuple[subprocess.Popen, str, dict]:
    proc = subprocess.Popen(
        [*CLI, "sandbox", "--port", "0", "--rows", "300", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            break
    banner = "".join(lines)
    url = re.search(r"listening on (http://\S+)", banner).group(1)
    fields = dict(re.findall(r"^\s+(client_id|client_secret|refresh_token):\s+(\S+)", banner, re.M))
    return proc, url, fields


def signed_in(url: str, creds: dict) -> dict:
    """The headers of requests with an access token from the sandbox's demo credentials."""
    grant = {**creds, "grant_type": "refresh_token"}
    token = requests.post(f"{url}/api/oauth2/RequestToken", json=grant, timeout=10).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


def create_job(url: str, headers: dict, sql: str) -> str:
    """Create a query job; its id."""
    body = {"params": {"query": sql}}
    return requests.post(f"{url}/query/v2/jobs", json=body, headers=headers, timeout=10).json()["jobId"]


def test_cli_serves_queries_and_stops_cleanly_on_sigint():
    proc, url, creds = start_cli()
    try:
        headers = signed_in(url, creds)
        job = create_job(url, headers, "SELECT COUNT(*) AS n FROM `sandbox0.firewall.traffic`")
        page = requests.get(
            f"{url}/query/v2/jobResults/{job}",
            params={"maxWait": 2000},
            headers=headers,
            timeout=10,
        ).json()
        assert page["page"]["result"]["data"] == [{"n": 300}]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "Traceback" not in err and "stopped" in out


def test_cli_limits_reach_the_sandbox():
    proc, url, creds = start_cli("--query-timeout-ms", "300", "--workers", "2", "--verbose")
    try:
        headers = signed_in(url, creds)
        t = "`firewall.traffic`"
        sql = f"SELECT COUNT(*) AS n FROM {t} a, {t} b, {t} c, {t} d, {t} e"  # 2.4e12 rows
        results = f"{url}/query/v2/jobResults/{create_job(url, headers, sql)}"
        for _ in range(3):
            page = requests.get(results, params={"maxWait": 2000}, headers=headers, timeout=10)
            if page.json()["state"] == "TIMEDOUT":
                break
        assert "timed out after 300 ms" in page.json()["errors"][0]["message"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_cli_scan_rate_gives_jobs_their_time():
    proc, url, creds = start_cli("--scan-rate", "300")  # 300 rows at 300 rows/s: 1 s of job
    try:
        headers = signed_in(url, creds)
        job = create_job(url, headers, "SELECT * FROM `sandbox0.firewall.traffic`")
        page = requests.get(f"{url}/query/v2/jobResults/{job}",
                            params={"maxWait": 2000}, headers=headers, timeout=10).json()
        detail = requests.get(f"{url}/query/v2/jobs/{job}", headers=headers, timeout=10)
        assert page["state"] == "DONE" and page["rowsInJob"] == 300
        assert detail.json()["endTime"] - detail.json()["startTime"] >= 1000
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)


def test_cli_warns_when_not_on_loopback():
    proc, _, _ = start_cli("--host", "0.0.0.0")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "warning" in err and "0.0.0.0" in err


def test_busy_port_is_one_line_and_exit_2(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["sandbox", "--port", str(port), "--rows", "100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cortex-nb: error: cannot listen")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nonsense"],
        ["sandbox", "--rows", "many"],
        ["sandbox", "--rows", "5"],
        ["sandbox", "--memory-limit-mb", "10"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--rows", "-1", "--rows must be at least 100, not -1"),
        ("--latency-ms", "-3", "--latency-ms must be 0 or more, not -3.0"),
        ("--latency-ms", "nan", "--latency-ms must be 0 or more, not nan"),
        ("--fail-rate", "2", "--fail-rate must be between 0 and 1, not 2.0"),
        ("--workers", "0", "--workers must be at least 1, not 0"),
        ("--memory-limit-mb", "10", "--memory-limit-mb must be at least 64, not 10"),
        ("--query-timeout-ms", "0", "--query-timeout-ms must be positive, not 0"),
        ("--scan-rate", "-5", "--scan-rate must be rows per second"),
    ],
)
def test_a_bad_sandbox_setting_names_its_flag_and_starts_nothing(capsys, flag, value, says):
    assert main(["sandbox", "--port", "0", "--rows", "100", flag, value]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"cortex-nb: error: {says}") and err.count("\n") == 1
    assert "listening" not in out


def test_rows_over_the_memory_limit_name_the_flag(capsys):
    assert main(["sandbox", "--port", "0", "--rows", "3000000", "--memory-limit-mb", "64"]) == 2
    err = capsys.readouterr().err
    assert "rows do not fit in --memory-limit-mb 64;" in err and err.count("\n") == 1


def test_profiles_subcommand_is_wired_to_the_profiles_module(capsys):
    assert main(["profiles", "bogus"]) == 2
    assert capsys.readouterr().err.startswith("cortex-nb profiles: error:")
