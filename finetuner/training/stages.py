"""Body of the training process: RunConfig -> TRL SFTTrainer / GRPOTrainer, stage by stage.

`python -m finetuner train` calls `train_run`, normally as a child launched by `runs.launch`. Every stage
writes to the same run folder; in `sft+rft` the RFT stage continues the very adapter SFT produced, and
`run_step` keeps one timeline. Errors end the run as `failed` with a message a person can act on; the
traceback goes to log.txt only.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
import traceback

from finetuner.config import RunConfig
from graders.errors import ConfigError, FinetunerError
from finetuner.runs import RunFolder

log = logging.getLogger("finetuner.training.stages")


def _precision_args(device: str) -> dict:
    """CPU: fp32, no pinned memory. CUDA: bf16 where supported, else fp16."""
    if device == "cuda":
        import torch

        bf16 = torch.cuda.is_bf16_supported()
        return {"bf16": bf16, "fp16": not bf16}
    return {"bf16": False, "fp16": False, "dataloader_pin_memory": False, "use_cpu": True}


def _common_args(cfg: RunConfig, stage: str, run: RunFolder, device: str) -> dict:
    """TrainingArguments shared by both stages, with the device's defaults (gpu_defaults.py): on CUDA paged
    8-bit AdamW and non-reentrant gradient checkpointing; on CPU AdamW without checkpointing."""
    from finetuner.planning.gpu_defaults import memory_args

    s = getattr(cfg, stage)
    report = [r for r in cfg.report_to if r and r != "none"] or "none"
    memory, notice = memory_args(cfg, device)
    if notice:
        log.warning(notice)
    return dict(
        output_dir=str(run.checkpoints / stage), learning_rate=s.learning_rate,
        max_steps=s.max_steps if s.max_steps > 0 else -1, num_train_epochs=s.epochs,
        per_device_train_batch_size=s.batch_size, gradient_accumulation_steps=s.grad_accum,
        lr_scheduler_type=s.lr_scheduler, warmup_steps=s.warmup_ratio, logging_steps=s.logging_steps,
        save_steps=s.save_steps, save_strategy="steps", report_to=report, seed=cfg.seed,
        disable_tqdm=True, **_precision_args(device), **memory)


def _sft_args(cfg, run, device, assistant_only_loss: bool) -> dict:
    # TRL 1.16's SFT loss is already chunked (a fused LM head; no full logits), so there is nothing to turn on.
    return dict(_common_args(cfg, "sft", run, device), save_total_limit=2, max_length=cfg.model.max_length,
                assistant_only_loss=assistant_only_loss)


def build_sft_trainer(cfg, run, model, tok, data, peft_config, device, callbacks):
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**_sft_args(cfg, run, device, data.assistant_only_loss))
    return SFTTrainer(model=model, args=args, train_dataset=data.train, processing_class=tok,
                      peft_config=peft_config, callbacks=callbacks)


def _grpo_args(cfg, run, device, reward_weights, do_eval: bool) -> dict:
    """GRPOConfig fields. TRL generates `batch_size x grad_accum` completions at once (one generation batch per
    optimizer step), which config.validate keeps a multiple of `num_generations`; the loss is chunked by TRL."""
    from finetuner.planning.gpu_defaults import resolve_vllm, vllm_args

    r = cfg.rft
    mode, notice = resolve_vllm(r, device)
    if notice:
        log.warning(notice)
    return dict(
        _common_args(cfg, "rft", run, device),
        num_generations=r.num_generations, max_completion_length=r.max_completion_length,
        temperature=r.temperature, beta=r.beta, loss_type=r.loss_type, reward_weights=reward_weights,
        eval_strategy="steps" if do_eval else "no", eval_steps=r.eval_steps if do_eval else None,
        per_device_eval_batch_size=r.num_generations * max(1, r.batch_size // r.num_generations),
        log_completions=False, **vllm_args(r, mode))


def build_grpo_trainer(cfg, run, model, tok, data, peft_config, device, bridge, callbacks):
    from trl import GRPOConfig

    from finetuner.training.timed_grpo import TimedGRPOTrainer

    r = cfg.rft
    do_eval = bool(r.eval_steps and data.eval is not None and len(data.eval))
    args = GRPOConfig(**_grpo_args(cfg, run, device, bridge.weights, do_eval))
    return TimedGRPOTrainer(model=model, reward_funcs=bridge.reward_funcs, args=args,
                            train_dataset=data.train, eval_dataset=data.eval if do_eval else None,
                            processing_class=tok, peft_config=peft_config, callbacks=callbacks, bridge=bridge)


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


class _StopOnSignal:
    """SIGTERM / SIGINT become a polite stop request: the step finishes, the adapter is saved. A second
    Ctrl-C falls back to the default (an immediate KeyboardInterrupt) for someone who really wants out."""

    def __init__(self, run: RunFolder):
        self.run = run
        self.previous: dict = {}
        self.asked = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self)
            except ValueError:
                pass  # not the main thread (tests calling in-process); stop files still work

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def __call__(self, signum, frame):
        # "Second" means to this process: under `accelerate launch` one Ctrl-C reaches every rank, and the
        # first rank's stop file must not turn the others' polite stop into a crash.
        if signum == signal.SIGINT and self.asked:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.asked = self.asked or signum == signal.SIGINT
        self.run.stop_path.write_text(f"signal {signum}")


RESERVE_FILE = ".disk-reserve"
RESERVE_BYTES = 256 * 1024  # freed to write the final status when the disk fills up mid-run


def _final(run: RunFolder, state: str, error: str | None = None, **extra) -> dict:
    """Write a final state; a stop request that arrived too late to act on is cleared with it. On a full disk
    the space reserved at the start is given back first, so the run still ends with its reason."""
    from finetuner.training.distributed import FollowerRun

    run.stop_path.unlink(missing_ok=True)
    # Another rank's view of the folder must not touch rank 0's reserve: a name nothing will find.
    reserve = run.path / (RESERVE_FILE if not isinstance(run, FollowerRun) else ".no-reserve")
    try:
        return run.write_status(state=state, finished=time.time(), error=error, **extra)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        reserve.unlink(missing_ok=True)
        return run.write_status(state=state, finished=time.time(), error=error, **extra)
    finally:
        reserve.unlink(missing_ok=True)


def _reserve_space(run: RunFolder) -> None:
    try:
        with open(run.path / RESERVE_FILE, "wb") as fh:
            fh.write(b"\0" * RESERVE_BYTES)
    except OSError:
        pass  # already full: _final's write may still fit in the space status.json had


def train_run(cfg: RunConfig, run: RunFolder, resume: bool = False) -> dict:
    """Run every stage of `cfg` into `run`. Returns the final status; never raises for training errors."""
    from finetuner.training import distributed

    run = distributed.for_this_rank(run)  # under `accelerate launch`, only rank 0 writes the run folder
    started = time.time()
    run.path.mkdir(parents=True, exist_ok=True)
    status = run.read_status()
    # Rank 0's answer for every rank: a rank that skipped training would leave the others waiting.
    if distributed.from_main(run.stop_path.exists() and not resume):
        # Stopped while still queued: honour it before loading anything.
        return _final(run, "stopped", "Stopped before training started.", pid=os.getpid())
    run.stop_path.unlink(missing_ok=True)  # a resume is a new request to train
    if distributed.is_main():
        _reserve_space(run)
        if resume:
            for gone in run.discard_incomplete_checkpoints():  # cut short by a kill or a full disk
                log.warning("Removed the incomplete checkpoint %s; resuming from the last complete one.", gone)
    signals = _StopOnSignal(run)
    signals.install()
    run.write_status(state="running", pid=os.getpid(), pgid=os.getpgid(0),
                     started=status.get("started") or started, finished=None, error=None, name=cfg.name,
                     method=cfg.method, stages=cfg.stages, world_size=distributed.world_size())
    try:
        _train_stages(cfg, run, resume)
    except FinetunerError as err:
        log.error("Run failed: %s", err)
        return _final(run, "failed", str(err))
    except KeyboardInterrupt:
        return _final(run, "stopped", "Interrupted (Ctrl-C twice) without saving; the last checkpoint is kept.")
    except Exception as err:  # noqa: BLE001 - a crash must end as a truthful status, not a dead process
        log.error("Training crashed:\n%s", traceback.format_exc())
        if _disk_full(err) and distributed.is_main():
            run.discard_incomplete_checkpoints()  # frees space; a resume could not use them anyway
        return _final(run, "failed", _explain_crash(err, cfg, run))
    finally:
        signals.restore()
    return run.read_status()


def _disk_full(err: BaseException) -> OSError | None:
    """The ENOSPC behind `err`, also when a library wrapped it (torch.save, safetensors), or None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return err
        if "no space left on device" in str(err).lower():
            return OSError(errno.ENOSPC, "No space left on device")
        err = err.__cause__ or err.__context__
    return None


