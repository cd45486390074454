"""Time windows in a real IPython kernel, as a notebook runs them: the cell says which times
were read as UTC, the trace shows the bounded statement that was sent, and the rows are the
window's."""

from __future__ import annotations

import html
import json
from datetime import datetime, timedelta, timezone

import pytest

from tests.support import errors

pytest.importorskip("jupyter_client.manager")


def shown(outputs: list[dict]) -> str:
    """Everything the cell showed: streams, and every representation of displayed data."""
    parts = []
    for message in outputs:
        content = message["content"]
        parts.append(content.get("text", ""))
        parts.extend(str(value) for value in content.get("data", {}).values())
    return "\n".join(parts)


def test_a_window_cell_in_a_kernel(kernel_with_sandbox):
    kernel = kernel_with_sandbox
    outputs = kernel.execute("%%cortex -o w --trace --since 24h\n"
                             "SELECT time_generated FROM firewall.traffic")
    assert not errors(outputs), errors(outputs)
    sent = html.unescape(shown(outputs))  # the trace is HTML
    assert "time_generated >= TIMESTAMP('" in sent and "time_generated < TIMESTAMP('" in sent
    check = kernel.execute("import json, pandas as pd\nprint(json.dumps([len(w), bool("
                           "(w.time_generated >= pd.Timestamp.now(tz='UTC') - "
                           "pd.Timedelta('24h5m')).all())]))")
    rows, inside = json.loads(shown([m for m in check if m["msg_type"] == "stream"]))
    assert rows > 0 and inside


def test_a_naive_time_is_read_as_utc_and_the_cell_says_so(kernel_with_sandbox):
    kernel = kernel_with_sandbox
    day = datetime.now(timezone.utc) - timedelta(days=2)  # inside the sandbox's week
    start, end = f"{day:%Y-%m-%d}T14:00", f"{day:%Y-%m-%d}T15:00+00:00"
    cell = "SELECT COUNT(*) AS n FROM firewall.traffic"
    outputs = kernel.execute(f"%%cortex -o n --between {start} {end}\n{cell}")
    assert not errors(outputs), errors(outputs)
    assert f"Time window: {start} read as UTC (no offset given)." in shown(outputs)
    outputs = kernel.execute(f"%%cortex -q -o n --between {start} {end}\n{cell}")
    assert not errors(outputs) and "read as UTC" not in shown(outputs)
