"""Training under `accelerate launch` with several processes (DDP, FSDP, DeepSpeed ZeRO).

Every rank runs the same `python -m finetuner train`; they must agree on one run folder, and only the main
process (global rank 0) may write it: status.json, metrics, rollouts, the log and the adapter. The other
ranks train, grade their own completions and take part in the collectives (gathering rollouts, saving
sharded weights), but write nothing of the run folder except what the trainer itself writes per rank in a
checkpoint (its RNG state, its shard). Decisions that end training (a stop request) are taken by rank 0
and broadcast, since a rank that stops alone leaves the others waiting forever in the next collective.

A single process (`python -m finetuner train`, the UI's launch) never touches torch.distributed here.
"""

from __future__ import annotations

import os

from finetuner.runs import RunFolder


def world_size() -> int:
    """How many training processes the launcher started (torchrun / accelerate set WORLD_SIZE for each)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def _state():
    """The process group, joined once. Same choice of backend as the trainer's own PartialState (gloo on
    CPU, NCCL on CUDA), which then finds the group already up and reuses it."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def start() -> None:
    """Join the process group early, before the run folder is chosen, so rank 0 can hand its path over."""
    if world_size() > 1:
        _state()


def is_main() -> bool:
    return world_size() <= 1 or _state().is_main_process


def rank() -> int:
    return _state().process_index if world_size() > 1 else 0


def from_main(value):
    """Rank 0's `value`, on every rank (a collective: every rank must call it at the same point)."""
    if world_size() <= 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def gather_to_main(rows: list) -> list:
    """Every rank's `rows`, concatenated in rank order (a collective); a single process gets its own back."""
    if world_size() <= 1:
        return rows
    from accelerate.utils import gather_object

    return gather_object(rows)


class FollowerRun(RunFolder):
    """The run folder as a non-main rank sees it: read, never written. This rank's own status updates are
    kept in memory and laid over what rank 0 wrote, so code that reads back its own write (the final state,
    the exit code) sees it without waiting for rank 0."""

    def __post_init__(self):
        super().__post_init__()
        self._own: dict = {}

    def read_status(self) -> dict:
        return {**super().read_status(), **self._own}

    def write_status(self, **updates) -> dict:
        self._own.update(updates)
        return self.read_status()

    def append_jsonl(self, path, rows) -> None:
        return None

    def append_metric(self, row: dict) -> None:
        return None

    def append_samples(self, rows: list[dict]) -> None:
        return None


def for_this_rank(run: RunFolder) -> RunFolder:
    """`run` itself on the main process; a read-only view of it on the other ranks."""
    if is_main() or isinstance(run, FollowerRun):
        return run
    return FollowerRun(run.path)
