"""The notebook in a real browser: JupyterLab 4 + headless Chromium through Playwright.

The test starts the sandbox as its own process (``cortex-nb sandbox --port 0``) and reads the URL,
instance id and demo credentials from its banner; starts JupyterLab on 127.0.0.1 in a temporary
root; opens a notebook that loads the extension and shows the panel; types the sandbox's address
and credentials into the panel as a person would (Custom URL), clicks Connect, waits for the
connected status, runs a ``%%cortex`` cell and sees the DataFrame's HTML table. It then saves the
notebook with widget state and checks that no secret reached the file. A screenshot is written
under the test's tmp_path. A second test presses Tab at the end of ``FROM firewall.t`` in a
``%%cortex`` cell and sees the kernel's table names in JupyterLab's completer.

Skipped, with the reason, without ``/usr/bin/chromium``, Playwright or JupyterLab.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
SQL = "SELECT action, app, bytes_sent FROM `firewall.traffic` ORDER BY bytes_sent DESC LIMIT 5"
WAIT_MS = 60_000

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytest.importorskip("jupyterlab", reason="jupyterlab is not installed")
nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed")


# -- processes this module starts (and stops, by their own process group) ------------------------
def _start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    handle = open(log, "w")  # noqa: SIM115 - the child keeps writing after this returns
    return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own group: the server and its kernels
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _clean_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAN_", "JUPYTER"))}
    env.update({
        "CORTEX_NB_CONFIG_DIR": str(root / "cortex_nb"),  # profiles, if any, stay in here
        "CORTEX_NB_KEYRING": "0",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _sandbox_command() -> list[str]:
    script = Path(sys.executable).with_name("cortex-nb")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from cortex_nb.cli import main; sys.exit(main())"]


def _read_banner(proc: subprocess.Popen, timeout: float = 60) -> dict[str, str]:
    """Parse the sandbox's banner: URL, instance id and the demo credentials it prints."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    banner: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while "refresh_token" not in banner:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no sandbox banner within {timeout}s: {banner}") from None
        if match := re.search(r"listening on (http://\S+)", line):
            banner["url"] = match.group(1)
        elif match := re.match(r"\s+(instance id|token url|client_id|client_secret|refresh_token):\s+(\S+)", line):
            banner[match.group(1).replace(" ", "_")] = match.group(2)
    return banner


