"""The run queue: a launch while the machine is busy waits its turn instead of being refused.

A queued run is a run folder with `config.yaml` and a status of state `waiting` (no process yet); the order
lives in `runs_dir/queue.json`. `advance` starts waiting runs in that order while a device slot is free: one
slot per CUDA GPU (the child gets `CUDA_VISIBLE_DEVICES=<that GPU>`), else one "cpu" slot. Three callers
keep the queue moving: `enqueue` itself, the training child when it ends (cli.py), and the web app's
worker thread (ui/queue_view.py), which also resumes the queue after a restart. Every change to the order
and every start happens under `launch_lock`, so several app processes and children never start one run
twice or two runs on one slot.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from finetuner.runs.atomic import write_text_atomic
from finetuner.runs.folder import ACTIVE_STATES, RunFolder, _now, new_run, open_run
from finetuner.runs.process import active_run, launch_lock, list_runs, start_child, train_command
from graders.errors import RunError

log = logging.getLogger("finetuner.queue")

WAITING = "waiting"
QUEUE_FILE = "queue.json"
ENV_FILE = "queue_env.json"  # the extra environment a waiting run starts with (may hold keys: mode 0600)
# planning.step_time keeps its probes here; runs/ sits below planning/ and may not import it, so the name is
# repeated (tests/test_run_queue.py checks the two agree).
PROBES = "_probes"
# Every slot, handed to each child: a child sees only its own GPU, yet advances the queue for all when it ends.
SLOTS_ENV = "FINETUNER_QUEUE_SLOTS"


# ------------------------------------------------------------------ devices


def gpu_count() -> int:
    """CUDA GPUs visible to this process. torch answers through NVML without initialising CUDA here, so the
    web process holds no GPU memory and the children own the devices."""
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - no torch or no driver: a CPU machine
        return 0


def device_slots() -> list[str]:
    """One slot per GPU, named as the child's CUDA_VISIBLE_DEVICES will name it; ["cpu"] without a GPU."""
    inherited = os.environ.get(SLOTS_ENV, "").strip()
    if inherited:
        return inherited.split(",")
    n = gpu_count()
    if n <= 0:
        return ["cpu"]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible:
        # This process already sees a subset: the child must get the same physical names, not 0..n-1.
        return [v.strip() for v in visible.split(",") if v.strip()][:n]
    return [str(i) for i in range(n)]


def _free_slots(runs_dir: Path, slots: list[str]) -> list[str]:
    active = [s for s in list_runs(runs_dir) if s.get("state") in ACTIVE_STATES]
    busy = {str(s["device"]) for s in active if str(s.get("device")) in slots}
    # A run started outside the queue (a terminal, the demo, a benchmark) says no device: it holds one slot.
    untagged = sum(1 for s in active if str(s.get("device")) not in slots)
    return [s for s in slots if s not in busy][untagged:]


# ------------------------------------------------------------------ the order


