"""The demo on a real model (`python -m finetuner demo --model smollm2-135m`): measure() scores the run's own
model, the task's splits never meet, and a shortened demo runs end to end on SmolLM2-135M-Instruct."""

import json
import re

import pytest

from finetuner.config import from_dict, save_config
from finetuner.demo import addsmall
from finetuner.demo import run as demo
from finetuner.runs import new_run


def test_addsmall_splits_are_disjoint_and_answers_are_the_sums():
    train, val, held = (set(addsmall.pairs(s)) for s in ("train", "val", "eval"))
    unordered = [{frozenset(p) for p in s} for s in (train, val, held)]
    assert not (unordered[0] & unordered[1]) and not (unordered[0] & unordered[2]) and not (unordered[1] & unordered[2])
    assert len(held) > 200 and len(val) > 200
    rows = addsmall.rows(50, seed=2, split="eval")
    for row in rows:
        a, b = (int(t) for t in re.findall(r"\d+", row["prompt"]))
        assert frozenset((a, b)) in unordered[2] and row["answer"] == str(a + b)


def test_measure_loads_the_run_configs_model_not_tiny(tmp_path, monkeypatch):
    """The defect of issue 12: measure() loaded `tiny` whatever the run file said."""
    import finetuner.modeling.load as load

    real_load, asked = load.load_model, []

    def recording_load(name, *args, **kwargs):
        asked.append(name)
        return real_load("tiny")  # the built-in model stands in, so the test stays fast and offline

    monkeypatch.setattr(load, "load_model", recording_load)
    run = new_run(tmp_path, "measure")
    save_config(from_dict({"name": "measure", "model": {"name": "smollm2-135m"}, "data": {"train": "x.jsonl"}}),
                run.config_path)
    rows = [{"prompt": "What is 12+30?", "answer": "42"}]
    results = demo.measure(run, rows)  # no cfg given: read from the run folder, as a later re-measure would
    assert asked == ["smollm2-135m"]
    assert set(results) == {"base"} and 0.0 <= results["base"]["accuracy"] <= 1.0
    cfg = from_dict({"name": "m", "model": {"name": "other-model"}, "data": {"train": "x.jsonl"}})
    demo.measure(run, rows, cfg)
    assert asked == ["smollm2-135m", "other-model"]


def test_each_model_has_its_own_example():
    assert demo.DEMOS["tiny"][0].name == "arithmetic"
    example, task = demo.DEMOS["smollm2-135m"]
    from finetuner.config import load_config

    assert load_config(example / "run.yaml").model.name == "smollm2-135m" and task == "addsmall"
    with pytest.raises(ValueError, match="smollm2-135m"):
        demo.run_demo(model="no-such-model")


@pytest.mark.real
@pytest.mark.slow
def test_short_real_demo_runs_and_sft_teaches_the_format(tmp_path, capsys, real_model):
    """A few SFT steps, 2 RFT steps, 24 held-out rows: the path works and SFT moves format; not the full targets."""
    code = demo.run_demo(runs_dir=str(tmp_path), as_json=True, model="smollm2-135m", heldout_rows=24,
                         overrides={"sft": {"max_steps": 8}, "rft": {"max_steps": 2, "batch_size": 16}})
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["model"] == "smollm2-135m" and result["heldout_rows"] == 24
    for stage in ("base", "sft", "rft"):
        assert 0.0 <= result[stage]["format"] <= 1.0 and 0.0 <= result[stage]["accuracy"] <= 1.0
    assert result["sft"]["format"] > result["base"]["format"]
