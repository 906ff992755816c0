"""What the Lab's tests share: the demo preset's spec with fields replaced, a run folder whose metrics are
written by hand, and a Lab result made from given scores (tests/test_lab*.py, tests/test_ui_lab.py)."""

from pathlib import Path

from finetuner.lab import preset, spec_from_dict
from finetuner.lab.arms import plan_arms, prepare_data
from finetuner.lab.results import aggregate, summary_json
from finetuner.config import load_config
from finetuner.runs import RunFolder

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "examples" / "lab"


def demo_spec(**over):
    data = {k: v for k, v in preset("demo").to_dict().items() if v not in (None, "", [])}
    data.update(over)
    return spec_from_dict(data, LAB, "test spec")


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