@pytest.fixture(scope="module")
def sandbox_server(tmp_path_factory):
    """``cortex-nb sandbox --port 0`` as a process; yields what its banner says."""
    root = tmp_path_factory.mktemp("sandbox")
    proc = subprocess.Popen(
        [*_sandbox_command(), "sandbox", "--port", "0", "--rows", "2000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_clean_env(root),
        start_new_session=True,
    )
    try:
        yield _read_banner(proc)
    finally:
        _stop(proc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_settings(root: Path) -> Path:
    """User settings: no news pop-up; widget state saved with the notebook (to check it)."""
    settings = root / "settings"
    for plugin, values in {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                        "checkForUpdates": False},
        "@jupyter-widgets/jupyterlab-manager/plugin": {"saveState": True},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return settings


def _wait_for_lab(proc: subprocess.Popen, url: str, token: str, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"JupyterLab exited:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/api/status", params={"token": token}, timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"JupyterLab did not answer in 90 s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 in a temporary root; yields (base URL, token, root)."""
    root = tmp_path_factory.mktemp("lab")
    token, port = secrets.token_hex(16), _free_port()
    env = _clean_env(root)
    env.update({
        "JUPYTER_CONFIG_DIR": str(root / "config"), "JUPYTER_DATA_DIR": str(root / "data"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(_lab_settings(root)),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"),
    })
    (root / "work").mkdir()
    log = root / "lab.log"
    proc = _start([
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root / 'work'}", f"--IdentityProvider.token={token}",
        "--LabApp.expose_app_in_browser=True",
    ], log, env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_lab(proc, url, token, log)
        yield url, token, root / "work"
    finally:
        _stop(proc)


def _write_notebook(path: Path, *cells: str) -> None:
    """A notebook of these code cells, with the kernelspec (no "Select Kernel" dialog)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, path)


# -- the browser -------------------------------------------------------------------------------------
def _run_cell(page, index: int, count: int) -> None:
    """Run cell ``index`` through JupyterLab's commands; wait for its prompt to read ``[count]``."""
    page.evaluate(
        """async (i) => {
            const panel = window.jupyterapp.shell.currentWidget;
            panel.content.activeCellIndex = i;
            await window.jupyterapp.commands.execute('notebook:run-cell');
        }""",
        index,
    )
    prompt = page.locator(".jp-Cell").nth(index).locator(".jp-InputPrompt")
    sync_api.expect(prompt).to_contain_text(f"[{count}]", timeout=WAIT_MS)


def _open_notebook(page, lab_url: str, token: str, name: str = "panel.ipynb") -> None:
    page.goto(f"{lab_url}/lab/tree/{name}?reset&token={token}")
    status = page.locator("#jp-main-statusbar")
    sync_api.expect(status).to_contain_text("Python 3 (ipykernel) | Idle", timeout=WAIT_MS)


def _fill_panel(page, banner: dict[str, str]) -> None:
    panel = page.locator(".cortex-panel")
    sync_api.expect(panel).to_be_visible(timeout=WAIT_MS)
    panel.locator(".cortex-region select").select_option(label="Custom URL")
    url_input = panel.locator(".cortex-url input")
    sync_api.expect(url_input).to_be_visible()
    url_input.fill(banner["url"])
    panel.locator(".cortex-instance-id input").fill(banner["instance_id"])
    panel.locator(".cortex-client-id input").fill(banner["client_id"])
    panel.locator(".cortex-client-secret input").fill(banner["client_secret"])
    panel.locator(".cortex-refresh-token input").fill(banner["refresh_token"])


def _connect(page, banner: dict[str, str]) -> None:
    page.locator(".cortex-panel .cortex-connect").click()
    status = page.locator(".cortex-panel .cortex-status")
    expected = f"Connected to {banner['url']} as {banner['client_id']}"
    sync_api.expect(status).to_contain_text(expected, timeout=WAIT_MS)
    sync_api.expect(status).to_contain_text("token valid until")
    for field in ("client-secret", "refresh-token"):  # cleared in the browser too
        sync_api.expect(page.locator(f".cortex-{field} input")).to_have_value("")


def _expect_dataframe(page, index: int) -> None:
    table = page.locator(".jp-Cell").nth(index).locator(".jp-OutputArea-output table")
    sync_api.expect(table).to_be_visible(timeout=WAIT_MS)
    sync_api.expect(table.locator("tbody tr")).to_have_count(5)
    sync_api.expect(table.locator("thead")).to_contain_text("bytes_sent")


def _save_notebook(page) -> None:
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    sync_api.expect(page.locator(".jp-mod-dirty")).to_have_count(0, timeout=WAIT_MS)


def _diagnosis(page, shot: Path) -> str:
    """What the page showed when a step failed: the screenshot's path and the outputs' text."""
    page.screenshot(path=str(shot), full_page=True)
    outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
    return f"screenshot {shot}; outputs: {outputs!r}"


@contextlib.contextmanager
def _browser_page(tmp_path: Path, height: int) -> Iterator:
    """A Chromium page; a failed step is reported with a screenshot and the cells' outputs."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": height})
        try:
            yield page
        except AssertionError as failure:
            raise AssertionError(f"{failure}\n{_diagnosis(page, tmp_path / 'failed.png')}") from None
        finally:
            browser.close()


def test_panel_connects_and_a_cortex_cell_shows_a_dataframe(lab, sandbox_server, tmp_path):
    lab_url, token, work = lab
    _write_notebook(work / "panel.ipynb", "import cortex_nb\n%load_ext cortex_nb",
                    "%cortex panel", f"%%cortex\n{SQL}")
    with _browser_page(tmp_path, 1100) as page:
        _open_notebook(page, lab_url, token)
        _run_cell(page, 0, 1)
        _run_cell(page, 1, 2)
        _fill_panel(page, sandbox_server)
        _connect(page, sandbox_server)
        _run_cell(page, 2, 3)
        _expect_dataframe(page, 2)
        page.screenshot(path=str(tmp_path / "panel.png"), full_page=True)
        _save_notebook(page)
    assert (tmp_path / "panel.png").stat().st_size > 10_000
    saved = (work / "panel.ipynb").read_text()
    assert "application/vnd.jupyter.widget-state+json" in saved  # widget state was saved ...
    assert sandbox_server["client_id"] in saved
    for secret in ("client_secret", "refresh_token"):  # ... without a secret in it
        assert sandbox_server[secret] not in saved
    shutil.copy(work / "panel.ipynb", tmp_path / "panel.ipynb")


SANDBOX_LABEL = "Sandbox (offline, on this machine)"
# far too much work to finish, streamed (no intermediate result for DuckDB to spill to disk)
LONG_SQL = (
    "SELECT COUNT(*) AS n FROM firewall.traffic a, firewall.traffic b, firewall.traffic c "
    "WHERE hash(a.bytes_total + b.bytes_total + c.bytes_total) = 0"
)


def test_sandbox_with_no_typing_and_an_interrupted_cell_ending_cleanly(lab, tmp_path):
    lab_url, token, work = lab
    # its own notebook, so its own kernel; --timeout: should the interrupt not arrive, it ends
    _write_notebook(work / "interrupt.ipynb", "%load_ext cortex_nb\n%cortex panel",
                    f"%%cortex --timeout 40\n{LONG_SQL}")
    with _browser_page(tmp_path, 900) as page:
        _open_notebook(page, lab_url, token, "interrupt.ipynb")
        _run_cell(page, 0, 1)
        panel = page.locator(".cortex-panel")
        sync_api.expect(panel).to_be_visible(timeout=WAIT_MS)
        panel.locator(".cortex-region select").select_option(label=SANDBOX_LABEL)
        sync_api.expect(panel.locator(".cortex-message")).to_contain_text("No typing needed")
        panel.locator(".cortex-connect").click()  # nothing typed
        status = panel.locator(".cortex-status")
        sync_api.expect(status).to_contain_text("Connected to http://127.0.0.1:", timeout=WAIT_MS)
        sync_api.expect(panel.locator(".cortex-message")).to_contain_text("demo credentials")
        page.screenshot(path=str(tmp_path / "sandbox-no-typing.png"), full_page=True)
        _interrupt_a_running_cell(page)
        page.screenshot(path=str(tmp_path / "interrupted.png"), full_page=True)
    assert (tmp_path / "interrupted.png").stat().st_size > 10_000


def _interrupt_a_running_cell(page) -> None:
    """Run the long cell, interrupt the kernel once it runs; its outputs end cleanly."""
    page.evaluate(  # not awaited: the command's promise settles only when the cell ends
        """() => {
            const panel = window.jupyterapp.shell.currentWidget;
            panel.content.activeCellIndex = 1;
            window.jupyterapp.commands.execute('notebook:run-cell');
        }"""
    )
    outputs = page.locator(".jp-Cell").nth(1).locator(".jp-OutputArea")
    sync_api.expect(outputs).to_contain_text("interrupt the kernel to stop", timeout=WAIT_MS)
    page.wait_for_timeout(3000)  # the job is on its way (queued or running)
    # Kernel > Interrupt Kernel, as a person would choose it
    page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").click()
    page.locator(".lm-Menu-itemLabel", has_text="Interrupt Kernel").click()
    sync_api.expect(outputs).to_contain_text("cancelled on the server", timeout=WAIT_MS)
    sync_api.expect(outputs).to_contain_text("cancelled ")  # the progress line, not frozen
    page.wait_for_timeout(2000)  # anything printed late by the sandbox's threads shows by now
    text = outputs.inner_text()
    assert "running" not in text and "Traceback" not in text and "Error" not in text, text


def _press_tab_at_end_of_cell(page, index: int) -> None:
    editor = page.locator(".jp-Cell").nth(index).locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+End")  # the cursor after "firewall.t"
    page.keyboard.press("Tab")


def test_tab_in_a_cortex_cell_offers_table_names(lab, tmp_path):
    lab_url, token, work = lab
    _write_notebook(work / "complete.ipynb", "%load_ext cortex_nb\n%cortex connect sandbox --rows 500",
                    "%%cortex\nSELECT COUNT(*) AS n\nFROM firewall.t")
    with _browser_page(tmp_path, 900) as page:
        _open_notebook(page, lab_url, token, "complete.ipynb")
        _run_cell(page, 0, 1)
        _press_tab_at_end_of_cell(page, 1)
        completer = page.locator(".jp-Completer")
        sync_api.expect(completer).to_be_visible(timeout=WAIT_MS)
        items = completer.locator(".jp-Completer-item")
        sync_api.expect(items).to_have_count(3, timeout=WAIT_MS)
        labels = sorted(items.locator(".jp-Completer-match").all_inner_texts())
        types = items.locator(".jp-Completer-typeExtended").all_inner_texts()
        page.screenshot(path=str(tmp_path / "completion.png"), full_page=True)
    assert labels == ["firewall.threat", "firewall.traffic", "firewall.tunnel"], labels
    assert types == ["table"] * 3, types  # the kind the kernel gave travels to the list
