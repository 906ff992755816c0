"""Body of the training process: RunConfig -> TRL SFTTrainer / GRPOTrainer, stage by stage.

`python -m finetuner train` calls `train_run`, normally as a child launched by `runs.launch`. Every stage
writes to the same run folder; in `sft+rft` the RFT stage continues the very adapter SFT produced, and
`run_step` keeps one timeline. Errors end the run as `failed` with a message a person can act on; the
traceback goes to log.txt only.
"""

from __future__ import annotations

import logging
import os
import time

from finetuner.config import RunConfig
from graders.errors import ConfigError
from finetuner.runs import RunFolder
from finetuner.training.adapters import (adapter_fingerprint, restore_final_adapter, save_adapter,
                                         sft_adapter_model)
from finetuner.training import faults
from finetuner.training.failures import RunEnding, final, reserve_space

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

    from finetuner.modeling.chat_templates import sft_tokenizer

    args = SFTConfig(**_sft_args(cfg, run, device, data.assistant_only_loss))
    # Chats train every assistant turn through a training template (to_sft chose it and said which); a copy
    # carries it, so the tokenizer saved with the adapter keeps the model's own template for inference.
    if data.assistant_only_loss:
        tok = sft_tokenizer(tok)
    return SFTTrainer(model=model, args=args, train_dataset=data.train, processing_class=tok,
                      peft_config=peft_config, callbacks=callbacks)


