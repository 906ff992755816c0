"""Method recommendation (the article's "Best For" rules), and the models and presets per GPU size."""

import pytest

from finetuner.config import from_dict
from finetuner.planning.recommend import (EXAMPLES, GPU_PRESETS, MODELS, base_pass_rate, model_choices, nested,
                                          preset_for, recommend, verifiable_graders)

EXAMPLE = EXAMPLES / "arithmetic"

EXACT = {"name": "exact", "type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.a}}"}
JUDGE = {"name": "tone", "type": "score_model", "model": "m", "input": "x"}


def test_prompts_without_graders_need_graders():
    rec = recommend(has_labels=False, rows=500, n_graders=0)
    assert rec.method == "rft" and any("grader" in c.lower() for c in rec.caveats)


def test_labels_without_graders_is_sft():
    rec = recommend(True, 2000, 0)
    assert rec.method == "sft" and "labelled" in rec.reason
    assert any("memorise" in c for c in recommend(True, 30, 0).caveats)


def test_labels_and_verifiable_graders_is_sft_then_rft_with_the_cost_claim():
    rec = recommend(True, 2000, 2, None, verifiable=True)
    assert rec.method == "sft+rft"
    cost = next(c for c in rec.caveats if "100-700x" in c)
    assert "claim" in cost  # the article's number is reported as a claim, not a fact
    assert any("base-model samples" in c for c in rec.caveats)  # no dry run on base samples yet


def test_base_pass_rate_near_zero_means_sft_first():
    rec = recommend(True, 50, 2, base_pass_rate=0.0, verifiable=True)
    assert rec.method == "sft+rft" and "SFT first" in rec.reason and "0%" in rec.reason
    no_labels = recommend(False, 50, 2, base_pass_rate=0.01, verifiable=True)
    assert no_labels.method == "rft" and any("almost never" in c for c in no_labels.caveats)


def test_base_pass_rate_near_one_means_rft_will_not_help():
    rec = recommend(True, 500, 1, base_pass_rate=0.98, verifiable=True)
    assert rec.method == "sft" and "little to teach" in rec.reason
    assert any("will not help" in c for c in recommend(False, 500, 1, base_pass_rate=0.99).caveats)


def test_few_labels_with_verifiable_answers_is_rft():
    rec = recommend(True, 60, 1, base_pass_rate=0.3, verifiable=True)
    assert rec.method == "rft" and "overfitting" in rec.reason


def test_style_judges_with_labels_is_sft():
    rec = recommend(True, 5000, 1, base_pass_rate=0.4, verifiable=False)
    assert rec.method == "sft" and "style" in rec.reason
    assert "**Recommended: SFT.**" in rec.markdown()


def test_inputs_from_graders_and_dry_run():
    assert verifiable_graders([]) is None
    assert verifiable_graders([EXACT]) is True and verifiable_graders([JUDGE]) is False
    multi = {"name": "m", "type": "multi", "graders": {"a": {"type": "python", "source": "x"}, "b": JUDGE}}
    assert verifiable_graders([multi]) is True
    assert base_pass_rate({"source": "column", "mean": 1.0, "range": [0, 1]}) is None  # graded references
    assert base_pass_rate({"source": "base", "mean": 0.55, "range": [0, 1.1]}) == pytest.approx(0.5)
    assert base_pass_rate(None) is None


def test_presets_are_valid_runs_and_pick_by_memory():
    for size, preset in GPU_PRESETS.items():
        spec = nested(preset)
        spec.update(method="sft+rft", data={"train": "x"}, graders=[EXACT])
        cfg = from_dict(spec)  # RFT groups stay whole, every value in range
        assert cfg.model.quantization == "auto" and cfg.adapter.r == preset["adapter.r"]
    assert preset_for(6) is None and preset_for(8) == 8 and preset_for(12) == 12 and preset_for(23.6) == 24
    assert preset_for(80) == 24


def test_model_choices_list_tiny_first_then_the_real_small_model_and_each_recommended_id():
    choices = model_choices()
    assert choices[0][1] == "tiny" and choices[1][1] == "smollm2-135m"
    assert "real small model" in choices[1][0] and "CPU" in choices[1][0]
    assert choices[2][1] == "tiny-agent" and "tool" in choices[2][0]
    assert [value for _label, value in choices[3:]] == list(MODELS)
    small = dict((v, label) for label, v in choices)["Qwen/Qwen2.5-0.5B-Instruct"]
    assert "0.5B" in small and "fits 8 GB" in small


def test_own_data_switches_tiny_to_the_real_small_model(tmp_path):
    """A person's own data on `tiny` would train on noise: the default becomes smollm2-135m; the demo's data and
    a model the person chose stay as they are."""
    from finetuner.planning.recommend import default_model

    own, example = str(tmp_path / "emails.csv"), str(EXAMPLE / "train.jsonl")
    assert default_model("tiny", own) == "smollm2-135m" and default_model(None, own) == "smollm2-135m"
    assert default_model("tiny", example) is None
    assert default_model("Qwen/Qwen2.5-0.5B-Instruct", own) is None
