"""A split query (``%%cortex --split``) in a real IPython kernel driven by jupyter_client.

The kernel connects by URL to the session's sandbox, which runs in the test process, so the
jobs each cell created are counted in the sandbox's request log. ``--since 8d`` covers all of
the sandbox's week, so a split and an unsplit cell run moments apart see the same rows.
"""

from __future__ import annotations

import html
import re

import pytest

from tests.support import errors

pytest.importorskip("jupyter_client.manager")

SQL = "SELECT session_id, time_generated FROM firewall.traffic ORDER BY time_generated"
SOME_DONE = re.compile(r"windows [1-9]\d*/193 done, [1-9] running")
WINDOW = re.compile(r"TIMESTAMP\('([^']+)'\) AND time_generated < TIMESTAMP\('([^']+)'\)")


def created_windows(sandbox) -> list[tuple[str, str]]:
    """The ``[start, end)`` of every job the sandbox was asked to create."""
    return [
        WINDOW.search(r.json["params"]["query"]).groups() for r in sandbox.requests
        if r.method == "POST" and r.path == "/query/v2/jobs"
    ]


def test_a_split_cell_shows_one_job_per_window_in_its_trace(kernel, sandbox):
    sandbox.clear()
    outputs = kernel.execute(f"%%cortex -o week --trace --split 1d --since 8d\n{SQL}")
    assert not errors(outputs)
    traced = "".join(m["content"]["data"].get("text/html", "") for m in outputs
                     if m["msg_type"] == "display_data")
    posted = {WINDOW.search(block).groups() for block in html.unescape(traced).split("<details")
              if "POST" in block and WINDOW.search(block)}
    jobs = created_windows(sandbox)
    assert len(jobs) == 9 and posted == set(jobs)  # 8 days in whole days: 9 windows, 9 jobs
    lines = [m["content"]["data"]["text/plain"] for m in outputs
             if m["msg_type"] in ("display_data", "update_display_data")
             and "text/plain" in m["content"]["data"]]
    assert any(line.startswith("done") and "windows 9/9 done" in line for line in lines), lines
    kernel.printed("%%cortex -o whole -q --since 8d\n" + SQL)
    assert kernel.printed("print(week.equals(whole), len(week) > 0)") == "True True\n"


def test_a_split_cell_runs_in_the_background_and_its_line_counts_windows(kernel, sandbox):
    sandbox.clear()
    _, display_id = kernel.background("-o bgweek --split 1d --since 8d", SQL)
    final = kernel.wait_for_status(display_id, "done")
    assert "from 9 windows (9 jobs)" in final
    assert len(created_windows(sandbox)) == 9
    kernel.printed("%%cortex -o whole -q --since 8d\n" + SQL)
    assert kernel.printed("print(bgweek.equals(whole))") == "True\n"


def test_a_refused_split_cell_fails_with_one_line_and_sends_nothing(kernel, sandbox):
    sandbox.clear()
    outputs = kernel.execute(
        "%%cortex --split 1h --since 1d\nSELECT app, COUNT(*) AS n FROM firewall.traffic GROUP BY app"
    )
    [error] = errors(outputs)
    text = "".join(error["traceback"])
    assert "aggregate not grouped by a time bucket" in text and "Traceback" not in text
    assert [r for r in sandbox.requests if r.path.startswith("/query/")] == []


def test_an_interrupted_split_cell_cancels_its_running_windows_and_says_so(kernel, sandbox):
    sandbox.clear()
    sandbox.latency_ms = 100  # 193 hourly windows at 4 at once: long enough to interrupt
    try:
        msg_id = kernel.kc.execute(f"%%cortex -o never --split 1h --since 8d\n{SQL}")
        while not any(m["parent_header"].get("msg_id") == msg_id
                      and m["msg_type"] in ("display_data", "update_display_data")
                      and SOME_DONE.search(m["content"]["data"].get("text/plain", ""))
                      for m in kernel.messages):
            kernel.read(0.2)  # some windows are in, others running
        kernel.km.interrupt_kernel()
        outputs = kernel.finished(msg_id)
    finally:
        sandbox.latency_ms = 0
    [error] = errors(outputs)
    assert len(error["traceback"]) == 1, error["traceback"]  # one line, not a traceback
    [line] = error["traceback"]
    assert re.search(r"Cancelled the split query: \d+ of 193 windows had come back; the "
                     r"running windows' jobs were cancelled on the service", line), line
    assert [r for r in sandbox.requests if r.method == "DELETE"]  # cancelled on the service
    assert len(created_windows(sandbox)) < 193
    assert "never" not in kernel.printed("print(list(globals()))")
