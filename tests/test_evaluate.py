"""Evaluation of a real (tiny, few-step) SFT -> RFT run: base / SFT / RFT scored by the run's own graders,
files written, the Evaluate tab's handlers, and the playground's chat.

`trained_run()` trains that run once per test session; test_export and test_ui_monitor import it too.
"""

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from finetuner.demo import arith
from finetuner.evaluation import heldout as ev
from finetuner.config import from_dict, load_config, portable_config, save_config, to_dict
from finetuner.runs import RunFolder, new_run
from finetuner.training.stages import train_run

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "arithmetic"


@functools.cache
def trained_run() -> RunFolder:
    """examples/arithmetic/run.yaml cut to SFT 4 steps + RFT 3 steps (eval every 2), in a temp runs folder."""
    root = Path(tempfile.mkdtemp(prefix="ft-ui-run-"))
    atexit.register(shutil.rmtree, root, True)
    evals = root / "eval.jsonl"
    evals.write_text("".join(json.dumps({**r, "completion": f"Answer: {r['answer']}"}) + "\n"
                             for r in arith.eval_rows(8)))
    spec = to_dict(load_config(EXAMPLE / "run.yaml"))
    spec["data"]["eval"] = str(evals)
    spec["sft"].update(max_steps=4, batch_size=8, save_steps=100)
    spec["rft"].update(max_steps=3, eval_steps=2, batch_size=8, num_generations=4, logging_steps=1, save_steps=100)
    cfg = from_dict(spec, base_dir=str(EXAMPLE))
    run = new_run(root / "runs", "uitest")
    save_config(portable_config(cfg), run.config_path)  # as runs.launch does: absolute data paths
    status = train_run(cfg, run)
    assert status["state"] == "finished", status.get("error")
    return run


@pytest.fixture(scope="module")
def run():
    return trained_run()


@pytest.mark.slow
def test_evaluate_run_scores_base_sft_rft_and_writes_files(run):
    seen = []
    results = ev.evaluate_run(run, rows=6, progress=lambda f, text: seen.append((f, text)))
    assert list(results["models"]) == ["base", "sft", "rft"]
    assert [g["name"] for g in results["graders"]] == ["correct", "format"]
    for m in results["models"].values():
        assert set(m["scores"]) == {"correct", "format"} and 0.0 <= m["total"] <= 1.1
        assert m["mean_chars"] > 0
    assert results["rows"] == 6 and seen[-1][0] == 1.0 and seen == sorted(seen, key=lambda s: s[0])
    saved = json.loads((run.eval_dir / "results.json").read_text())
    assert saved["models"]["rft"]["total"] == results["models"]["rft"]["total"]
    again, samples = ev.load_results(run)
    assert again == saved and len(samples) == 6
    row = samples[0]
    assert set(row["outputs"]) == {"base", "sft", "rft"} and row["reference"].startswith("Answer: ")
    assert isinstance(row["outputs"]["rft"]["completion"], str) and "correct" in row["outputs"]["rft"]["scores"]


@pytest.mark.slow
def test_evaluate_tab_handlers_show_results_and_compare(run, tmp_path):
    from finetuner.ui import tab_evaluate
    from finetuner.ui.context import AppContext

    if not (run.eval_dir / "results.json").exists():
        ev.evaluate_run(run, rows=6)
    ctx = AppContext(run.path.parent)
    status, summary, chart, a, b, rows, tuned = tab_evaluate.show_run(ctx, run.id)
    assert "held-out rows" in status
    assert [r[0] for r in summary["data"]] == ["Base model", "After SFT", "After RFT"]
    assert summary["headers"][1:3] == ["correct (×1)", "format (×0.1)"]
    assert [t.name for t in chart.data] == ["Base model", "After SFT", "After RFT"]
    assert a["value"] == "base" and b["value"] == "rft" and tuned["value"] == "rft"
    assert rows["headers"][:3] == ["row", "prompt", "reference"] and len(rows["data"]) == 6
    lower = tab_evaluate.compare(ctx, run.id, "base", "rft", tab_evaluate.COMPARE_FILTERS[2])
    higher = tab_evaluate.compare(ctx, run.id, "base", "rft", tab_evaluate.COMPARE_FILTERS[1])
    same = tab_evaluate.compare(ctx, run.id, "base", "rft", tab_evaluate.COMPARE_FILTERS[3])
    assert len(lower["data"]) + len(higher["data"]) + len(same["data"]) == 6
    assert tab_evaluate.attach(ctx, "")["value"] == run.id  # newest run with an adapter


@pytest.mark.slow
def test_playground_chats_with_base_and_tuned_models(run):
    from finetuner.ui import tab_evaluate
    from finetuner.ui.context import AppContext

    ctx = AppContext(run.path.parent)
    box, base, tuned = tab_evaluate.chat(ctx, run.id, "rft", "What is 12+30?", [], [], 0.0, 12)
    assert box == "" and [m["role"] for m in base] == ["user", "assistant"] and len(tuned) == 2
    assert isinstance(tuned[1]["content"], str)
    # Gradio 6 hands history back with content as a list of parts; the next turn must accept that.
    history = [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in tuned]
    _box, _base, tuned2 = tab_evaluate.chat(ctx, run.id, "rft", "And 1+1?", base, history, 0.0, 12)
    assert len(tuned2) == 4
    # the cache keeps one base model with the adapters attached by name
    entry = next(iter(ev.MODELS._entries.values()))
    assert str(run.stage_adapter("rft").resolve()) in entry.adapters


def test_model_variants_of_a_run_stopped_during_rft(tmp_path):
    run = RunFolder(tmp_path / "r")
    for path in (run.stage_adapter("sft"), run.adapter):
        path.mkdir(parents=True)
        (path / "adapter_config.json").write_text("{}")
    run.write_status(state="stopped", method="sft+rft", stages=["sft", "rft"], stage="rft", step=7)
    variants = ev.model_variants(run)
    assert [v[0] for v in variants] == ["base", "sft", "rft"]
    assert variants[2][1] == "After RFT (stopped at step 7)" and variants[2][2] == str(run.adapter)


def test_evaluate_refuses_a_run_without_adapter(tmp_path):
    from graders.errors import RunError

    run = RunFolder(tmp_path / "r")
    run.path.mkdir()
    run.config_path.write_text("name: x\nmethod: sft\ndata: {train: x.jsonl}\n")
    run.write_status(state="running", method="sft", stages=["sft"])
    with pytest.raises(RunError, match="no trained adapter"):
        ev.evaluate_run(run)


@pytest.mark.slow
def test_a_run_without_graders_is_scored_against_the_reference(run, tmp_path):
    import yaml

    copy = RunFolder(tmp_path / run.id)
    shutil.copytree(run.path, copy.path, ignore=shutil.ignore_patterns("checkpoints", "eval", "export"))
    spec = yaml.safe_load(copy.config_path.read_text())
    spec.update(method="sft", graders=[])
    copy.config_path.write_text(yaml.safe_dump(spec))
    copy.write_status(method="sft", stages=["sft"])
    results = ev.evaluate_run(copy, rows=4)
    assert list(results["models"]) == ["base", "sft"]
    assert [g["name"] for g in results["graders"]] == ["matches_reference"] and "exact match" in results["notes"][0]
