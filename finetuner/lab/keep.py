"""Forgetting: the score on a "keep" set (what the model must not lose) before training and after each arm.

    scorer = KeepScorer(keep_file, graders, base_cfg)
    scorer.score(None)             # the base model
    scorer.score(run.adapter)      # an arm's final adapter
    scorer.close()                 # the graders' sandbox

Greedy answers (as every held-out score in Finetuner), graded by the keep graders and divided by their total
weight. Models come from the evaluation cache (one base copy, adapters attached by name), so scoring many arms
loads the base weights once.
"""

from __future__ import annotations

from finetuner.evaluation.heldout import MODELS, answer_token_limit, eval_split


class KeepScorer:
    def __init__(self, keep_file: str, specs: list[dict], base_cfg, rows: int = 200):
        from finetuner.config import from_dict, to_dict
        from finetuner.modeling.load import load_tokenizer

        d = to_dict(base_cfg)
        d["data"].update(eval=keep_file, rft_train="")
        d["method"] = "sft"  # answers as long as the keep set's references need, not RFT's completion cap
        d["eval"]["max_new_tokens"] = 0
        self.cfg = from_dict(d, base_dir=base_cfg.base_dir)
        tok = load_tokenizer(self.cfg.model.name, self.cfg.model.trust_remote_code)
        self.prompts, self.items, _notes = eval_split(self.cfg, tok, rows)
        self.specs, self.graders = specs, None
        self.tokens = max(answer_token_limit(self.cfg, self.items, tok), base_cfg.rft.max_completion_length)

    def score(self, adapter: str | None) -> float:
        from finetuner.evaluation.answers import answers

        cfg = self.cfg
        if self.graders is None:  # built once for every arm: a Python grader's sandbox starts once
            from graders import build_graders

            self.graders = build_graders(self.specs, cfg.base_dir)
        with MODELS.use(cfg.model.name, adapter, cfg.model.quantization, cfg.model.trust_remote_code) as (m, tok):
            texts = answers(m, tok, list(self.prompts), self.tokens, cfg.model.chat_template_kwargs)
        total = 0.0
        for g in self.graders:
            results = g.grade_batch(texts, self.items)
            total += g.weight * sum(r.score for r in results if r.ok) / max(len(texts), 1)
        return round(total / (sum(g.weight for g in self.graders) or 1.0), 4)

    def close(self) -> None:
        for g in self.graders or []:
            g.close()
        self.graders = None
