"""Each tab's view of a run follows its status.json, read when it is shown (issue 10, item 4); the Evaluate tab's
row-by-row table (item 8); the rollout browser's click on a table that refreshed meanwhile (item 9).

The run tests launch real training processes on the built-in model, as the Train tab does: one SFT run that
finishes (4 steps) and one that is stopped by request while it trains, each with 3 of its 30 rows held out.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from finetuner.demo import arith
from finetuner.config import from_dict
from finetuner.runs import FINAL_STATES, RunFolder, launch, request_stop, wait
from finetuner.ui import eval_tables, rollouts, tab_evaluate, tab_monitor, tab_runs
from finetuner.ui.context import AppContext

# A long customer e-mail around each sum: the prompt that pushed the answers off the screen.
EMAIL = ("Hello, I wrote last week about order {i} that arrived with a cracked lid and I still have no reply. "
         "Please route this to the right team, thank you. Also: {q}")
GRADERS = [
    {"name": "correct", "type": "string_check", "input": "{{sample.output_text}}",
     "reference": "Answer: {{item.answer}}", "operation": "eq"},
    {"name": "format", "type": "regex", "pattern": "^Answer: -?\\d+$", "mode": "fullmatch", "weight": 0.1},
    {"name": "close_to_reference", "type": "text_similarity", "input": "{{sample.output_text}}",
     "reference": "{{item.completion}}", "evaluation_metric": "fuzzy_match", "weight": 0.5},
]


def write_data(path: Path, n: int = 30) -> Path:
    rows = [{"prompt": EMAIL.format(i=1000 + i, q=r["prompt"]), "completion": f"Answer: {r['answer']}",
             "answer": r["answer"]} for i, r in enumerate(arith.rft_rows(n, seed=7))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sft_config(name: str, data: Path, steps: int):
    return from_dict({"name": name, "method": "sft", "model": {"name": "tiny", "max_length": 256},
                      "data": {"train": str(data), "eval_fraction": 0.1}, "graders": GRADERS,
                      "sft": {"max_steps": steps, "batch_size": 4, "save_steps": 100000, "logging_steps": 1},
                      "rft": {"max_completion_length": 10}})


def wait_for_metrics(run: RunFolder, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not run.metrics():
        assert run.read_status().get("state") not in FINAL_STATES, run.log_path.read_text()[-3000:]
        time.sleep(0.3)
    assert run.metrics(), run.log_path.read_text()[-3000:]


def quiet(fraction, desc=""):
    pass


def row_of(table: dict, run_id: str) -> dict:
    return dict(zip(table["headers"], next(r for r in table["data"] if r[0] == run_id)))


def labels(picker_update) -> dict:
    return {rid: label for label, rid in picker_update["choices"]}


# ------------------------------------------------------------------ item 4 and 8: real runs


@pytest.mark.slow
def test_views_follow_status_json_and_a_stopped_run_is_evaluable(tmp_path):
    data = write_data(tmp_path / "emails.jsonl")
    ctx = AppContext(tmp_path / "runs")
    stopped = launch(sft_config("stopped", data, 20000), ctx.runs_dir)
    time.sleep(0.01)
    done = launch(sft_config("done", data, 4), ctx.runs_dir)
    wait_for_metrics(stopped)

    # While it trains: what each tab shows, with the signatures / tables their timers compare later.
    before = tab_evaluate.view(ctx, stopped.id)
    assert labels(before[0])[stopped.id] == f"{stopped.id} · running"
    assert "is running and has no trained adapter yet" in before[1]
    assert before[-2].active is True  # the live timer runs while the shown run trains
    listing_before = tab_runs.shown(ctx)
    assert row_of(listing_before[0], stopped.id)["state"] == "running" and listing_before[4].active is True

    request_stop(stopped)
    assert wait(stopped, timeout=300)["state"] == "stopped", stopped.log_path.read_text()[-3000:]
    assert wait(done, timeout=300)["state"] == "finished", done.log_path.read_text()[-3000:]
    step = stopped.read_status()["run_step"]
    assert step >= 1 and (stopped.adapter / "adapter_config.json").exists()

    # The Evaluate tab, as its timer tick or a click on the tab redraws it: labels and adapters from the folder.
    after = tab_evaluate.tick(ctx, stopped.id, before[-1])
    assert isinstance(after, tuple), "the tick must redraw once the run stopped"
    assert labels(after[0]) == {stopped.id: f"{stopped.id} · stopped", done.id: f"{done.id} · finished"}
    assert after[1].startswith("Not evaluated yet") and f"After SFT (stopped at step {step})" in after[1]
    assert "no trained adapter" not in after[1]
    assert after[-2].active is False  # nothing trains any more: the timer is off
    assert tab_evaluate.tick(ctx, stopped.id, after[-1]) == {"__type__": "update"}  # unchanged: nothing sent
    finished = tab_evaluate.view(ctx, done.id)
    assert finished[1].startswith("Not evaluated yet") and "After SFT" in finished[1]
    # The slider follows the run's held-out rows (3 of 30), not a general 50.
    slider = finished[8]
    assert slider["maximum"] == 3 and slider["value"] == 3 and "holds out 3 rows" in slider["info"]

    # The Runs tab, as opening it or its timer redraws it.
    table, _ids, _sel, _chosen, timer, _last = tab_runs.shown(ctx)
    assert row_of(table, stopped.id)["state"] == "stopped" and row_of(table, stopped.id)["steps"] == str(step)
    assert row_of(table, done.id)["state"] == "finished" and row_of(table, done.id)["steps"] == "4"
    assert timer.active is False
    ticked = tab_runs.auto_refresh(ctx, listing_before[0])
    assert row_of(ticked[0], stopped.id)["state"] == "stopped" and ticked[-1].active is False

    # Evaluate accepts the stopped run; the row-by-row table has references and short cells.
    status, summary, _chart, a, b, rows, _tuned = tab_evaluate.run_evaluation(ctx, stopped.id, 3, 8, quiet)
    assert status.startswith("Evaluated") and "3 held-out rows" in status
    assert [r[0] for r in summary["data"]] == ["Base model", f"After SFT (stopped at step {step})"]
    assert summary["headers"][1:4] == ["correct (×1)", "format (×0.1)", "close_to_reference (×0.5)"]
    assert a["value"] == "base" and b["value"] == "sft" and len(rows["data"]) == 3
    ref = rows["headers"].index("reference")
    assert all(r[ref].startswith("Answer: ") for r in rows["data"])
    prompt = rows["headers"].index("prompt")
    assert all(len(r[prompt]) <= eval_tables.CELL_CHARS["prompt"] and r[prompt].endswith("…") for r in rows["data"])
    _results, samples = tab_evaluate.ev.load_results(stopped)
    detail = eval_tables.row_detail(samples, "base", "sft", row_value=rows["data"][2])
    shown = re.sub(r"\\(.)", r"\1", detail)  # as rendered: Markdown's escapes removed
    assert f"#### Held-out row {rows['data'][2][0]}" in detail and samples[2]["prompt"] in shown
    assert "close_to_reference" in detail


# ------------------------------------------------------------------ item 8: the reference column


def test_reference_column_reads_the_renamed_reference_and_falls_back_to_the_columns():
    renamed = {"row": 0, "prompt": "p", "reference": None, "item": {"reference_completion": "Answer: 4"},
               "outputs": {}}
    assert eval_tables.reference_text(renamed) == "Answer: 4"
    no_reference = {"row": 1, "prompt": "p", "item": {"prompt": "p", "answer": "41", "messages": []}}
    assert eval_tables.reference_text(no_reference) == "answer: 41"  # what `{{item.answer}}` graders compare with
    chat = {"row": 2, "prompt": "p", "reference": [{"role": "assistant", "content": "Answer: 5"}], "item": {}}
    assert eval_tables.reference_text(chat) == "Answer: 5"


# ------------------------------------------------------------------ item 9: the refresh race


def sample(step: int, n: int, total: float) -> dict:
    return {"stage": "rft", "step": step, "split": "train", "prompt": f"What is {n}+{n}?",
            "completion": f"Answer: {n + step}", "scores": {"correct": total}, "total": total, "errors": {}}


def test_a_click_resolves_the_row_the_page_showed_not_a_newer_list(tmp_path):
    run = RunFolder(tmp_path / "live")
    run.path.mkdir()
    run.write_status(state="running", method="rft", stages=["rft"])
    run.append_samples([sample(22, n, n / 10) for n in range(4)])
    ctx = AppContext(tmp_path)
    shown = tab_monitor.view(ctx, tab_monitor.MonitorRequest(run.id, 0.0), force=True)
    table_a, keys_a = shown["table"], shown["keys"]
    # The next tick: step 23's rows arrive and are prepended; the server's `keys` is now list B...
    run.append_samples([sample(23, n, 1.0) for n in range(4)])
    ticked = tab_monitor.view(ctx, tab_monitor.MonitorRequest(run.id, 0.0, seen=shown["seen"]))
    keys_b = ticked["keys"]
    assert keys_b[4:] == keys_a and keys_b[:4] != keys_a[:4]
    # ...while the page still shows table A, where the person clicks row 1 (step 22, 2+2).
    clicked = table_a["data"][1]
    detail = tab_monitor.select_rollout(ctx, run.id, keys_b, 1, clicked)
    assert detail.startswith("#### RFT step 22 ") and "What is 2+2?" in detail and "Answer: 24" in detail
    # The index alone, resolved against list B, is step 23's row: the bug this replaces.
    assert tab_monitor.select_rollout(ctx, run.id, keys_b, 1).startswith("#### RFT step 23 ")
    # Cells come back from the browser as JSON: a step may be 22.0, and the grader columns may have changed.
    as_sent = [clicked[0], float(clicked[1]), *clicked[2:4], "0.1", "", *clicked[-3:]]
    assert "What is 2+2?" in tab_monitor.select_rollout(ctx, run.id, keys_b, 1, as_sent)


def test_identical_rows_resolve_to_the_nearest_one_below_the_click():
    # Rows 0 and 1 are alike (a group whose completions all match); 2 and 3 arrive with the next step.
    rows = [sample(5, 1, 0.0), sample(5, 1, 0.0), sample(6, 2, 1.0), sample(6, 3, 1.0)]
    keys_a, keys_b = [1, 0], [3, 2, 1, 0]
    clicked = rollouts.rollout_table(rows, keys_a, ["correct"])["data"][0]  # keys_a[0] == 1
    assert rollouts.find_row(rows, keys_b, 0, clicked) == 1  # not 0, its twin further down
    assert rollouts.find_row(rows, keys_b, 9, None) is None  # no cells and an index off the list: nothing
    gone = [*clicked[:-1], "a prompt no row has"]
    assert rollouts.find_row(rows, keys_b, 0, gone) is None


# ------------------------------------------------------------------ item 4 without training: folders as the trainer writes them


def test_evaluate_and_runs_views_follow_a_folder_that_changes_under_them(tmp_path):
    import os

    data = write_data(tmp_path / "emails.jsonl")
    ctx = AppContext(tmp_path / "runs")
    run = RunFolder(ctx.runs_dir / "r-1")
    run.path.mkdir()
    run.config_path.write_text(f"name: r\nmethod: sft\nmodel: {{name: tiny}}\ndata: {{train: {data}}}\n")
    now = time.time()
    run.write_status(state="running", pid=os.getpid(), method="sft", stages=["sft"], stage="sft", step=2,
                     total=9, run_step=2, created=now, started=now)
    before = tab_evaluate.view(ctx, "r-1")
    assert labels(before[0]) == {"r-1": "r-1 · running"} and "no trained adapter yet" in before[1]
    assert before[-2].active is True and before[8]["maximum"] == 3  # 10% of 30 rows held out
    assert tab_evaluate.tick(ctx, "r-1", before[-1]) == {"__type__": "update"}  # nothing changed yet
    runs_before = tab_runs.shown(ctx)
    assert row_of(runs_before[0], "r-1")["steps"] == "sft 2/9" and runs_before[4].active is True

    # What the trainer does on a stop request: save the adapter, then write the final state.
    run.adapter.mkdir()
    (run.adapter / "adapter_config.json").write_text("{}")
    run.write_status(state="stopped", step=5, run_step=5, finished=time.time(), error="Stopped by request.")
    after = tab_evaluate.tick(ctx, "r-1", before[-1])
    assert labels(after[0]) == {"r-1": "r-1 · stopped"} and after[-2].active is False
    assert "After SFT (stopped at step 5)" in after[1] and after[8] == {"__type__": "update"}  # same run: kept
    assert after[7]["value"] == "sft"  # the playground can chat with it
    runs_after = tab_runs.auto_refresh(ctx, runs_before[0])
    assert row_of(runs_after[0], "r-1")["state"] == "stopped" and row_of(runs_after[0], "r-1")["steps"] == "5"
    assert runs_after[-1].active is False


def test_a_runs_table_click_picks_the_run_in_the_clicked_row():
    # The page still shows [b, a]; a new run `c` is on top of the server's list when the click arrives.
    # The person clicks the page's first row, b.
    assert tab_runs.select_row(["c", "b", "a"], 0, ["b", "stopped", "sft"]) == "b"
    assert tab_runs.select_row(["c", "b", "a"], 0) == "c"  # the place alone names the wrong run
