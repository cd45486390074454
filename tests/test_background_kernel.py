"""Background queries in a real IPython kernel driven by jupyter_client, restarts included.

The kernel connects by URL (PAN_* variables) to the session's sandbox, which runs in the test
process: it outlives every kernel restart, as the real service does.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import time

import pytest
import requests

from tests.test_background import slow_sql

manager = pytest.importorskip("jupyter_client.manager")

JOB_ID = re.compile(r"job (cortexnb-[0-9a-f-]{36})")
TYPED = (
    "SELECT time_generated, source_ip, app, bytes_sent, is_nat FROM firewall.traffic "
    "ORDER BY time_generated, session_id LIMIT 50"
)


class Kernel:
    """A kernel and its client; every iopub message is kept, whichever cell it belongs to."""

    def __init__(self, sandbox) -> None:
        creds = sandbox.credentials()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAN_")}
        env.update(PAN_CLIENT_ID=creds["client_id"], PAN_CLIENT_SECRET=creds["client_secret"],
                   PAN_REFRESH_TOKEN=creds["refresh_token"])
        self.connect_code = (
            f"%load_ext cortex_nb\n%cortex connect --url {sandbox.url} "
            f"--instance {sandbox.instance_id}"
        )
        self.km, self.kc = manager.start_new_kernel(kernel_name="python3", env=env)
        self.messages: list[dict] = []

    def execute(self, code: str, timeout: float = 60) -> list[dict]:
        """Run ``code``; its own messages until the kernel is idle again (others are kept)."""
        return self.finished(self.kc.execute(code), timeout)

    def finished(self, msg_id: str, timeout: float = 60) -> list[dict]:
        """The messages of request ``msg_id``, once the kernel is idle after it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            own = [m for m in self.messages if m["parent_header"].get("msg_id") == msg_id]
            if any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
                   for m in own):
                return own
            self.read(0.2)
        raise AssertionError(f"the kernel was not idle within {timeout} s")

    def read(self, seconds: float) -> None:
        """Keep the iopub messages that arrive within ``seconds``."""
        with contextlib.suppress(queue.Empty):
            self.messages.append(self.kc.get_iopub_msg(timeout=seconds))

    def printed(self, code: str) -> str:
        """What ``code`` printed; fails on an error output."""
        outputs = self.execute(code)
        failures = [m["content"] for m in outputs if m["msg_type"] == "error"]
        assert not failures, failures
        return "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream")

    def status_lines(self, display_id: str) -> list[str]:
        """Every text the display ``display_id`` showed so far, in order."""
        return [
            m["content"]["data"]["text/plain"] for m in self.messages
            if m["msg_type"] in ("display_data", "update_display_data")
            and m["content"].get("transient", {}).get("display_id") == display_id
        ]

    def wait_for_status(self, display_id: str, start: str, timeout: float = 60) -> str:
        """The first text of that display starting with ``start`` (waiting for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [t for t in self.status_lines(display_id) if t.startswith(start)]
            if found:
                return found[0]
            self.read(0.2)
        raise AssertionError(f"no {start!r} line within {timeout} s: {self.status_lines(display_id)}")

    def restart(self) -> None:
        """Restart as Kernel > Restart does (a shutdown request, then a new process)."""
        self.km.restart_kernel(now=False)
        self.kc.wait_for_ready(timeout=60)
        self.printed(self.connect_code)

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(sandbox):
    k = Kernel(sandbox)
    try:
        assert "Connected to" in k.printed(k.connect_code)
        yield k
    finally:
        k.close()


def background(k: Kernel, line: str, sql: str) -> tuple[list[dict], str]:
    """Run a ``%%cortex --bg`` cell; its messages and the id of its status display."""
    outputs = k.execute(f"%%cortex --bg {line}\n{sql}")
    assert not [m for m in outputs if m["msg_type"] == "error"]
    [shown] = [m for m in outputs if m["msg_type"] == "display_data"]
    return outputs, shown["content"]["transient"]["display_id"]


def server_state(sandbox, job_id: str) -> str:
    reply = requests.get(f"{sandbox.url}/query/v2/jobs/{job_id}", timeout=10,
                         headers={"Authorization": f"Bearer {sandbox.issue_access_token()}"})
    return reply.json()["state"]


def test_a_bg_cell_returns_at_once_other_cells_run_and_the_frame_lands(kernel, sandbox):
    started = time.monotonic()
    _, display_id = background(kernel, "-o slow --timeout 120", slow_sql(sandbox, 150))
    took = time.monotonic() - started
    # The issue promises the cell returns at once while its query runs for seconds; a second
    # is a generous bound for "at once" (it takes milliseconds) that a busy machine still meets.
    assert took < 1.0, took
    assert kernel.printed("print(type(slow).__name__, slow.state)").split()[0] == "BackgroundQuery"
    assert kernel.printed("print(6 * 7)") == "42\n"  # another cell runs meanwhile
    final = kernel.wait_for_status(display_id, "done")
    assert final.startswith("done → slow: 1 row (1 in job), 1 page")
    assert kernel.printed("print(type(slow).__name__, slow.shape)") == "DataFrame (1, 1)\n"
    lines = kernel.status_lines(display_id)
    running = [t for t in lines if t.startswith(("queued", "running"))]
    assert len(set(running)) >= 2, lines  # updated in place while it ran
    assert all(t.endswith("%cortex cancel slow") for t in running)


def test_after_a_restart_fetch_returns_the_same_frame(kernel, sandbox):
    _, display_id = background(kernel, "-o typed", TYPED)
    [job_id] = JOB_ID.findall(kernel.wait_for_status(display_id, "done"))  # the id is shown
    show = "print({0}.to_json(orient='split', date_format='iso')); print({0}.dtypes.astype(str).to_dict())"
    before = kernel.printed(show.format("typed"))
    kernel.restart()
    assert "NameError" in str(kernel.execute("typed"))  # a new kernel: nothing survived in it
    kernel.printed(f"%cortex fetch {job_id} -o again")
    assert kernel.printed(show.format("again")) == before
    assert "datetime64[us, UTC]" in before and "boolean" in before


def test_cancel_stops_a_background_job_and_its_line_says_so(kernel, sandbox):
    _, display_id = background(kernel, "-o forever --timeout 120", slow_sql(sandbox))
    [job_id] = JOB_ID.findall(kernel.wait_for_status(display_id, "queued"))
    said = kernel.printed("%cortex cancel forever")
    assert said.startswith(f"forever: cancelled: Job {job_id} was cancelled")
    assert kernel.wait_for_status(display_id, "cancelled:").startswith(f"cancelled: Job {job_id}")
    assert kernel.printed("print(forever.state)") == "CANCELLED\n"
    assert server_state(sandbox, job_id) == "CANCELLED"


def test_a_restart_cancels_running_jobs_unless_configured_not_to(kernel, sandbox):
    _, display_id = background(kernel, "-o doomed --timeout 120", slow_sql(sandbox))
    [doomed] = JOB_ID.findall(kernel.wait_for_status(display_id, "queued"))
    kernel.restart()
    assert server_state(sandbox, doomed) == "CANCELLED"

    kernel.printed("%config CortexMagics.cancel_on_shutdown = False")
    _, display_id = background(kernel, "-o kept --timeout 120", slow_sql(sandbox, 100))
    [kept] = JOB_ID.findall(kernel.wait_for_status(display_id, "queued"))
    kernel.restart()
    assert server_state(sandbox, kept) in {"PENDING", "RUNNING", "DONE"}
    kernel.printed(f"%cortex fetch {kept} -o survived")
    assert kernel.printed("print(survived.columns.tolist(), len(survived))") == "['n'] 1\n"


def test_interrupting_a_fetch_stops_waiting_and_leaves_the_job_running(kernel, sandbox, sandbox_api):
    job_id = sandbox_api.create(slow_sql(sandbox)).json()["jobId"]  # a job from elsewhere
    try:
        msg_id = kernel.kc.execute(f"%cortex fetch {job_id} -o nothing_yet")
        while not any(m["parent_header"].get("msg_id") == msg_id
                      and m["msg_type"] == "display_data" for m in kernel.messages):
            kernel.read(0.2)  # the progress line is up: the fetch is waiting for the job
        kernel.km.interrupt_kernel()
        outputs = kernel.finished(msg_id)
        [error] = [m["content"] for m in outputs if m["msg_type"] == "error"]
        assert error["traceback"] == [
            f"\x1b[0;31mInterrupted: stopped fetching job {job_id}; it was left as it is on the "
            f"service (fetch it again with %cortex fetch {job_id}).\x1b[0m"
        ]
        assert server_state(sandbox, job_id) in {"PENDING", "RUNNING"}  # not cancelled
    finally:
        sandbox_api.http.delete(f"{sandbox.url}/query/v2/jobs/{job_id}", timeout=10)
