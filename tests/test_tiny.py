"""Tests of the built-in tiny model (finetuner/modeling/tiny.py, assets/tiny) and the arithmetic task (finetuner/demo/arith.py).

The fast tests load only the committed model. The `slow` test rebuilds the model
from scratch (~8 minutes on 2 quiet CPU cores) and checks it passes the quality bar the committed model was chosen by.
"""

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from finetuner.demo import arith  # noqa: E402
from graders.errors import ModelError  # noqa: E402
from finetuner.modeling.tiny import CHARS, TINY_DIR, build_tokenizer, tiny_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def committed():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_path()
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


# --- tokenizer -------------------------------------------------------------

def test_round_trip_all_printable(tok):
    text = "".join(CHARS) + "  double  spaces\n\tand tabs "
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)  # one token per character
    assert tok.decode(ids) == text


def test_unknown_char_is_unk(tok):
    ids = tok.encode("a\u20acb\u00e9", add_special_tokens=False)
    assert ids == [tok.convert_tokens_to_ids("a"), tok.unk_token_id, tok.convert_tokens_to_ids("b"), tok.unk_token_id]


def test_special_tokens(tok):
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<pad>" and tok.unk_token == "<unk>"
    assert tok.pad_token_id != tok.eos_token_id
    # Special tokens in text are single ids, not spelled out character by character.
    assert len(tok.encode("<|im_start|><|im_end|><|endoftext|>", add_special_tokens=False)) == 3


