"""Training on the built-in model: each test asserts that something changed, not only that nothing raised."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from finetuner.demo import arith
from finetuner.config import from_dict
from finetuner.runs import RunFolder, launch, new_run, request_stop, wait
from finetuner.training.stages import train_run

pytestmark = pytest.mark.slow

# A cheap grader with spread inside every group (so GRPO gets a gradient even from the base model),
# and an exact check in the demo's format, to see both kinds of grader in the metrics.
PY_GRADER = {"name": "digits", "type": "python",
             "source": "def grade(sample, item):\n    t = sample['output_text']\n"
                       "    return sum(c.isdigit() for c in t) / max(len(t), 1)\n"}
EXACT = {"name": "exact", "type": "string_check", "input": "{{sample.output_text}}",
         "reference": "Answer: {{item.answer}}", "operation": "eq"}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def data(tmp_path):
    sft = [{"prompt": r["prompt"], "completion": f"Answer: {r['answer']}", "answer": r["answer"]}
           for r in arith.rft_rows(48, seed=5)]
    return {"sft": write_jsonl(tmp_path / "sft.jsonl", sft),
            "eval": write_jsonl(tmp_path / "eval.jsonl", [{**r, "completion": f"Answer: {r['answer']}"}
                                                          for r in arith.eval_rows(8)])}


def make_cfg(files, **extra):
    base = {"name": "t", "model": {"name": "tiny", "max_length": 64},
            "data": {"train": files["sft"], "eval": files["eval"]},
            "sft": {"max_steps": 3, "batch_size": 8, "learning_rate": 1e-3, "save_steps": 100},
            "rft": {"max_steps": 2, "batch_size": 8, "num_generations": 4, "max_completion_length": 8,
                    "learning_rate": 2e-4, "save_steps": 100},
            "graders": [PY_GRADER, EXACT]}
    for key, value in extra.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    return from_dict(base)


def lora_b_norm(adapter_dir) -> float:
    weights = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    return sum(float(v.float().norm()) for k, v in weights.items() if "lora_B" in k)


def test_sft_logs_loss_and_moves_adapter(tmp_path, data):
    run = new_run(tmp_path / "runs", "sft")
    status = train_run(make_cfg(data, method="sft"), run)
    assert status["state"] == "finished", status.get("error")
    losses = [m for m in run.metrics() if m.get("loss") is not None]
    assert [m["step"] for m in losses] == [1, 2, 3]
    assert all(m["stage"] == "sft" and m["time/training_s"] > 0 for m in losses)
    # LoRA's B matrices start at zero: any norm above zero is learning that happened.
    assert lora_b_norm(run.adapter) > 0
    assert status["stage_steps"] == {"sft": 3} and status["device"] == "cpu" and "No CUDA GPU" in status["notice"]


def test_rft_logs_reward_per_grader_and_rollouts(tmp_path, data):
    run = new_run(tmp_path / "runs", "rft")
    status = train_run(make_cfg(data, method="rft"), run)
    assert status["state"] == "finished", status.get("error")
    rows = [m for m in run.metrics() if "reward" in m]
    assert [m["step"] for m in rows] == [1, 2]
    for key in ("reward", "reward_std", "rewards/digits/mean", "rewards/exact/mean", "frac_reward_zero_std",
                "completions/mean_length", "time/generation_s", "time/grading_s", "time/training_s",
                "memory/peak_gb"):
        assert all(m.get(key) is not None for m in rows), key
    assert all(m["time/generation_s"] > 0 for m in rows)
    samples = run.samples()
    assert len(samples) == 2 * 8 and {s["step"] for s in samples} == {1, 2}
    assert all(set(s["scores"]) == {"digits", "exact"} and s["completion"] is not None for s in samples)
    assert lora_b_norm(run.adapter) > 0


class _AdapterAtTrainBegin:
    """Test-only: wraps stages.build_grpo_trainer so the GRPO trainer records the LoRA weights it holds when
    its training begins, the weights RFT really starts from (after TRL has wrapped and prepared the model)."""

    def __init__(self, monkeypatch):
        from transformers import TrainerCallback

        from finetuner.training import stages

        self.weights = None
        build, outer = stages.build_grpo_trainer, self

        class Capture(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                from peft import get_peft_model_state_dict

                outer.weights = {k: v.detach().float().cpu().clone()
                                 for k, v in get_peft_model_state_dict(model).items()}

        def build_with_capture(*args, **kwargs):
            trainer = build(*args, **kwargs)
            trainer.add_callback(Capture())
            return trainer

        monkeypatch.setattr(stages, "build_grpo_trainer", build_with_capture)


def test_sft_then_rft_continues_the_sft_adapter(tmp_path, data, monkeypatch):
    rft_start = _AdapterAtTrainBegin(monkeypatch)
    run = new_run(tmp_path / "runs", "both")
    status = train_run(make_cfg(data, method="sft+rft"), run)
    assert status["state"] == "finished", status.get("error")
    # The SFT adapter as written to stages/sft/adapter/ against what GRPO held when its training began.
    saved = {k: v.float() for k, v in load_file(str(run.stage_adapter("sft") / "adapter_model.safetensors")).items()}
    assert rft_start.weights is not None and set(rft_start.weights) == set(saved)
    assert any("lora_B" in k and float(v.abs().sum()) > 0 for k, v in saved.items())  # SFT trained it: B != 0
    differ = [k for k in saved if not torch.equal(saved[k], rft_start.weights[k])]
    assert not differ, f"RFT did not start from the saved SFT adapter: {len(differ)} tensors differ, e.g. {differ[0]}"
    assert _file_fingerprint(run.adapter) != _file_fingerprint(run.stage_adapter("sft"))  # RFT moved it further
    steps = [(m["stage"], m["run_step"]) for m in run.metrics() if "loss" in m or "reward" in m]
    assert steps[:3] == [("sft", 1), ("sft", 2), ("sft", 3)]
    assert [s for s in steps if s[0] == "rft"] == [("rft", 4), ("rft", 5)]  # one timeline


def _file_fingerprint(adapter_dir) -> str:
    import hashlib

    state = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].float().numpy().tobytes())
    return digest.hexdigest()[:16]


def test_launch_watch_stop_and_resume(tmp_path, data):
    cfg = make_cfg(data, method="sft", sft={"max_steps": 3000, "save_steps": 1000})
    run = launch(cfg, tmp_path / "runs")
    pid = run.read_status()["pid"]
    assert os.getpgid(pid) == pid != os.getpgid(0)  # its own process group
    seen = 0
    deadline = time.time() + 120
    while time.time() < deadline and seen < 3:
        # Another process reads the run while it trains, as the UI does.
        out = subprocess.run([sys.executable, "-c", "import sys; from finetuner.runs import RunFolder;"
                              "print(len(RunFolder(sys.argv[1]).metrics()))", str(run.path)],
                             capture_output=True, text=True, check=True)
        seen = int(out.stdout)
        time.sleep(0.2)
    assert seen >= 3, (run.log_path.read_text()[-2000:] if run.log_path.exists() else "no log")
    assert run.read_status()["state"] == "running"
    request_stop(run)
    status = wait(run, timeout=120)
    assert status["state"] == "stopped", status
    stopped_at = status["step"]
    assert stopped_at < 3000 and run.last_checkpoint("sft").name == f"checkpoint-{stopped_at}"
    # Resume with fewer total steps so the test is quick; the step count must continue, not restart.
    cfg_text = run.config_path.read_text().replace("max_steps: 3000", f"max_steps: {stopped_at + 2}")
    run.config_path.write_text(cfg_text)
    done = subprocess.run([sys.executable, "-m", "finetuner", "train", "--resume", str(run.path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    steps = [m["step"] for m in RunFolder(run.path).metrics() if "loss" in m]
    assert steps[-2:] == [stopped_at + 1, stopped_at + 2]
    assert RunFolder(run.path).read_status()["state"] == "finished"


def test_rft_scores_eval_split_and_keeps_best_checkpoints(tmp_path, data):
    run = new_run(tmp_path / "runs", "evalbest")
    cfg = make_cfg(data, method="rft", rft={"max_steps": 3, "eval_steps": 1, "keep_best": 1})
    status = train_run(cfg, run)
    assert status["state"] == "finished", status.get("error")
    evals = [m for m in run.metrics() if m.get("eval_reward") is not None]
    assert [m["step"] for m in evals] == [1, 2, 3]
    assert all(m.get("eval_rewards/digits/mean") is not None for m in evals)
    best = max(evals, key=lambda m: m["eval_reward"])["step"]
    kept = sorted(p.name for p in (run.checkpoints / "rft").glob("checkpoint-*"))
    assert kept == sorted({f"checkpoint-{best}", "checkpoint-3"})
    assert any(s["split"] == "eval" for s in run.samples())


def test_failing_grader_stops_the_run_with_a_reason(tmp_path, data):
    broken = {"name": "broken", "type": "python",
              "source": "def grade(sample, item):\n    raise ValueError('no answer column')\n"}
    run = new_run(tmp_path / "runs", "broken")
    cfg = make_cfg(data, method="rft", graders=[broken, EXACT], rft={"max_steps": 5, "max_grader_error_rate": 0.3})
    status = train_run(cfg, run)
    assert status["state"] == "failed"
    assert "Graders failed on 50%" in status["error"] and "rft.max_grader_error_rate" in status["error"]
    assert status["step"] == 1  # stopped after the first step, not trained on noise
    errors = [s["errors"]["broken"] for s in run.samples()]
    assert errors and all(e["type"] == "runtime_error" and "no answer column" in e["message"] for e in errors)


def test_resume_after_sft_reloads_its_adapter_and_a_finished_run_stays_finished(tmp_path, data):
    run = new_run(tmp_path / "runs", "resume")
    cfg = make_cfg(data, method="sft+rft")
    assert train_run(cfg, run)["state"] == "finished"
    # Leave the folder as a crash right after the SFT stage would: SFT done, nothing of RFT.
    import shutil

    shutil.rmtree(run.checkpoints / "rft", ignore_errors=True)
    run.write_status(state="failed", stages_done=["sft"], stage_steps={"sft": 3}, handover_rft_start=None)
    status = train_run(cfg, run, resume=True)
    assert status["state"] == "finished", status.get("error")
    # The RFT stage started from the SFT adapter reloaded from disk, not from a live object.
    assert status["handover_rft_start"] == status["handover_sft_end"] == _file_fingerprint(run.stage_adapter("sft"))
    assert status["stage_steps"] == {"sft": 3, "rft": 2} and status["run_step"] == 5
    again = train_run(cfg, run, resume=True)  # nothing left to train: still finished, nothing retrained
    assert again["state"] == "finished" and again["run_step"] == 5


def test_stop_requested_while_queued_is_honoured(tmp_path, data):
    run = new_run(tmp_path / "runs", "queued")
    run.write_status(state="queued")
    run.stop_path.write_text("now")
    status = train_run(make_cfg(data, method="sft"), run)
    assert status["state"] == "stopped" and "before training started" in status["error"]
    assert not run.metrics() and not run.stop_path.exists()


def test_rollouts_carry_the_step_they_trained_and_their_split(tmp_path, data):
    run = new_run(tmp_path / "runs", "tags")
    cfg = make_cfg(data, method="rft", rft={"max_steps": 4, "logging_steps": 2, "eval_steps": 3})
    assert train_run(cfg, run)["state"] == "finished"
    counts = {}
    for s in run.samples():
        counts[(s["step"], s["split"])] = counts.get((s["step"], s["split"]), 0) + 1
    # Evaluations at step 3 (eval_steps) and at the last step; 8 held-out prompts x 4 generations each.
    assert counts == {(1, "train"): 8, (2, "train"): 8, (3, "train"): 8, (4, "train"): 8, (3, "eval"): 32,
                      (4, "eval"): 32}


def test_eval_steps_without_eval_data_is_said(tmp_path, data):
    run = new_run(tmp_path / "runs", "noeval")
    cfg = make_cfg(data, method="rft", data={"train": data["sft"], "eval": "", "eval_fraction": 0},
                   rft={"max_steps": 1, "eval_steps": 1})
    status = train_run(cfg, run)
    assert status["state"] == "finished" and "`rft.eval_steps` is 1 but there is no held-out data" in status["notice"]


def test_broken_grader_fails_before_any_training(tmp_path, data):
    run = new_run(tmp_path / "runs", "early")
    bad = {"name": "x", "type": "string_chek", "input": "{{sample.output_text}}", "reference": "a"}
    cfg = make_cfg(data, method="sft+rft", graders=[bad])
    status = train_run(cfg, run)
    assert status["state"] == "failed" and "string_chek" in status["error"]
    assert not run.metrics()  # SFT never started


def test_launch_with_paths_relative_to_the_working_folder(tmp_path, data, monkeypatch):
    work = tmp_path / "project"
    work.mkdir()
    (work / "rows.jsonl").write_text(open(data["sft"]).read())
    (work / "g.py").write_text("def grade(sample, item):\n    return float(len(sample['output_text']) > 3)\n")
    monkeypatch.chdir(work)
    cfg = make_cfg({"sft": "rows.jsonl", "eval": ""}, method="rft", rft={"max_steps": 1},
                   graders=[{"name": "long", "type": "python", "file": "g.py"}])
    run = launch(cfg, tmp_path / "runs")
    status = wait(run, timeout=300)
    assert status["state"] == "finished", status.get("error")
    saved = run.config_path.read_text()
    assert str(work / "rows.jsonl") in saved and str(work / "g.py") in saved
    assert {"long"} <= set(run.samples()[0]["scores"])


def test_report_to_a_tracker_that_is_not_installed_is_refused_first(tmp_path, data):
    run = new_run(tmp_path / "runs", "tracker")
    status = train_run(make_cfg(data, method="sft", report_to=["wandb"]), run)
    assert status["state"] == "failed" and "`report_to` names wandb" in status["error"] and not run.metrics()
