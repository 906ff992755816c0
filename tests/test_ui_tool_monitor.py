"""Monitor tab for Agent RFT runs without a browser: the tool-use charts (values, hidden without tool metrics),
the rollout browser's trajectory view, marks and filter, and the plain-words tool notes. Fake run folders hold
metrics.jsonl / samples.jsonl rows in the shapes of /work/notes/agent_contract.md."""

import json
import os
import time

from finetuner.runs import RunFolder
from finetuner.ui import monitor_notes, rollouts, run_watch, tab_monitor, tool_figures
from finetuner.ui.context import AppContext


def write(path, rows):
    with open(path, "a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))


def fake_run(root, name="agent", metrics=(), samples=()):
    run = RunFolder(root / name)
    run.path.mkdir(parents=True)
    run.config_path.write_text(f"name: {name}\n")
    run.write_status(state="running", pid=os.getpid(), name=name, method="rft", stages=["rft"], stage="rft",
                     step=len(metrics), total=10, started=time.time() - 60, created=time.time())
    write(run.metrics_path, list(metrics))
    write(run.samples_path, list(samples))
    return run


def tool_step(step, call_rate=0.5, error_rate=0.25, unfinished=0.125, **extra):
    return {"stage": "rft", "step": step, "run_step": step, "loss": 0.0, "reward": 0.4,
            "tools/call_frequency": 1.0, "tools/failure_frequency": 0.1, "tools/calls_per_rollout": 0.75 * step,
            "tools/call_rate": call_rate, "tools/calculator/call_rate": call_rate / 2,
            "tools/table_lookup/call_rate": call_rate / 4, "tools/error_rate": error_rate, "tools/turns": 1.5,
            "tools/unfinished_rate": unfinished, "tools/truncated_rate": 0.0625, "tools/reward_with_call": 0.9,
            "tools/reward_without_call": 0.2, "tools/calculator/seconds": 0.01, "tools/calculator/timeouts": 0,
            **extra}


def columns_of(rows):
    cols = run_watch.MetricColumns()
    cols.add(rows)
    return cols


def trace(fig, name):
    hits = [t for t in fig.data if t.name == name]
    assert hits, f"no trace {name!r} in {[t.name for t in fig.data]}"
    return hits[0]


def test_tool_figures_plot_the_logged_values():
    cols = columns_of([tool_step(1), tool_step(2, call_rate=1.0, error_rate=0.5)])
    figs = tool_figures.tool_figures(cols, smoothing=0.0, revision="r")
    use = figs["tools"]
    assert list(trace(use, "rollouts that called a tool").y) == [0.5, 1.0]
    assert list(trace(use, "rollouts that called calculator").y) == [0.25, 0.5]
    assert list(trace(use, "rollouts that called table_lookup").y) == [0.125, 0.25]
    assert list(trace(use, "tool calls that failed (share of calls)").y) == [0.25, 0.5]
    assert list(trace(use, "rollouts stopped while still calling (unfinished)").y) == [0.125, 0.125]
    assert list(trace(use, "rollouts cut off at the length limit").y) == [0.0625, 0.0625]
    calls = trace(use, "tool calls per rollout (right axis)")
    assert list(calls.y) == [0.75, 1.5] and calls.yaxis == "y2" and list(calls.x) == [1, 2]
    assert list(trace(use, "model turns per rollout (right axis)").y) == [1.5, 1.5]
    reward = figs["tools_reward"]
    assert list(trace(reward, "rollouts that called a tool").y) == [0.9, 0.9]
    assert list(trace(reward, "rollouts that answered without a tool").y) == [0.2, 0.2]


def test_a_single_tool_is_named_in_the_call_rate_curve_instead_of_a_second_identical_curve():
    row = {k: v for k, v in tool_step(1).items() if not k.startswith("tools/table_lookup")}
    fig = tool_figures.tool_use_figure(columns_of([row]))
    assert list(trace(fig, "rollouts that called a tool (calculator)").y) == [0.5]
    assert not [t for t in fig.data if t.name == "rollouts that called calculator"]


def test_the_tool_charts_show_in_the_monitor_only_for_a_tool_run(tmp_path):
    fake_run(tmp_path, "agent", [tool_step(1), tool_step(2)])
    fake_run(tmp_path, "plain", [{"stage": "rft", "step": 1, "run_step": 1, "loss": 0.1, "reward": 0.3}])
    ctx = AppContext(tmp_path)
    agent = tab_monitor.view(ctx, tab_monitor.MonitorRequest("agent"), force=True)
    assert agent["tools"]["visible"] and agent["tools_reward"]["visible"]
    assert list(trace(agent["tools"]["value"], "rollouts that called a tool").y) == [0.5, 0.5]
    plain = tab_monitor.view(ctx, tab_monitor.MonitorRequest("plain"), force=True)
    assert plain["tools"]["visible"] is False and plain["tools_reward"]["visible"] is False
    assert tool_figures.tool_figures(columns_of([{"step": 1, "reward": 0.3}])) is None


CALL = {"role": "assistant", "content": "Let me compute <b>this</b>.",
        "tool_calls": [{"type": "function", "function": {"name": "calculator", "arguments": {"expression": "36*26"}}}]}
TOOL_ROW = {"stage": "rft", "step": 3, "split": "train", "prompt": "What is 36*26?", "completion": "Answer: 936",
            "scores": {"correct": 1.0}, "total": 1.0, "errors": {}, "logs": {},
            "trajectory": [CALL, {"role": "tool", "name": "calculator", "content": "936"},
                           {"role": "assistant", "content": "",
                            "tool_calls": [{"type": "function", "function": {"name": "table_lookup",
                                                                             "arguments": '{"key": "x<y>"}'}}]},
                           {"role": "tool", "name": "table_lookup", "content": "{'error': 'KeyError: x<y>'}"},
                           {"role": "assistant", "content": "Answer: 936"}],
            "tools": {"calls": 2, "errors": 1, "turns": 3, "unfinished": False, "names": ["calculator", "table_lookup"]}}
PLAIN_ROW = {"stage": "rft", "step": 3, "split": "train", "prompt": "What is 2+2?", "completion": "Answer: 4",
             "scores": {"correct": 1.0}, "total": 1.0, "errors": {}, "logs": {}}


def test_a_trajectory_is_shown_turn_by_turn_with_calls_answers_errors_and_the_final_answer():
    md = rollouts.rollout_detail([TOOL_ROW], 0)
    order = ["Let me compute <b>this</b>.", "`calculator`",
             '"expression": "36*26"', "tool `calculator` answered", "936", "`table_lookup`", '"key": "x<y>"',
             "**error** from tool `table_lookup`", "KeyError: x<y>", "**Final answer**", "Answer: 936"]
    at = [md.index(s) for s in order]
    assert at == sorted(at), md
    assert "⚠ **1 of 2 tool calls failed**" in md
    assert "| correct | 1 |" in md  # the scores table follows
    # Model and tool text is inside fenced blocks only: never raw HTML outside one.
    outside = [line for line in md.split("\n") if "<b>" in line or "x<y>" in line]
    for line in outside:
        block = md[:md.index(line)]
        assert block.count("```") % 2 == 1, f"{line!r} is not inside a code block"


def test_text_with_backtick_fences_cannot_break_out_of_its_block():
    row = {**TOOL_ROW, "completion": "```\n<img src=x onerror=alert(1)>\n````"}
    md = rollouts.rollout_detail([row], 0)
    final = md[md.index("**Final answer**"):]
    assert "`````text\n```\n<img src=x onerror=alert(1)>\n````\n`````" in final
    odd = {**TOOL_ROW, "trajectory": [{"role": "tool", "name": "a`b <i>", "content": "x"}, *TOOL_ROW["trajectory"]]}
    assert "tool `a'b <i>` answered" in rollouts.rollout_detail([odd], 0)  # a name cannot end its code span


def test_unfinished_and_truncated_rollouts_are_marked_and_filtered():
    unfinished = {**TOOL_ROW, "trajectory": TOOL_ROW["trajectory"][:4], "completion": "", "truncated": True,
                  "tools": {**TOOL_ROW["tools"], "unfinished": True}}
    md = rollouts.rollout_detail([unfinished], 0)
    assert "⚠ **unfinished**" in md and "✂ **truncated**" in md and "still calling tools when it was stopped" in md
    samples = [PLAIN_ROW, TOOL_ROW, unfinished]
    table = rollouts.rollout_table(samples, [2, 1, 0], ["correct"])
    col = table["headers"].index("tool use")
    assert [r[col] for r in table["data"]] == ["2 calls, ⚠ 1 failed, ⚠ unfinished, ✂ truncated",
                                               "2 calls, ⚠ 1 failed", ""]

    def keys(flag):
        return rollouts.filter_rollouts(samples, rollouts.RolloutFilter(tool_flag=flag))

    assert keys("unfinished (still calling at the limit)") == [2]
    assert keys("truncated (hit the length limit)") == [2]
    assert keys("a tool call failed") == [2, 1] and keys("no tool call") == [0] and keys(rollouts.ALL) == [2, 1, 0]
    # A click on a row of the table with the tools column still finds its rollout.
    assert rollouts.find_row(samples, [2, 1, 0], 0, table["data"][1]) == 1


def test_rollouts_without_a_trajectory_look_as_before():
    md = rollouts.rollout_detail([PLAIN_ROW], 0)
    assert "**Completion**\n```text\nAnswer: 4\n```" in md and "Trajectory" not in md and "⚠" not in md
    table = rollouts.rollout_table([PLAIN_ROW], [0], ["correct"])
    assert table["headers"] == ["stage", "step", "split", "total", "correct", "errors", "completion", "prompt"]
    assert not rollouts.has_tool_rows([PLAIN_ROW]) and rollouts.has_tool_rows([PLAIN_ROW, TOOL_ROW])


def test_the_monitor_shows_the_tool_filter_and_notes_for_a_troubled_tool_run(tmp_path):
    never = [tool_step(s, call_rate=0.0, error_rate=0.0, unfinished=0.0) for s in (1, 2, 3)]
    fake_run(tmp_path, "never", never, [TOOL_ROW])
    out = tab_monitor.view(AppContext(tmp_path), tab_monitor.MonitorRequest("never"), force=True)
    assert "never calls its tools" in out["notes"] and out["tool_filter"]["visible"]


def test_tool_notes_fire_on_the_right_numbers_only():
    def notes(**kw):
        return monitor_notes.tool_trouble_md(columns_of([tool_step(s, **kw) for s in (1, 2, 3)]))

    assert "never calls its tools" in notes(call_rate=0.0, error_rate=0.0)
    assert "never calls" not in notes(call_rate=0.125)
    assert "Most tool calls fail** (60%" in notes(error_rate=0.6)
    assert "fail" not in notes(error_rate=0.5)
    assert "70% of rollouts were still calling" in notes(unfinished=0.7) and "rft.max_tool_calls" in notes(unfinished=0.7)
    assert notes(unfinished=0.3) == ""  # the defaults of tool_step: all is well
    # Two steps are too few to call a model's tool use hopeless; a run without tools gets no note.
    assert monitor_notes.tool_trouble_md(columns_of([tool_step(s, call_rate=0.0) for s in (1, 2)])) == ""
    assert monitor_notes.tool_trouble_md(columns_of([{"step": 1, "reward": 0.1}])) == ""
