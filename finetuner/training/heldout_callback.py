"""Held-out scoring during training (`eval.every_steps`): the set scored, and the callback that scores it.

Greedy answers to the first `eval.rows` held-out prompts (with the run's tools, for an agent run), graded by
the run's graders, one metrics row each time: the Monitor's held-out chart.
"""

from __future__ import annotations

import time

from transformers import TrainerCallback

from finetuner.runs import RunFolder
from finetuner.training import distributed


class HeldoutSet:
    """What `eval.every_steps` scores: the first `eval.rows` held-out prompts and their items (evaluate.eval_split,
    as the Evaluate tab reads them), the grader specs (the run's, or the reference-answer match for a run without
    graders, as evaluate_run does), the answer length and the run's tokenizer. Built once per run; each stage
    builds its own graders."""

    def __init__(self, prompts: list, items: list[dict], specs: list[dict], base_dir: str, max_new_tokens: int,
                 tok, template_kwargs: dict | None = None):
        self.prompts, self.items, self.specs = list(prompts), items, specs
        self.base_dir, self.max_new_tokens, self.tok = base_dir, max_new_tokens, tok
        self.template_kwargs = dict(template_kwargs or {})  # model.chat_template_kwargs, as in training
        self.tools, self.max_calls = [], 3  # an agent run's tools (graders/tools.py) and rft.max_tool_calls

    @classmethod
    def prepare(cls, cfg, tok, notices: list[str]) -> "HeldoutSet | None":
        """The set for `cfg`, or None when it is off or impossible (then a note in `notices` says why)."""
        from graders.errors import DataError
        from finetuner.evaluation.heldout import REFERENCE_GRADER, answer_token_limit, eval_split

        if not cfg.eval.every_steps:
            return None
        why = ""
        try:
            prompts, items, _notes = eval_split(cfg, tok, cfg.eval.rows)
        except DataError as err:
            why = f"`eval.every_steps` is {cfg.eval.every_steps}, but no held-out score can be logged: {err}"
        else:
            specs = cfg.graders
            if not specs and not any(item.get("completion") for item in items):
                why = ("`eval.every_steps` is set, but the run has no graders and its held-out rows no reference "
                       "answer (`completion`), so there is nothing to score with. Add a grader.")
        if why:
            import logging

            logging.getLogger("finetuner.training.stages").warning(why)
            notices.append(why)
            return None
        # The same answer length as the Evaluate tab's (an SFT-only run's comes from its reference answers).
        found = cls(prompts, items, specs or [REFERENCE_GRADER], cfg.base_dir, answer_token_limit(cfg, items, tok),
                    tok, cfg.model.chat_template_kwargs)
        if cfg.tools:
            from graders.tools import build_tools

            found.tools, found.max_calls = build_tools(cfg.tools, cfg.base_dir), cfg.rft.max_tool_calls
        return found


class HeldoutCallback(TrainerCallback):
    """Greedy answers to the held-out prompts, scored by the run's graders, every `every` steps of the stage,
    at step 0 of the run's first stage (the base model: a fresh LoRA adapter changes nothing) and at the end of
    each stage. One metrics row each: `heldout/<grader>` (mean score, a failed grade counting 0),
    `heldout/reward` (the weighted sum, as TRL's `reward`) and `time/heldout_s`, with `stage`, `step` and
    `run_step` like every row.

    Sampled train rewards hide what a model learned (at temperature 1 the demo's reward stays flat while its
    greedy accuracy rises by 10 points); greedy held-out answers show it. Rank 0 alone generates and writes.
    It runs after RunFolderCallback's on_step_end, so `time/step_s` does not include it."""

    def __init__(self, run: RunFolder, stage: str, heldout: HeldoutSet, every: int, step_offset: int = 0,
                 base: bool = False):
        self.run, self.stage, self.heldout, self.every = run, stage, heldout, every
        self.offset, self.base = step_offset, base
        self.graders = None
        self.last_step: int | None = None
        self.off = ""  # why this stage logs nothing, once decided
        self.budget = None  # the stage's TimeBudgetCallback, when it has one (training/budget.py)

    def _usable(self, args) -> bool:
        if distributed.world_size() > 1:
            if getattr(args, "fsdp", None) or getattr(args, "deepspeed", None):
                # Sharded weights: one rank cannot generate alone, and every rank generating would cost N x.
                if not self.off:
                    self.off = "sharded"
                    import logging

                    logging.getLogger("finetuner.training.stages").warning(
                        "The held-out score (`eval.every_steps`) is off under FSDP / DeepSpeed: the weights are "
                        "sharded across processes. Evaluate the run after training instead.")
                return False
            return distributed.is_main()
        return True

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.base and state.global_step == 0:
            self.evaluate(args, state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0:
            self.evaluate(args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        # A stop request or a failing grader ended the stage early: stopping promptly matters more.
        # A stage that spent its time budget ended as planned, like one that reached max_steps.
        done = state.global_step >= state.max_steps or (self.budget is not None and self.budget.reached)
        if done and not self.run.stop_path.exists():
            self.evaluate(args, state, model)
        self.close()

    def evaluate(self, args, state, model) -> dict | None:
        """Score the model as it is now and append the row; None when this process does not evaluate."""
        import torch

        from finetuner.modeling.generate import generate

        if model is None or self.last_step == state.global_step or not self._usable(args):
            return None
        self.last_step = state.global_step
        started = time.perf_counter()
        if self.graders is None:
            from graders import build_graders

            self.graders = build_graders(self.heldout.specs, self.heldout.base_dir)
        was_training = model.training
        model.eval()  # no dropout; a PeftModel under GRPO generates with its adapter as it is
        try:
            with torch.no_grad():
                if self.heldout.tools:  # an agent run answers with its tools, over several turns
                    from finetuner.evaluation.answers import answers

                    texts = answers(model, self.heldout.tok, self.heldout.prompts, self.heldout.max_new_tokens,
                                    self.heldout.template_kwargs, self.heldout.tools, self.heldout.max_calls)
                else:
                    texts = [o[0] for o in generate(model, self.heldout.tok, self.heldout.prompts, n=1,
                                                    max_new_tokens=self.heldout.max_new_tokens, temperature=0.0,
                                                    batch_size=64, template_kwargs=self.heldout.template_kwargs)]
        finally:
            model.train(was_training)
        n = max(len(texts), 1)
        row = {"stage": self.stage, "step": state.global_step, "run_step": self.offset + state.global_step,
               "time": round(time.time(), 3)}
        total = 0.0
        for g in self.graders:
            results = g.grade_batch(texts, self.heldout.items)
            mean = sum(r.score for r in results if r.ok) / n
            row[f"heldout/{g.name}"] = round(mean, 4)
            total += g.weight * mean
        row["heldout/reward"] = round(total, 4)
        if self.heldout.tools:
            called = sum(isinstance(t, list) and any(m.get("tool_calls") for m in t) for t in texts)
            row["heldout/tool_call_rate"] = round(called / n, 4)
        row["time/heldout_s"] = round(time.perf_counter() - started, 3)
        self.run.append_metric(row)
        return row

    def close(self) -> None:
        for g in self.graders or []:
            g.close()
        self.graders = None
