"""Fault injection, a hook for tests only: makes a training process fail the way real runs fail, on cue.

Tests set FINETUNER_FAULT in the training child's environment (`runs.launch(cfg, dir, extra_env={...})`).
When it is unset (always, outside tests) every hook returns at once and does nothing. The value is a
comma-separated list of `kind@N`:

    oom@N              torch.OutOfMemoryError as optimizer step N begins (what CUDA raises)
    crash@N            RuntimeError as step N begins
    enospc@N           OSError(ENOSPC) when the metrics of step N (or later) are written
    enospc_save@N      the checkpoint of step N is cut short as a full disk leaves it (no trainer_state.json,
                       written last) and OSError(ENOSPC) is raised
    kill_save@N        the checkpoint of step N is torn (its weights cut to half, trainer_state.json whole: what a
                       power cut leaves) and the process SIGKILLs itself before the checkpoint is sealed
    kill_adapter@N     the N-th adapter save of the process is torn the same way in its temporary folder, after
                       the weights and before the tokenizer, and the process SIGKILLs itself
    hang_generation@S  the first rollout generation stalls until Stop is pressed (the run's STOP file), at most
                       S seconds, then goes on: a Stop that arrives while generation is running

One seam, in the training process: stages._train_stage calls `inject(trainer, run)` only when the variable is
set. It adds one TrainerCallback (steps, saves), wraps this run folder's metrics write, the model's
save_pretrained and the trainer's rollout generation; the training code itself carries no hook.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time
from pathlib import Path

ENV = "FINETUNER_FAULT"
_hung = False
_adapter_saves = 0
_stop_path: Path | None = None


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def inject(trainer, run) -> None:
    """Arm the faults of `plan()` on this stage's trainer and run folder (called once per stage)."""
    global _stop_path
    _stop_path = Path(run.stop_path)  # for hang_generation
    trainer.add_callback(_fault_callback())
    if not getattr(run.append_metric, "_faulty", False):  # the run folder outlives a stage: wrap it once
        write = run.append_metric

        def append_metric(row: dict) -> None:
            before_write(row.get("step", 0), run.metrics_path)
            write(row)

        append_metric._faulty = True
        run.append_metric = append_metric
    model = trainer.model
    if not getattr(model.save_pretrained, "_faulty", False):  # RFT after SFT trains the same model: wrap once
        save = model.save_pretrained

        def save_pretrained(save_directory, *args, **kwargs):
            out = save(save_directory, *args, **kwargs)
            if not Path(save_directory).name.startswith("checkpoint-"):  # an adapter, not a checkpoint
                adapter_saved(Path(save_directory))
            return out

        save_pretrained._faulty = True
        model.save_pretrained = save_pretrained
    from trl import GRPOTrainer

    if isinstance(trainer, GRPOTrainer):  # wrap the rollout generation TimedGRPOTrainer times
        generate = trainer._generate

        def _generate(prompts):
            in_generation()
            return generate(prompts)

        trainer._generate = _generate


def _fault_callback():
    from transformers import TrainerCallback  # here: importing this module must stay free

    class FaultCallback(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            step_begins(state.global_step + 1)

        def on_save(self, args, state, control, **kwargs):
            checkpoint_saved(state.global_step, Path(args.output_dir) / f"checkpoint-{state.global_step}")

    return FaultCallback()


def plan() -> dict[str, float]:
    """{kind: N} from the environment; {} when unset."""
    spec = os.environ.get(ENV, "")
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, value = part.partition("@")
        out[kind] = float(value) if value else 1.0
    return out


def _announce(text: str) -> None:
    # The child's stderr is the run's log.txt: tests wait for this line to know the fault is live.
    print(f"{ENV}: {text}", file=sys.stderr, flush=True)


def step_begins(step: int) -> None:
    """Optimizer step `step` (1-based) is about to run."""
    faults = plan()
    if not faults:
        return
    if faults.get("oom") == step:
        import torch

        _announce(f"raising OutOfMemoryError at step {step}")
        raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (simulated by {ENV}).")
    if faults.get("crash") == step:
        _announce(f"raising RuntimeError at step {step}")
        raise RuntimeError(f"simulated crash at step {step} ({ENV})")


def before_write(step: int, path: Path) -> None:
    """Metrics of `step` are about to be appended to `path`."""
    at = plan().get("enospc")
    if at is not None and step >= at:
        _announce(f"raising ENOSPC writing {path} at step {step}")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _tear_and_die(folder: Path, what: str) -> None:
    # Half of each weights file, as a power cut leaves data that was never fsync'ed; then no cleanup at all.
    for weights in Path(folder).glob("*.safetensors"):
        with open(weights, "r+b") as fh:
            fh.truncate(weights.stat().st_size // 2)
    _announce(f"tearing {what} {folder} and killing this process (SIGKILL)")
    os.kill(os.getpid(), signal.SIGKILL)


def adapter_saved(folder: Path) -> None:
    """The model's weights were just written into `folder`, an adapter being saved (not yet complete)."""
    global _adapter_saves
    _adapter_saves += 1
    if plan().get("kill_adapter") == _adapter_saves:
        _tear_and_die(folder, "the adapter being saved in")


def checkpoint_saved(step: int, folder: Path) -> None:
    """The trainer just saved `folder`, the checkpoint of `step`."""
    if plan().get("kill_save") == step:
        _tear_and_die(folder, "checkpoint")
    at = plan().get("enospc_save")
    if at is not None and step == at:
        state = Path(folder) / "trainer_state.json"
        state.unlink(missing_ok=True)
        _announce(f"cutting checkpoint {folder} short and raising ENOSPC")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(state))


def in_generation() -> None:
    """Rollout generation is running."""
    global _hung
    seconds = plan().get("hang_generation")
    if not seconds or _hung:
        return
    _hung = True
    _announce(f"stalling inside generation until Stop (at most {seconds:g}s)")
    deadline = time.time() + seconds
    while time.time() < deadline and not (_stop_path is not None and _stop_path.exists()):
        time.sleep(0.1)
    time.sleep(0.5)  # still generating for a moment after the request arrived
    _announce("generation goes on")
