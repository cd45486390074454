"""The %cortex / %%cortex magics in a real InteractiveShell, against the sandbox over HTTP."""

from __future__ import annotations

import _thread
import subprocess
import sys
import threading

import pandas as pd
import pytest
from IPython.utils.capture import capture_output

from cortex_nb.notebook.connection import get_connection as get_session

from .support import failed_with
from .support import run_cell as run


def test_sql_cell_returns_a_frame_into_var_and_underscore(connected):
    result, _ = run(connected, "%%cortex -o talkers\nSELECT source_ip.value AS src, COUNT(*) AS n "
                    "FROM `firewall.traffic` GROUP BY src ORDER BY n DESC LIMIT 5")
    assert result.success
    df = connected.user_ns["talkers"]
    assert isinstance(df, pd.DataFrame) and list(df.columns) == ["src", "n"] and len(df) == 5
    assert connected.user_ns["_"] is df
    assert df["n"].is_monotonic_decreasing


def test_table_names_are_completed_with_the_instance_id(connected, sandbox):
    run(connected, "%%cortex\nSELECT COUNT(*) AS n FROM firewall.traffic")
    create = next(r for r in sandbox.requests if r.method == "POST" and r.path == "/query/v2/jobs")
    assert f"`{sandbox.instance_id}.firewall.traffic`" in create.json["params"]["query"]


def test_parameters_arrive_as_literals_even_when_hostile(connected):
    connected.user_ns["app"] = 'x" OR 1=1 --'
    result, _ = run(connected, "%%cortex -o hostile\nSELECT COUNT(*) AS n FROM firewall.traffic WHERE app = {app}")
    assert result.success and int(connected.user_ns["hostile"]["n"][0]) == 0
    run(connected, "%%cortex -o apps\nSELECT app, COUNT(*) AS n FROM firewall.traffic GROUP BY app ORDER BY n DESC")
    top = connected.user_ns["apps"].iloc[0]
    connected.user_ns["app"] = top["app"]
    run(connected, "%%cortex -o one\nSELECT COUNT(*) AS n FROM firewall.traffic WHERE app = {app}")
    assert int(connected.user_ns["one"]["n"][0]) == int(top["n"])


def test_unknown_parameter_fails_the_cell_with_one_line(connected):
    result, cap = run(connected, "%%cortex\nSELECT * FROM firewall.traffic WHERE app = {nope_not_defined}")
    assert "nope_not_defined" in failed_with(result, cap)


def test_limit_and_page_size(connected, sandbox):
    result, _ = run(connected, "%%cortex -o few --limit 30 --page-size 10\nSELECT * FROM firewall.traffic")
    assert result.success and len(connected.user_ns["few"]) == 30
    sizes = {r.query.get("pageSize") for r in sandbox.requests if r.path.startswith("/query/v2/jobResults")}
    assert sizes == {"10"}


def test_config_option_sets_the_default_page_size(connected, sandbox):
    connected.run_line_magic("config", "CortexMagics.page_size = 250")
    run(connected, "%%cortex\nSELECT * FROM firewall.traffic LIMIT 600")
    sizes = {r.query.get("pageSize") for r in sandbox.requests if r.path.startswith("/query/v2/jobResults")}
    assert sizes == {"250"}


def test_dry_run_sends_nothing(connected, sandbox):
    connected.user_ns["port"] = 443
    result, cap = run(connected, "%%cortex --dry-run\nSELECT * FROM firewall.traffic WHERE dest_port = {port}")
    assert result.success and sandbox.requests == []
    assert "POST" in cap.stdout and "dest_port = 443" in cap.stdout and "$TOKEN" in cap.stdout


def test_raw_returns_rows_as_received(connected):
    result, _ = run(connected, "%%cortex --raw -o rows\nSELECT source_ip FROM firewall.traffic LIMIT 3")
    rows = connected.user_ns["rows"]
    assert result.success and len(rows) == 3 and set(rows[0]["source_ip"]) == {"value", "hex"}


def test_rest_mode_get_list_becomes_a_frame(connected):
    run(connected, "%%cortex\nSELECT 1 AS one FROM firewall.traffic LIMIT 1")
    result, _ = run(connected, "%%cortex -o jobs\nGET /query/v2/jobs")
    jobs = connected.user_ns["jobs"]
    assert result.success and isinstance(jobs, pd.DataFrame) and "jobId" in jobs.columns
    result, _ = run(connected, "%cortex GET /query/v2/jobs?maxJobs=1 -o one")
    assert result.success and len(connected.user_ns["one"]) == 1


def test_rest_mode_post_with_json_body(connected, sandbox):
    body = '{"params": {"query": "SELECT COUNT(*) FROM `sandbox0.firewall.url`"}}'
    result, _ = run(connected, "%%cortex POST /query/v2/jobs -o created\n" + body)
    assert result.success and "jobId" in connected.user_ns["created"].data
    bad, cap = run(connected, "%%cortex POST /query/v2/jobs\n{not json")
    assert "not valid JSON" in failed_with(bad, cap)


