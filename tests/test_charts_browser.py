"""Charts in a real browser: JupyterLab 4 + headless Chromium through Playwright.

A ``%%cortex --plot timeline`` cell is run against an in-process sandbox and JupyterLab draws
the chart with the Vega it bundles (no network): the test sees an SVG with bars, zooms the
time axis with the mouse wheel and sees the axis change. A second notebook holds only a saved
chart output and runs nothing: the chart is drawn from the file, as for a notebook opened
without running it. Screenshots are written under the test's tmp_path. Skipped, as
test_browser.py is, without Chromium, Playwright or JupyterLab.
"""

from __future__ import annotations

import pandas as pd

from cortex_nb.results.charts import plot
from tests import test_browser as browser

lab = browser.lab  # the same JupyterLab fixture, started once for this module
sync_api, nbformat = browser.sync_api, browser.nbformat
CELL = "%%cortex --plot timeline --by app --top 5 -o rows\nSELECT time_generated, app FROM firewall.traffic"


def _chart(page, index: int):
    """Cell ``index``'s drawn chart (Vega's SVG root), once it has bars."""
    output = page.locator(".jp-Cell").nth(index).locator(".jp-OutputArea-output")
    svg = output.locator(".vega-embed svg.marks")
    sync_api.expect(svg).to_be_visible(timeout=browser.WAIT_MS)
    return svg


def _axis_labels(svg) -> list[str]:
    return svg.locator(".role-axis-label text").all_text_contents()


def test_a_plot_cell_draws_a_zoomable_timeline(lab, tmp_path):
    lab_url, token, work = lab
    browser._write_notebook(work / "chart.ipynb",
                            "%load_ext cortex_nb\n%cortex connect sandbox --rows 2000", CELL)
    with browser._browser_page(tmp_path, 900) as page:
        browser._open_notebook(page, lab_url, token, "chart.ipynb")
        browser._run_cell(page, 0, 1)
        browser._run_cell(page, 1, 2)
        svg = _chart(page, 1)
        bars = svg.locator(".mark-rect path")
        assert bars.count() > 20  # a bar per bucket and app
        legend = svg.locator(".role-legend-label text").all_text_contents()
        assert len(legend) == 6 and legend[-1] == "(other)", legend
        bars.nth(3).hover()  # a bar's tooltip: its time window, series and count
        tooltip = page.locator("#vg-tooltip-element")
        sync_api.expect(tooltip).to_contain_text(" UTC", timeout=browser.WAIT_MS)
        sync_api.expect(tooltip).to_contain_text("app")
        page.screenshot(path=str(tmp_path / "timeline.png"), full_page=True)
        before = _axis_labels(svg)
        svg.hover()
        page.mouse.wheel(0, -600)  # zoom in on the time axis
        sync_api.expect(svg.locator(".role-axis-label text").first).not_to_have_text(
            before[0], timeout=browser.WAIT_MS)
        page.screenshot(path=str(tmp_path / "timeline-zoomed.png"), full_page=True)
    assert (tmp_path / "timeline.png").stat().st_size > 10_000


def test_a_saved_chart_draws_without_running_anything(lab, tmp_path):
    lab_url, token, work = lab
    times = pd.date_range("2026-12-01", periods=300, freq="17min", tz="UTC")
    df = pd.DataFrame({"time_generated": times, "app": ["dns", "web", "ssl"] * 100})
    chart = plot(df, "timeline", by="app", bucket="6h")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    cell = nbformat.v4.new_code_cell("%%cortex --plot timeline --by app --bucket 6h\n...")
    data, metadata = chart._repr_mimebundle_()
    cell.outputs = [nbformat.v4.new_output("display_data", data=data, metadata=metadata)]
    nb.cells = [cell]
    nbformat.write(nb, work / "saved.ipynb")
    with browser._browser_page(tmp_path, 700) as page:
        browser._open_notebook(page, lab_url, token, "saved.ipynb")
        svg = _chart(page, 0)
        assert svg.locator(".mark-rect path").count() == len(chart.spec["data"]["values"])
        page.screenshot(path=str(tmp_path / "saved.png"), full_page=True)
    assert (tmp_path / "saved.png").stat().st_size > 10_000
