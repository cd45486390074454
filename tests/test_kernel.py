"""Notebook behaviour in a real IPython kernel driven by jupyter_client, as a notebook drives it."""

from __future__ import annotations

import queue
import time

import pytest

jupyter_client = pytest.importorskip("jupyter_client.manager")

# far too much work to finish, streamed (no intermediate result for DuckDB to spill to disk;
# a bare cross-join count DuckDB answers without doing it)
CROSS_JOIN = (
    "%%cortex --timeout 60\nSELECT COUNT(*) AS n FROM firewall.traffic a, firewall.traffic b, "
    "firewall.traffic c WHERE hash(a.bytes_total + b.bytes_total + c.bytes_total) = 0"
)


@pytest.fixture(scope="module")
def kernel():
    km, kc = jupyter_client.start_new_kernel(kernel_name="python3")
    try:
        outputs = run(kc, "%load_ext cortex_nb\n%cortex connect sandbox --rows 2000", timeout=120)
        assert not errors(outputs), errors(outputs)
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def collect(kc, msg_id: str, timeout: float, linger: float = 0.0) -> list[dict]:
    """The iopub messages of request ``msg_id`` until it is idle, then ``linger`` seconds more
    of anything (output printed late by background threads)."""
    outputs, deadline, idle_at = [], time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if idle_at is not None and time.monotonic() > idle_at + linger:
            break
        try:
            msg = kc.get_iopub_msg(timeout=0.2)
        except queue.Empty:
            continue
        if idle_at is None and msg["parent_header"].get("msg_id") != msg_id:
            continue
        outputs.append(msg)
        content = msg["content"]
        if msg["msg_type"] == "status" and content.get("execution_state") == "idle":
            idle_at = idle_at or time.monotonic()
    else:
        raise AssertionError(f"no idle within {timeout} s")
    return outputs


def run(kc, code: str, timeout: float = 60) -> list[dict]:
    return collect(kc, kc.execute(code), timeout)


def errors(outputs: list[dict]) -> list[dict]:
    return [m["content"] for m in outputs if m["msg_type"] == "error"]


def texts(outputs: list[dict], kinds: tuple[str, ...]) -> list[str]:
    return [
        m["content"]["data"].get("text/plain", "")
        for m in outputs if m["msg_type"] in kinds and "data" in m["content"]
    ]


def test_an_interrupted_cell_ends_as_cancelled_and_prints_nothing_else(kernel):
    km, kc = kernel
    msg_id = kc.execute(CROSS_JOIN)
    seen: list[dict] = []
    deadline = time.monotonic() + 30
    while not any("running" in t for t in texts(seen, ("display_data", "update_display_data"))):
        assert time.monotonic() < deadline, "the query never showed it was running"
        try:
            msg = kc.get_iopub_msg(timeout=0.5)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            seen.append(msg)
    km.interrupt_kernel()  # what Kernel > Interrupt sends
    outputs = seen + collect(kc, msg_id, timeout=30, linger=3.0)
    [error] = errors(outputs)
    shown = "\n".join(error["traceback"])
    assert "cancelled on the server" in shown and len(error["traceback"]) == 1
    progress = texts(outputs, ("display_data", "update_display_data"))
    assert progress[-1].startswith("cancelled"), progress[-3:]
    streams = [m["content"]["text"] for m in outputs if m["msg_type"] == "stream"]
    assert streams == [], streams  # no traceback from the sandbox, nothing else at all
    # the kernel is alive and the connection still works
    after = run(kc, "%cortex SELECT 1 AS n")
    assert not errors(after)
    assert texts(after, ("update_display_data",))[-1].startswith("done")
    assert texts(after, ("execute_result",)) == ["   n\n0  1"]
