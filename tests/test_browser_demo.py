"""The "Try the demo" button in real Chromium: one click launches the demo, the Monitor opens on it and draws
the held-out score rising, and the run ends on a base / after SFT / after RFT table in the page. A second click
while it trains says so and starts nothing. Screenshots: artifacts/screenshots/demo-*.png."""

from __future__ import annotations

import time

import pytest

from browser import App, launch_browser, shot
from page import dataframe, load, no_traceback, plot_points, wait_plot

HELDOUT = "Held-out score"


@pytest.mark.browser
@pytest.mark.slow
def test_one_click_demo_reaches_the_heldout_curve_and_table(tmp_path, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    from finetuner.runs import FINAL_STATES, force_stop, list_runs, open_run

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app = App(tmp_path / "runs")
    try:
        with sync_playwright() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            expect.set_options(timeout=30_000)
            app.start()
            load(page, app.url)

            page.locator("#try-demo").click()
            expect(page.get_by_role("tab", name="5. Monitor")).to_have_attribute("aria-selected", "true")
            # The base model and the first SFT scorings: three curves (correct, format, weighted reward).
            wait_plot(page, HELDOUT, at_least=3, traces=3, timeout=240)
            table = dataframe(page, page, "Held-out score: base / after SFT")
            expect(table).to_be_visible()
            expect(table.get_by_role("columnheader", name="base model")).to_be_visible()
            no_traceback(page)
            shot(page, "demo-monitor-live")

            runs = list_runs(app.runs_dir)
            assert len(runs) == 1 and runs[0]["state"] in ("queued", "running")
            page.locator("#try-demo").click()  # while the demo trains: the same demo is shown, no copy queued
            expect(page.locator(".toast-body").filter(has_text="The arithmetic demo is already")).to_be_visible()
            assert [r["id"] for r in list_runs(app.runs_dir)] == [runs[0]["id"]]

            run = open_run(app.runs_dir, runs[0]["id"])
            deadline = time.time() + 900
            while run.read_status().get("state") not in FINAL_STATES and time.time() < deadline:
                page.wait_for_timeout(1000)
            assert run.read_status()["state"] == "finished", run.read_status().get("error")
            expect(table.get_by_role("columnheader", name="after RFT")).to_be_visible(timeout=30_000)
            expect(table.get_by_role("gridcell", name="510")).to_be_visible()  # "at step": SFT's 210 + RFT's 300
            header = table.get_by_role("columnheader").all_inner_texts()
            assert [h.strip() for h in header][:4] == ["score", "base model", "after SFT", "after RFT"], header
            assert plot_points(page, HELDOUT)["points"] >= 20  # every 20 steps across both stages
            shot(page, "demo-monitor-finished")
            browser.close()
    finally:
        for r in list_runs(app.runs_dir):
            if r.get("state") not in FINAL_STATES:
                force_stop(open_run(app.runs_dir, r["id"]))
        app.stop()
