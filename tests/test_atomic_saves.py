"""Atomic, fsync'ed saves (issue 15 part 6): runs/atomic.py alone, the checkpoint seal, and real tiny training
runs SIGKILLed in the middle of saving a checkpoint and an adapter (faults kill_save / kill_adapter)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from finetuner.runs import RunFolder, new_run, refresh_state, wait
from finetuner.runs import atomic
from finetuner.runs.atomic import clean_leftovers, fsync_tree, partial_dir, publish_dir, write_text_atomic
from finetuner.runs.folder import SEAL, SEALED_STAGE, checkpoint_complete
from finetuner.training.checkpoint_seal import seal, seal_legacy

ROOT = Path(__file__).resolve().parent.parent


class Killed(BaseException):
    """The process dying at this point (no except clause of the code under test runs its cleanup)."""


# ------------------------------------------------------------------ atomic.py


def test_write_text_atomic_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "status.json"
    write_text_atomic(path, "old")
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_write_interrupted_before_the_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "status.json"
    write_text_atomic(path, '{"state": "running"}')

    def cut(*_a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", cut)
    with pytest.raises(OSError):
        write_text_atomic(path, '{"state": "finished"}')
    assert json.loads(path.read_text()) == {"state": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # the temp file went with the failure


def test_fsync_tree_and_status_fsync_every_file(tmp_path, monkeypatch):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.bin", "a/b/y.bin", "z.json"):
        (tmp_path / name).write_bytes(b"1")
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    fsync_tree(tmp_path)
    for name in ("a/x.bin", "a/b/y.bin", "z.json", "a/b", "a", ""):
        assert str((tmp_path / name).resolve()).rstrip("/") in synced, name
    synced.clear()
    run = new_run(tmp_path, "r")
    run.write_status(state="running")
    assert run.read_status()["state"] == "running"
    # The temp file's data (fsync'ed before its rename to status.json), then the run folder itself.
    assert any(".status.json-" in p for p in synced) and str(run.path.resolve()) in synced


def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"v": text}))
    (path / "adapter_model.safetensors").write_bytes(text.encode() * 1000)
    return path


def _whole(path: Path, text: str) -> bool:
    return (json.loads((path / "adapter_config.json").read_text()) == {"v": text}
            and (path / "adapter_model.safetensors").read_bytes() == text.encode() * 1000)


def test_publish_dir_replaces_a_folder_whole(tmp_path):
    final = _folder(tmp_path / "adapter", "old")
    publish_dir(_folder(partial_dir(final), "new"), final)
    assert _whole(final, "new") and [p.name for p in tmp_path.iterdir()] == ["adapter"]
    fresh = tmp_path / "stages" / "sft" / "adapter"
    fresh.parent.mkdir(parents=True)
    publish_dir(_folder(partial_dir(fresh), "first"), fresh)
    assert _whole(fresh, "first")


def test_a_writer_killed_before_publishing_leaves_the_old_folder(tmp_path):
    final = _folder(tmp_path / "adapter", "old")
    # A real process writes half of the new folder, then dies by SIGKILL (no cleanup of any kind).
    script = textwrap.dedent(f"""
        import os, signal
        from finetuner.runs.atomic import partial_dir
        tmp = partial_dir({str(final)!r})
        tmp.mkdir()
        (tmp / "adapter_config.json").write_text('{{"v": "new"}}')
        with open(tmp / "adapter_model.safetensors", "wb") as fh:
            fh.write(b"n" * 1500)
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL
    assert _whole(final, "old")  # what a reader finds under the real name
    assert partial_dir(final).exists()  # the torn one, under a name no reader looks for
    assert clean_leftovers(final) == [partial_dir(final)] and _whole(final, "old")
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_killed_between_the_two_renames_the_old_folder_comes_back(tmp_path, monkeypatch):
    final = _folder(tmp_path / "adapter", "old")
    tmp = _folder(partial_dir(final), "new")
    real, calls = os.rename, []

    def rename(src, dst):
        calls.append(src)
        if len(calls) == 2:  # the old folder is aside, the new one not yet in place
            raise Killed
        real(src, dst)

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(Killed):
        publish_dir(tmp, final)
    monkeypatch.setattr(atomic.os, "rename", real)
    assert not final.exists()
    clean_leftovers(final)
    assert _whole(final, "old") and [p.name for p in tmp_path.iterdir()] == ["adapter"]


# ------------------------------------------------------------------ the seal


def _checkpoint(stage_dir: Path, step: int) -> Path:
    folder = stage_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 100)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_unsealed_checkpoints_are_incomplete_once_the_stage_is_sealed(tmp_path):
    run = RunFolder(tmp_path)
    stage = run.checkpoints / "sft"
    old = [_checkpoint(stage, s) for s in (1, 2)]  # a run from before seals: judged by its trainer state
    assert run.last_checkpoint("sft") == old[1]
    assert seal_legacy(stage) == old and (stage / SEALED_STAGE).exists()
    assert seal_legacy(stage) == []  # once
    torn = _checkpoint(stage, 3)  # trainer_state.json whole, never sealed: a power cut mid-save
    assert not checkpoint_complete(torn) and run.last_checkpoint("sft") == old[1]
    seal(torn, 3)
    assert json.loads((torn / SEAL).read_text())["step"] == 3 and run.last_checkpoint("sft") == torn
    half = _checkpoint(stage, 4)
    seal(half, 4)
    (half / "trainer_state.json").write_text('{"global_')  # sealed but its state does not parse
    assert run.last_checkpoint("sft") == torn
    assert run.discard_incomplete_checkpoints("sft") == [half]
    assert [p.name for p in sorted(stage.glob("checkpoint-*"))] == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]


