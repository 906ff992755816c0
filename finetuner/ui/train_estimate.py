"""The Train tab's memory estimate and step times, as markdown (no Gradio here: tested without the UI).

    device, gb, desc = plan_for("24")            # or "detected": this machine's GPU, else its RAM
    estimate_markdown(project, cfg, "24", None, runs_dir)   # verdict, parts table, advice, seconds per step
"""

from __future__ import annotations

import math

from finetuner.config import RunConfig
from finetuner.planning import memory, step_time
from graders.errors import FinetunerError

VERDICT = {"fits": "🟢 Fits", "tight": "🟠 Tight", "will-not-fit": "🔴 Will not fit"}


def plan_for(plan: str) -> tuple[str, float, str]:
    """(device, GB, description) to plan for: the detected machine or a GPU size."""
    if plan and plan != "detected":
        return "cuda", float(plan), f"a {plan} GB GPU"
    device, gb, desc = memory.detect_memory()
    return device, gb, f"this machine ({desc})"


def estimate_markdown(project: dict, cfg: RunConfig, plan: str, params_b, runs_dir=None) -> str:
    """The memory estimate, and step times: measured by an earlier run or probe in `runs_dir` on this kind of
    device when one trained these settings, else (RFT only) memory.rft_cost's formula, labelled a guess."""
    device, gb, desc = plan_for(plan)
    tokens = (project.get("data") or {}).get("tokens") or {}
    longest = tokens.get("max")
    params = int(float(params_b) * 1e9) if params_b else None
    try:
        est = memory.estimate(params, cfg, capacity_gb=gb, device=device, prompt_tokens=longest, seq_tokens=longest)
    except FinetunerError as err:
        return f"### Memory estimate\n{err}"
    quant = memory.resolve_quantization(cfg.model.quantization, device)
    weights = "4-bit" if quant == "4bit" else ("bf16" if device == "cuda" else "fp32")
    setup = est.setup
    engine = ("" if "rft" not in cfg.stages else
              "; RFT generates with " + {"colocate": "vLLM colocated", "server": "a vLLM server"}.get(
                  setup.get("vllm"), "transformers"))
    lines = [f"### {VERDICT[est.verdict]}: about {est.total_gb:.1f} GB of {gb:.0f} GB",
             f"Planned for {desc}; {_count(est.params)} parameters, weights in {weights}; optimizer "
             f"{setup.get('optim')}, gradient checkpointing {'on' if setup.get('checkpointing') else 'off'}, "
             f"chunked loss{engine}.", "",
             "| part | GB |", "|---|---|"]
    # Stage parts are alternatives (the larger stage peak counts), so the table says which add up.
    lines += [f"| {k} | {v:.2f} |" for k, v in est.parts.items()]
    if est.advice:
        lines += ["", "**What to change:**" if est.verdict != "fits" else ""] + [f"- {a}" for a in est.advice]
    notes = est.notes + ([] if longest else ["No data checked yet: sequences are taken as model.max_length long."])
    lines += ["", "<small>" + " ".join(notes) + " Total = the fixed parts + the largest stage peak (SFT: activations "
              "+ logits; RFT: the larger of training and generation). Each term and its source: docs/memory.md."
              "</small>"]
    measured = step_time.measured_steps(runs_dir, cfg, device)
    rows = (project.get("data") or {}).get("rows")
    if "sft" in cfg.stages:
        sft = measured.get("sft")
        s = cfg.sft
        steps = s.max_steps or math.ceil((rows or 100) * s.epochs / (s.batch_size * s.grad_accum))
        lines += ["", f"**SFT per step (measured):** {sft.text()}; about {memory.duration(sft.seconds * steps)} for "
                  f"{steps:,} steps." if sft else
                  "**SFT per step:** not measured yet (no earlier run of this model and these SFT settings on "
                  "this machine). **Measure a step** times a few real steps."]
    if "rft" in cfg.stages:
        rft = measured.get("rft")
        cost = memory.rft_cost(cfg, est.params, device, longest, rows,
                               measured=(rft.seconds, rft.text()) if rft else None)
        lines += ["", f"**RFT per step ({'measured' if rft else 'rough'}):** {cost.text()}"]
    return "\n".join(lines)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"
