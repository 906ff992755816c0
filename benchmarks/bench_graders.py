"""Grader throughput: trivial Python grades per second through the sandbox pool, and the LLM judge's
speed-up from concurrency over a one-by-one loop against a loopback server with simulated latency.

    python benchmarks/bench_graders.py            # readable lines
    python benchmarks/bench_graders.py --json     # {"python_grades_per_s": x, "judge_speedup": y, ...}

Targets (2 CPU cores): >= 2,000 grades/s, >= 8x judge speed-up at 50 ms latency. Not a test.
`python -m finetuner bench` runs it as part of the whole benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from graders import build_graders  # noqa: E402
from graders.sandbox import close_pools  # noqa: E402


def bench_python(rows: int, batch: int) -> dict:
    [g] = build_graders([{"name": "trivial", "type": "python",
                          "source": "def grade(sample, item):\n    return 1.0\n"}])
    samples = [{"output_text": f"answer {i}"} for i in range(batch)]
    items = [{"answer": str(i), "question": "What is it?"} for i in range(batch)]
    g.grade_batch(samples, items)  # start the workers and compile the grader
    done, started = 0, time.perf_counter()
    while done < rows:  # batches the size of a GRPO step, as training sends them
        results = g.grade_batch(samples, items)
        assert all(r.score == 1.0 for r in results), results[0]
        done += len(results)
    elapsed = time.perf_counter() - started
    return {"python_grades_per_s": done / elapsed, "python_rows": done, "python_batch": batch}


class _ServerProcess:
    """The loopback judge server in its own process, so that it does not share our GIL (a real judge
    server is elsewhere)."""

    def __init__(self, latency_ms: float):
        self.proc = subprocess.Popen([sys.executable, "-m", "graders.testing", "--latency-ms", str(latency_ms)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.base_url = self.proc.stdout.readline().strip()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def bench_judge(rows: int, latency_ms: float, concurrency: int) -> dict:
    with _ServerProcess(latency_ms) as server:
        spec = {"name": "judge", "type": "score_model", "model": "bench", "base_url": server.base_url,
                "input": "Rate this answer: {{sample.output_text}}", "cache": False, "concurrency": concurrency}
        [g] = build_graders([spec])
        g.grade("warm-up", {})  # open the client and a connection before timing
        samples = [f"answer number {i}" for i in range(rows)]
        started = time.perf_counter()
        one_by_one = [g.grade(s, {}) for s in samples]
        sequential = time.perf_counter() - started
        started = time.perf_counter()
        together = g.grade_batch(samples, [{}] * rows)
        concurrent = time.perf_counter() - started
        g.close()
    assert all(r.ok for r in one_by_one + together), [r.error for r in one_by_one + together if r.error][:1]
    return {"judge_speedup": sequential / concurrent, "judge_sequential_s": sequential,
            "judge_concurrent_s": concurrent, "judge_rows": rows, "judge_latency_ms": latency_ms,
            "judge_concurrency": concurrency}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--python-rows", type=int, default=20000)
    p.add_argument("--batch", type=int, default=256, help="rows per grade_batch call (a GRPO step's completions)")
    p.add_argument("--judge-rows", type=int, default=64)
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args(argv)
    try:
        result = bench_python(args.python_rows, args.batch)
        result.update(bench_judge(args.judge_rows, args.latency_ms, args.concurrency))
    finally:
        close_pools()
    if args.json:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))
    else:
        print(f"python graders: {result['python_grades_per_s']:,.0f} trivial grades/s "
              f"({result['python_rows']} rows in batches of {result['python_batch']}, {os.cpu_count()} CPUs)")
        print(f"LLM judge:      {result['judge_speedup']:.1f}x faster than one by one "
              f"({result['judge_rows']} prompts, {result['judge_latency_ms']:g} ms latency: "
              f"{result['judge_sequential_s']:.2f} s -> {result['judge_concurrent_s']:.2f} s, "
              f"concurrency {result['judge_concurrency']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
