"""The Evaluate and Runs tabs in real Chromium while a run trains and after it is stopped (issue 10, items 4 and
8): the run list and status line follow status.json without ↻ Refresh, the stopped run is evaluable, and the
row-by-row table reads well on a laptop screen (references filled in, answers and scores inside the window, a
clicked row shown in full). The page after evaluation is saved as artifacts/screenshots/evaluate-table.png.
"""

from __future__ import annotations

import re

import pytest
from browser import App, launch_browser, shot
from page import data_rows, dataframe, load, no_traceback, open_tab
from test_run_views import sft_config, wait_for_metrics, write_data

from finetuner.runs import launch, request_stop, wait

VIEWPORT = {"width": 1280, "height": 800}

# The right edge of a Dataframe's header cell named `name`, and the page's visible width.
HEADER_RIGHT_JS = """([label, name]) => {
  const tables = [...document.querySelectorAll('.table-container')].filter(t => t.offsetParent !== null &&
      (t.querySelector('div.label') || {}).textContent?.includes(label));
  if (!tables.length) return null;
  const th = [...tables[0].querySelectorAll('[role=columnheader]')].find(h => h.textContent.trim().startsWith(name));  // the text ends with the column menu's mark
  return th ? {right: th.getBoundingClientRect().right, width: document.documentElement.clientWidth} : null;
}"""


@pytest.mark.browser
@pytest.mark.slow
def test_evaluate_follows_a_stopped_run_and_its_table_fits(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    data = write_data(tmp_path / "emails.jsonl")
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    app = App(runs_dir)
    app.start()
    try:
        run = launch(sft_config("stopme", data, 20000), runs_dir)
        wait_for_metrics(run)
        with sync_playwright() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport=VIEWPORT)
            load(page, app.url)
            # Opened while it trains: the run is listed as running, with no adapter to compare yet.
            tab = open_tab(page, "6. Evaluate & chat")
            picker = tab.get_by_role("combobox", name="Run")
            expect(picker).to_have_value(f"{run.id} · running", timeout=30_000)
            expect(tab.get_by_text("is running and has no trained adapter yet")).to_be_visible()
            request_stop(run)
            assert wait(run, timeout=300)["state"] == "stopped", run.log_path.read_text()[-3000:]
            step = run.read_status()["run_step"]
            # The tab's own timer notices the stop: no refresh, no tab switch.
            expect(picker).to_have_value(f"{run.id} · stopped", timeout=30_000)
            expect(tab.get_by_text(f"After SFT (stopped at step {step})")).to_be_visible()
            # The Runs tab, first opened now (its contents render only then): read from the folder, not the load.
            runs = open_tab(page, "Runs")
            row = data_rows(page, dataframe(page, runs, "Runs (click a row"), run.id)
            expect(row).to_contain_text("stopped")
            expect(row.get_by_role("gridcell").nth(4)).to_have_text(str(step))
            # Back to Evaluate: the slider follows the run's 3 held-out rows; the stopped run evaluates.
            tab = open_tab(page, "6. Evaluate & chat")
            expect(tab.get_by_role("spinbutton", name="number input for Held-out rows")).to_have_value("3")
            tab.get_by_role("spinbutton", name="Max new tokens").first.fill("8")
            tab.get_by_role("button", name="Evaluate", exact=True).click()
            expect(tab.get_by_text(re.compile(r"Evaluated .* on 3 held-out rows"))).to_be_visible(timeout=180_000)
            table = dataframe(page, tab, "Held-out rows")
            rows = data_rows(page, table)
            expect(rows).to_have_count(3)
            headers = [h.strip() for h in table.get_by_role("columnheader").all_inner_texts()]
            ref = headers.index("reference")
            for i in range(3):
                assert rows.nth(i).get_by_role("gridcell").nth(ref).inner_text().strip().startswith("Answer: ")
            page.wait_for_timeout(500)  # let the table settle its column widths before measuring
            for label, column in (("Held-out rows", "B total"), ("Mean score per grader", "chars")):
                box = page.evaluate(HEADER_RIGHT_JS, [label, column])
                assert box and box["right"] <= box["width"], (label, column, box)
            rows.nth(1).get_by_role("gridcell").nth(headers.index("prompt")).click()
            expect(tab.get_by_role("heading", name=re.compile(r"^Held-out row \d"))).to_be_visible()
            expect(tab.get_by_text("cracked lid").last).to_be_visible()
            no_traceback(page)
            shot(page, "evaluate-table")
            browser.close()
    finally:
        app.stop()
