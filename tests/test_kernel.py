"""Notebook behaviour in a real IPython kernel driven by jupyter_client, as a notebook drives it."""

from __future__ import annotations

import time

import pytest

from tests.support import PROGRESS, errors, texts

pytest.importorskip("jupyter_client.manager")

# far too much work to finish, streamed (no intermediate result for DuckDB to spill to disk;
# a bare cross-join count DuckDB answers without doing it)
CROSS_JOIN = (
    "%%cortex --timeout 60\nSELECT COUNT(*) AS n FROM firewall.traffic a, firewall.traffic b, "
    "firewall.traffic c WHERE hash(a.bytes_total + b.bytes_total + c.bytes_total) = 0"
)


def test_an_interrupted_cell_ends_as_cancelled_and_prints_nothing_else(kernel_with_sandbox):
    kernel = kernel_with_sandbox
    msg_id = kernel.kc.execute(CROSS_JOIN)
    deadline = time.monotonic() + 30
    while not any("running" in t for t in texts(kernel.own(msg_id), PROGRESS)):
        assert time.monotonic() < deadline, "the query never showed it was running"
        kernel.read(0.5)
    kernel.km.interrupt_kernel()  # what Kernel > Interrupt sends
    outputs = kernel.finished(msg_id, timeout=30, linger=3.0)
    [error] = errors(outputs)
    shown = "\n".join(error["traceback"])
    assert "cancelled on the server" in shown and len(error["traceback"]) == 1
    progress = texts(outputs, PROGRESS)
    assert progress[-1].startswith("cancelled"), progress[-3:]
    streams = [m["content"]["text"] for m in outputs if m["msg_type"] == "stream"]
    assert streams == [], streams  # no traceback from the sandbox, nothing else at all
    # the kernel is alive and the connection still works
    after = kernel.execute("%cortex SELECT 1 AS n")
    assert not errors(after)
    assert texts(after, ("update_display_data",))[-1].startswith("done")
    assert texts(after, ("execute_result",)) == ["   n\n0  1"]
