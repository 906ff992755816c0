"""What the engine adds to each training step, timed piece by piece in this process (for `finetuner bench`).

Whole-run ratios on two shared cores move by +-10 % from run to run, far more than the engine adds, so the
bench also times the engine's own per-step work directly, many times over, and reports the median:

- callbacks: RunFolderCallback (metrics row, status.json, samples.jsonl) and ProgressCallback (the log line),
  driven through one step's events (step begin, step end, log) with TRL-like log dicts, on a real run folder;
- reward: the RewardBridge calling the sandboxed Python grader on one RFT step's completions, minus the plain
  reward function the baseline uses.

The milliseconds per step, set against the plain script's step time, give the ratio the engine's additions
alone allow: `plain_step / (plain_step + overhead)`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

SFT_LOGS = {"loss": 1.2345, "grad_norm": 0.5, "learning_rate": 1e-3, "entropy": 1.1, "num_tokens": 12345.0,
            "mean_token_accuracy": 0.6, "epoch": 0.5}
RFT_LOGS = {"loss": -0.01, "grad_norm": 0.6, "learning_rate": 2e-4, "num_tokens": 70000.0,
            "completions/mean_length": 8.0, "completions/min_length": 2.0, "completions/max_length": 12.0,
            "completions/clipped_ratio": 0.05, "completions/mean_terminated_length": 7.5,
            "completions/min_terminated_length": 2.0, "completions/max_terminated_length": 12.0,
            "rewards/answer/mean": 0.1, "rewards/answer/std": 0.2, "reward": 0.1, "reward_std": 0.2,
            "frac_reward_zero_std": 0.4, "entropy": 1.0, "clip_ratio/low_mean": 0.0, "clip_ratio/high_mean": 0.0,
            "clip_ratio/region_mean": 0.0, "step_time": 0.22, "epoch": 0.1, "time/generation_s": 0.1,
            "graders/answer/errors": 0.0, "graders/answer/error_rate": 0.0, "graders/answer/grading_s": 0.002,
            "graders/error_rate": 0.0, "time/grading_s": 0.002}


def _median_ms(fn, reps: int, warm: int = 5) -> float:
    times = []
    for i in range(reps + warm):
        t0 = time.perf_counter()
        fn(i)
        if i >= warm:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _rft_batch(n: int, k: int):
    """One RFT step's prompts, completions (chat form, as TRL passes them) and the `answer` column."""
    prompts = [[{"role": "user", "content": f"What is {i} + {k}?"}] for i in range(n)]
    completions = [[{"role": "assistant", "content": f"Answer: {i + k + (i % 3 == 0)}"}] for i in range(n)]
    return prompts, completions, [str(i + k) for i in range(n)]


def callbacks_ms(stage: str, reps: int = 200, bridge=None, completions: int = 64) -> float:
    """Median milliseconds of one step's callback events (the reward call excluded)."""
    from transformers import TrainerControl, TrainerState

    from finetuner.training.callbacks import ProgressCallback, RunFolderCallback
    from finetuner.runs import RunFolder

    with tempfile.TemporaryDirectory(prefix="finetuner-bench-cb-") as tmp, \
            open(Path(tmp) / "log.txt", "w") as log:
        run = RunFolder(Path(tmp) / "run")
        run.path.mkdir()
        run.write_status(state="running", stage=stage)
        cbs = [RunFolderCallback(run, stage, bridge=bridge), ProgressCallback(stage, stream=log)]
        state, control = TrainerState(max_steps=10**6), TrainerControl()
        for cb in cbs:
            cb.on_train_begin(None, state, control)
        logs = RFT_LOGS if stage == "rft" else SFT_LOGS

        times = []
        for i in range(reps + 5):
            if bridge is not None:  # not timed: grade a batch so the log event has rollouts to write
                _grade(bridge, i, completions)
            t0 = time.perf_counter()
            state.global_step += 1
            for cb in cbs:
                cb.on_step_begin(None, state, control)
            for cb in cbs:
                cb.on_step_end(None, state, control)
            for cb in cbs:
                cb.on_log(None, state, control, logs=dict(logs))
            if i >= 5:
                times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _grade(bridge, k: int, n: int) -> None:
    prompts, completions, answers = _rft_batch(n, k)
    for fn in bridge.reward_funcs:
        fn(prompts=prompts, completions=completions, completion_ids=None, answer=answers, trainer_state=None,
           log_metric=lambda name, value: None, log_extra=None)


def reward_ms(grader_source: str, plain_reward, reps: int = 60, completions: int = 64) -> dict:
    """Median milliseconds to score one step's completions: through the bridge and sandbox, and plainly."""
    from graders import build_graders
    from graders.reward import RewardBridge

    bridge = RewardBridge(build_graders([{"name": "answer", "type": "python", "source": grader_source}]))
    try:
        def engine(i):
            _grade(bridge, i, completions)
            bridge.drain_rows()

        def plain(i):
            _, comps, answers = _rft_batch(completions, i)
            plain_reward(comps, answers)

        # The batch is built inside both timings, so the difference is the bridge and the sandbox alone.
        out = {"engine": _median_ms(engine, reps), "plain": _median_ms(plain, reps)}
        out["callbacks_rft"] = callbacks_ms("rft", reps=max(reps, 100), bridge=bridge, completions=completions)
    finally:
        bridge.close()
    return out


def engine_overhead(grader_source: str, plain_reward, quick: bool = False) -> dict:
    """Milliseconds the engine adds per SFT and per RFT step (64 completions), with their parts."""
    reps = 60 if quick else 200
    sft_cb = callbacks_ms("sft", reps=reps)
    r = reward_ms(grader_source, plain_reward, reps=30 if quick else 80)
    reward_extra = max(r["engine"] - r["plain"], 0.0)
    return {"sft_ms": sft_cb, "rft_ms": r["callbacks_rft"] + reward_extra,
            "parts_ms": {"callbacks_sft": sft_cb, "callbacks_rft": r["callbacks_rft"],
                         "reward_bridge_and_sandbox": r["engine"], "plain_reward": r["plain"]}}