def _explain_crash(err: Exception, cfg: RunConfig | None = None, run: RunFolder | None = None) -> str:
    """What a person reads in the Monitor for a crash: what happened, where, what to change."""
    status = run.read_status() if run is not None else {}
    stage = status.get("stage") or ""
    # The status step is the last one finished, as of the last status write (at most half a second old).
    where = (f" during {stage.upper()} ({int(status.get('step') or 0)} of {status.get('total') or '?'} steps done)"
             if stage else "")
    kept = _kept(run, stage)
    name = type(err).__name__
    if "OutOfMemory" in name or "out of memory" in str(err).lower():
        return f"Out of memory{where}: {_oom_advice(err, cfg, stage)} {kept}"
    full = _disk_full(err)
    if full is not None:
        folder = run.path.parent if run is not None else "the runs folder"
        target = f" writing {full.filename}" if getattr(full, "filename", None) else ""
        saves = ""
        if cfg is not None:
            steps = " / ".join(f"`{s}.save_steps` (now {getattr(cfg, s).save_steps})" for s in cfg.stages)
            saves = f", or keep fewer checkpoints: raise {steps}"
            if "rft" in cfg.stages and cfg.rft.keep_best:
                saves += f" and lower `rft.keep_best` (now {cfg.rft.keep_best})"
        return (f"The disk is full (No space left on device){target}{where}. Free space on the disk holding "
                f"{folder} (delete old runs on the Runs tab, or their checkpoints/ folders){saves}. {kept}")
    return f"Training crashed{where}: {name}: {err}. The full traceback is in log.txt. {kept}"


