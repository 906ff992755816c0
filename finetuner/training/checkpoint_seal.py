"""Seal each checkpoint once it is durable, so a torn one can never look complete (runs/folder.py SEAL).

transformers writes a checkpoint itself (weights, optimizer, RNG, trainer_state.json last) and fsyncs none of
it; after a power cut trainer_state.json can be whole while the weights are not. on_save runs after the
trainer has finished the folder (and rotated old ones away): its files are fsync'ed, then the seal is written
atomically. It must be the last on_save callback, after those that add files (curriculum.json): stages adds it
with trainer.add_callback after every other callback.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from transformers import TrainerCallback

from finetuner.runs.atomic import fsync_dir, fsync_tree, write_text_atomic
from finetuner.runs.folder import SEAL, SEALED_STAGE, checkpoint_complete


def seal(folder: Path, step: int, legacy: bool = False) -> None:
    fsync_tree(folder)
    write_text_atomic(folder / SEAL, json.dumps({"step": step, "time": round(time.time(), 3), "legacy": legacy}))
    fsync_dir(folder.parent)  # the checkpoint's own entry in the stage folder


def seal_legacy(stage_dir: Path) -> list[Path]:
    """Before a stage folder's first seal: seal the checkpoints a run made before seals existed that pass the old
    test (trainer state parses), then mark the folder, from which on an unsealed checkpoint counts as torn."""
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    if (stage_dir / SEALED_STAGE).exists():
        return []
    done = []
    for p in sorted(stage_dir.glob("checkpoint-*")):
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir() and not (p / SEAL).exists() and checkpoint_complete(p):
            seal(p, int(m.group(1)), legacy=True)
            done.append(p)
    write_text_atomic(stage_dir / SEALED_STAGE, f"Checkpoints here are complete only with a {SEAL} seal.\n")
    return done


class CheckpointSealCallback(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            seal_legacy(Path(args.output_dir))

    def on_save(self, args, state, control, **kwargs):
        if args.world_size > 1:
            # Every rank writes its own RNG state (and, sharded, its optimizer part): seal after all are done.
            from accelerate import PartialState

            PartialState().wait_for_everyone()
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                seal(folder, state.global_step)
