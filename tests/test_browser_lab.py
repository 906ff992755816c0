"""The Lab (issue 15) in real Chromium: the Lab tab, the small preset (SFT, RFT, SFT then RFT on 25 arithmetic
rows, 3 s each), Start; while it runs its arms wait in the queue on the Runs tab; when it ends the tab shows
every arm finished with its score, the results table, the reading of the article's claims, the charts and the
report, and every arm is an ordinary run on the Runs tab. Screenshots: artifacts/screenshots/NN-lab-*.png."""

from __future__ import annotations

import re

import pytest

from browser import App, launch_browser
from page import data_rows, dataframe, load, open_tab, screenshot


@pytest.mark.browser
@pytest.mark.slow
def test_lab_journey(tmp_path, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    runs_dir = tmp_path / "runs"
    app = App(runs_dir)
    try:
        with sync_playwright() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)
            app.start(timeout=180)
            load(page, app.url)

            tab = open_tab(page, "Lab")
            expect(tab.get_by_role("combobox", name="Preset")).to_have_value("small")
            expect(tab.get_by_role("textbox", name="Data sizes (rows)")).to_have_value("25")
            screenshot(page, 1, "lab-form")
            tab.get_by_role("button", name="Start the Lab").click()
            expect(tab.get_by_text(re.compile(r"Lab small-[\d-]+ started: 3 arms"))).to_be_visible()

            # While the first arm trains the others wait their turn in the queue, shown on the Runs tab.
            runs = open_tab(page, "Runs")
            queue = dataframe(page, runs, "Waiting runs")
            expect(data_rows(page, queue, re.compile(r"lab-small-[\w-]+-sft-rft-n25-s0")).first).to_be_visible(
                timeout=120_000)
            screenshot(page, 2, "lab-queue")

            tab = open_tab(page, "Lab")
            progress = tab.get_by_text(re.compile(r"Lab small-[\d-]+: (finished|failed|stopped)"))
            expect(progress).to_be_visible(timeout=900_000)
            expect(tab.get_by_text(re.compile(r"Lab small-[\d-]+: finished, 3 of 3 arms done"))).to_be_visible()
            arms = dataframe(page, tab, "Arms (each an ordinary run)")
            expect(data_rows(page, arms, "finished")).to_have_count(3)
            results = dataframe(page, tab, "Results per data size and method")
            expect(data_rows(page, results)).to_have_count(3)
            for method in ("SFT", "RFT", "SFT then RFT"):
                expect(data_rows(page, results, method).first).to_be_visible()
            expect(tab.get_by_text("What the numbers say")).to_be_visible()
            expect(tab.get_by_text(re.compile(r"RFT costs 100-700x more per example"))).to_be_visible()
            expect(tab.locator("img[src*='.png']").first).to_be_visible()  # the report's charts
            expect(tab.locator("a[href*='report.html']").first).to_be_visible()  # the report's download link
            screenshot(page, 3, "lab-result")

            runs = open_tab(page, "Runs")
            table = dataframe(page, runs, "Runs")
            expect(data_rows(page, table, "lab-small")).to_have_count(3)
            expect(data_rows(page, table, "finished")).to_have_count(3)
            browser.close()
    finally:
        app.stop()
