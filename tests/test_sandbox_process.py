"""The sandbox in its own process: connected to like the in-process one, its memory not the
kernel's, gone when it is stopped or when its parent dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from cortex_nb import ConfigurationError
from cortex_nb.notebook.connection import Connection
from cortex_nb.notebook.connection import get_connection as get_session

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_connection_queries_a_sandbox_in_its_own_process():
    connection = Connection()
    try:
        connection.connect_sandbox(rows=500, process=True)
        pid = connection.sandbox.pid
        assert pid != os.getpid() and alive(pid)
        sql = f"SELECT COUNT(*) AS n FROM `{connection.instance_id}.firewall.traffic`"
        assert int(connection.require().query(sql).df["n"][0]) == 500
    finally:
        connection.stop_sandbox()
    assert gone_within(pid, 10) and not connection.connected


def test_a_restart_is_asked_for_only_when_the_options_differ():
    connection = Connection()
    try:
        connection.start_sandbox(rows=300, process=True)
        assert connection.sandbox_changes(rows=300) == ""
        assert connection.sandbox_changes(process=False) == "process True -> False"
        assert connection.sandbox_changes(rows=400) == "rows 300 -> 400"
        # settings it was not given are its defaults, as its child reported them
        assert connection.sandbox_changes(scan_rate=20000) == "scan_rate None -> 20000"
        assert connection.sandbox_changes(scan_rate=0, latency_ms=0) == ""
        assert connection.sandbox_changes(latency_ms=50) == "latency_ms 0 -> 50"
    finally:
        connection.stop_sandbox()


@pytest.mark.parametrize("process", [False, True])
def test_connecting_with_another_scan_rate_restarts_the_sandbox_with_it(process):
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "cortex_nb")
    where = " --process" if process else ""
    try:
        with capture_output():
            ip.run_line_magic("cortex", f"connect sandbox --rows 300{where}")
        first = get_session().sandbox
        with capture_output() as cap:
            ip.run_line_magic("cortex", f"connect sandbox --rows 300 --scan-rate 150{where}")
        assert "Restarted the sandbox for the options asked (scan_rate None -> 150" in cap.stdout
        assert get_session().sandbox is not first
        # the new one models job time: 300 rows at 150 rows/s keep the job RUNNING a while
        service = get_session().require()
        job_id = service.submit(f"SELECT session_id FROM `{get_session().instance_id}."
                                "firewall.traffic`")
        deadline = time.monotonic() + 10
        while (state := service.get_job(job_id).json()["state"]) == "PENDING":
            assert time.monotonic() < deadline, "the job never left PENDING"
            time.sleep(0.02)
        assert state == "RUNNING"  # its 2 s of scan time; without a scan rate: DONE
        service.cancel_job(job_id)
        with capture_output() as cap:  # asked again with the same rate: kept
            ip.run_line_magic("cortex", f"connect sandbox --rows 300 --scan-rate 150{where}")
        assert "Restarted" not in cap.stdout
    finally:
        get_session().stop_sandbox()


def test_a_bad_option_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="rows must be at least 100"):
        Connection().start_sandbox(rows=5, process=True)


PARENT = """
import sys, time
from cortex_nb.sandbox.process import SandboxProcess
sandbox = SandboxProcess(rows=200).start()
print(sandbox.pid, flush=True)
time.sleep(600)
"""


def test_the_sandbox_process_ends_with_its_parent():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert alive(child)
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        parent.stdout.close()
    assert gone_within(child, 15)


def test_magic_connects_to_a_sandbox_process_and_keeps_it():
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "cortex_nb")
    try:
        with capture_output() as cap:
            ip.run_line_magic("cortex", "connect sandbox --process --rows 300")
        first = get_session().sandbox
        assert "Connected to http://127.0.0.1:" in cap.stdout and first.pid is not None
        with capture_output() as cap:
            ip.run_line_magic("cortex", "connect sandbox --rows 300")
        assert get_session().sandbox is first and "Restarted" not in cap.stdout
    finally:
        get_session().stop_sandbox()
