"""UI timings for `python -m finetuner bench`: app start to a served page, and the Monitor refresh on a run
folder with 100,000 metric lines.

App start: `python app.py` on a free port with a fresh runs folder, polled over HTTP until the page answers
200. Monitor: the Monitor's own handlers (`tab_monitor.view` for the first load, `tab_monitor.tick` for the
timer) on a synthetic SFT-then-RFT metrics.jsonl, without a browser. The steady state is a tick right after
a training step appended one line, which re-reads only that line but redraws every chart from 100,000
points: the cost a browser pays every 2 seconds while a long run trains. (A tick with nothing new returns
`gr.skip()` after a few `stat` calls; it is reported too.)
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.train import BenchError, log_tail

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def app_start_seconds(timeout: float = 120) -> float:
    """Seconds from starting `python app.py` to its page answering 200."""
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="finetuner-bench-app-") as tmp:
        log_path = Path(tmp) / "app.log"
        started = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--runs-dir",
                                     str(Path(tmp) / "runs")], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            while time.perf_counter() - started < timeout:
                if proc.poll() is not None:
                    raise BenchError(f"app.py exited (code {proc.returncode}) before serving its page."
                                     + log_tail(log_path))
                # Knock on the port first: a page request while Gradio checks its own URL at start-up slows
                # that check, which gives up after 3 s on a busy machine.
                if not _port_open(port):
                    time.sleep(0.05)
                    continue
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
                        if r.status == 200:
                            return time.perf_counter() - started
                except OSError:
                    time.sleep(0.2)
            raise BenchError(f"app.py did not serve its page within {timeout:.0f} s." + log_tail(log_path))
        finally:
            stop_app(proc)


def stop_app(proc: subprocess.Popen) -> None:
    """End an app.py child: politely, then for good after 15 s."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _metric_row(i: int, sft_steps: int) -> dict:
    """Row `i` of a long SFT-then-RFT run, with the keys a real one logs."""
    stage = "sft" if i <= sft_steps else "rft"
    row = {"stage": stage, "step": i if stage == "sft" else i - sft_steps, "run_step": i, "time": 1.7e9 + i,
           "loss": 1.0 / i, "grad_norm": 0.5, "learning_rate": 2e-4, "time/step_s": 0.2, "time/training_s": 0.15,
           "memory/peak_gb": 1.0}
    if stage == "rft":
        row.update({"reward": (i % 100) / 100, "reward_std": 0.1, "rewards/answer/mean": 0.5,
                    "rewards/answer/std": 0.2, "kl": 0.01, "entropy": 0.3, "completions/mean_length": 8.0,
                    "completions/clipped_ratio": 0.05, "frac_reward_zero_std": 0.2, "graders/answer/errors": 0,
                    "graders/error_rate": 0.0, "time/generation_s": 0.04, "time/grading_s": 0.002})
    return row


def monitor_refresh(lines: int = 100_000, ticks: int = 7) -> dict:
    """Milliseconds: the first view of a `lines`-line run, then ticks after one new line, and an idle tick."""
    from finetuner.runs import RunFolder
    from finetuner.ui import rollouts, tab_monitor
    from finetuner.ui.context import AppContext

    no_filter = ("", "", "all", rollouts.ALL, "total", "", "", "")
    with tempfile.TemporaryDirectory(prefix="finetuner-bench-ui-") as tmp:
        run = RunFolder(Path(tmp) / "big")
        run.path.mkdir()
        run.config_path.write_text("name: big\n")
        # A live run (this process stands in for the trainer), so every tick also checks that it is alive.
        run.write_status(state="running", pid=os.getpid(), name="big", method="sft+rft", stages=["sft", "rft"],
                         stage="rft", step=lines // 2, total=lines, started=time.time() - 3600, created=time.time())
        with open(run.metrics_path, "w", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(_metric_row(i, lines // 2)) + "\n" for i in range(1, lines + 1)))
        ctx = AppContext(Path(tmp))
        t0 = time.perf_counter()
        first = tab_monitor.view(ctx, tab_monitor.MonitorRequest("big", 0.6), force=True)
        first_ms = (time.perf_counter() - t0) * 1000
        if not any(len(t.x) for t in first["loss"].data):
            raise BenchError("The Monitor's first view of the 100,000-line run drew no loss points.")
        seen, grown = first["seen"], []
        for k in range(1, ticks + 1):
            run.append_metric(_metric_row(lines + k, lines // 2))
            t0 = time.perf_counter()
            out = tab_monitor.tick(ctx, "big", 0.6, False, True, seen, *no_filter)
            grown.append((time.perf_counter() - t0) * 1000)
            seen = dict(zip(tab_monitor.OUTPUTS, out))["seen"]
        t0 = time.perf_counter()
        tab_monitor.tick(ctx, "big", 0.6, False, True, seen, *no_filter)
        idle_ms = (time.perf_counter() - t0) * 1000
    return {"first_ms": first_ms, "tick_ms": statistics.median(grown), "tick_ms_max": max(grown), "idle_ms": idle_ms,
            "lines": lines}
