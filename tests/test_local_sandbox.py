"""Both sandboxes, in this process and in their own, are what the notebook's connection uses
(``services.LocalSandbox``), down to the identity of their data that keys the result cache."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from cortex_nb.notebook.connection import get_connection
from cortex_nb.notebook.services import LocalSandbox
from cortex_nb.results.cache import CACHE_ENV
from cortex_nb.sandbox import Sandbox
from cortex_nb.sandbox.process import SandboxProcess

ANCHOR = 1_700_000_000 // 3600 * 3600


def test_both_sandboxes_are_local_sandboxes_with_the_same_data_identity():
    with Sandbox(rows=300, seed=3, anchor=ANCHOR) as inside, \
            SandboxProcess(rows=300, seed=3, anchor=ANCHOR) as outside:
        assert isinstance(inside, LocalSandbox) and isinstance(outside, LocalSandbox)
        assert outside.data_identity == inside.data_identity
        assert str(ANCHOR) in inside.data_identity
    with Sandbox(rows=300, seed=4, anchor=ANCHOR) as other:
        assert other.data_identity != inside.data_identity


@pytest.fixture()
def shell(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "results"))
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "cortex_nb")
    yield ip
    get_connection().stop_sandbox()


def test_a_cached_cell_on_a_sandbox_process_is_a_hit_the_second_time(shell):
    shell.run_line_magic("cortex", "connect sandbox --process --rows 300")
    cell = "%%cortex --cache -o n\nSELECT COUNT(*) AS n FROM firewall.traffic"
    outputs = []
    for _ in range(2):
        with get_connection().traces.collect() as sent, capture_output() as cap:
            result = shell.run_cell(cell)
        assert result.success, result.error_in_exec
        outputs.append((cap.stdout, len(sent)))
    (_, first_requests), (second_out, second_requests) = outputs
    assert first_requests > 0 and second_requests == 0
    assert "Cached result" in second_out and int(shell.user_ns["n"]["n"][0]) == 300
