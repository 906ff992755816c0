"""The Lab (issue 15 parts 1-3): specs, arms and budgets, the numbers read from run folders, the reading of the
article's claims, the report; end to end, the small preset headless through the run queue, and the Lab tab's
handlers on its result."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finetuner.lab import create_lab, open_lab, preset, spec_from_dict
from finetuner.lab.arms import STEP_CAP, plan_arms, prepare_data
from finetuner.lab.reading import read_claims
from finetuner.lab.report import table_rows, write_report
from finetuner.lab.results import aggregate, run_numbers, summary_json
from finetuner.config import load_config
from finetuner.runs import RunFolder, list_runs
from graders.errors import ConfigError, DataError, RunError

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "examples" / "lab"


def demo_spec(**over):
    data = {k: v for k, v in preset("demo").to_dict().items() if v not in (None, "", [])}
    data.update(over)
    return spec_from_dict(data, LAB, "test spec")


# ------------------------------------------------------------------ specs


@pytest.mark.parametrize("field, value, words", [
    ("methods", ["sft", "dpo"], "distinct methods"),
    ("seeds", [], "at least one seed"),
    ("sizes", [1], "at least 2"),
    ("budget", {"minutes": 3}, "`budget` is one of"),
    ("budget", {"seconds": -1}, "positive number"),
    ("eval_rows", 0, "at least 1"),
    ("colour", "red", "unknown field"),
    ("base", "nope.yaml", "does not exist"),
])
def test_a_bad_spec_is_refused_in_words(field, value, words):
    with pytest.raises(ConfigError, match=words):
        demo_spec(**{field: value})


def test_presets_load_with_their_paths_resolved():
    spec = preset("demo")
    assert spec.methods == ["sft", "rft", "sft+rft"] and len(spec.seeds) >= 2 and spec.sizes == [25, 50, 100, 200]
    assert Path(spec.base).is_file() and Path(spec.keep).is_file() and spec.budget_kind == "seconds"
    with pytest.raises(ConfigError, match="no Lab preset"):
        preset("nope")


# ------------------------------------------------------------------ arms


def test_arms_share_one_budget_and_nest_their_data(tmp_path):
    spec = demo_spec(sizes=[25, 50], seeds=[0, 1], budget={"seconds": 10})
    base = load_config(spec.base)
    data = prepare_data(spec, base, tmp_path)
    arms = plan_arms(spec, base, data, "t")
    assert len(arms) == 2 * 3 * 2
    first = [json.loads(x) for x in Path(data.subsets[25]).read_text().splitlines()]
    second = [json.loads(x) for x in Path(data.subsets[50]).read_text().splitlines()]
    assert len(first) == 25 and second[:25] == first  # nested: 50 rows hold the 25
    by = {(a.method, a.size, a.seed): a.config for a in arms}
    sft, rft, both = by[("sft", 25, 0)], by[("rft", 25, 1)], by[("sft+rft", 50, 0)]
    assert sft.sft.max_seconds == 10 and sft.sft.max_steps == STEP_CAP and sft.sft.lr_scheduler == "constant"
    assert rft.rft.max_seconds == 10 and rft.seed == 1 and rft.method == "rft"
    assert both.sft.max_seconds == 5 and both.rft.max_seconds == 5  # split evenly between the stages
    assert both.data.train == data.subsets[50] and both.data.rft_train == "" and both.data.eval == data.eval
    assert [g["name"] for g in sft.graders] == ["correct", "format", "right_number"]
    assert sft.eval.every_steps == spec.eval_every and sft.eval.rows == spec.eval_rows
    # Every arm is scored on answers of one length, RFT's own: an SFT-only arm would otherwise get longer ones.
    from finetuner.evaluation.heldout import answer_token_limit

    assert {a.config.eval.max_new_tokens for a in arms} == {base.rft.max_completion_length}
    assert answer_token_limit(sft, [{"completion": "x" * 80}], None) == base.rft.max_completion_length


def test_an_examples_budget_becomes_steps(tmp_path):
    spec = demo_spec(sizes=[25], seeds=[0], budget={"examples": 640})
    base = load_config(spec.base)
    arms = {a.method: a.config for a in plan_arms(spec, base, prepare_data(spec, base, tmp_path), "t")}
    # SFT: 25 rows, so 25 a step (a batch of 32 holds them all); RFT: 64 completions / 8 per prompt = 8 prompts.
    assert arms["sft"].sft.max_steps == 26 and arms["rft"].rft.max_steps == 80
    assert arms["sft+rft"].sft.max_steps == 13 and arms["sft+rft"].rft.max_steps == 40
    assert arms["sft"].sft.max_seconds == 0 and arms["sft"].sft.lr_scheduler == base.sft.lr_scheduler


def test_an_sft_step_on_data_smaller_than_a_batch_sees_only_the_data():
    from finetuner.lab.arms import examples_per_step

    assert examples_per_step("sft", 32, 1, 1, 25) == 25  # one step is the whole epoch of 25
    assert examples_per_step("sft", 32, 1, 1, 50) == 25  # batches of 32 and 18
    assert examples_per_step("sft", 8, 2, 1, 192) == 16 and examples_per_step("sft", 8, 2, 1, None) == 16
    assert examples_per_step("sft", 8, 2, 1, 200) == 200 / 13  # 25 batches: 13 steps, the last one half
    assert examples_per_step("rft", 64, 1, 8, 25) == 8  # prompts: 64 completions, 8 per prompt


def test_sizes_beyond_the_data_and_rft_without_graders_are_refused(tmp_path):
    spec = demo_spec(sizes=[5000])
    base = load_config(spec.base)
    with pytest.raises(DataError, match="fewer than the size"):
        prepare_data(spec, base, tmp_path)
    spec = demo_spec(sizes=[25], graders=[])
    with pytest.raises(ConfigError, match="RFT learns from graders"):
        plan_arms(spec, base, prepare_data(spec, base, tmp_path / "b"), "t")


def test_without_an_eval_file_the_last_rows_are_held_out(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}", "answer": str(i)}) + "\n"
                            for i in range(100)))
    spec = demo_spec(data=str(rows), eval="", sizes=[25])
    base = load_config(spec.base)
    base.data.eval = ""
    data = prepare_data(spec, base, tmp_path / "lab")
    held = [json.loads(x)["prompt"] for x in Path(data.eval).read_text().splitlines()]
    assert held == [f"q{i}" for i in range(80, 100)] and len(data.pool) == 80 and data.notes


# ------------------------------------------------------------------ numbers


def fake_run(tmp_path, method="sft+rft"):
    """A run folder whose metrics are written by hand, so every Lab number can be checked by arithmetic."""
    spec = demo_spec(sizes=[25], seeds=[0])
    base = load_config(spec.base)
    arm = next(a for a in plan_arms(spec, base, prepare_data(spec, base, tmp_path / "d"), "t") if a.method == method)
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    from finetuner.config import portable_config, save_config

    save_config(portable_config(arm.config), run.config_path)
    rows = [{"stage": "sft", "step": 0, "heldout/reward": 0.16}]
    rows += [{"stage": "sft", "step": s, "time/step_s": 0.1, "loss": 1.0} for s in (1, 2, 3, 4)]
    rows += [{"stage": "sft", "step": 4, "heldout/reward": 0.8}]
    rows += [{"stage": "rft", "step": s, "time/step_s": 0.5, "completions/mean_length": 10.0} for s in (2, 4)]
    rows += [{"stage": "rft", "step": 4, "heldout/reward": 1.28}]
    run.append_jsonl(run.metrics_path, rows)
    run.write_status(state="finished", started=100.0, finished=130.0)
    return run, arm.config


def test_run_numbers_are_the_metrics_summed(tmp_path):
    run, cfg = fake_run(tmp_path)
    n = run_numbers(run, cfg, 200)
    # weights 1 + 0.1 + 0.5 = 1.6; SFT 4 steps x 0.1 s; RFT logs every 2 steps at 0.5 s a step: 2 s.
    assert n["base_score"] == 0.1 and n["score"] == 0.8
    assert n["seconds"] == pytest.approx(0.4 + 2.0) and n["wall_seconds"] == 30.0
    # SFT rows (200 in 7 batches of 32 an epoch), then RFT prompts (64 completions / 8 per prompt a step).
    assert n["examples"] == round(4 * 200 / 7 + 4 * 8, 1)
    assert n["tokens"] == pytest.approx(10 * 64 * 4)
    assert run_numbers(run, cfg, 25)["examples"] == pytest.approx(4 * 25 + 4 * 8)  # 25 rows: 25 a step
    assert [(p["stage"], p["seconds"], p["examples"]) for p in n["curve"]] == [
        ("sft", 0.0, 0.0), ("sft", 0.4, 114.3), ("rft", 2.4, 146.3)]


def test_a_failed_arm_has_no_score_and_is_left_out_of_the_means(tmp_path):
    run, cfg = fake_run(tmp_path)
    run.write_status(state="failed")
    arm = {"method": "sft", "size": 25, "seed": 0, **run_numbers(run, cfg)}
    ok = {**arm, "seed": 1, "run_id": "ok", "score": 0.5, "keep_score": 0.7}
    table = aggregate([arm, ok])
    cell = table[25]["sft"]
    assert arm["score"] is None and cell["score"]["mean"] == 0.5 and cell["score"]["n"] == 1
    assert cell["failed"] == [arm["run_id"]]


def synthetic_result(scores: dict, keep: dict, seconds: dict, examples: dict, base=0.1, keep_before=0.8, losses=None):
    arms = []
    for (method, size), values in scores.items():
        for seed, v in enumerate(values):
            arms.append({"method": method, "size": size, "seed": seed, "run_id": f"{method}-{size}-{seed}",
                         "sft_loss": (losses or {}).get((method, size)),
                         "score": v, "keep_score": keep.get(method), "seconds": seconds[method],
                         "examples": examples[method], "tokens": 1000 if "rft" in method else 0, "curve": []})
    table = aggregate(arms)
    return {"table": {str(k): v for k, v in table.items()}, "arms": arms, "base_score": base,
            "keep_before": keep_before, "summary": summary_json(table, keep_before, base)}


def test_the_reading_follows_the_numbers():
    result = synthetic_result(
        {("sft", 25): [0.2, 0.3], ("sft", 200): [0.7, 0.72], ("rft", 25): [0.4, 0.42], ("rft", 200): [0.5, 0.5],
         ("sft+rft", 25): [0.5, 0.5], ("sft+rft", 200): [0.9, 0.92]},
        keep={"sft": 0.5, "rft": 0.78, "sft+rft": 0.6}, seconds={"sft": 10, "rft": 10, "sft+rft": 10},
        examples={"sft": 2000, "rft": 10, "sft+rft": 500}, losses={("sft", 25): 0.01, ("sft", 200): 0.3})
    verdicts = {c["key"]: c["verdict"] for c in read_claims(result)}
    labels = next(c for c in read_claims(result) if c["key"] == "sft_labels")["measured"]
    assert "0.010 on 25 rows against 0.300 on 200: the small set was learned by heart" in labels
    assert verdicts == {"few_prompts": "agrees", "sft_labels": "agrees", "cost": "agrees", "both": "agrees",
                        "forgetting": "agrees"}
    flipped = synthetic_result(
        {("sft", 25): [0.7, 0.7], ("sft", 200): [0.7, 0.71], ("rft", 25): [0.1, 0.1], ("rft", 200): [0.1, 0.1],
         ("sft+rft", 25): [0.3, 0.3], ("sft+rft", 200): [0.3, 0.31]},
        keep={"sft": 0.8, "rft": 0.4}, seconds={"sft": 10, "rft": 10, "sft+rft": 10},
        examples={"sft": 1000, "rft": 500, "sft+rft": 500})
    claims = {c["key"]: c for c in read_claims(flipped)}
    assert {k: c["verdict"] for k, c in claims.items()} == {
        "few_prompts": "disagrees", "sft_labels": "disagrees", "cost": "disagrees", "both": "disagrees",
        "forgetting": "disagrees"}
    assert "2x the seconds" in claims["cost"]["measured"]


def test_a_tie_within_the_spread_is_mixed_not_a_win():
    result = synthetic_result({("sft", 100): [0.5, 0.7], ("sft+rft", 100): [0.62, 0.66]}, keep={},
                              seconds={"sft": 1, "sft+rft": 1}, examples={"sft": 1, "sft+rft": 1})
    both = next(c for c in read_claims(result) if c["key"] == "both")
    assert both["verdict"] == "mixed" and "tie" in both["measured"]


def test_the_report_holds_the_table_charts_and_reading(tmp_path):
    result = synthetic_result({("sft", 25): [0.2, 0.3], ("sft", 50): [0.4, 0.5], ("rft", 25): [0.1, 0.2],
                               ("rft", 50): [0.2, 0.2]}, keep={"sft": 0.5, "rft": 0.7},
                              seconds={"sft": 5, "rft": 5}, examples={"sft": 500, "rft": 10})
    result.update(name="t", model="tiny", spec=demo_spec(sizes=[25, 50]).to_dict(), notes=[])
    paths = write_report(type("L", (), {"path": tmp_path})(), result)
    md, page = paths["md"].read_text(), paths["html"].read_text()
    assert {"scores", "curves", "sweep", "forgetting"} <= set(paths)
    assert all(paths[k].stat().st_size > 5000 for k in ("scores", "sweep"))  # real PNGs, not empty files
    assert "| 50 | SFT | 45.0% ± 7.1% |" in md and "What the numbers say" in md
    assert "| SFT | 25.0% ± 7.1% | 45.0% ± 7.1% |" in md and "<td>45.0% ± 7.1%</td>" in page  # the sweep
    assert page.count("data:image/png;base64,") == 4 and "charts/" not in page  # self-contained
    assert table_rows(result)[0]["ms / example"] == "10.00"


# ------------------------------------------------------------------ the time budget


def test_the_time_budget_stops_a_stage(monkeypatch):
    """Steps of 0.3 s on a fake clock: the budget of 1 s is reached at the 4th step, not before; time spent
    between steps (held-out scoring, saving) is not counted."""
    from transformers import TrainerControl, TrainerState

    from finetuner.training import budget

    clock = [0.0]
    monkeypatch.setattr(budget.time, "perf_counter", lambda: clock[0])
    cb, control, state = budget.TimeBudgetCallback(1.0), TrainerControl(), TrainerState()
    steps = 0
    while not control.should_training_stop:
        cb.on_step_begin(None, state, control)
        clock[0] += 0.3  # the step
        cb.on_step_end(None, state, control)
        clock[0] += 5.0  # between steps: not training
        steps += 1
    assert steps == 4 and cb.reached and cb.spent == pytest.approx(1.2)


# ------------------------------------------------------------------ end to end (slow)


@pytest.fixture(scope="module")
def small_lab(tmp_path_factory):
    """`python -m finetuner lab --preset small --json`: three real arms through the queue (about a minute)."""
    runs = tmp_path_factory.mktemp("labruns")
    proc = subprocess.run([sys.executable, "-m", "finetuner", "lab", "--preset", "small", "--runs-dir", str(runs),
                           "--json"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return runs, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_small_lab_runs_every_arm_as_an_ordinary_run(small_lab):
    runs, summary = small_lab
    assert set(summary["arms"]) == {"sft", "rft", "sft+rft"}
    for method, arm in summary["arms"].items():
        assert {"score", "spread", "seconds", "keep_score"} <= set(arm)
        assert 0.0 <= arm["score"] <= 1.0 and arm["seconds"] > 0 and 0.0 <= arm["keep_score"] <= 1.0
    assert summary["arms"]["rft"]["tokens"] > 0 and summary["arms"]["sft"]["tokens"] == 0
    listed = {s["name"]: s for s in list_runs(runs)}
    assert len(listed) == 3 and all(s["state"] == "finished" for s in listed.values())
    lab = open_lab(runs, Path(summary["lab_dir"]).name)
    assert lab.read()["state"] == "finished" and (lab.path / "report.html").stat().st_size > 20000
    # The budget ended each stage by the clock: SFT stopped long before its step cap, and trained.
    sft_run = RunFolder(Path(next(s["path"] for n, s in listed.items() if "-sft-n" in n)))
    losses = [r["loss"] for r in sft_run.metrics() if r.get("loss") is not None]
    assert 3 <= len(losses) < STEP_CAP and losses[-1] < losses[0]


@pytest.mark.slow
def test_the_lab_tab_shows_a_finished_lab_and_keeps_it_from_other_users(small_lab):
    from finetuner.ui import tab_lab
    from finetuner.ui.context import AppContext, current_user

    runs, summary = small_lab
    lab_id = Path(summary["lab_dir"]).name
    ctx = AppContext(runs)
    assert tab_lab.lab_choices(ctx) == [lab_id]
    progress, arms, table, reading, charts, report = tab_lab.show(ctx, lab_id)
    assert "finished" in progress and len(arms) == 3 and set(arms["state"]) == {"finished"}
    table, charts, report = table.value, charts.value, report.value  # component updates, shown now
    assert len(table["data"]) == 3 and "What the numbers say" in reading and len(charts) >= 3
    assert report["orig_name"] == "report.html" and charts[0]["image"]["orig_name"].endswith(".png")
    assert "Stop" not in tab_lab.stop(ctx, lab_id) and "nothing to stop" in tab_lab.stop(ctx, lab_id)
    classroom = AppContext(runs, auth=True, teachers={"teacher"})
    token = current_user.set("bob")  # the Lab has no owner (made by the CLI): a student does not see it
    try:
        assert tab_lab.lab_choices(classroom) == []
        with pytest.raises(RunError, match="another user"):
            tab_lab.show(classroom, lab_id)
    finally:
        current_user.reset(token)
    token = current_user.set("teacher")
    try:
        assert tab_lab.lab_choices(classroom) == [lab_id]
    finally:
        current_user.reset(token)


def test_a_hostile_lab_id_is_refused(tmp_path):
    with pytest.raises(RunError, match="no Lab"):
        open_lab(tmp_path, "../../etc")


def test_create_lab_checks_before_any_run(tmp_path):
    spec = demo_spec(sizes=[25], seeds=[0], methods=["sft"])
    lab = create_lab(spec, tmp_path)
    status = lab.read()
    assert status["state"] == "planned" and [a["method"] for a in status["arms"]] == ["sft"]
    assert list_runs(tmp_path) == [] and (lab.path / "data" / "train-25.jsonl").exists()


# ------------------------------------------------------------------ the Lab tab's form


def test_the_form_builds_a_spec_from_a_preset_or_the_project(tmp_path):
    from finetuner.ui import tab_data, tab_lab
    from finetuner.ui.context import AppContext, new_project
    from finetuner.ui.welcome import demo_project

    ctx = AppContext(tmp_path / "runs")
    data, base_dir = tab_lab.spec_data(ctx, None, tab_lab.SOURCES[0], "demo", ["SFT", "RFT"], "3, 4", "25, 50",
                                       "examples seen", 500, None)
    spec = spec_from_dict(data, base_dir)
    assert spec.methods == ["sft", "rft"] and spec.seeds == [3, 4] and spec.sizes == [25, 50]
    assert spec.budget == {"examples": 500.0} and spec.keep  # the preset's own keep set stays
    project = tab_data.from_project(demo_project())[0]  # the demo's data and graders, checked by the Data tab
    data, base_dir = tab_lab.spec_data(ctx, project, tab_lab.SOURCES[1], "", ["SFT then RFT"], "0", "",
                                       "seconds of training", 5, None)
    spec = spec_from_dict(data, base_dir)
    base = load_config(spec.base)
    assert Path(spec.base).parent == ctx.uploads_for() and base.data.train.endswith("train.jsonl")
    assert [g["name"] for g in base.graders] == [g["name"] for g in project["graders"]] and spec.sizes == []
    with pytest.raises(ConfigError, match="no data yet"):
        tab_lab.spec_data(ctx, new_project(), tab_lab.SOURCES[1], "", ["SFT"], "0", "", "seconds of training", 5, None)
    with pytest.raises(ConfigError, match="at least one method"):
        tab_lab.spec_data(ctx, project, tab_lab.SOURCES[0], "demo", [], "0", "", "seconds of training", 5, None)
    with pytest.raises(ConfigError, match="whole numbers"):
        tab_lab.spec_data(ctx, project, tab_lab.SOURCES[0], "demo", ["SFT"], "zero", "", "seconds of training", 5, None)


def test_picking_a_preset_fills_the_form():
    from finetuner.ui import tab_lab

    methods, seeds, sizes, kind, budget = tab_lab.preset_form("demo")
    assert methods == ["SFT", "RFT", "SFT then RFT"] and seeds == "0, 1" and sizes == "25, 50, 100, 200"
    assert kind == "seconds of training" and budget == preset("demo").budget_value


def test_another_users_lab_is_refused_by_every_lab_handler(tmp_path):
    from finetuner.ui import tab_lab
    from finetuner.ui.context import AppContext, current_user

    lab = create_lab(demo_spec(sizes=[25], seeds=[0], methods=["sft"]), tmp_path, owner="alice")
    lab.write(state="running")
    classroom = AppContext(tmp_path, auth=True, teachers={"teacher"})
    before = lab.status_path.read_text()
    token = current_user.set("bob")
    try:
        assert tab_lab.lab_choices(classroom) == []
        for handler, args in ((tab_lab.show, (lab.id,)), (tab_lab.stop, (lab.id,)), (tab_lab.tick, (lab.id, None))):
            with pytest.raises(RunError, match="belongs to another user"):
                handler(classroom, *args)
    finally:
        current_user.reset(token)
    assert not lab.stop_path.exists() and lab.status_path.read_text() == before
    token = current_user.set("alice")
    try:
        assert tab_lab.lab_choices(classroom) == [lab.id]
        assert "will stop" in tab_lab.stop(classroom, lab.id) and lab.stop_path.exists()
    finally:
        current_user.reset(token)


def test_a_deleted_arm_ends_the_lab_as_failed_not_never(tmp_path):
    """An arm whose folder is gone (cancelled in the queue, deleted on the Runs tab) counts as ended: the Lab's
    loop finishes and the results list it as failed instead of raising."""
    import shutil

    from finetuner.lab import runner

    lab = create_lab(demo_spec(sizes=[25], seeds=[0], methods=["sft"]), tmp_path)
    status = lab.read()
    arm = status["arms"][0]
    run = RunFolder(tmp_path / "arm-run")
    run.path.mkdir()
    run.write_status(state="waiting")
    arm["run_id"] = run.id
    lab.write(arms=status["arms"])
    shutil.rmtree(run.path)
    assert runner._arm_state(tmp_path, arm) == "gone" and "gone" in runner.ARM_ENDED
    result = runner.collect(lab, tmp_path, say=lambda line: None)
    assert result["arms"][0]["score"] is None and result["table"]["25"]["sft"]["failed"] == [run.id]


def test_stop_reads_states_again_and_never_raises(tmp_path, monkeypatch):
    """An arm seen `waiting` that started since: cancel refuses, so it is asked to stop instead."""
    from finetuner.lab import runner
    from finetuner.runs import queue

    run = RunFolder(tmp_path / "arm")
    run.path.mkdir()
    run.write_status(state="running", pid=__import__("os").getpid())
    (run.path / "config.yaml").write_text("name: x\n")
    entries = [{"run_id": run.id, "state": "waiting"}, {"run_id": "gone-arm", "state": "waiting"}]
    monkeypatch.setattr(queue, "cancel", lambda *a: (_ for _ in ()).throw(RunError("started")))
    runner._stop(entries, tmp_path)
    assert run.stop_path.exists() and [e["state"] for e in entries] == ["running", "gone"]


def test_verdicts_need_arms_that_finished():
    """A method whose every arm failed is "not measured", never a score of 0 that "agrees" or "disagrees"."""
    result = synthetic_result({("sft", 25): [0.2, 0.3], ("sft", 200): [None, None], ("rft", 25): [None],
                               ("sft+rft", 200): [None, None], ("rft", 200): [0.1, 0.1]},
                              keep={}, seconds={"sft": 1, "rft": 1, "sft+rft": 1},
                              examples={"sft": 1, "rft": 1, "sft+rft": 1})
    verdicts = {c["key"]: c["verdict"] for c in read_claims(result)}
    assert verdicts["few_prompts"] == "not measured" and verdicts["sft_labels"] == "not measured"
    assert verdicts["both"] == "not measured"


def test_the_monitor_counts_down_a_time_budget_not_the_step_cap(tmp_path):
    """A stage ended by its clock has max_steps = the cap (100,000): the Monitor says the budget and the time
    left of it, not "step 12/100000, ends in ~30 h"."""
    from finetuner.ui.run_watch import RunWatch, progress, progress_text

    run = RunFolder(tmp_path / "r")
    run.path.mkdir()
    run.write_status(state="running", stage="sft", stages=["sft"], step=12, total=STEP_CAP, started=1000.0,
                     budget_s=12.0, budget_started=1000.0)
    watch = RunWatch(run.path)
    watch.status = run.read_status()
    p = progress(watch, now=1004.0)
    assert p["eta"] == pytest.approx(8.0) and "step 12 of a 12 s budget" in progress_text(p)
    assert "100000" not in progress_text(p)


def test_a_lab_needs_none_of_its_original_files_once_created(tmp_path):
    """The Lab runs from its own copies: the keep file (a Gradio upload) and the data can go while it trains."""
    import shutil

    from finetuner.lab import runner

    src = tmp_path / "src"
    src.mkdir()
    for name in ("keep.jsonl",):
        shutil.copy(LAB / name, src / name)
    shutil.copy(ROOT / "examples" / "arithmetic" / "train.jsonl", src / "train.jsonl")
    spec = demo_spec(sizes=[25], seeds=[0], methods=["sft"], keep=str(src / "keep.jsonl"),
                     data=str(src / "train.jsonl"))
    lab = create_lab(spec, tmp_path / "runs")
    shutil.rmtree(src)
    arms = runner._replan(lab, lab.read())
    assert len(arms) == 1 and Path(arms[0].config.data.train).is_file()
    assert Path(lab.read()["keep_file"]).is_file() and lab.read()["spec"]["keep"] == lab.read()["keep_file"]
