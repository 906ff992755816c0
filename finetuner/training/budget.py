"""A stage's wall-clock budget (`sft.max_seconds`, `rft.max_seconds`): the stage ends once its training steps
have taken that long, as if `max_steps` had been reached.

Only the steps count (on_step_begin to on_step_end), not held-out scoring, checkpoints or the start-up, so two
methods given the same budget get the same training time however often they are scored: the Lab's "same
budget" comparisons rest on that. A resumed stage starts its budget again (the time already spent is not in
the checkpoint).
"""

from __future__ import annotations

import time

from transformers import TrainerCallback


class TimeBudgetCallback(TrainerCallback):
    def __init__(self, seconds: float, run=None):
        self.seconds, self.run = float(seconds), run
        self.spent = 0.0
        self.reached = False  # read by HeldoutCallback: a stage ended by its budget still gets its final score
        self._began: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        # The Monitor's progress line says "of a 12 s budget" instead of step k of max_steps (a mere cap here).
        if self.run is not None:
            self.run.write_status(budget_s=self.seconds, budget_started=time.time())

    def on_step_begin(self, args, state, control, **kwargs):
        self._began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._began is not None:
            self.spent += time.perf_counter() - self._began
            self._began = None
        if self.seconds > 0 and self.spent >= self.seconds:
            self.reached = True
            control.should_training_stop = True
