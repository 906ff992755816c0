"""GRPOTrainer that reports how long rollout generation takes.

TRL times generation only for W&B / MLflow (its profiling context). The Monitor tab splits every RFT step
into generation, grading and training, so generation seconds must reach the ordinary logs: this subclass
wraps the trainer's own generation method and records the time through TRL's `_log_metric`, the same
channel reward functions use, so the value lands in the step's log dict and so in metrics.jsonl.
"""

from __future__ import annotations

import time

from trl import GRPOTrainer


class TimedGRPOTrainer(GRPOTrainer):
    def _generate(self, prompts: list):
        start = time.perf_counter()
        out = super()._generate(prompts)
        self._log_metric("time/generation_s", time.perf_counter() - start)
        return out