def _read_order(runs_dir: Path) -> list[str]:
    try:
        ids = json.loads((runs_dir / QUEUE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def _write_order(runs_dir: Path, ids: list[str]) -> None:
    write_text_atomic(runs_dir / QUEUE_FILE, json.dumps(ids, indent=1))  # a power cut keeps one whole order


def _is_waiting(runs_dir: Path, run_id: str) -> bool:
    path = runs_dir / run_id
    return path.parent == runs_dir and RunFolder(path).read_status().get("state") == WAITING


def _current_order(runs_dir: Path) -> list[str]:
    """queue.json without ids gone or started, plus waiting folders it lacks (queue.json lost or edited)."""
    order = [i for i in dict.fromkeys(_read_order(runs_dir)) if _is_waiting(runs_dir, i)]
    orphans = [s for s in list_runs(runs_dir) if s.get("state") == WAITING and s["id"] not in order]
    orphans.sort(key=lambda s: s.get("waiting_since") or s.get("created") or 0)
    return order + [s["id"] for s in orphans]


# ------------------------------------------------------------------ the interface


def enqueue(config, runs_dir: str | Path = "runs", owner: str | None = None,
            extra_env: dict | None = None) -> RunFolder:
    """Add `config` (a RunConfig) to the end of the queue and start it at once if a slot is free.

    The run folder exists on return (watch it at once); its state is `waiting` until a slot frees, then the
    usual queued -> running. `owner` is recorded as given; `extra_env` is kept in the folder until it starts."""
    from finetuner.config import portable_config, save_config

    runs_dir = Path(runs_dir).resolve()
    with launch_lock(runs_dir):
        run = new_run(runs_dir, config.name)
        save_config(portable_config(config), run.config_path)
        if extra_env:
            fd = os.open(run.path / ENV_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({str(k): str(v) for k, v in extra_env.items()}, fh)
        now = _now()
        run.write_status(state=WAITING, created=now, waiting_since=now, name=config.name, method=config.method,
                         owner=owner)
        _write_order(runs_dir, [i for i in _current_order(runs_dir) if i != run.id] + [run.id])
    advance(runs_dir)
    return run


def advance(runs_dir: str | Path = "runs") -> list[RunFolder]:
    """Start waiting runs, in queue order, while a device slot is free; returns the runs started now.

    Nothing starts while a step probe measures (it would time neither truly). Safe to call from anywhere, as
    often as wanted: a runs folder that never had a queue is left untouched."""
    runs_dir = Path(runs_dir).resolve()
    if not (runs_dir / QUEUE_FILE).exists():
        return []
    started: list[RunFolder] = []
    with launch_lock(runs_dir):
        order = _current_order(runs_dir)
        if order != _read_order(runs_dir):
            _write_order(runs_dir, order)
        if not order or active_run(runs_dir / PROBES) is not None:
            return started
        slots = device_slots()
        free = _free_slots(runs_dir, slots)
        while order and free:
            run, device = RunFolder(runs_dir / order.pop(0)), free.pop(0)
            # Out of the order before the start: a start that fails must not be retried on every call.
            _write_order(runs_dir, order)
            try:
                _start(run, device, slots)
            except Exception as err:  # noqa: BLE001 - one broken run must not stall the ones behind it
                log.exception("queued run %s did not start", run.id)
                run.write_status(state="failed", finished=_now(), error=(
                    f"The queued run could not start its training process: {type(err).__name__}: {err}. "
                    f"See {run.log_path} and launch again."))
                free.insert(0, device)
                continue
            started.append(run)
    return started


def _start(run: RunFolder, device: str, slots: list[str]) -> None:
    env_path = run.path / ENV_FILE
    env = json.loads(env_path.read_text(encoding="utf-8")) if env_path.exists() else {}
    env[SLOTS_ENV] = ",".join(slots)
    if device != "cpu":
        env["CUDA_VISIBLE_DEVICES"] = device  # the slot decides, so two runs never share a GPU
    run.write_status(state="queued", queued=_now(), device=int(device) if device.isdigit() else device)
    start_child(run, train_command(run), env)
    env_path.unlink(missing_ok=True)


def waiting(runs_dir: str | Path = "runs") -> list[dict]:
    """The queued runs in order: each its status plus id, path and position (1-based)."""
    runs_dir = Path(runs_dir).resolve()
    if not runs_dir.is_dir():
        return []
    out = []
    for n, run_id in enumerate(_current_order(runs_dir), start=1):
        path = runs_dir / run_id
        out.append({**RunFolder(path).read_status(), "id": run_id, "path": str(path), "position": n})
    return out


def cancel(runs_dir: str | Path, run_id: str) -> None:
    """Take a waiting run out of the queue and delete its folder (it never trained)."""
    runs_dir = Path(runs_dir).resolve()
    run = open_run(runs_dir, run_id)
    with launch_lock(runs_dir):
        state = run.read_status().get("state")
        if state != WAITING:
            raise RunError(f"Run {run.id} is not waiting in the queue any more (it is {state or 'unknown'}), so "
                           f"there is nothing to cancel. To end it, press Stop on the Monitor tab (or "
                           f"`python -m finetuner stop {run.path}`).")
        _write_order(runs_dir, [i for i in _current_order(runs_dir) if i != run.id])
        shutil.rmtree(run.path)


def move(runs_dir: str | Path, run_id: str, to: int) -> None:
    """Put a waiting run at position `to` (1-based; beyond either end means first or last)."""
    runs_dir = Path(runs_dir).resolve()
    with launch_lock(runs_dir):
        order = _current_order(runs_dir)
        if run_id not in order:
            raise RunError(f"Run {run_id} is not waiting in the queue (it started, was cancelled, or never "
                           "queued). Refresh the queue and pick a run from it.")
        order.remove(run_id)
        order.insert(max(0, min(int(to) - 1, len(order))), run_id)
        _write_order(runs_dir, order)


def position(runs_dir: str | Path, run_id: str) -> int | None:
    """A waiting run's 1-based place in the queue, or None when it is not waiting."""
    return next((w["position"] for w in waiting(runs_dir) if w["id"] == run_id), None)
