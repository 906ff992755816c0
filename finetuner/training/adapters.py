"""The run's adapters on disk: saved atomically (a temporary sibling, fsync'ed, renamed: runs/atomic.py),
fingerprinted (the RFT stage provably starts from SFT's adapter) and reloaded for the next stage."""

from __future__ import annotations

import shutil

from graders.errors import FinetunerError
from finetuner.runs import RunFolder
from finetuner.runs.atomic import clean_leftovers, partial_dir, publish_dir


def adapter_fingerprint(model) -> str:
    """A hash of the trainable adapter weights, as saved: proves the RFT stage starts from SFT's adapter."""
    import hashlib

    from peft import get_peft_model_state_dict

    digest = hashlib.sha256()
    state = get_peft_model_state_dict(model)
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def sft_adapter_model(model, run: RunFolder):
    """The model carrying SFT's adapter, trainable: the live one, or reloaded when SFT ran earlier."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return model
    path = run.stage_adapter("sft")
    if not path.exists():
        raise FinetunerError(f"The SFT stage's adapter is missing at {path}; cannot continue with RFT. "
                             f"Start the run again.")
    return PeftModel.from_pretrained(model, str(path), is_trainable=True)


def save_adapter(trainer, path, tok) -> None:
    """The adapter with its tokenizer, so the folder alone is enough to load and chat with the result. Written
    into a temporary sibling, fsync'ed and renamed into place (runs/atomic.py): a kill or a power cut mid-save
    leaves the previous adapter (or none), never half of one."""
    acc, tmp = trainer.accelerator, partial_dir(path)
    if acc.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_leftovers(path)  # a temp folder a killed save left
    if acc.num_processes > 1:
        acc.wait_for_everyone()  # the stale temp folder is gone before any rank writes into it
        # Every rank must join: FSDP / ZeRO-3 gather their shards here. The trainer writes from rank 0 only,
        # tokenizer (its processing_class) included.
        trainer.save_model(str(tmp))
        acc.wait_for_everyone()
    else:
        trainer.model.save_pretrained(str(tmp))
    if acc.is_main_process:  # SFT's processing_class may carry the training template
        tok.save_pretrained(str(tmp))
        publish_dir(tmp, path)


def restore_final_adapter(run: RunFolder, last_stage: str) -> None:
    """`adapter/` as a copy of the last stage's adapter when a kill came after that stage was saved (and marked
    done) but before `adapter/` was: a resume then has nothing to train, and the run must still end usable."""
    stage = run.stage_adapter(last_stage)
    if run.adapter.exists() or not stage.exists():
        return
    clean_leftovers(run.adapter)
    tmp = partial_dir(run.adapter)
    shutil.copytree(stage, tmp, dirs_exist_ok=True)
    publish_dir(tmp, run.adapter)
