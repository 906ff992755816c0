"""Grader faults during real RFT runs on the built-in model: graders and a loopback judge that misbehave on cue.

Each row of the data carries a `cue` column; the graders read it and fail on cue (raise, sleep past their
timeout, return garbage; a judge server that times out, rate-limits, errors or is down). Every step grades
every row, so each fault happens at every step. Training must go on, count the errors per grader in
metrics.jsonl, keep each error with its rollout in samples.jsonl and show them on the Monitor; and a run whose
graders fail on more than `rft.max_grader_error_rate` of a step, overall or for one grader, must stop `failed`,
naming the grader (per grader: tests/test_graders_error_stop.py).
"""

import json
import os
import socket
import threading

import pytest
from safetensors.torch import load_file

from finetuner.config import from_dict
from finetuner.runs import new_run
from finetuner.training.stages import train_run
from finetuner.ui import figures, tab_monitor
from finetuner.ui.context import AppContext
from graders.testing import Reply, ScriptedJudgeServer

NO_FILTER = ("", "", "all", "all", "total", "", "", "")
# The grader with spread: GRPO gets a gradient, so "training went on" can be checked on the adapter.
SPREAD = {"name": "spread", "type": "python",
          "source": "def grade(sample, item):\n    return len(sample['output_text']) / 10\n"}


