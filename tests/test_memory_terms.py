"""memory.estimate split into its terms (issue 11) gives what the single function gave, to the last digit.

tests/memory_golden.json was recorded from the old `estimate` (one 85-line function) before the split: 72
settings drawn from a grid of models (a toy shape, Qwen 0.5B and 7B, the built-in model, an unknown model with
a parameter count), methods, quantizations, adapters (LoRA, DoRA with dropout and an unknown target, rank 64),
beta, batch sizes, sequence lengths, GPUs of 3 to 24 GB and a CPU, setups (checkpointing, fp32 AdamW, unchunked
loss, vLLM colocated or as a server) and cuBLAS workspaces; with what each gave (total, every part in order,
verdict, setup, a digest of the advice and notes), and the Train tab's estimate text for five runs.
"""

import hashlib
import json
from pathlib import Path

import pytest

from finetuner.config import from_dict
from finetuner.planning import gpu_defaults
from finetuner.planning.memory import Arch, estimate

GOLDEN = json.loads((Path(__file__).parent / "memory_golden.json").read_text(encoding="utf-8"))
CASES = GOLDEN["cases"]


def digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _estimate(case):
    arch = Arch(**GOLDEN["toy"]) if case["model"] == "toy" else None
    cap = case["cuda_capability"]
    return estimate(case["params"], from_dict(case["spec"]), arch=arch, capacity_gb=case["capacity_gb"],
                    device=case["device"], prompt_tokens=case["tokens"], seq_tokens=case["tokens"],
                    setup=GOLDEN["setups"][case["setup"]], cuda_capability=tuple(cap) if cap else None)


def test_the_grid_covers_every_verdict_stage_and_engine():
    # a grid of only fitting SFT runs would leave most of the terms and the advice unchecked
    assert {c["expect"]["verdict"] for c in CASES} == {"fits", "tight", "will-not-fit"}
    names = {name for c in CASES for name, _ in c["expect"]["parts"]}
    for part in ("SFT activations", "RFT KV cache (generation)", "vLLM (colocated)", "runtime (Python, torch)",
                 "optimizer states (adamw_torch)", "workspaces (cuBLAS, 4-bit dequant)"):
        assert part in names


@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{c['model'].split('/')[-1]}-{c['spec']['method']}-"
                                             f"{c['device']}{c['capacity_gb']}-{c['setup']}"
                                             for i, c in enumerate(CASES)])
def test_estimate_matches_the_recorded_numbers(case):
    est, want = _estimate(case), case["expect"]
    assert list(est.parts) == [name for name, _ in want["parts"]]  # the Train tab's table rows, in order
    for name, gb in want["parts"]:
        assert est.parts[name] == pytest.approx(gb, rel=1e-12, abs=1e-15), name
    assert est.total_gb == pytest.approx(want["total_gb"], rel=1e-12)
    assert est.outside_allocator_gb == pytest.approx(want["outside_allocator_gb"], rel=1e-12, abs=1e-15)
    assert (est.verdict, est.params, est.setup) == (want["verdict"], want["params"], want["setup"])
    assert digest(est.advice + est.notes) == want["text"], est.advice + est.notes


@pytest.mark.parametrize("case", GOLDEN["markdown"], ids=lambda c: f"{c['spec']['model']['name']}-{c['plan']}")
def test_train_tab_estimate_text_is_unchanged(case, monkeypatch):
    from finetuner.ui.train_estimate import estimate_markdown  # the Train tab's text, without Gradio

    # recorded with bitsandbytes and without vLLM: fixed, so the text does not depend on what is installed
    monkeypatch.setattr(gpu_defaults, "bitsandbytes_available", lambda: True)
    monkeypatch.setattr(gpu_defaults, "vllm_available", lambda: False)
    text = estimate_markdown(case["project"], from_dict(case["spec"]), case["plan"], case["params_b"],
                             "/nonexistent-runs")
    assert text == case["text"]