def _oom_advice(err: Exception, cfg: RunConfig | None, stage: str) -> str:
    gpu = "CUDA" in str(err) or _cuda()
    what = "the GPU's memory ran out" if gpu else "this machine's memory ran out"
    if cfg is None:
        return (f"{what}. Lower the batch size (raise grad_accum to keep the effective batch), shorten "
                f"`model.max_length`, or pick a smaller model.")
    stages = [stage] if stage in ("sft", "rft") else list(cfg.stages)
    lower = []
    for st in stages:
        s = getattr(cfg, st)
        lower.append(f"`{st}.batch_size` (now {s.batch_size}; raise `{st}.grad_accum`, now {s.grad_accum}, to keep "
                     f"the effective batch)")
    lower.append(f"`model.max_length` (now {cfg.model.max_length})")
    if "rft" in stages:
        lower.append(f"`rft.num_generations` (now {cfg.rft.num_generations})")
        lower.append(f"`rft.max_completion_length` (now {cfg.rft.max_completion_length})")
    quant = "" if cfg.model.quantization == "4bit" or not gpu else ", or set `model.quantization: 4bit`"
    return f"{what}. Lower {', '.join(lower)}; or pick a smaller model{quant}. The Train tab's memory estimate " \
           f"shows what fits."


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _kept(run: RunFolder | None, stage: str) -> str:
    if run is None:
        return "The last checkpoint is kept."
    ckpts = [(s, run.last_checkpoint(s)) for s in ("sft", "rft")]
    ckpts = [(s, p) for s, p in ckpts if p is not None]
    if not ckpts:
        return "No checkpoint had been saved yet: a resume starts the stage again."
    names = ", ".join(f"{s} {p.name}" for s, p in ckpts)
    return f"The last complete checkpoint is kept ({names}): resume with `python -m finetuner train --resume " \
           f"{run.path}`."


