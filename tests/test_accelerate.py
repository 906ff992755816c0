"""`accelerate launch` with 2 processes on CPU (gloo), on the built-in model: the exported bundle trains
unchanged, only rank 0 writes the run folder, and Ctrl-C stops every rank politely. (`finetuner stop` and the
Stop button write the same stop file the signal handler writes, and rank 0 decides for all in both cases.)

Uses examples/accelerate/ddp_cpu.yaml, the config the docs give for trying the multi-process path without GPUs.
"""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from safetensors.torch import load_file

from finetuner.demo import arith
from finetuner.config import from_dict, portable_config, save_config
from finetuner.runs.export import export_bundle
from finetuner.runs import RunFolder, new_run

ROOT = Path(__file__).resolve().parent.parent
DDP_CPU = ROOT / "examples" / "accelerate" / "ddp_cpu.yaml"
# A grader with spread inside every group, so GRPO has something to learn from the base model.
DIGITS = {"name": "digits", "type": "python",
          "source": "def grade(sample, item):\n    t = sample['output_text']\n"
                    "    return sum(c.isdigit() for c in t) / max(len(t), 1)\n"}


def launch_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CPU),
            "-m", "finetuner", "train", *args]


def env() -> dict:
    out = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    out.pop("WORLD_SIZE", None)  # never inherit a launcher's world from the test process
    return out


def config(tmp_path, **sections) -> dict:
    rows = [{"prompt": r["prompt"], "completion": f"Answer: {r['answer']}", "answer": r["answer"]}
            for r in arith.rft_rows(48, seed=5)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"name": "ddp", "model": {"name": "tiny", "max_length": 64}, "data": {"train": "train.jsonl"},
            "graders": [DIGITS], "seed": 0,
            # batch sizes are per process: 2 ranks x 4 completions = 2 prompts x 4 generations per step
            "sft": {"max_steps": 3, "batch_size": 4, "learning_rate": 1e-3, "save_steps": 100},
            "rft": {"max_steps": 2, "batch_size": 4, "num_generations": 4, "max_completion_length": 8,
                    "learning_rate": 2e-4, "save_steps": 100}}
    for key, value in sections.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) else value
    return spec


def lora_b_norm(adapter_dir) -> float:
    weights = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    return sum(float(v.float().norm()) for k, v in weights.items() if "lora_B" in k)


@pytest.mark.parametrize("name", ["ddp_cpu", "ddp_gpu", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_shipped_configs_are_valid_for_this_accelerate(name):
    """accelerate's own loader rejects unknown or misspelt fields; no DeepSpeed install is needed to load one."""
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(DDP_CPU.parent / f"{name}.yaml"))
    expected = {"ddp_cpu": "MULTI_GPU", "ddp_gpu": "MULTI_GPU", "fsdp": "FSDP"}.get(name, "DEEPSPEED")
    assert cfg.distributed_type.value == expected and cfg.num_processes == 2
    assert cfg.use_cpu == (name == "ddp_cpu")
    if name == "fsdp":  # LoRA under FSDP: frozen and trainable weights in one unit; a whole adapter saved
        assert cfg.fsdp_config["fsdp_use_orig_params"] and cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    if name == "deepspeed_zero3":  # gathered 16-bit weights, so adapter/ is a loadable adapter, not shards
        assert cfg.deepspeed_config["zero_stage"] == 3 and cfg.deepspeed_config["zero3_save_16bit_model"]


@pytest.mark.slow
def test_exported_bundle_trains_sft_then_rft_under_two_processes(tmp_path):
    # Export a bundle the way the Runs tab does, unzip it elsewhere and train it as its README says.
    src = tmp_path / "src"
    src.mkdir()
    cfg = from_dict(config(src, method="sft+rft"), base_dir=src)
    original = new_run(tmp_path / "orig", "ddp")
    save_config(portable_config(cfg), original.config_path)
    with zipfile.ZipFile(export_bundle(original)) as zf:
        zf.extractall(tmp_path / "unzipped")
    bundle = next((tmp_path / "unzipped").iterdir())
    assert "accelerate launch" in (bundle / "README.md").read_text()

    runs = tmp_path / "runs"
    proc = subprocess.run(launch_cmd("run.yaml", "--runs-dir", str(runs)), cwd=bundle, env=env(),
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # Both ranks ran (each logs with its rank), and they agreed on one run folder.
    assert "[rank 0]" in out and "[rank 1]" in out
    folders = list(runs.iterdir())
    assert len(folders) == 1, folders
    run = RunFolder(folders[0])
    assert proc.stdout.count("Run folder:") == 1  # printed by rank 0 only

    status = run.read_status()
    assert status["state"] == "finished", status.get("error")
    assert status["world_size"] == 2 and status["stage_steps"] == {"sft": 3, "rft": 2}

    metrics = run.metrics()
    losses = [(m["stage"], m["step"]) for m in metrics if m.get("loss") is not None and "reward" not in m]
    rewards = [m["step"] for m in metrics if m.get("reward") is not None]
    # One row per step: a second writer would have doubled every row.
    assert losses == [("sft", 1), ("sft", 2), ("sft", 3)]
    assert rewards == [1, 2]

    # Rollouts: each rank graded its own 4 completions per step (different prompts: the data is sharded),
    # and rank 0 wrote all of them once.
    samples = run.samples()
    assert Counter((s["step"], s["rank"]) for s in samples) == {(1, 0): 4, (1, 1): 4, (2, 0): 4, (2, 1): 4}
    assert all("digits" in s["scores"] and not s["errors"] for s in samples)  # each rank's sandbox pool graded
    for step in (1, 2):
        by_rank = [{s["prompt"] for s in samples if s["step"] == step and s["rank"] == r} for r in (0, 1)]
        assert by_rank[0] != by_rank[1]

    # The adapter (written once, by rank 0) learned: LoRA's B matrices start at zero.
    assert lora_b_norm(run.adapter) > 0 and lora_b_norm(run.stage_adapter("sft")) > 0
    assert status["handover_sft_end"] == status["handover_rft_start"]
    log = run.log_path.read_text()
    assert "[rank 0]" in log and "[rank 1]" not in log  # log.txt is rank 0's


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_politely(tmp_path):
    """One Ctrl-C reaches every rank (and the launcher, which then sends SIGTERM): each rank asks for a stop,
    rank 0 decides, all finish the step together and the adapter is saved. Before ranks counted their own
    Ctrl-C, the second rank took the first one's stop file for a second Ctrl-C and crashed the run."""
    spec = config(tmp_path, method="sft", sft={"max_steps": 300})  # SFT: the same stop path, faster steps
    (tmp_path / "run.yaml").write_text(json.dumps(spec))  # JSON is YAML
    run = RunFolder(tmp_path / "run")
    with open(tmp_path / "out.txt", "w") as out:
        # Its own process group, as a terminal gives a foreground job, so the signal goes to every rank.
        proc = subprocess.Popen(launch_cmd(str(tmp_path / "run.yaml"), "--run-dir", str(run.path)), cwd=tmp_path,
                                env=env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not any("loss" in m for m in run.metrics()):
            assert proc.poll() is None, (tmp_path / "out.txt").read_text()[-4000:]
            assert time.time() < deadline, "no training step was logged"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=300)  # a rank left behind in a collective would keep the launcher here
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    status = run.read_status()
    assert status["state"] == "stopped", (status.get("error"), (tmp_path / "out.txt").read_text()[-4000:])
    assert status["world_size"] == 2 and 1 <= status["step"] < 300
    assert lora_b_norm(run.adapter) > 0
    assert run.last_checkpoint("sft") is not None and not run.stop_path.exists()
