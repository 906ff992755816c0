"""The Lab (issue 15): its spec, its arms and their shared budget, the data each arm trains on, and a Lab folder
created before any run (its own copies of its files, ids that cannot leave runs/_lab)."""

import json
from pathlib import Path

import pytest

from finetuner.lab import create_lab, open_lab, preset
from finetuner.lab.arms import STEP_CAP, plan_arms, prepare_data
from finetuner.config import load_config
from finetuner.runs import list_runs
from graders.errors import ConfigError, DataError, RunError

from lab_helpers import LAB, ROOT, demo_spec


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


def test_create_lab_checks_before_any_run(tmp_path):
    spec = demo_spec(sizes=[25], seeds=[0], methods=["sft"])
    lab = create_lab(spec, tmp_path)
    status = lab.read()
    assert status["state"] == "planned" and [a["method"] for a in status["arms"]] == ["sft"]
    assert list_runs(tmp_path) == [] and (lab.path / "data" / "train-25.jsonl").exists()


def test_a_hostile_lab_id_is_refused(tmp_path):
    with pytest.raises(RunError, match="no Lab"):
        open_lab(tmp_path, "../../etc")


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
