"""scripts/gpu_calibrate.py without a GPU: the shipped real-shape configs match the shape table the estimate
uses, and the comparison / table code works on a fake measurement. The GPU path is the `gpu` test at the end."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_calibrate as g  # noqa: E402

from finetuner.planning.shapes import KNOWN, arch_from_config  # noqa: E402


@pytest.mark.parametrize("hub_id", list(g.MODELS))
def test_shipped_config_has_the_known_shape_and_parameter_count(hub_id):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = g.SHAPES / g.MODELS[hub_id]
    raw = json.loads((folder / "config.json").read_text())
    assert arch_from_config(raw) == KNOWN[hub_id]
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == ("qwen2" if "Qwen" in hub_id else "llama")
    with torch.device("meta"):  # no memory: only the parameter shapes
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())  # tied embeddings are one parameter, counted once
    assert abs(params / KNOWN[hub_id].params - 1) < 0.01, (params, KNOWN[hub_id].params)


def test_select_models_by_fragment_and_quick_pair():
    assert g.select_models(None, quick=True) == g.QUICK
    assert g.select_models(None, quick=False) == list(g.MODELS)
    assert g.select_models("0.5B, Llama-3.2-3B", quick=False) == ["Qwen/Qwen2.5-0.5B-Instruct",
                                                                    "meta-llama/Llama-3.2-3B-Instruct"]
    with pytest.raises(SystemExit, match="matches 2"):
        g.select_models("3B", quick=False)  # Qwen2.5-3B and Llama-3.2-3B


def test_case_configs_validate_and_get_an_estimate_from_the_known_shape():
    from finetuner.config import from_dict
    from finetuner.planning.memory import estimate

    sizes = {}
    for mode, seq in (("sft", 1024), ("sft", 2048), ("rft", 384)):
        cfg = from_dict(g.run_dict("Qwen/Qwen2.5-1.5B-Instruct", mode, seq, 3))
        est = estimate(None, cfg, capacity_gb=140.0, device="cuda", seq_tokens=seq if mode == "sft" else None,
                       prompt_tokens=g.RFT_PROMPT if mode == "rft" else None, cuda_capability=(9, 0))
        assert any("known models" in n for n in est.notes), est.notes
        assert est.setup["quantization"] == "4bit" and est.setup["vllm"] is None
        sizes[(mode, seq)] = est.allocated_gb
        if mode == "rft":
            assert cfg.rft.batch_size * cfg.rft.grad_accum == cfg.rft.num_generations == 8
            assert cfg.rft.max_completion_length == 256
    assert sizes[("sft", 2048)] > sizes[("sft", 1024)] > 0


def test_compare_flags_a_miss_beyond_15_percent():
    assert g.compare(2.2, 2.0) == {"measured_gb": 2.2, "estimate_gb": 2.0, "ratio": 1.1, "within_15pct": True}
    assert g.compare(2.4, 2.0)["within_15pct"] is False
    assert g.compare(1.6, 2.0)["within_15pct"] is False and g.compare(1.6, 2.0)["ratio"] == 0.8
    assert g.compare(1.0, 0.0)["ratio"] is None


def test_steps_per_s_leaves_the_warm_up_step_out():
    assert g.steps_per_s([10.0, 0.5, 0.5]) == 2.0
    assert g.steps_per_s([0.25]) == 4.0
    assert g.steps_per_s([]) is None


def test_results_are_written_as_json_and_a_markdown_table(tmp_path):
    rows = [{"model": "Qwen/Qwen2.5-0.5B-Instruct", "mode": "sft", "seq": 1024, **g.compare(1.5, 1.4),
             "steps_per_s": 2.5},
            {"model": "Qwen/Qwen2.5-0.5B-Instruct", "mode": "rft", "seq": 384, **g.compare(3.0, 2.0),
             "steps_per_s": 0.1},
            {"model": "meta-llama/Llama-3.2-1B-Instruct", "mode": "build", "seq": 0, "error": "OutOfMemoryError: x"}]
    g.write_results(rows, tmp_path / "out", {"gpu": "FakeGPU", "torch": "0", "date": "2026-12-01"})
    saved = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert saved["meta"]["gpu"] == "FakeGPU" and saved["cases"] == rows
    table = (tmp_path / "out" / "calibration.md").read_text()
    assert "FakeGPU" in table
    assert "| Qwen/Qwen2.5-0.5B-Instruct | sft | 1024 | 1.50 | 1.40 | 1.07 | yes | 2.50 |" in table
    assert "| 3.00 | 2.00 | 1.50 | no | 0.10 |" in table
    assert "crashed: OutOfMemoryError: x" in table


def test_synthetic_tokenizer_round_trips_random_ids():
    tok = g.synthetic_tokenizer(1000)
    rows = g.random_rows(1000, 50, 3, seed=1)
    assert all(max(r) < 998 for r in rows)  # eos and pad never drawn
    for row in rows:
        text = " ".join(f"t{i}" for i in row)
        assert tok(text, add_special_tokens=False)["input_ids"] == row
    assert (tok.eos_token_id, tok.pad_token_id) == (999, 998)


def test_spread_reward_varies_within_a_group():
    scores = g.spread_reward(["t1 t1 t1 t1", "t1 t2 t3 t4", ""])
    assert scores == [0.25, 1.0, 0.0]


@pytest.mark.gpu
def test_quick_calibration_on_the_smallest_model_runs(tmp_path):
    assert g.main(["--quick", "--models", "0.5B", "--out", str(tmp_path)]) == 0
    cases = json.loads((tmp_path / "calibration.json").read_text())["cases"]
    assert [(c["mode"], c["seq"]) for c in cases] == [("sft", 1024), ("sft", 2048), ("rft", 384)]
    for c in cases:
        assert c["loaded_4bit"] and c["measured_gb"] > 0 and c["estimate_gb"] > 0 and c["steps"] >= 2