# ------------------------------------------------------------------ real runs, killed mid-save


def _config(tmp: Path):
    from finetuner.config import from_dict
    from finetuner.demo import arith

    rows = [{"prompt": r["prompt"], "completion": f"Answer: {r['answer']}"} for r in arith.rft_rows(32, seed=5)]
    (tmp / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return from_dict({"name": "killed", "method": "sft", "model": {"name": "tiny", "max_length": 64},
                      "data": {"train": str(tmp / "rows.jsonl")},
                      "sft": {"max_steps": 3, "batch_size": 8, "learning_rate": 1e-3, "save_steps": 1}})


def _log(run: RunFolder) -> str:
    return run.log_path.read_text(errors="replace")[-3000:] if run.log_path.exists() else "(no log)"


def _killed(run: RunFolder, what: str) -> dict:
    status = wait(run, timeout=240, poll=0.25)
    assert status["state"] == "failed" and "died without saying why" in status["error"], _log(run)
    assert f"tearing {what}" in _log(run)
    return json.loads(run.status_path.read_text())  # parses: written atomically to the end


def _resume(run: RunFolder, fault: str | None = None) -> dict:
    from finetuner.runs import start_child

    run.write_status(state="queued", error=None, pid=None)
    start_child(run, [sys.executable, "-m", "finetuner", "train", "--resume", str(run.path)],
                {"FINETUNER_FAULT": fault} if fault else None)
    return run


def _loads(adapter: Path):
    from peft import PeftModel

    from finetuner.modeling.load import load_model

    base, _tok, _plan = load_model("tiny", "none")
    model = PeftModel.from_pretrained(base, str(adapter))
    assert [n for n, _p in model.named_parameters() if "lora_B" in n]


@pytest.mark.slow
def test_killed_mid_checkpoint_and_mid_adapter_loses_nothing(tmp_path):
    from finetuner.runs import launch

    run = launch(_config(tmp_path), tmp_path / "runs", extra_env={"FINETUNER_FAULT": "kill_save@2"})
    _killed(run, "checkpoint")
    stage = run.checkpoints / "sft"
    torn = stage / "checkpoint-2"
    # The torn checkpoint looks complete by the old rule (its trainer state parses) but is not sealed.
    assert json.loads((torn / "trainer_state.json").read_text())["global_step"] == 2
    assert not checkpoint_complete(torn) and run.last_checkpoint("sft") == stage / "checkpoint-1"
    assert (stage / "checkpoint-1" / SEAL).exists()
    assert "resume with" in refresh_state(run)["error"]

    # Resume: the torn checkpoint is discarded, training continues from step 1; killed mid-save of the stage's
    # adapter (the first adapter this process saves).
    _killed(_resume(run, "kill_adapter@1"), "the adapter being saved in")
    assert not torn.exists() or checkpoint_complete(torn)
    assert run.last_checkpoint("sft") == stage / "checkpoint-3"
    assert not run.stage_adapter("sft").exists() and not run.adapter.exists()  # absent, not half
    assert partial_dir(run.stage_adapter("sft")).exists()  # the torn one is only under its temp name
    from finetuner.evaluation.heldout import model_variants

    assert [k for k, _label, _path in model_variants(run)] == ["base"]

    # Resume again, no fault, one step more (a resume from a checkpoint at exactly max_steps trains one extra step
    # in transformers 5.24): it continues from checkpoint-3, both adapters whole, the temp folder gone.
    run.config_path.write_text(run.config_path.read_text().replace("max_steps: 3", "max_steps: 4"))
    status = wait(_resume(run), timeout=240, poll=0.25)
    assert status["state"] == "finished", _log(run)
    assert status["stage_steps"] == {"sft": 4}
    assert [m["step"] for m in run.metrics() if "loss" in m][-2:] == [3, 4]  # step 4 only: nothing retrained
    _loads(run.stage_adapter("sft"))
    _loads(run.adapter)
    assert not partial_dir(run.stage_adapter("sft")).exists()
    assert not list(run.path.glob(".adapter*")) and not list(run.stage_adapter("sft").parent.glob(".adapter*"))


def test_a_kill_between_the_last_stage_and_adapter_is_repaired_on_resume(tmp_path):
    """Killed after the last stage's adapter was saved and marked done, before adapter/: the resume has nothing
    to train, and publishes that stage's adapter as adapter/ instead of finishing without one."""
    from finetuner.config import from_dict
    from finetuner.runs import RunFolder
    from finetuner.training import stages

    run = RunFolder(tmp_path / "run")
    stage = run.stage_adapter("sft")
    stage.mkdir(parents=True)
    (stage / "adapter_model.safetensors").write_bytes(b"weights")
    (stage / "adapter_config.json").write_text("{}")
    run.write_status(state="failed", stages_done=["sft"], stage_steps={"sft": 7})
    cfg = from_dict({"name": "r", "method": "sft", "model": {"name": "tiny"}, "data": {"train": "x.jsonl"}})
    stages._train_stages(cfg, run, resume=True)
    assert (run.adapter / "adapter_model.safetensors").read_bytes() == b"weights"
    assert run.read_status()["state"] == "finished" and run.read_status()["run_step"] == 7
    assert not list(run.path.glob(".adapter*"))  # no temporary folder left beside it