def test_traces_show_inline_and_hold_no_secret(connected):
    result, cap = run(connected, "%%cortex --trace\nSELECT * FROM firewall.traffic LIMIT 3")
    html = "".join(o.data.get("text/html", "") for o in cap.outputs)
    assert result.success and "<details" in html and "jobResults" in html
    creds = get_session().credentials
    history = connected.run_line_magic("cortex", "history")
    everything = html + history.to_string() + "".join(str(t) + t.to_curl() for t in get_session().traces)
    for secret in creds.secrets():
        assert secret not in everything
    assert "$TOKEN" in html


def test_trace_and_history_line_magics(connected):
    run(connected, "%%cortex\nSELECT 1 AS x FROM firewall.traffic LIMIT 1")
    with capture_output() as cap:
        connected.run_line_magic("cortex", "trace 2")
    assert sum(o.data.get("text/html", "").count("<details") for o in cap.outputs) == 2
    history = connected.run_line_magic("cortex", "history")
    assert {"method", "url", "status", "elapsed_ms"} <= set(history.columns)


def progress_lines(cap) -> list[str]:
    return [o.data.get("text/plain", "") for o in cap.outputs if "(job " in o.data.get("text/plain", "")]


def test_progress_ends_in_a_summary_line(connected):
    _, cap = run(connected, "%%cortex\nSELECT * FROM firewall.traffic LIMIT 40")
    lines = progress_lines(cap)
    assert lines[0].startswith("queued") and lines[0].endswith("interrupt the kernel to stop")
    assert lines[-1].startswith("done") and "40/40 rows, 1 page," in lines[-1]
    assert "job cortexnb-" in lines[-1] and "interrupt" not in lines[-1]


def test_bad_sql_fails_the_cell_with_the_service_message_first(connected):
    result, cap = run(connected, "%%cortex\nSELEKT nothing")
    message = failed_with(result, cap)
    assert "\n" not in message and not message.startswith(("HTTP", "QueryError"))
    # the service's message, then the hint, then status, URL and request id
    assert message.index("check the SQL") < message.index("HTTP 400") < message.index("request id")
    assert message.index("/query/v2/jobs") < message.index("request id")
    progress = progress_lines(cap)
    assert progress == [] or progress[-1].startswith("failed")


def test_interrupt_cancels_and_says_so(connected, sandbox):
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    try:
        result, cap = run(connected, "%%cortex\nSELECT COUNT(*) FROM firewall.traffic a, firewall.traffic b, firewall.traffic c")
    finally:
        timer.cancel()
    assert "cancelled on the server" in failed_with(result, cap)
    assert any(r.method == "DELETE" for r in sandbox.requests)
    assert progress_lines(cap)[-1].startswith("cancelled")  # the line does not stay at running


def test_not_connected_is_a_clear_line(ip):
    get_session().disconnect()
    result, cap = run(ip, "%%cortex\nSELECT 1")
    assert "connect sandbox" in failed_with(result, cap)


def test_connect_sandbox_line_magic_starts_and_connects(ip):
    session = get_session()
    try:
        with capture_output() as cap:
            ip.run_line_magic("cortex", "connect sandbox --rows 200")
        assert "Connected to http://127.0.0.1:" in cap.stdout
        result, _ = run(ip, "%%cortex -o n\nSELECT COUNT(*) AS n FROM firewall.traffic")
        assert result.success and int(ip.user_ns["n"]["n"][0]) == 200
    finally:
        session.disconnect()
        session.stop_sandbox()


def test_load_ext_is_quick_and_light():
    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.instance().run_line_magic('load_ext', 'cortex_nb')\n"
        "print(sorted(m for m in ('pandas', 'ipywidgets', 'duckdb') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_connect_from_pan_environment(ip, sandbox, monkeypatch):
    creds = sandbox.credentials()
    monkeypatch.setenv("PAN_CLIENT_ID", creds["client_id"])
    monkeypatch.setenv("PAN_CLIENT_SECRET", creds["client_secret"])
    monkeypatch.setenv("PAN_REFRESH_TOKEN", creds["refresh_token"])
    monkeypatch.setenv("PAN_TOKEN_URL", creds["token_url"])
    try:
        with capture_output() as cap:
            ip.run_line_magic("cortex", f"connect --url {sandbox.url} --instance {sandbox.instance_id}")
        assert f"Connected to {sandbox.url} as {creds['client_id']}" in cap.stdout
        assert creds["client_secret"] not in cap.stdout
        result, _ = run(ip, "%%cortex\nSELECT COUNT(*) AS n FROM firewall.url")
        assert result.success
    finally:
        get_session().disconnect()