def test_chat_template_chatml_and_assistant_mask(tok):
    msgs = [{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "Answer: 5"}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\nAnswer: 5<|im_end|>\n"
    prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")

    out = tok.apply_chat_template(msgs, return_assistant_tokens_mask=True, return_dict=True)
    marked = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    # The answer and its closing <|im_end|> are trained; nothing else is.
    assert tok.decode(marked) == "Answer: 5<|im_end|>"


def test_saved_tokenizer_reloads_identically(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text((TINY_DIR / "config.json").read_text())
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "".join(CHARS) + "<|im_start|>x\u20ac"
    assert again.encode(text) == tok.encode(text)
    assert again.chat_template == tok.chat_template


# --- committed model -------------------------------------------------------

def test_committed_model_loads_and_generates(committed, tok):
    model, ctok = committed
    assert model.config.model_type == "llama"
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert ctok.encode("".join(CHARS)) == tok.encode("".join(CHARS))
    out = arith.generate(model, ctok, ["What is 23+45?", "Hi!"], max_new_tokens=12)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_committed_model_answers_in_other_styles(committed):
    """Base model: knows sums, but not the demo's "Answer: N" format (SFT has something to teach)."""
    model, ctok = committed
    rows = arith.eval_rows(64)
    texts = arith.generate(model, ctok, [r["prompt"] for r in rows], max_new_tokens=20)
    answered = sum(arith.last_int(t) == int(r["answer"]) for t, r in zip(texts, rows)) / len(rows)
    assert answered >= 0.4
    assert arith.evaluate(model, ctok, rows)["format"] <= 0.1


def test_tiny_path_missing_says_how_to_rebuild(monkeypatch, tmp_path):
    import finetuner.modeling.tiny as tiny

    monkeypatch.setattr(tiny, "TINY_DIR", tmp_path / "nope")
    with pytest.raises(ModelError, match="scripts/build_tiny.py"):
        tiny.tiny_path()


# --- arithmetic task -------------------------------------------------------

def test_rows_deterministic_and_disjoint():
    assert arith.sft_rows(50) == arith.sft_rows(50)
    assert arith.rft_rows(50) == arith.rft_rows(50)
    assert arith.eval_rows(50) == arith.eval_rows(50)
    assert arith.sft_rows(50, seed=5) != arith.sft_rows(50)

    train_q = {r["messages"][0]["content"] for r in arith.sft_rows(2000)} | {r["prompt"] for r in arith.rft_rows(5000)}
    eval_rows = arith.eval_rows(500)
    assert len({r["prompt"] for r in eval_rows}) == 500  # distinct problems
    assert not train_q & {r["prompt"] for r in eval_rows}
    # Disjoint by problem, not just by phrasing: the hash split ignores operand order.
    assert all(arith.split_of(a, b) == arith.split_of(b, a) for a in range(10, 100) for b in range(10, 100))
    assert 0.08 < len(arith.pairs("eval")) / 8100 < 0.18


def test_row_shapes():
    for row in arith.sft_rows(20):
        user, assistant = row["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        a, b = map(int, re.findall(r"\d+", user["content"]))
        assert assistant["content"] == f"Answer: {a + b}"
    r = arith.rft_rows(1)[0]
    assert set(r) == {"prompt", "answer"} and isinstance(r["prompt"], str) and r["answer"].isdigit()
    p = arith.make_problem(random.Random(0))
    assert int(p["answer"]) == p["a"] + p["b"] and str(p["a"]) in p["question"]


def test_format_correct_reward():
    assert arith.is_format("Answer: 68") and arith.is_format(" Answer: 68\n")
    assert not arith.is_format("The sum is 68.") and not arith.is_format("Answer: 68. Done")
    assert not arith.is_format("answer: 68") and not arith.is_format("Answer:68")
    assert arith.is_correct("Answer: 68", "68") and arith.is_correct("Answer: 68", 68)
    assert not arith.is_correct("Answer: 67", "68") and not arith.is_correct("68", "68")
    assert arith.reward("Answer: 68", "68") == pytest.approx(1.1)
    assert arith.reward("Answer: 67", "68") == pytest.approx(0.1)
    assert arith.reward("It's 68.", "68") == 0.0
    assert arith.last_int("The sum is 68.") == 68 and arith.last_int("no") is None


# --- rebuild ---------------------------------------------------------------

# The rebuild is bounded by steps (the committed report's), never by seconds: how long it takes says nothing
# about its quality. The subprocess limit is only a guard against a hang, with a wide margin over the committed
# build's own time; on a machine that is clearly overloaded the test is skipped instead (early, once even the
# pace so far cannot finish within the limit), since 2 torch threads on 2 busy cores can run 20x slower.
LIMIT_FACTOR, LIMIT_EXTRA_S = 4, 180  # x the committed training seconds, + imports and the quality probes
PRINT_EVERY = 250  # build_tiny.py prints "[seed S] step N ..." every this many steps


def run_watching_load(cmd, limit_s: float, log_path: Path, poll_s: float = 15.0, give_up=None):
    """Run `cmd` until it ends, `limit_s` passes or `give_up(elapsed_s, mean_load)` says so (then kill it).
    Returns (exit code, None when it was stopped; the mean 1-minute load average sampled while it ran)."""
    loads: list[float] = []
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        while True:
            try:
                code = proc.wait(timeout=max(0.05, min(poll_s, limit_s - (time.monotonic() - start))))
                break
            except subprocess.TimeoutExpired:
                loads.append(os.getloadavg()[0])
                elapsed, load = time.monotonic() - start, sum(loads) / len(loads)
                if elapsed >= limit_s or (give_up is not None and give_up(elapsed, load)):
                    proc.kill()
                    proc.wait()
                    code = None
                    break
    return code, (sum(loads) / len(loads) if loads else os.getloadavg()[0])


def clearly_overloaded(load: float, cores: int) -> bool:
    """Twice as many runnable tasks as cores, on average: the build's 2 threads got well under half the CPU
    they had when the committed report was made, so a limit of several times that build's time can be hit
    with nothing wrong. Below that, a run past the limit is a hang or a real slowdown: a failure."""
    return load >= 2 * cores


def cannot_finish(log_text: str, elapsed: float, steps: int, limit_s: float) -> bool:
    """Even at the pace so far the build would pass `limit_s`: the next step line not printed yet bounds the
    time per step from below."""
    reached = max((int(n) for n in re.findall(r"\] step\s+(\d+)", log_text)), default=0)
    return elapsed * steps / min(reached + PRINT_EVERY, steps) > limit_s


def test_overload_rule():
    assert clearly_overloaded(9.5, 2) and clearly_overloaded(4.0, 2)
    assert not clearly_overloaded(2.1, 2) and not clearly_overloaded(6.0, 16)
    log = "[seed 0] step     0  loss 4.626       8s\n[seed 0] step   250  loss 1.9      90s\n"
    assert cannot_finish(log, 600, 3000, 2000)  # step 500 not reached after 600 s: >= 3600 s in all
    assert not cannot_finish(log, 100, 3000, 2000)  # 600 s at that pace
    assert not cannot_finish("", 30, 3000, 2000)


def test_runner_stops_a_process_at_its_limit(tmp_path):
    code, load = run_watching_load([sys.executable, "-c", "import time; print('started', flush=True); "
                                                          "time.sleep(60)"], 1.5, tmp_path / "log", poll_s=0.5)
    assert code is None and load >= 0 and "started" in (tmp_path / "log").read_text()
    seen = []
    code, _ = run_watching_load([sys.executable, "-c", "import time; time.sleep(60)"], 30, tmp_path / "log",
                                poll_s=0.2, give_up=lambda elapsed, load: seen.append(elapsed) or len(seen) >= 3)
    assert code is None and len(seen) == 3 and seen[-1] < 30
    code, _ = run_watching_load([sys.executable, "-c", "raise SystemExit(3)"], 30, tmp_path / "log2")
    assert code == 3


def build_tiny_module():
    """scripts/build_tiny.py as a module (it is a script, not a package member), for its quality bar."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_tiny", ROOT / "scripts" / "build_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_build_passed_the_bar_it_was_chosen_by():
    ref, bar = json.loads((TINY_DIR / "build_report.json").read_text()), build_tiny_module()
    assert ref["passes"] and ref["sum_accuracy"] >= bar.MIN_SUM_ACC and ref["chat_format"] <= bar.MAX_CHAT_FORMAT


@pytest.mark.slow
def test_rebuild_passes_the_quality_bar(tmp_path):
    """Rebuild with the committed seed and steps (one try) and compare the held-out quality probe."""
    ref = json.loads((TINY_DIR / "build_report.json").read_text())
    out, log = tmp_path / "tiny", tmp_path / "build.log"
    cmd = [sys.executable, str(ROOT / "scripts" / "build_tiny.py"), "--out", str(out),
           "--seed", str(ref["seed"]), "--steps", str(ref["steps"]), "--tries", "1"]
    limit, cores = LIMIT_FACTOR * ref["seconds"] + LIMIT_EXTRA_S, os.cpu_count() or 1

    def give_up(elapsed, load):  # only ever to skip: on a machine that is not overloaded it runs to the limit
        return clearly_overloaded(load, cores) and cannot_finish(log.read_text(), elapsed, ref["steps"], limit)

    code, load = run_watching_load(cmd, limit, log, give_up=give_up)
    tail = log.read_text()[-3000:]
    if code is None:
        if clearly_overloaded(load, cores):
            pytest.skip(f"the tiny-model rebuild ({ref['steps']} steps, {ref['seconds']:.0f} s when committed) "
                        f"could not finish within {limit:.0f} s on an overloaded machine (mean load {load:.1f} "
                        f"on {cores} cores): no quality result either way; rerun it on a quieter machine")
        pytest.fail(f"the rebuild did not finish within {limit:.0f} s (mean load {load:.1f} on {cores} cores, "
                    f"not overloaded): it hangs or got much slower. Last output:\n{tail}")
    assert (out / "build_report.json").exists(), f"build_tiny.py exited {code} without a report:\n{tail}"
    new = json.loads((out / "build_report.json").read_text())
    assert new["steps"] == ref["steps"]
    # The bar is build_tiny.py's own, the one the committed model was chosen by: the same seed and steps give
    # another model on another CPU (seen here: an AMD EPYC rebuild reached sum accuracy 0.575 against the
    # committed 0.9125, on identical code), since 3000 steps of a 0.45M model amplify float rounding in the
    # kernels. So the rebuild must pass the bar, not match the committed numbers; the gap is printed.
    print(f"rebuilt: sum accuracy {new['sum_accuracy']} (committed {ref['sum_accuracy']}), chat answered "
          f"{new['chat_answered']} (committed {ref['chat_answered']}), chat format {new['chat_format']}")
    bar = build_tiny_module()
    assert new["sum_accuracy"] >= bar.MIN_SUM_ACC, new
    assert new["chat_answered"] >= bar.MIN_CHAT_ANSWERED, new
    assert new["chat_format"] <= bar.MAX_CHAT_FORMAT, new
    assert new["passes"] is True
