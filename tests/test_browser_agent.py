"""The Agent RFT journey (issue 14) in real Chromium (Playwright, sync API), through the tabs a person uses:

Data (upload prompt rows {"prompt", "answer"} of three-digit sums, method RFT) -> Graders (a built-in exact
answer check and a Python grader that rewards calling a tool) -> Tools (load the `calculator` example, add it,
see it listed, try it by hand: 347+589 -> 936) -> Train (the built-in tool-calling model `tiny-agent`, a few
RFT steps, Launch) -> Monitor (the run finishes, the tool-use chart is drawn, the rollout table filtered to
rollouts that called a tool, one clicked: its trajectory is shown turn by turn, the call, the tool's answer
and the final answer, exactly as samples.jsonl holds them).

`tiny-agent` calls the calculator on about half the questions, so 3 steps of 16 rollouts hold tool calls with
near certainty. Screenshots go to artifacts/screenshots/NN-agent-*.png. One test: each step needs the state
the previous one built; each step waits for what a person would see (explicit waits, no fixed sleeps).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from browser import App, launch_browser
from page import (accordion, add_answer_check, data_rows, dataframe, downloaded_run_yaml, load, open_tab, panel,
                  screenshot, set_number, wait_plot)

# Partial credit for a call, so rollouts of one group differ even when none is right.
PY_GRADER = '''def grade(sample, item) -> float:
    return 0.2 if sample["tool_calls"] else 0.0
'''
RFT = {"Max steps": 3, "Batch size": 16, "Num generations": 8, "Max completion length": 128, "Logging steps": 1}
YAML_KEY = {"Max steps": "max_steps", "Batch size": "batch_size", "Num generations": "num_generations",
            "Max completion length": "max_completion_length", "Logging steps": "logging_steps"}


def write_prompts(path: Path) -> Path:
    from finetuner.demo.agent_task import rft_rows

    with open(path, "w", encoding="utf-8") as fh:
        for row in rft_rows(48, seed=7):
            fh.write(json.dumps(row) + "\n")
    return path


def samples(run_dir: Path) -> list[dict]:
    path = run_dir / "samples.jsonl"
    out = []
    for line in (path.read_text(encoding="utf-8").splitlines() if path.exists() else []):
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a half-written last line
    return out


def trajectory(row: dict) -> list[tuple[dict, str]]:
    """(call's function {"name", "arguments"}, the tool's answer) pairs of a rollout, in order."""
    calls = [c.get("function") or c for m in row.get("trajectory") or [] if m.get("role") == "assistant"
             for c in m.get("tool_calls") or []]
    answers = [str(m.get("content") or "") for m in row.get("trajectory") or [] if m.get("role") == "tool"]
    return list(zip(calls, answers))


def arguments(call: dict) -> str:
    """A call's arguments as the rollout detail prints them (short JSON)."""
    args = call.get("arguments")
    return args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)


def code_editor(scope, label: str):
    """A gr.Code's editable area, by its block label."""
    return scope.locator(".block", has=scope.page.locator("label", has_text=label)).locator(".cm-content").first


def replace_code(page, editor, text: str) -> None:
    # Near its top-left corner: a click at the centre of a wide line scrolls the editor sideways.
    editor.click(position={"x": 4, "y": 4})
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(text)  # no key events: the editor does not re-indent the text