def test_connect_with_a_stored_sandbox_profile(ip, tmp_path, monkeypatch):
    from cortex_nb.http import profiles

    monkeypatch.setenv("CORTEX_NB_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("CORTEX_NB_KEYRING", "0")
    session = get_session()
    sandbox = session.start_sandbox(rows=150)
    try:
        demo = sandbox.credentials()
        with pytest.warns(profiles.SecretsInFileWarning):
            profiles.save_profile(
                "lab", region="sandbox", client_id=demo["client_id"],
                client_secret=demo["client_secret"], refresh_token=demo["refresh_token"],
            )
        with capture_output() as cap:
            ip.run_line_magic("cortex", "connect --profile lab")
        assert f"Connected to {sandbox.url}" in cap.stdout
        result, _ = run(ip, "%%cortex -o n\nSELECT COUNT(*) AS n FROM firewall.traffic")
        assert result.success and int(ip.user_ns["n"]["n"][0]) == 150
        missing, cap = run(ip, "%cortex connect --profile nope")
        assert "nope" in failed_with(missing, cap)
    finally:
        session.disconnect()
        session.stop_sandbox()


def test_a_failing_cell_is_an_error_output_that_notebook_runners_see(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    book = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    book.cells = [
        nbformat.v4.new_code_cell("%load_ext cortex_nb"),
        nbformat.v4.new_code_cell("%%cortex\nSELECT 1"),
    ]
    client = nbclient.NotebookClient(book, timeout=60, allow_errors=True)
    client.execute()
    errors = [o for o in book.cells[1].outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "CortexCellError"
    assert len(errors[0].traceback) == 1 and "Not connected" in errors[0].traceback[0]
    assert "Traceback" not in "".join(errors[0].traceback)


def test_rest_trace_shows_even_when_the_history_is_full(connected):
    traces = get_session().traces
    full = traces._traces
    traces._traces = type(full)(full, maxlen=3)
    try:
        for _ in range(4):
            run(connected, "%cortex GET /query/v2/jobs?maxJobs=1")
        _, cap = run(connected, "%%cortex --trace\nGET /query/v2/jobs?maxJobs=1")
    finally:
        traces._traces = full
    html = "".join(o.data.get("text/html", "") for o in cap.outputs)
    assert html.count("<details") == 1 and "maxJobs=1" in html


# -- the first hour: documented forms, quiet cells, clear displays ---------------------------------
def test_sql_on_the_line_as_other_sql_magics_take_it(connected):
    df = connected.run_line_magic("cortex", "SELECT 'a b' AS s, 2 AS n")
    assert df.to_dict("records") == [{"s": "a b", "n": 2}]  # quotes arrive untouched
    result, _ = run(connected, "%cortex -o few select app FROM firewall.traffic LIMIT 3")
    assert result.success and len(connected.user_ns["few"]) == 3


def test_rest_cell_with_no_body_runs_as_documented(connected):
    result, _ = run(connected, "%%cortex GET /query/v2/jobs\n")
    assert result.success, result.error_in_exec
    assert isinstance(result.result, pd.DataFrame)


def test_output_var_still_displays_unless_quiet(connected):
    shown, _ = run(connected, "%%cortex -o a\nSELECT 1 AS n")
    assert isinstance(shown.result, pd.DataFrame)
    for cell in ("%%cortex -o b --quiet\nSELECT 2 AS n", "%%cortex -o c\nSELECT 3 AS n;"):
        quiet, cap = run(connected, cell)
        assert quiet.success and quiet.result is None, cell
        assert not any("text/html" in o.data for o in cap.outputs)
    assert int(connected.user_ns["b"].iloc[0, 0]) == 2 and int(connected.user_ns["c"].iloc[0, 0]) == 3


def test_history_shows_empty_notes_and_short_ids(connected):
    run(connected, "%%cortex\nSELECT 1 AS n")
    history = connected.run_line_magic("cortex", "history")
    assert not history["note"].isna().any()
    job_url = next(u for u in history["url"] if "cortexnb-" in u)
    assert job_url in history["url"].tolist()  # the data stay whole
    shown = history._repr_html_() + repr(history)
    assert job_url not in shown and "…" in shown  # the display shortens the ids


def test_rest_job_times_are_utc_datetimes(connected):
    run(connected, "%%cortex\nSELECT 1 AS n")
    jobs = connected.run_line_magic("cortex", "GET /query/v2/jobs")
    assert isinstance(jobs["submitTime"].dtype, pd.DatetimeTZDtype)
    assert str(jobs["submitTime"].dt.tz) == "UTC"
    assert jobs["submitTime"].iloc[0].year >= 2024


def test_connect_sandbox_again_with_other_options_restarts_it(ip):
    import socket

    session = get_session()
    try:
        ip.run_line_magic("cortex", "connect sandbox --rows 150")
        first = session.sandbox
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free_port = probe.getsockname()[1]
        with capture_output() as cap:
            ip.run_line_magic("cortex", f"connect sandbox --rows 200 --port {free_port}")
        assert "Restarted the sandbox" in cap.stdout and "rows 150 -> 200" in cap.stdout
        assert session.sandbox is not first and session.sandbox.rows == 200
        assert session.sandbox.port == free_port and session.client.url.endswith(f":{free_port}")
        with capture_output() as cap:  # the same options again: kept, nothing said
            ip.run_line_magic("cortex", "connect sandbox --rows 200")
        assert "Restarted" not in cap.stdout and session.sandbox.port == free_port
    finally:
        session.disconnect()
        session.stop_sandbox()
