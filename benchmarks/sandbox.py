"""How fast the sandbox stops a grader that will not stop by itself: the figures tests/test_sandbox.py and
tests/test_sandbox_hostile.py used to assert as time limits. A time limit in a test fails on a busy machine
for reasons the test is not about, so the tests check only that the grader is stopped and say why; the
benchmark prints how long it took, with the old limit as its target.

    python -m finetuner bench --only graders     # sandbox_cpu_stop_s, sandbox_c_kill_s, sandbox_*_batch_s
"""

from __future__ import annotations

import time

ROW = [({"output_text": "x"}, {})]


def _timed(pool, program, rows: int) -> tuple[float, list[dict]]:
    started = time.monotonic()
    results = pool.run(program, ROW * rows)
    return time.monotonic() - started, results


def sandbox_stops() -> dict:
    """Seconds until each kind of runaway grader is stopped, in a fresh two-worker pool."""
    from graders.sandbox import Program, SandboxPool

    head = "import os, time\n\ndef grade(sample, item):\n"
    cases = {  # key: (program, rows, the error type every row must end with)
        "sandbox_cpu_stop_s": (Program(head + "    while True:\n        pass\n", timeout_s=5, cpu_s=0.3), 1,
                               "timeout"),
        # sum() over a range runs in C without checking signals: only the parent's deadline stops it.
        "sandbox_c_kill_s": (Program(head + "    return float(sum(range(10 ** 13)))\n", timeout_s=1.0), 1,
                             "timeout"),
        "sandbox_crash_batch_s": (Program(head + "    os._exit(1)\n", timeout_s=1.0), 10, "runtime_error"),
        "sandbox_timeout_batch_s": (Program(head + "    while True: pass\n", timeout_s=0.3), 8, "timeout"),
    }
    pool = SandboxPool(workers=2)
    try:
        pool.run(Program(head + "    return 1.0\n"), ROW * 4)  # start the workers outside the timings
        out = {}
        for key, (program, rows, kind) in cases.items():
            seconds, results = _timed(pool, program, rows)
            if not all(r.get("error") and r["error"][0] == kind for r in results):
                from benchmarks.train import BenchError

                raise BenchError(f"{key}: expected every row to end with a {kind} error, got {results[:2]}.")
            out[key] = seconds
        return out
    finally:
        pool.close()
