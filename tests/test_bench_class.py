"""The class load benchmark (benchmarks/class_load.py) in --quick mode: a real `python app.py --auth FILE`, a real
training run, signed-in gradio_client sessions. Asserts what it did and counted, never how fast."""

import pytest

from benchmarks import class_load
from benchmarks.__main__ import TABLE, parse_only, run_bench, table


def test_roles_give_each_session_a_user_and_keep_the_owner_and_a_neighbour():
    full = class_load.roles(20)
    assert len(full) == 20 and len({u for u, _ in full}) == 20
    kinds = [r for _u, r in full]
    assert kinds.count("owner") == 1 and kinds.count("teacher") == 1 and kinds.count("worker") == 6
    assert full[:2] == [("s01", "owner"), ("s02", "watcher")]
    assert all(u == class_load.TEACHER or int(u[1:]) <= class_load.STUDENTS for u, _ in full)
    assert [r for _u, r in class_load.roles(3)] == ["owner", "watcher", "worker"]


def test_summary_percentiles_and_errors_per_class():
    calls = [("monitor refresh", s / 1000, True) for s in range(1, 101)] + [("monitor refresh", 9.0, False),
                                                                            ("runs list", 0.5, True)]
    got = class_load.summarize(calls)
    mon = got["monitor refresh"]
    assert mon["count"] == 101 and mon["errors"] == 1  # a failed call counts, its time does not
    assert round(mon["p50_ms"]) == 50 and round(mon["p95_ms"]) == 95 and round(mon["max_ms"]) == 100
    assert got["runs list"]["p95_ms"] == 500 and got["test graders"]["count"] == 0


def test_class_is_a_named_section_only():
    assert "class" in parse_only("class") and "class" not in parse_only(None)
    keys = {row[0] for row in TABLE}
    assert {"class_monitor_p95_ms", "class_errors", "class_lost_runs"} <= keys


@pytest.mark.slow
def test_quick_class_load_makes_calls_with_no_errors_and_no_lost_run():
    result = run_bench(quick=True, only="class", say=lambda *_a: None)
    d = result["details"]["class"]
    by = d["by_class"]
    assert d["sessions"] == 3 and d["roles"] == {"s01": "owner", "s02": "watcher", "s03": "worker"}
    for cls in ("monitor refresh", "runs list", "upload/check", "test graders", "monitor open", "graders setup"):
        assert by[cls]["count"] > 0, (cls, by, d["problems"])
    assert result["class_errors"] == 0, d["problems"]
    assert result["class_lost_runs"] == 0 and d["run"]["final"] == "finished", d["lost"]
    assert result["class_leaks"] == 0
    assert d["run"]["owner_watched"] == d["run"]["id"]  # s01's Monitor picked the run it owns
    assert result["class_monitor_p95_ms"] > 0 and d["handler_ms"]["count"] > 0
    assert "class: Monitor refresh p95 (ms)" in table(result)