def write_rows(path, cues):
    rows = [{"prompt": f"Add {i} and {i + 1}.", "answer": str(2 * i + 1), "cue": cue} for i, cue in enumerate(cues)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def rft_cfg(data, graders, steps=2, rows=8, **rft):
    """Every step samples every row twice (batch = rows x num_generations), so every cue fires each step."""
    return from_dict({"name": "faults", "method": "rft", "model": {"name": "tiny", "max_length": 64},
                      "data": {"train": data, "eval_fraction": 0},
                      "rft": {"max_steps": steps, "batch_size": 2 * rows, "num_generations": 2,
                              "max_completion_length": 8, "learning_rate": 1e-3, "save_steps": 100, **rft},
                      "graders": graders})


def lora_b_norm(run) -> float:
    weights = load_file(os.path.join(run.adapter, "adapter_model.safetensors"))
    return sum(float(v.float().norm()) for k, v in weights.items() if "lora_B" in k)


def monitor(ctx, run):
    return tab_monitor.view(ctx, tab_monitor.MonitorRequest(run.id, 0.0), force=True)


def by_row(run, cues):
    """{cue: [rollouts of that row]} using the row number in the prompt ("Add i and i+1.")."""
    out = {}
    for s in run.samples():
        i = int(s["prompt"].split("Add ")[1].split(" ")[0])
        out.setdefault(cues[i], []).append(s)
    return out


# ------------------------------------------------------------------ Python graders that misbehave on cue

CUES = ["ok", "raise", "sleep", "none", "abc", "nan", "inf", "list"]
RAISES = {"name": "raises", "type": "python",
          "source": "def grade(sample, item):\n    if item['cue'] == 'raise':\n"
                    "        raise ValueError('cue says raise')\n    return len(sample['output_text']) / 10\n"}
SLEEPY = {"name": "sleepy", "type": "python", "timeout_s": 0.5,
          "source": "import time\ndef grade(sample, item):\n    if item['cue'] == 'sleep':\n        time.sleep(30)\n"
                    "    return 1.0\n"}
GARBAGE = {"name": "garbage", "type": "python",
           "source": "def grade(sample, item):\n    return {'none': None, 'abc': 'abc', 'nan': float('nan'), "
                     "'inf': float('inf'), 'list': [1.0]}.get(item['cue'], 0.5)\n"}


@pytest.mark.slow
def test_python_graders_that_raise_hang_or_return_garbage_are_counted_and_training_goes_on(tmp_path):
    ctx = AppContext(tmp_path / "runs")
    run = new_run(ctx.runs_dir, "py-faults")
    # 1 + 1 + 5 failing rows of 8, over three graders: 7/24 = 29% of grades, and garbage alone fails 5/8 = 62%:
    # under a limit of 70%, overall and per grader (the default, 50%, would stop at garbage).
    status = train_run(rft_cfg(write_rows(tmp_path / "d.jsonl", CUES), [RAISES, SLEEPY, GARBAGE],
                               max_grader_error_rate=0.7), run)
    assert status["state"] == "finished", status.get("error")
    steps = [m for m in run.metrics() if "reward" in m]
    assert [m["step"] for m in steps] == [1, 2] and all(m["reward"] is not None for m in steps)
    assert lora_b_norm(run) > 0  # the adapter learned despite the faults
    for m in steps:  # per grader, per step: 2 completions per failing row
        assert m["graders/raises/errors"] == 2 and m["graders/sleepy/errors"] == 2
        assert m["graders/garbage/errors"] == 10 and m["graders/garbage/error_rate"] == pytest.approx(10 / 16)
        assert m["graders/error_rate"] == pytest.approx(14 / 48)

    rows = by_row(run, CUES)
    assert all(not r["errors"] for r in rows["ok"]) and all(r["scores"]["garbage"] == 0.5 for r in rows["ok"])
    for r in rows["raise"]:
        assert r["errors"]["raises"]["type"] == "runtime_error" and "cue says raise" in r["errors"]["raises"]["message"]
        assert r["scores"]["raises"] is None and r["scores"]["sleepy"] == 1.0  # the others still scored it
    for r in rows["sleep"]:
        assert r["errors"]["sleepy"]["type"] == "timeout" and "0.5 s" in r["errors"]["sleepy"]["message"]
    said = {"none": "NoneType", "abc": "str 'abc'", "nan": "nan", "inf": "inf", "list": "list [1.0]"}
    for cue, needle in said.items():
        for r in rows[cue]:
            err = r["errors"]["garbage"]
            assert err["type"] == "invalid_return" and needle in err["message"], (cue, err)

    out = monitor(ctx, run)
    for name in ("raises", "sleepy", "garbage"):
        assert f"Grader `{name}` failed" in out["warnings"]
    assert "cue says raise" in out["warnings"] and "finished" in out["progress"]
    shown = {t.name for t in out["signal"].data}
    assert {"raises errors", "sleepy errors", "garbage errors", "grades that failed"} <= shown


@pytest.mark.slow
def test_graders_failing_on_more_than_the_allowed_share_stop_the_run_naming_the_grader(tmp_path):
    ctx = AppContext(tmp_path / "runs")
    run = new_run(ctx.runs_dir, "too-many")
    flaky = {"name": "flaky", "type": "python",
             "source": "def grade(sample, item):\n    if item['cue'] == 'bad':\n"
                       "        raise KeyError('reference')\n    return 1.0\n"}
    cues = ["ok", "bad", "ok", "bad"]
    cfg = rft_cfg(write_rows(tmp_path / "d.jsonl", cues), [flaky, SPREAD], steps=5, rows=4,
                  max_grader_error_rate=0.2)
    status = train_run(cfg, run)
    # half of flaky's grades fail: 25% of all grades, above the 20% allowed
    assert status["state"] == "failed" and status["step"] == 1
    msg = status["error"]
    assert "Graders failed on 25% of completions at RFT step 1" in msg and "allowed 20%" in msg
    assert "`rft.max_grader_error_rate`" in msg and "grader `flaky` failed on 50% of its grades" in msg.lower()
    assert "KeyError" in msg and "spread" not in msg  # only the failing grader is named
    assert [m["step"] for m in run.metrics() if "reward" in m] == [1]  # not trained on noise past step 1
    assert len(run.samples()) == 8 and (run.adapter / "adapter_config.json").exists()  # what was done is kept
    out = monitor(ctx, run)
    assert "failed" in out["progress"] and "<code>flaky</code>" in out["progress"]


# ------------------------------------------------------------------ an LLM judge that fails on cue

JUDGE_CUES = ["ok", "slow", "limited", "error", "ok", "slow", "limited", "error"]


class CueScript:
    """ok: a score; slow: later than the judge's timeout; limited: HTTP 429 with Retry-After, then a score on the
    retry; error: HTTP 500 every time."""

    def __init__(self):
        self.seen, self.lock = set(), threading.Lock()

    def __call__(self, body, n):
        text = body["messages"][-1]["content"]
        cue = text.split("Cue: ")[1].split()[0]
        if cue == "slow":
            return Reply('{"result": 1}', delay_s=1.5)
        if cue == "error":
            return Reply("internal error", status=500)
        if cue == "limited":
            with self.lock:
                first = text not in self.seen
                self.seen.add(text)
            if first:
                return Reply("rate limited", status=429, headers={"Retry-After": "0.05"})
        return Reply('{"result": 0.5}')


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: connecting is refused


def judge(name, url, **extra):
    return {"name": name, "type": "score_model", "model": "judge", "base_url": url, "timeout_s": 0.5,
            "max_retries": 1, "retry_backoff_s": 0.01, "input": "Cue: {{item.cue}} Answer: {{sample.output_text}}",
            **extra}


@pytest.mark.slow
def test_judge_down_slow_rate_limited_or_failing_is_counted_and_training_goes_on(tmp_path):
    ctx = AppContext(tmp_path / "runs")
    run = new_run(ctx.runs_dir, "judge-faults")
    with ScriptedJudgeServer(CueScript()) as server:
        graders = [judge("judge", server.base_url), judge("judge_down", f"http://127.0.0.1:{closed_port()}/v1"),
                   SPREAD]
        # judge_down fails every grade: only a limit of 1 (never stop) lets the run go on to be inspected
        cfg = rft_cfg(write_rows(tmp_path / "d.jsonl", JUDGE_CUES), graders, max_grader_error_rate=1.0)
        status = train_run(cfg, run)
        requests = len(server.requests)
    assert status["state"] == "finished", status.get("error")
    steps = [m for m in run.metrics() if "reward" in m]
    assert [m["step"] for m in steps] == [1, 2] and lora_b_norm(run) > 0
    for m in steps:
        # slow and error rows fail (4 of 8 rows, 2 completions each); limited rows succeed on the retry
        assert m["graders/judge/errors"] == 8 and m["graders/judge_down/errors"] == 16
        assert m["graders/judge/judge_retries"] >= 4 and m["rewards/judge/mean"] > 0
    assert requests > 32  # retries reached the server

    rows = by_row(run, JUDGE_CUES)
    for r in rows["ok"] + rows["limited"]:
        assert r["scores"]["judge"] == 0.5 and "judge" not in r["errors"]
    for r in rows["slow"]:
        assert r["errors"]["judge"]["type"] == "judge_server_error" and "timed out" in r["errors"]["judge"]["message"]
    for r in rows["error"]:
        assert "HTTP 500" in r["errors"]["judge"]["message"] and "gave up after 2 tries" in r["errors"]["judge"]["message"]
    for r in run.samples():
        assert "connection failed" in r["errors"]["judge_down"]["message"] and r["scores"]["spread"] is not None

    out = monitor(ctx, run)
    assert "Grader `judge_down` failed" in out["warnings"] and "Grader `judge` failed" in out["warnings"]
    assert {"judge errors", "judge_down errors"} <= {t.name for t in out["signal"].data}
    assert "Grader `spread`" not in out["warnings"]


def test_signal_figure_names_only_graders_that_failed():
    class Cols:
        stage_starts = []
        data = {"graders/error_rate": ([1, 2], [0.0, 0.25]), "graders/a/error_rate": ([1, 2], [0.0, 0.5]),
                "graders/b/error_rate": ([1, 2], [0.0, 0.0]), "frac_reward_zero_std": ([1, 2], [0.1, 0.1])}

        def get(self, key):
            return self.data.get(key)

        def keys(self, prefix=""):
            return [k for k in self.data if k.startswith(prefix)]

    names = [t.name for t in figures.signal_figure(Cols()).data]
    assert "a errors" in names and "b errors" not in names
