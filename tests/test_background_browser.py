"""A background cell in a real browser: JupyterLab 4 + headless Chromium through Playwright.

The notebook starts an in-process sandbox, runs a ``%%cortex --bg`` query that takes seconds,
runs another cell meanwhile, and the test watches the background cell's status line change in
place (queued, running, elapsed time) until it reads ``done``. A screenshot is written under
the test's tmp_path. Skipped, as test_browser.py is, without Chromium, Playwright or JupyterLab.
"""

from __future__ import annotations

import re
import time

from tests import test_browser as browser
from tests.test_background import slow_sql

lab = browser.lab  # the same JupyterLab fixture, started once for this module
sync_api, nbformat = browser.sync_api, browser.nbformat
LIVE = re.compile(r"^(queued|running)")


def _write_notebook(path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext cortex_nb\n%cortex connect sandbox --rows 2000"),
        nbformat.v4.new_code_cell(f"%%cortex --bg -o slow --timeout 120\n{slow_sql(None, 500)}"),
        nbformat.v4.new_code_cell("print(6 * 7)"),
    ]
    nbformat.write(nb, path)


def _output(page, index: int):
    return page.locator(".jp-Cell").nth(index).locator(".jp-OutputArea-output")


def _watch(status, until: str, timeout: float = 90) -> list[str]:
    """The texts ``status`` showed, read every 0.2 s until one starts with ``until``."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not (seen and seen[-1].startswith(until)):
        assert time.monotonic() < deadline, f"no {until!r} within {timeout} s: {seen[-3:]}"
        text = status.inner_text().strip()
        if not seen or text != seen[-1]:
            seen.append(text)
        time.sleep(0.2)
    return seen


def test_a_background_cell_s_status_updates_in_place_while_another_cell_runs(lab, tmp_path):
    lab_url, token, work = lab
    _write_notebook(work / "background.ipynb")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=browser.CHROMIUM, args=browser.CHROMIUM_ARGS)
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(f"{lab_url}/lab/tree/background.ipynb?reset&token={token}")
            sync_api.expect(page.locator("#jp-main-statusbar")).to_contain_text(
                "Python 3 (ipykernel) | Idle", timeout=browser.WAIT_MS)
            browser._run_cell(page, 0, 1)
            browser._run_cell(page, 1, 2)  # returns at once: the query goes on in the background
            status = _output(page, 1)
            sync_api.expect(status).to_have_text(LIVE, timeout=browser.WAIT_MS)
            browser._run_cell(page, 2, 3)
            sync_api.expect(_output(page, 2)).to_have_text("42")
            sync_api.expect(status).to_have_text(LIVE)  # still running after the other cell ran
            seen = _watch(status, "done")
            page.screenshot(path=str(tmp_path / "background.png"), full_page=True)
        except AssertionError as failure:
            diagnosis = browser._diagnosis(page, tmp_path / "failed.png")
            raise AssertionError(f"{failure}\n{diagnosis}") from None
        finally:
            chromium.close()
    live = [text for text in seen if LIVE.match(text)]
    assert len(live) >= 2, seen  # the same output, rewritten while the job ran
    assert seen[-1].startswith("done → slow: 1 row (1 in job)")
    assert (tmp_path / "background.png").stat().st_size > 10_000