def _grpo_args(cfg, run, device, reward_weights, do_eval: bool) -> dict:
    """GRPOConfig fields. TRL generates `batch_size x grad_accum` completions at once (one generation batch per
    optimizer step), which config.validate keeps a multiple of `num_generations`; the loss is chunked by TRL."""
    from finetuner.planning.gpu_defaults import resolve_vllm, vllm_args
    from finetuner.training.algorithms import trl_fields

    r = cfg.rft
    mode, notice = resolve_vllm(r, device)
    if notice:
        log.warning(notice)
    return dict(
        _common_args(cfg, "rft", run, device),
        num_generations=r.num_generations, max_completion_length=r.max_completion_length,
        temperature=r.temperature, beta=r.beta, reward_weights=reward_weights, **trl_fields(r),
        eval_strategy="steps" if do_eval else "no", eval_steps=r.eval_steps if do_eval else None,
        per_device_eval_batch_size=r.num_generations * max(1, r.batch_size // r.num_generations),
        log_completions=False, chat_template_kwargs=dict(cfg.model.chat_template_kwargs) or None,
        **({"max_tool_calling_iterations": r.max_tool_calls} if cfg.tools else {}),
        **vllm_args(r, mode))


def build_grpo_trainer(cfg, run, model, tok, data, peft_config, device, bridge, callbacks, curriculum=None,
                       tools=None):
    from trl import GRPOConfig

    from finetuner.training.algorithms import describe
    from finetuner.training.timed_grpo import TimedGRPOTrainer

    r = cfg.rft
    do_eval = bool(r.eval_steps and data.eval is not None and len(data.eval))
    args = GRPOConfig(**_grpo_args(cfg, run, device, bridge.weights, do_eval))
    log.info(describe(r))
    if tools:
        log.info("Agent RFT: tools %s, at most %d rounds of calls per rollout, %d tokens per trajectory.",
                 ", ".join(str(t) for t in tools), r.max_tool_calls, r.max_completion_length)
    return TimedGRPOTrainer(model=model, reward_funcs=bridge.reward_funcs, args=args,
                            tools=[t.function for t in tools] if tools else None,
                            train_dataset=data.train, eval_dataset=data.eval if do_eval else None,
                            processing_class=tok, peft_config=peft_config, callbacks=callbacks, bridge=bridge,
                            curriculum=curriculum)


def train_run(cfg: RunConfig, run: RunFolder, resume: bool = False) -> dict:
    """Run every stage of `cfg` into `run`. Returns the final status; never raises for training errors
    (failures.RunEnding turns them into the status)."""
    from finetuner.training import distributed

    run = distributed.for_this_rank(run)  # under `accelerate launch`, only rank 0 writes the run folder
    started = time.time()
    run.path.mkdir(parents=True, exist_ok=True)
    status = run.read_status()
    # Rank 0's answer for every rank: a rank that skipped training would leave the others waiting.
    if distributed.from_main(run.stop_path.exists() and not resume):
        # Stopped while still queued: honour it before loading anything.
        return final(run, "stopped", "Stopped before training started.", pid=os.getpid())
    run.stop_path.unlink(missing_ok=True)  # a resume is a new request to train
    if distributed.is_main():
        reserve_space(run)
        if resume:
            for gone in run.discard_incomplete_checkpoints():  # cut short by a kill or a full disk
                log.warning("Removed the incomplete checkpoint %s; resuming from the last complete one.", gone)
    with RunEnding(cfg, run) as ending:
        run.write_status(state="running", pid=os.getpid(), pgid=os.getpgid(0),
                         started=status.get("started") or started, finished=None, error=None, name=cfg.name,
                         method=cfg.method, stages=cfg.stages, world_size=distributed.world_size())
        _train_stages(cfg, run, resume)
    return ending.status or run.read_status()


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
    if cfg.model.trust_remote_code:  # said before anything loads, in the log and the status's notices
        from finetuner.modeling.load import trust_notice

        log.warning(trust_notice(cfg.model.name))
        notices.append(trust_notice(cfg.model.name))
    tok = load_tokenizer(cfg.model.name, cfg.model.trust_remote_code)
    if cfg.tools:  # a model that cannot call tools is refused before its weights load
        from finetuner.training.agent import check_run

        check_run(cfg, tok)
    data = {}
    for stage in todo:
        data[stage] = load_stage_data(cfg, stage, tok)
        for note in data[stage].notes:
            log.info("%s data: %s", stage, note)
        if data[stage].dropped_long_prompts:  # also on the status: rows a person expected to train on are left out
            notices.append(next(n for n in data[stage].notes if "rft.max_prompt_length" in n))
    if "rft" in todo and cfg.rft.curriculum != "none":
        from finetuner.training.curriculum import source

        log.info("Curriculum %s, difficulty %s.", cfg.rft.curriculum, source(cfg, data["rft"])[0])
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
    """The stage loop. Each remaining stage trains the adapter the previous one left; a stage cut short (a stop
    request, the grader error limit) ends the run there with the adapter saved. Failures: failures.RunEnding."""
    done, stage_steps = _progress(run, resume)
    todo = [s for s in cfg.stages if s not in done]
    if not todo:  # resuming a run whose every stage finished: nothing to train
        restore_final_adapter(run, cfg.stages[-1])  # a kill between the last stage's adapter and adapter/
        final(run, "finished", run_step=sum(stage_steps.values()))
        return
    datasets, model, tok, device, heldout = _load(cfg, run, todo, resume)
    offset = sum(stage_steps.get(s, 0) for s in done)
    for stage in todo:
        model, peft_config = _stage_model(cfg, run, stage, model)
        ckpt = run.last_checkpoint(stage) if resume else None
        if resume and ckpt is None:
            log.warning("No checkpoint of the %s stage was saved: it starts again from its first step.", stage)
        trainer = _train_stage(cfg, run, stage, model, tok, datasets[stage], peft_config, device, offset, ckpt,
                               heldout)
        model, steps = trainer.model, trainer.state.global_step
        stage_steps[stage] = steps
        run.write_status(stage_steps=stage_steps)
        if _ended_early(trainer, run, stage, tok):
            return
        save_adapter(trainer, run.stage_adapter(stage), tok)
        if stage == "sft":
            run.write_status(handover_sft_end=adapter_fingerprint(model))
        done.append(stage)
        run.write_status(stages_done=done)
        offset += steps
    save_adapter(trainer, run.adapter, tok)
    final(run, "finished", run_step=offset)


def _progress(run: RunFolder, resume: bool) -> tuple[list[str], dict]:
    """(stages done, {stage: steps}) of the run being resumed; nothing for a fresh run."""
    if not resume:
        return [], {}
    status = run.read_status()
    return list(status.get("stages_done") or []), dict(status.get("stage_steps") or {})


def _load(cfg: RunConfig, run: RunFolder, todo: list[str], resume: bool):
    """Data and graders checked first, then the model; what a person should know goes to the status.
    Returns (datasets, model, tokenizer, device, held-out set or None)."""
    from finetuner.modeling.load import load_model
    from finetuner.training.heldout_callback import HeldoutSet

    notices: list[str] = []
    datasets = _prepare(cfg, todo, notices)
    model, tok, plan = load_model(cfg.model.name, cfg.model.quantization, cfg.model.trust_remote_code)
    if plan.notice:
        log.warning(plan.notice)
        notices.insert(0, plan.notice)
    heldout = HeldoutSet.prepare(cfg, tok, notices)  # `eval.every_steps`: None when off
    run.write_status(device=plan.device, quantization="4bit" if plan.quantize_4bit else
                     ("bf16" if plan.device == "cuda" else "fp32"), notice=" ".join(notices), notices=notices)
    if not resume:
        run.write_status(stages_done=[], stage_steps={})
    return datasets, model, tok, plan.device, heldout


def _stage_model(cfg: RunConfig, run: RunFolder, stage: str, model):
    """(model, peft_config) a stage starts from: RFT after SFT continues SFT's adapter; else a fresh LoRA."""
    from finetuner.modeling.load import lora_config

    if stage == "rft" and "sft" in cfg.stages:
        model = sft_adapter_model(model, run)
        run.write_status(handover_rft_start=adapter_fingerprint(model))
        return model, None
    return model, lora_config(cfg.adapter)


def _ended_early(trainer, run: RunFolder, stage: str, tok) -> bool:
    """A stage its run folder callback cut short ends the run: failed with its reason, or stopped by request.
    The adapter is saved either way, so the result is usable and a resume continues it."""
    cb = trainer.run_callback
    guard = getattr(trainer, "guardrail", None)
    guard_reason = guard.stop_reason if guard is not None else ""
    if not (cb.stop_reason or cb.stop_requested or guard_reason):
        return False
    save_adapter(trainer, run.adapter, tok)
    if cb.stop_reason:
        final(run, "failed", cb.stop_reason)
    elif guard_reason:  # a guardrail fired with `rft.guardrail_stop`: stopped, not failed; the adapter is usable
        final(run, "stopped", guard_reason)
    else:
        steps = trainer.state.global_step
        final(run, "stopped", f"Stopped by request at {stage} step {steps}. Adapter saved; resume "
                              f"with `python -m finetuner train --resume {run.path}`.")
    return True


def _train_stage(cfg, run, stage, model, tok, data, peft_config, device, offset, ckpt, heldout=None):
    from transformers.trainer_callback import PrinterCallback

    from finetuner.training.callbacks import ProgressCallback, RunFolderCallback
    from finetuner.training.checkpoint_seal import CheckpointSealCallback
    from finetuner.training.heldout_callback import HeldoutCallback

    bridge, tools = None, None
    if stage == "rft":
        from graders import build_graders
        from graders.reward import RewardBridge

        bridge = RewardBridge(build_graders(cfg.graders, cfg.base_dir))
        bridge.max_completion_tokens = cfg.rft.max_completion_length
        if cfg.tools:
            from finetuner.training.agent import attach_tools

            tools = attach_tools(cfg, bridge)
    cb = RunFolderCallback(run, stage, offset, bridge=bridge, max_error_rate=cfg.rft.max_grader_error_rate,
                           keep_best=cfg.rft.keep_best if stage == "rft" else 0)
    callbacks = [cb, ProgressCallback(stage)]
    guard = None
    if stage == "rft":  # reward-hacking guardrails: status.json `warnings`, review.jsonl, `rft.guardrail_stop`
        from finetuner.training.guardrails import GuardrailCallback

        guard = GuardrailCallback(run, cfg.graders, cfg.rft.guardrail_stop, cfg.rft.keep_best)
        callbacks.append(guard)
    scorer = None
    if heldout is not None:
        # After RunFolderCallback, so its step timing leaves the held-out scoring out. The base model is scored
        # at step 0 of the run's first stage only: a later stage's step 0 is the previous stage's end.
        scorer = HeldoutCallback(run, stage, heldout, cfg.eval.every_steps, offset,
                                 base=stage == cfg.stages[0] and ckpt is None)
        callbacks.append(scorer)
    if getattr(cfg, stage).max_seconds > 0:  # the stage's wall-clock budget (the Lab's "same budget")
        from finetuner.training.budget import TimeBudgetCallback

        # Right after RunFolderCallback: its clock stops before held-out scoring and the guardrails run.
        callbacks.insert(1, TimeBudgetCallback(getattr(cfg, stage).max_seconds, run))
        if scorer is not None:
            scorer.budget = callbacks[1]
    try:
        if stage == "sft":
            trainer = build_sft_trainer(cfg, run, model, tok, data, peft_config, device, callbacks)
        else:
            curriculum = _curriculum(cfg, run, data, model, tok, bridge, ckpt, callbacks)
            trainer = build_grpo_trainer(cfg, run, model, tok, data, peft_config, device, bridge, callbacks,
                                         curriculum, tools)
        # Our ProgressCallback and metrics.jsonl replace the trainer's dict printing.
        trainer.remove_callback(PrinterCallback)
        if faults.enabled():  # the tests' fault injection, one seam; never true outside tests
            faults.inject(trainer, run)
        trainer.add_callback(CheckpointSealCallback())  # last: after every callback that adds checkpoint files
        log.info("%s: %d training rows, %s", stage, len(data.train), f"{trainer.args.max_steps} steps"
                 if trainer.args.max_steps > 0 else f"{trainer.args.num_train_epochs:g} epochs")
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    finally:
        if bridge is not None:
            bridge.close()
        if scorer is not None:
            scorer.close()
    trainer.run_callback = cb
    trainer.guardrail = guard
    return trainer


def _curriculum(cfg, run, data, model, tok, bridge, ckpt, callbacks):
    """`rft.curriculum: adarft`: difficulty per row, the curriculum fed by the bridge, its state in every
    checkpoint and restored from the one resumed. None when off."""
    if cfg.rft.curriculum == "none":
        return None
    from finetuner.training import curriculum as adarft
    from finetuner.training import distributed

    if distributed.world_size() > 1:
        raise ConfigError("`rft.curriculum: adarft` runs on one process only for now (every process must draw the "
                          "same prompts). Set `rft.curriculum: none` for a multi-GPU run.")
    curr = adarft.prepare(cfg, run, data, model, tok, resume=ckpt is not None)
    if adarft.load_state(curr, ckpt):
        log.info("Curriculum resumed at target difficulty %.1f after %d steps.", curr.target, curr.steps)
    bridge.listeners.append(adarft.CurriculumListener(curr, bridge.graders, cfg.rft.pass_threshold))
    callbacks.append(adarft.save_callback(curr))
    return curr