def _prepare(cfg: RunConfig, todo: list[str], notices: list[str]) -> dict:
    """Load every remaining stage's data and build the graders before any weights load, so a broken RFT
    file or grader is reported in seconds, not after hours of SFT. Returns {stage: StageData}; adds what a
    person should know to `notices`."""
    from finetuner.data import load_stage_data
    from finetuner.modeling.load import load_tokenizer, plan_loading

    plan_loading(cfg.model.quantization)  # an impossible quantization (4-bit, no bitsandbytes) is refused first
    from finetuner.planning.gpu_defaults import check_run_settings

    notices += check_run_settings(cfg)  # an optimizer or vLLM this machine lacks is refused before loading too
    wanted = [r for r in cfg.report_to if r and r != "none"]
    if wanted:
        from transformers.integrations import get_available_reporting_integrations

        missing = sorted(set(wanted) - set(get_available_reporting_integrations()))
        if missing:
            raise ConfigError(f"`report_to` names {', '.join(missing)}, which is not installed here. Install it "
                              f"(pip install {' '.join(missing)}) or remove it; the run folder is written anyway.")
    tok = load_tokenizer(cfg.model.name, cfg.model.trust_remote_code)
    data = {}
    for stage in todo:
        data[stage] = load_stage_data(cfg, stage, tok)
        for note in data[stage].notes:
            log.info("%s data: %s", stage, note)
    if "rft" in todo:
        from graders import build_graders

        for grader in build_graders(cfg.graders, cfg.base_dir):
            grader.close()
        r = cfg.rft
        if r.eval_steps and (data["rft"].eval is None or not len(data["rft"].eval)):
            note = (f"`rft.eval_steps` is {r.eval_steps} but there is no held-out data, so no eval_reward will be "
                    f"logged and best-checkpoint keeping is off. Set `data.eval` or `data.eval_fraction`.")
            log.warning(note)
            notices.append(note)
    return data


def _train_stages(cfg: RunConfig, run: RunFolder, resume: bool) -> None:
    from finetuner.modeling.load import load_model, lora_config

    status = run.read_status()
    done = list(status.get("stages_done") or []) if resume else []
    stage_steps = dict(status.get("stage_steps") or {}) if resume else {}
    todo = [s for s in cfg.stages if s not in done]
    if not todo:  # resuming a run whose every stage finished: nothing to train
        _final(run, "finished", run_step=sum(stage_steps.values()))
        return
    notices: list[str] = []
    datasets = _prepare(cfg, todo, notices)
    model, tok, plan = load_model(cfg.model.name, cfg.model.quantization, cfg.model.trust_remote_code)
    if plan.notice:
        log.warning(plan.notice)
        notices.insert(0, plan.notice)
    from finetuner.training.callbacks import HeldoutSet

    heldout = HeldoutSet.prepare(cfg, tok, notices)  # `eval.every_steps`: None when off
    run.write_status(device=plan.device, quantization="4bit" if plan.quantize_4bit else
                     ("bf16" if plan.device == "cuda" else "fp32"), notice=" ".join(notices), notices=notices)
    if not resume:
        run.write_status(stages_done=[], stage_steps={})
    offset = sum(stage_steps.get(s, 0) for s in done)
    for stage in todo:
        if stage == "rft" and "sft" in cfg.stages:
            model = _sft_adapter_model(model, run)
            peft_config = None
            run.write_status(handover_rft_start=adapter_fingerprint(model))
        else:
            peft_config = lora_config(cfg.adapter)
        ckpt = run.last_checkpoint(stage) if resume else None
        if resume and ckpt is None:
            log.warning("No checkpoint of the %s stage was saved: it starts again from its first step.", stage)
        trainer = _train_stage(cfg, run, stage, model, tok, datasets[stage], peft_config, plan.device, offset,
                               ckpt, heldout)
        model = trainer.model
        steps = trainer.state.global_step
        stage_steps[stage] = steps
        run.write_status(stage_steps=stage_steps)
        cb = trainer.run_callback
        if cb.stop_reason or cb.stop_requested:
            _save_adapter(trainer, run.adapter, tok)
            if cb.stop_reason:
                _final(run, "failed", cb.stop_reason)
            else:
                _final(run, "stopped", f"Stopped by request at {stage} step {steps}. Adapter saved; resume "
                                       f"with `python -m finetuner train --resume {run.path}`.")
            return
        _save_adapter(trainer, run.stage_adapter(stage), tok)
        if stage == "sft":
            run.write_status(handover_sft_end=adapter_fingerprint(model))
        done.append(stage)
        run.write_status(stages_done=done)
        offset += steps
    _save_adapter(trainer, run.adapter, tok)
    _final(run, "finished", run_step=offset)


