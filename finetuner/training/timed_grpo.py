"""GRPOTrainer that reports how long rollout generation takes and labels the rollouts it grades.

TRL times generation only for W&B / MLflow (its profiling context). The Monitor tab splits every RFT step
into generation, grading and training, so generation seconds must reach the ordinary logs: this subclass
wraps the trainer's own generation method and records the time through TRL's `_log_metric`, the same
channel reward functions use, so the value lands in the step's log dict and so in metrics.jsonl.

Rollouts are generated (and graded) before the step they train is logged, and an evaluation can come in
between, so the step and split of each rollout are stamped here, where they are known, through the reward
bridge's `tag`.
"""

from __future__ import annotations

import time

from trl import GRPOTrainer


class TimedGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, bridge=None, curriculum=None, **kwargs):
        self.curriculum = curriculum  # set before TRL builds anything that asks for the sampler
        super().__init__(*args, **kwargs)
        self.bridge = bridge

    def _get_train_sampler(self, dataset=None):
        """With `rft.curriculum: adarft`, prompts come from the curriculum (training/curriculum.py) in TRL's own
        layout (whole groups, the block repeated for reuse); else TRL's shuffled RepeatSampler."""
        if self.curriculum is None:
            return super()._get_train_sampler(dataset)
        import math

        from finetuner.training.curriculum import CurriculumSampler

        dataset = dataset if dataset is not None else self.train_dataset
        self.curriculum.batch_prompts = min(len(dataset), self.args.generation_batch_size // self.num_generations)
        return CurriculumSampler(self.curriculum, self.num_generations,
                                 self.num_iterations * self.args.steps_per_generation,
                                 math.ceil(len(dataset) / self.curriculum.batch_prompts))

    def _generate(self, prompts: list):
        if self.bridge is not None:
            training = self.model.training
            # In training these rollouts feed the next optimizer step; an evaluation scores the current one.
            self.bridge.tag = {"step": self.state.global_step + (1 if training else 0),
                               "split": "train" if training else "eval"}
        start = time.perf_counter()
        out = super()._generate(prompts)
        self._log_metric("time/generation_s", time.perf_counter() - start)
        return out