@pytest.mark.browser
@pytest.mark.slow
def test_agent_rft_journey(tmp_path, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    data = write_prompts(tmp_path / "agent_sums.jsonl")
    runs_dir = tmp_path / "runs"
    app = App(runs_dir)
    try:
        with sync_playwright() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.set_default_timeout(60_000)  # a busy 2-core machine
            expect.set_options(timeout=60_000)
            app.start(timeout=180)
            load(page, app.url)

            # 1. Data: prompt rows with their answer, for RFT.
            tab = panel(page)
            upload = tab.locator(".block", has=page.locator("label", has_text="Training data")).locator(
                "input[type=file]")
            upload.set_input_files(str(data))
            expect(tab.get_by_text(re.compile(r"Ready: 48 rows"))).to_be_visible()
            tab.get_by_role("radio", name="RFT: learn from graders' scores").check()
            expect(tab.get_by_text("RFT stage · line 1")).to_be_visible()
            screenshot(page, 1, "agent-data")

            # 2. Graders: the exact answer, and a small reward for calling a tool.
            tab = open_tab(page, "2. Graders")
            add_answer_check(tab)
            tab.get_by_role("tab", name="Python").click()
            form = tab.locator("[role=tabpanel]:visible").first
            replace_code(page, form.locator(".cm-content").first, PY_GRADER)
            form.get_by_role("textbox", name="Name").fill("uses_tool")
            form.get_by_role("button", name="Add Python grader").click()
            expect(form.get_by_text("Added uses_tool")).to_be_visible()
            expect(tab.get_by_role("gridcell", name="string_check")).to_be_visible()
            expect(tab.get_by_role("gridcell", name="python", exact=True)).to_be_visible()
            screenshot(page, 2, "agent-graders")

            # 3. Tools: the calculator example into the editor, added, listed, tried by hand.
            tab = open_tab(page, "3. Tools")
            code = code_editor(tab, "Tool code")
            replace_code(page, code, "")  # empty it, so the loaded example is seen arriving
            tab.get_by_role("button", name="Load into the editor").click()
            expect(tab.get_by_text("Loaded calculator")).to_be_visible()
            expect(code).to_contain_text("def calculator(expression: str)")
            tab.get_by_role("button", name="Add / update tool").click()
            expect(tab.get_by_text(re.compile(r"Added calculator\(expression: str\)"))).to_be_visible()
            listing = tab.locator(".table-container").first  # "Your tools": name / arguments / what it does
            expect(data_rows(page, listing, "calculator")).to_have_count(1)
            expect(data_rows(page, listing, "calculator")).to_contain_text("expression: str")
            expect(tab.get_by_role("combobox", name="Tool")).to_have_value("calculator")
            args = code_editor(tab, "Arguments (JSON)")
            expect(args).to_contain_text('"expression"')  # pre-filled from the tool's signature
            replace_code(page, args, '{"expression": "347+589"}')
            tab.get_by_role("button", name="Call the tool").click()
            answer = tab.locator("div.prose", has_text=re.compile(r"answered in [\d.]+ s"))  # the call's result
            expect(answer).to_contain_text("calculator")
            expect(answer).to_contain_text("936")
            screenshot(page, 3, "agent-tools")

            # 4. Train: the built-in tool-calling model, a few small RFT steps, Launch.
            tab = open_tab(page, "4. Train")
            model = tab.get_by_role("combobox", name="Model")
            model.click()
            page.get_by_role("option", name=re.compile(r"^tiny-agent: ")).click()
            expect(model).to_have_value(re.compile(r"^tiny-agent: "))
            expect(tab.get_by_role("radio", name="RFT", exact=True)).to_be_checked()
            acc = accordion(tab, "Advanced: RFT stage")
            for label, value in RFT.items():
                set_number(page, acc, label, value,
                           lambda k=YAML_KEY[label], v=value: downloaded_run_yaml(page, tab)["rft"][k] == v)
            spec = downloaded_run_yaml(page, tab)
            assert spec["method"] == "rft" and spec["model"]["name"] == "tiny-agent", spec
            assert [t.get("name") for t in spec["tools"]] == ["calculator"], spec.get("tools")
            assert [g["name"] for g in spec["graders"]] == ["correct", "uses_tool"], spec["graders"]
            screenshot(page, 4, "agent-train")
            tab.get_by_role("button", name="Launch training").click()

            # 5. Monitor: the run finishes, the tool-use chart is drawn, a rollout that called a tool is opened.
            expect(page.get_by_role("tab", name="5. Monitor")).to_have_attribute("aria-selected", "true")
            tab = panel(page)
            progress = tab.locator(".ft-progress")
            expect(progress).to_contain_text(re.compile(r"finished|failed|stopped"), timeout=600_000)
            expect(progress).to_contain_text("finished")
            run_ids = [d.name for d in runs_dir.iterdir() if d.is_dir() and not d.name.startswith("_")]
            assert len(run_ids) == 1, run_ids
            run_dir = runs_dir / run_ids[0]
            rows = samples(run_dir)
            called = [r for r in rows if (r.get("tools") or {}).get("calls")]
            assert called, f"no rollout of {len(rows)} called a tool"
            wait_plot(page, "Tool use per step", timeout=120)
            accordion(tab, "Chart options").get_by_role("checkbox", name="Follow new rollouts").uncheck()

            flag = tab.get_by_role("combobox", name="Tool use")
            flag.click()
            page.get_by_role("option", name="called a tool", exact=True).click()
            expect(flag).to_have_value("called a tool")
            table = dataframe(page, tab, "Rollouts")
            headers = [h.strip() for h in table.get_by_role("columnheader").all_inner_texts()]
            tool_col, completion_col = headers.index("tool use"), headers.index("completion")
            shown = data_rows(page, table)
            expect(shown.first).to_be_visible()
            expect(data_rows(page, table, "no call")).to_have_count(0)  # the filter has been applied
            for i in range(shown.count()):  # the rows drawn (the table may draw only those in view)
                cell = shown.nth(i).get_by_role("gridcell").nth(tool_col).inner_text().strip()
                assert re.match(r"\d+ calls?\b", cell), cell
            shown.first.get_by_role("gridcell").nth(completion_col).click()
            detail = tab.locator("div.prose", has=page.get_by_role("heading",
                                                                   name=re.compile(r"^RFT step \d+ · train"))).last
            expect(detail).to_contain_text("Trajectory")
            text = detail.inner_text()
            # The rollout shown is one that called a tool, every call and tool answer as samples.jsonl holds it.
            match = [r for r in called if str(r["prompt"]) in text and r["completion"].strip() in text
                     and all(arguments(c) in text and a.strip() in text for c, a in trajectory(r))]
            assert match, f"the detail shows no rollout that called a tool:\n{text[:2000]}"
            pairs = trajectory(match[0])
            assert pairs, match[0]["trajectory"]
            (first_call, first_answer), row = pairs[0], match[0]
            calls, answers = [c for c, _ in pairs], [a for _, a in pairs]
            assert first_call["name"] == "calculator", first_call
            expect(detail).to_contain_text("Model, turn 1")
            expect(detail).to_contain_text("calls calculator with:")
            expect(detail).to_contain_text(arguments(first_call))
            expect(detail).to_contain_text(re.compile(r"tool calculator answered:|error from tool calculator"))
            expect(detail).to_contain_text(first_answer.strip())
            expect(detail).to_contain_text("Final answer")
            print(f"\nshown rollout: calls={calls} tool answers={answers} final={row['completion']!r}; "
                  f"{len(called)} of {len(rows)} rollouts called a tool")
            screenshot(page, 5, "agent-monitor")
            browser.close()
    finally:
        app.stop()
