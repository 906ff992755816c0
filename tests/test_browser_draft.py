"""The draft survives a reload, in real Chromium (issue 10, item 7): upload a file and map a column on the Data
tab, add a grader, change a Train setting, RELOAD the page and find all of them back; a second browser (its own
localStorage) starts empty; an app restart keeps the draft too; "Start over" empties it and deletes the file.
With --auth the draft follows the signed-in user into a fresh browser.

The screenshot after the reload goes to artifacts/screenshots/draft-restored.png and /work/notes/shots/draft.png
when that folder exists (the issue's closing note looks at it). About 60 s on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from browser import ROOT, App, launch_browser, shot
from page import accordion, load, no_traceback, open_tab, panel, set_number

TRAIN = ROOT / "examples" / "arithmetic" / "train.jsonl"
NOTES_SHOT = Path("/work/notes/shots/draft.png")


def drafts(runs_dir: Path) -> list[dict]:
    """The projects of every draft on disk (written atomically, so never half a file)."""
    return [json.loads(p.read_text(encoding="utf-8"))["project"] for p in (runs_dir / "_drafts").glob("*.json")]


def saved(runs_dir: Path, test) -> bool:
    return any(test(p) for p in drafts(runs_dir))


def wait_saved(page, runs_dir: Path, test, what: str, tries: int = 100) -> None:
    for _ in range(tries):
        if saved(runs_dir, test):
            return
        page.wait_for_timeout(200)
    raise AssertionError(f"the draft on disk never held {what}: {drafts(runs_dir)}")


def max_steps_box(page):
    tab = open_tab(page, "4. Train")
    acc = accordion(tab, "Advanced: SFT stage")
    return tab, acc, acc.get_by_role("spinbutton", name="Max steps")


@pytest.mark.browser
@pytest.mark.slow
def test_reload_restores_the_draft_and_start_over_empties_it(tmp_path, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    runs_dir = tmp_path / "runs"
    app = App(runs_dir)
    try:
        with sync_playwright() as p:
            browser = launch_browser(p)
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(30_000)
            expect.set_options(timeout=30_000)
            app.start()
            load(page, app.url)
            expect(page.locator("#draft-note")).to_be_hidden()  # a new browser: nothing to restore

            # The draft: data with a column mapped, a grader, a Train setting.
            tab = panel(page)
            tab.locator(".block", has=page.locator("label", has_text="Training data")).locator(
                "input[type=file]").set_input_files(str(TRAIN))
            expect(tab.get_by_text("Ready: 200 rows, format prompt_completion")).to_be_visible()
            accordion(tab, "Column mapping")
            column = tab.get_by_role("combobox", name="Completion column")
            column.click()
            page.get_by_role("option", name="answer", exact=True).click()
            expect(column).to_have_value("answer")
            wait_saved(page, runs_dir, lambda d: d["config"]["data"].get("completion_column") == "answer",
                       "the column mapping")

            tab = open_tab(page, "2. Graders")
            form = tab.locator("[role=tabpanel]:visible").first
            form.get_by_role("textbox", name="Reference").fill("Answer: {{item.answer}}")
            form.get_by_role("button", name="Add built-in grader").click()
            expect(form.get_by_text("Added correct")).to_be_visible()
            wait_saved(page, runs_dir, lambda d: [g["name"] for g in d["graders"]] == ["correct"], "the grader")

            tab, acc, box = max_steps_box(page)
            set_number(page, acc, "Max steps", 7,
                       lambda: saved(runs_dir, lambda d: d["config"].get("sft", {}).get("max_steps") == 7))
            no_traceback(page)

            # RELOAD: everything is back, on every tab.
            page.reload(wait_until="load")
            expect(page.get_by_role("tab", name="1. Data")).to_be_visible()
            note = page.locator("#draft-note")
            expect(note).to_contain_text("Restored your draft")
            expect(note).to_contain_text("data train.jsonl, 1 grader, Train settings")
            tab = panel(page)
            expect(tab.get_by_text("Ready: 200 rows, format prompt_completion")).to_be_visible()
            accordion(tab, "Column mapping")
            expect(tab.get_by_role("combobox", name="Completion column")).to_have_value("answer")
            tab = open_tab(page, "2. Graders")
            expect(tab.get_by_role("gridcell", name="string_check")).to_be_visible()
            expect(tab.get_by_role("gridcell", name="correct", exact=True)).to_be_visible()
            tab, acc, box = max_steps_box(page)
            expect(box).to_have_value("7")
            no_traceback(page)
            path = shot(page, "draft-restored")
            if NOTES_SHOT.parent.is_dir():
                shutil.copyfile(path, NOTES_SHOT)

            # Another browser (its own localStorage): its own, empty, draft; ours is untouched.
            other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            load(other, app.url)
            expect(other.locator("#draft-note")).to_be_hidden()
            tab = open_tab(other, "2. Graders")
            expect(tab.get_by_role("gridcell", name="string_check")).to_have_count(0)
            other.context.close()
            assert len(drafts(runs_dir)) == 1

            # An app restart keeps it too (the browser's stored id stays readable).
            page.goto("about:blank")
            app.stop()
            app.start()
            load(page, app.url)
            expect(page.locator("#draft-note")).to_contain_text("Restored your draft")
            tab = open_tab(page, "2. Graders")
            expect(tab.get_by_role("gridcell", name="string_check")).to_be_visible()

            # Start over: asked first, then the page comes back empty and the file is gone.
            page.locator("#start-over").click()
            with page.expect_navigation():  # Start over reloads the page, so nothing of the old one stays
                page.get_by_role("button", name="Yes, start over").click()
            expect(page.locator("#draft-note")).to_be_hidden()
            expect(page.get_by_role("tab", name="1. Data")).to_have_attribute("aria-selected", "true")
            expect(panel(page).get_by_text("Upload a file to see its format")).to_be_visible()
            tab = open_tab(page, "2. Graders")
            expect(tab.get_by_role("gridcell", name="string_check")).to_have_count(0)
            tab, acc, box = max_steps_box(page)
            expect(box).to_have_value("0")
            assert drafts(runs_dir) == []
            no_traceback(page)
            browser.close()
    finally:
        app.stop()


class AuthApp(App):
    """The app with --auth ann:pw (browser.App starts it without flags)."""

    def start(self, timeout: float = 90) -> float:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        started = time.time()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "app.py", "--port", str(self.port), "--runs-dir",
                                          str(self.runs_dir), "--auth", "ann:pw"], cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT, env=env)
        while time.time() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2):
                    return time.time() - started
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"app did not serve within {timeout}s: {self.log.read_text()[-3000:]}")


def sign_in(browser, url: str):
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url)
    page.get_by_label("username").fill("ann")
    page.get_by_label("password").fill("pw")
    page.get_by_role("button", name="Login").click()
    expect(page.get_by_role("tab", name="2. Graders")).to_be_visible()
    return page


@pytest.mark.browser
@pytest.mark.slow
def test_a_signed_in_users_draft_follows_them_to_another_browser(tmp_path, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    runs_dir = tmp_path / "runs"
    app = AuthApp(runs_dir)
    try:
        with sync_playwright() as p:
            browser = launch_browser(p)
            expect.set_options(timeout=30_000)
            app.start()
            page = sign_in(browser, app.url)
            tab = open_tab(page, "2. Graders")
            form = tab.locator("[role=tabpanel]:visible").first
            form.get_by_role("textbox", name="Reference").fill("Answer: {{item.answer}}")
            form.get_by_role("button", name="Add built-in grader").click()
            expect(form.get_by_text("Added correct")).to_be_visible()
            wait_saved(page, runs_dir, lambda d: bool(d["graders"]), "the grader")
            assert [f.name for f in (runs_dir / "_drafts").glob("*.json")] == ["u-ann.json"]
            page.context.close()
            page = sign_in(browser, app.url)  # a fresh context: no localStorage, the same user
            expect(page.locator("#draft-note")).to_contain_text("Restored your draft")
            tab = open_tab(page, "2. Graders")
            expect(tab.get_by_role("gridcell", name="string_check")).to_be_visible()
            no_traceback(page)
            browser.close()
    finally:
        app.stop()
