"""Background queries in a real IPython kernel driven by jupyter_client, restarts included.

The kernel connects by URL (PAN_* variables) to the session's sandbox, which runs in the test
process: it outlives every kernel restart, as the real service does.
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from tests.support import errors
from tests.test_background import slow_sql

pytest.importorskip("jupyter_client.manager")

JOB_ID = re.compile(r"job (cortexnb-[0-9a-f-]{36})")
TYPED = (
    "SELECT time_generated, source_ip, app, bytes_sent, is_nat FROM firewall.traffic "
    "ORDER BY time_generated, session_id LIMIT 50"
)


def server_state(sandbox, job_id: str) -> str:
    reply = requests.get(f"{sandbox.url}/query/v2/jobs/{job_id}", timeout=10,
                         headers={"Authorization": f"Bearer {sandbox.issue_access_token()}"})
    return reply.json()["state"]


def test_a_bg_cell_returns_at_once_other_cells_run_and_the_frame_lands(kernel, sandbox):
    started = time.monotonic()
    _, display_id = kernel.background("-o slow --timeout 120", slow_sql(sandbox, 150))
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
    _, display_id = kernel.background("-o typed", TYPED)
    [job_id] = JOB_ID.findall(kernel.wait_for_status(display_id, "done"))  # the id is shown
    show = "print({0}.to_json(orient='split', date_format='iso')); print({0}.dtypes.astype(str).to_dict())"
    before = kernel.printed(show.format("typed"))
    kernel.restart()
    assert "NameError" in str(kernel.execute("typed"))  # a new kernel: nothing survived in it
    kernel.printed(f"%cortex fetch {job_id} -o again")
    assert kernel.printed(show.format("again")) == before
    assert "datetime64[us, UTC]" in before and "boolean" in before


def test_cancel_stops_a_background_job_and_its_line_says_so(kernel, sandbox):
    _, display_id = kernel.background("-o forever --timeout 120", slow_sql(sandbox))
    [job_id] = JOB_ID.findall(kernel.wait_for_status(display_id, "queued"))
    said = kernel.printed("%cortex cancel forever")
    assert said.startswith(f"forever: cancelled: Job {job_id} was cancelled")
    assert kernel.wait_for_status(display_id, "cancelled:").startswith(f"cancelled: Job {job_id}")
    assert kernel.printed("print(forever.state)") == "CANCELLED\n"
    assert server_state(sandbox, job_id) == "CANCELLED"


def test_a_restart_cancels_running_jobs_unless_configured_not_to(kernel, sandbox):
    _, display_id = kernel.background("-o doomed --timeout 120", slow_sql(sandbox))
    [doomed] = JOB_ID.findall(kernel.wait_for_status(display_id, "queued"))
    kernel.restart()
    assert server_state(sandbox, doomed) == "CANCELLED"

    kernel.printed("%config CortexMagics.cancel_on_shutdown = False")
    _, display_id = kernel.background("-o kept --timeout 120", slow_sql(sandbox, 100))
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
        [error] = errors(outputs)
        assert error["traceback"] == [
            f"\x1b[0;31mInterrupted: stopped fetching job {job_id}; it was left as it is on the "
            f"service (fetch it again with %cortex fetch {job_id}).\x1b[0m"
        ]
        assert server_state(sandbox, job_id) in {"PENDING", "RUNNING"}  # not cancelled
    finally:
        sandbox_api.http.delete(f"{sandbox.url}/query/v2/jobs/{job_id}", timeout=10)