def _sft_adapter_model(model, run: RunFolder):
    """The model carrying SFT's adapter, trainable: the live one, or reloaded when SFT ran earlier."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return model
    path = run.stage_adapter("sft")
    if not path.exists():
        raise FinetunerError(f"The SFT stage's adapter is missing at {path}; cannot continue with RFT. "
                             f"Start the run again.")
    return PeftModel.from_pretrained(model, str(path), is_trainable=True)


def _train_stage(cfg, run, stage, model, tok, data, peft_config, device, offset, ckpt, heldout=None):
    from transformers.trainer_callback import PrinterCallback

    from finetuner.training.callbacks import HeldoutCallback, ProgressCallback, RunFolderCallback

    bridge = None
    if stage == "rft":
        from graders import build_graders
        from graders.reward import RewardBridge

        bridge = RewardBridge(build_graders(cfg.graders, cfg.base_dir))
    cb = RunFolderCallback(run, stage, offset, bridge=bridge, max_error_rate=cfg.rft.max_grader_error_rate,
                           keep_best=cfg.rft.keep_best if stage == "rft" else 0)
    callbacks = [cb, ProgressCallback(stage)]
    scorer = None
    if heldout is not None:
        # After RunFolderCallback, so its step timing leaves the held-out scoring out. The base model is scored
        # at step 0 of the run's first stage only: a later stage's step 0 is the previous stage's end.
        scorer = HeldoutCallback(run, stage, heldout, cfg.eval.every_steps, offset,
                                 base=stage == cfg.stages[0] and ckpt is None)
        callbacks.append(scorer)
    try:
        if stage == "sft":
            trainer = build_sft_trainer(cfg, run, model, tok, data, peft_config, device, callbacks)
        else:
            trainer = build_grpo_trainer(cfg, run, model, tok, data, peft_config, device, bridge, callbacks)
        # Our ProgressCallback and metrics.jsonl replace the trainer's dict printing.
        trainer.remove_callback(PrinterCallback)
        log.info("%s: %d training rows, %s", stage, len(data.train), f"{trainer.args.max_steps} steps"
                 if trainer.args.max_steps > 0 else f"{trainer.args.num_train_epochs:g} epochs")
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    finally:
        if bridge is not None:
            bridge.close()
        if scorer is not None:
            scorer.close()
    trainer.run_callback = cb
    return trainer


def _save_adapter(trainer, path, tok) -> None:
    """The adapter with its tokenizer, so the folder alone is enough to load and chat with the result."""
    if trainer.accelerator.num_processes > 1:
        # Every rank must join: FSDP / ZeRO-3 gather their shards here. The trainer writes from rank 0 only,
        # tokenizer (its processing_class) included.
        trainer.save_model(str(path))
        return
    path.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
