"""Playwright helpers for the browser tests: find a tab, an accordion, a Dataframe and its rows, wait for a plot
to hold points, read the page for tracebacks and error toasts, and the Train tab's store-then-check number entry.
Shared by tests/test_browser_*.py; the app harness itself is tests/browser.py."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import yaml

from browser import shot

# Reads a Monitor/Evaluate plot from the page: the plotly div whose title starts with `title`, the most points
# one of its traces holds, its trace count and how many traces plotly drew. points -1: no such plot on screen.
PLOT_POINTS_JS = """(title) => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')].filter(p => p.offsetParent !== null &&
      (p.querySelector('.gtitle') || {}).textContent?.startsWith(title));
  if (!plots.length) return {points: -1, traces: 0, drawn: 0};
  const gd = plots[0];
  // calcdata: plotly's own per-trace list of the points it computed (data may hold base64 typed arrays).
  const lengths = (gd.calcdata || []).map(cd => cd.filter(pt => pt && pt.y !== undefined && pt.y === pt.y).length);
  return {points: Math.max(0, ...lengths), traces: lengths.length,
          drawn: gd.querySelectorAll('.scatterlayer .trace, .barlayer .trace').length};
}"""

def panel(page):
    """The open top-level tab's panel (tabs already visited stay in the DOM, hidden)."""
    return page.locator("[role=tabpanel]:visible").first


def open_tab(page, name: str):
    from playwright.sync_api import expect

    tab = page.get_by_role("tab", name=name, exact=True)
    tab.click()
    expect(tab).to_have_attribute("aria-selected", "true")
    return panel(page)


def add_answer_check(tab) -> None:
    """Graders tab: the built-in string check `{{sample.output_text}}` eq `Answer: {{item.answer}}`, through
    its form (the open one), and its confirmation."""
    from playwright.sync_api import expect

    form = tab.locator("[role=tabpanel]:visible").first
    form.get_by_role("textbox", name="Reference").fill("Answer: {{item.answer}}")
    expect(form.get_by_role("textbox", name="Input")).to_have_value("{{sample.output_text}}")
    expect(form.get_by_role("combobox", name="Operation")).to_have_value("eq")
    form.get_by_role("button", name="Add built-in grader").click()
    expect(form.get_by_text("Added correct")).to_be_visible()


def accordion(scope, title: str):
    """An accordion's block, opened."""
    from playwright.sync_api import expect

    button = scope.get_by_role("button", name=title)
    if "open" not in (button.get_attribute("class") or "").split():
        button.click()
    expect(button).to_have_class(re.compile(r"\bopen\b"))
    return scope.locator(".gr-accordion", has=scope.page.get_by_role("button", name=title))


def dataframe(page, scope, label: str):
    """A gr.Dataframe by its label (rendered as a plain div, not a <label>)."""
    return scope.locator(".table-container").filter(has=page.locator("div.label", has_text=label))


def data_rows(page, table, has_text=None):
    """A Dataframe's data rows as the page shows them (its <tbody> is only a hidden sizing copy)."""
    rows = table.get_by_role("row").filter(has=page.get_by_role("gridcell"))
    return rows.filter(has_text=has_text) if has_text else rows


def no_traceback(page):
    """Nothing on the page (shown or not) is a Python traceback, and no handler failed: `safe` turns a failure
    into a warning toast, Gradio shows its own errors as error toasts."""
    assert "Traceback" not in page.content(), "the page holds a Python traceback"
    text = page.locator("body").inner_text()
    assert "Traceback" not in text, f"the page shows a traceback:\n{text[:3000]}"
    toasts = page.locator(".toast-body.error, .toast-body.warning").all_inner_texts()
    assert not toasts, f"the page shows an error or warning: {toasts}"


def load(page, url: str, tries: int = 3) -> None:
    """Open the app and wait for its tabs; a navigation aborted by the browser (net::ERR_ABORTED) is retried."""
    from playwright.sync_api import Error, expect

    for attempt in range(tries):
        try:
            page.goto(url, wait_until="load")
            break
        except Error:
            if attempt == tries - 1:
                raise
            page.wait_for_timeout(500)
    expect(page.get_by_role("tab", name="1. Data")).to_be_visible()
    expect(page.locator("#try-demo")).to_be_visible()


def screenshot(page, nn: int, tab: str) -> Path:
    no_traceback(page)
    return shot(page, f"{nn:02d}-{tab}")


def plot_points(page, title: str) -> dict:
    return page.evaluate(PLOT_POINTS_JS, title)


def wait_plot(page, title: str, at_least: int = 1, traces: int = 1, timeout: float = 120) -> float:
    """Poll the page until the plot titled `title` has a trace of `at_least` points, `traces` traces, and
    plotly drew them; returns the seconds waited."""
    start = time.time()
    last = None
    while time.time() - start < timeout:
        last = plot_points(page, title)
        if last["points"] >= at_least and last["traces"] >= traces and last["drawn"] >= traces:
            return time.time() - start
        page.wait_for_timeout(250)
    raise AssertionError(f"plot {title!r} never showed {at_least} points in {timeout}s (last: {last})")


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a half-written last line
    return out


def downloaded_run_yaml(page, scope) -> dict:
    with page.expect_download() as info:
        scope.get_by_role("button", name="Download run.yaml").click()
    return yaml.safe_load(Path(info.value.path()).read_text(encoding="utf-8"))


def set_number(page, scope, label: str, value, check) -> None:
    """Type a value into a number box and leave it (the Train tab stores it on blur), then wait until the
    downloadable run.yaml holds it: the tab redraws from the stored project after every change, so typing the
    next box before this one is stored could be overwritten by the redraw."""
    box = scope.get_by_role("spinbutton", name=re.compile(rf"^{re.escape(label)}\b"))
    deadline = time.time() + 30
    while True:
        box.fill(str(value))
        box.press("Tab")
        for _ in range(10):
            if check():
                return
            page.wait_for_timeout(300)
        if time.time() > deadline:
            raise AssertionError(f"{label} = {value} never reached run.yaml")


def open_rollout(page, tab, tries: int = 3) -> None:
    """Click the newest rollout's completion and check the detail shows that rollout with every grader's
    score. A tick already in flight when the table was frozen may still redraw it once: then click again."""
    from playwright.sync_api import expect

    rollouts = dataframe(page, tab, "Rollouts")
    headers = [h.strip() for h in rollouts.get_by_role("columnheader").all_inner_texts()]
    step_col, completion_col = headers.index("step"), headers.index("completion")
    for attempt in range(tries):
        row = data_rows(page, rollouts).first
        expect(row).to_contain_text("RFT")
        cells = row.get_by_role("gridcell")
        step, completion = cells.nth(step_col).inner_text().strip(), cells.nth(completion_col).inner_text().strip()
        cells.nth(completion_col).click()
        name = re.compile(rf"^RFT step {step} · train · total reward")
        heading = tab.get_by_role("heading", name=name)
        try:
            expect(heading).to_be_visible(timeout=10_000)
        except AssertionError:
            if attempt == tries - 1:
                raise
            continue
        detail = tab.locator("div.prose", has=page.get_by_role("heading", name=name)).last
        if completion.rstrip("…") not in detail.inner_text():
            continue
        scores = detail.locator("table", has=page.locator("th", has_text="grader"))
        expect(scores.get_by_role("cell", name="correct", exact=True)).to_be_visible()
        expect(scores.get_by_role("cell", name="partial", exact=True)).to_be_visible()
        return
    raise AssertionError("the rollout detail never matched the clicked row")
