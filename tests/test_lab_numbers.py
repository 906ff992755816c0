"""The Lab's numbers (issue 15): what each arm's run folder adds up to, means and spreads over seeds, the
reading of the article's claims both ways, and the report."""

import pytest

from finetuner.lab.reading import read_claims
from finetuner.lab.report import table_rows, write_report
from finetuner.lab.results import aggregate, run_numbers

from lab_helpers import demo_spec, fake_run, synthetic_result


def test_run_numbers_are_the_metrics_summed(tmp_path):
    run, cfg = fake_run(tmp_path)
    n = run_numbers(run, cfg, 200)
    # weights 1 + 0.1 + 0.5 = 1.6; SFT 4 steps x 0.1 s; RFT logs every 2 steps at 0.5 s a step: 2 s.
    assert n["base_score"] == 0.1 and n["score"] == 0.8
    assert n["seconds"] == pytest.approx(0.4 + 2.0) and n["wall_seconds"] == 30.0
    # SFT rows (200 in 7 batches of 32 an epoch), then RFT prompts (64 completions / 8 per prompt a step).
    assert n["examples"] == round(4 * 200 / 7 + 4 * 8, 1)
    assert n["tokens"] == pytest.approx(10 * 64 * 4)
    assert run_numbers(run, cfg, 25)["examples"] == pytest.approx(4 * 25 + 4 * 8)  # 25 rows: 25 a step
    assert [(p["stage"], p["seconds"], p["examples"]) for p in n["curve"]] == [
        ("sft", 0.0, 0.0), ("sft", 0.4, 114.3), ("rft", 2.4, 146.3)]


def test_a_failed_arm_has_no_score_and_is_left_out_of_the_means(tmp_path):
    run, cfg = fake_run(tmp_path)
    run.write_status(state="failed")
    arm = {"method": "sft", "size": 25, "seed": 0, **run_numbers(run, cfg)}
    ok = {**arm, "seed": 1, "run_id": "ok", "score": 0.5, "keep_score": 0.7}
    table = aggregate([arm, ok])
    cell = table[25]["sft"]
    assert arm["score"] is None and cell["score"]["mean"] == 0.5 and cell["score"]["n"] == 1
    assert cell["failed"] == [arm["run_id"]]


def test_the_reading_follows_the_numbers():
    result = synthetic_result(
        {("sft", 25): [0.2, 0.3], ("sft", 200): [0.7, 0.72], ("rft", 25): [0.4, 0.42], ("rft", 200): [0.5, 0.5],
         ("sft+rft", 25): [0.5, 0.5], ("sft+rft", 200): [0.9, 0.92]},
        keep={"sft": 0.5, "rft": 0.78, "sft+rft": 0.6}, seconds={"sft": 10, "rft": 10, "sft+rft": 10},
        examples={"sft": 2000, "rft": 10, "sft+rft": 500}, losses={("sft", 25): 0.01, ("sft", 200): 0.3})
    verdicts = {c["key"]: c["verdict"] for c in read_claims(result)}
    labels = next(c for c in read_claims(result) if c["key"] == "sft_labels")["measured"]
    assert "0.010 on 25 rows against 0.300 on 200: the small set was learned by heart" in labels
    assert verdicts == {"few_prompts": "agrees", "sft_labels": "agrees", "cost": "agrees", "both": "agrees",
                        "forgetting": "agrees"}
    flipped = synthetic_result(
        {("sft", 25): [0.7, 0.7], ("sft", 200): [0.7, 0.71], ("rft", 25): [0.1, 0.1], ("rft", 200): [0.1, 0.1],
         ("sft+rft", 25): [0.3, 0.3], ("sft+rft", 200): [0.3, 0.31]},
        keep={"sft": 0.8, "rft": 0.4}, seconds={"sft": 10, "rft": 10, "sft+rft": 10},
        examples={"sft": 1000, "rft": 500, "sft+rft": 500})
    claims = {c["key"]: c for c in read_claims(flipped)}
    assert {k: c["verdict"] for k, c in claims.items()} == {
        "few_prompts": "disagrees", "sft_labels": "disagrees", "cost": "disagrees", "both": "disagrees",
        "forgetting": "disagrees"}
    assert "2x the seconds" in claims["cost"]["measured"]


def test_a_tie_within_the_spread_is_mixed_not_a_win():
    result = synthetic_result({("sft", 100): [0.5, 0.7], ("sft+rft", 100): [0.62, 0.66]}, keep={},
                              seconds={"sft": 1, "sft+rft": 1}, examples={"sft": 1, "sft+rft": 1})
    both = next(c for c in read_claims(result) if c["key"] == "both")
    assert both["verdict"] == "mixed" and "tie" in both["measured"]


def test_verdicts_need_arms_that_finished():
    """A method whose every arm failed is "not measured", never a score of 0 that "agrees" or "disagrees"."""
    result = synthetic_result({("sft", 25): [0.2, 0.3], ("sft", 200): [None, None], ("rft", 25): [None],
                               ("sft+rft", 200): [None, None], ("rft", 200): [0.1, 0.1]},
                              keep={}, seconds={"sft": 1, "rft": 1, "sft+rft": 1},
                              examples={"sft": 1, "rft": 1, "sft+rft": 1})
    verdicts = {c["key"]: c["verdict"] for c in read_claims(result)}
    assert verdicts["few_prompts"] == "not measured" and verdicts["sft_labels"] == "not measured"
    assert verdicts["both"] == "not measured"


def test_the_report_holds_the_table_charts_and_reading(tmp_path):
    result = synthetic_result({("sft", 25): [0.2, 0.3], ("sft", 50): [0.4, 0.5], ("rft", 25): [0.1, 0.2],
                               ("rft", 50): [0.2, 0.2]}, keep={"sft": 0.5, "rft": 0.7},
                              seconds={"sft": 5, "rft": 5}, examples={"sft": 500, "rft": 10})
    result.update(name="t", model="tiny", spec=demo_spec(sizes=[25, 50]).to_dict(), notes=[])
    paths = write_report(type("L", (), {"path": tmp_path})(), result)
    md, page = paths["md"].read_text(), paths["html"].read_text()
    assert {"scores", "curves", "sweep", "forgetting"} <= set(paths)
    assert all(paths[k].stat().st_size > 5000 for k in ("scores", "sweep"))  # real PNGs, not empty files
    assert "| 50 | SFT | 45.0% ± 7.1% |" in md and "What the numbers say" in md
    assert "| SFT | 25.0% ± 7.1% | 45.0% ± 7.1% |" in md and "<td>45.0% ± 7.1%</td>" in page  # the sweep
    assert page.count("data:image/png;base64,") == 4 and "charts/" not in page  # self-contained
    assert table_rows(result)[0]["ms / example"] == "10.00"
