"""Build the built-in offline demo model ("model: tiny") from scratch, on CPU.

    python scripts/build_tiny.py                     # writes finetuner/modeling/assets/tiny/
    python scripts/build_tiny.py --out /tmp/tiny --seed 3 --tries 1
    python scripts/build_tiny.py --check-only finetuner/modeling/assets/tiny
    python scripts/build_tiny.py --agent             # writes finetuner/modeling/assets/tiny-agent/

A ~0.45M-parameter Llama with a character-level tokenizer is pre-trained on a
synthetic corpus (`make_doc`) so that it adds two-digit numbers and answers
arithmetic questions in chat, but never in the demo's target format
"Answer: N". SFT then has a format to teach and RFT an accuracy to raise;
LoRA-only RFT on an untrained model would learn nothing.

Whether the model "gets" addition within the step budget depends on the seed
(accuracy jumps suddenly), so each build is checked on held-out problems and
retried with the next seed when it falls short; the best try is kept.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

from finetuner.demo import agent_task, arith  # noqa: E402
from finetuner.modeling.tiny import CHARS, EOT, IM_END, IM_START, TINY_AGENT_DIR, TINY_DIR, build_tokenizer  # noqa: E402

SEQ_LEN, BATCH, LR, WARMUP = 64, 64, 3e-3, 100
PROBE_ROWS = 400  # held-out problems per quality check

# A build passes when, on held-out problems, the plain "a+b=" probe and the chat
# answers (in any style) are mostly right, and the chat answers almost never use
# the demo's target format (SFT must have something to teach).
MIN_SUM_ACC, MIN_CHAT_ANSWERED, MAX_CHAT_FORMAT = 0.5, 0.5, 0.05

# Pre-training styles. None of them is "Answer: N" -- that is the SFT demo's job.
SUM_STYLES = ["{a}+{b}={c}", "{a} + {b} = {c}", "{a} plus {b} is {c}", "{a} and {b} make {c}.", "The sum of {a} and {b} is {c}."]
CHAT_STYLES = ["The sum is {c}.", "{c}", "= {c}", "It's {c}.", "{a}+{b}={c}", "That makes {c}.", "{a} plus {b} is {c}."]
SMALL_TALK = arith.SMALL_TALK  # its chat pre-training also holds these exchanges


def chatml(user: str, assistant: str) -> str:
    return f"{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n{assistant}{IM_END}\n"


def make_doc(rng: random.Random) -> str:
    """One pre-training document: ~40 % plain sums, ~50 % chat, ~10 % every printable character."""
    r = rng.random()
    if r < 0.4:
        p = arith.make_problem(rng, "train")
        return rng.choice(SUM_STYLES).format(a=p["a"], b=p["b"], c=p["answer"])
    if r < 0.9:
        if rng.random() < 0.1:
            return chatml(*rng.choice(SMALL_TALK))
        p = arith.make_problem(rng, "train")
        return chatml(p["question"], rng.choice(CHAT_STYLES).format(a=p["a"], b=p["b"], c=p["answer"]))
    # A character never seen in pre-training keeps its random embedding and
    # derails sampling later, so every printable character must show up.
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(8, 40)))


def make_batch(rng: random.Random, vocab: dict[str, int], tok) -> torch.Tensor:
    """BATCH rows of SEQ_LEN token ids, each row documents joined by <|endoftext|>."""
    rows = []
    for _ in range(BATCH):
        ids: list[int] = []
        while len(ids) < SEQ_LEN:
            ids += tok.encode(make_doc(rng), add_special_tokens=False) + [vocab[EOT]]
        rows.append(ids[:SEQ_LEN])
    return torch.tensor(rows)


def model_config(tok) -> LlamaConfig:
    # Llama, not Qwen2: a Qwen2 config makes AutoTokenizer swap in a Qwen tokenizer.
    return LlamaConfig(
        vocab_size=len(tok), hidden_size=96, intermediate_size=384, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )


def train(seed: int, steps: int, tok) -> tuple[LlamaForCausalLM, float]:
    """Pre-train one model; returns it and the seconds taken."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = LlamaForCausalLM(model_config(tok))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[seed {seed}] {n_params / 1e6:.2f}M parameters, {steps} steps of {BATCH}x{SEQ_LEN} tokens", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.01)

    def lr_at(step: int) -> float:  # linear warmup, cosine decay to 10 %
        if step < WARMUP:
            return (step + 1) / WARMUP
        t = (step - WARMUP) / max(steps - WARMUP, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    vocab = tok.get_vocab()
    return optimise(model, opt, lr_at, steps, lambda: make_batch(rng, vocab, tok), f"[seed {seed}]", 250)


def optimise(model, opt, lr_at, steps: int, next_batch, label: str, every: int) -> tuple[LlamaForCausalLM, float]:
    """The pre-training loop both builds share: next-token loss on `next_batch()`, clipped, scheduled."""
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    start = time.time()
    for step in range(steps):
        ids = next_batch()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % every == 0 or step == steps - 1:
            print(f"{label} step {step:5d}  loss {loss.item():.3f}  {time.time() - start:6.0f}s", flush=True)
    model.eval()
    return model, time.time() - start


def check(model, tok) -> dict:
    """Held-out quality: plain-sum probe, and chat answers (any style vs. the target format)."""
    rng = random.Random(1234)
    pairs = arith.pairs("eval")
    rng.shuffle(pairs)
    pairs = pairs[:PROBE_ROWS]
    sums = arith.generate(model, tok, [f"{a}+{b}=" for a, b in pairs], max_new_tokens=4, chat=False)
    sum_acc = sum(bool(re.match(rf"{a + b}(?!\d)", s)) for (a, b), s in zip(pairs, sums)) / len(pairs)

    rows = arith.eval_rows(PROBE_ROWS)
    texts = arith.generate(model, tok, [r["prompt"] for r in rows], max_new_tokens=20)
    n = len(rows)
    return {
        "sum_accuracy": round(sum_acc, 4),
        "chat_answered": round(sum(arith.last_int(t) == int(r["answer"]) for t, r in zip(texts, rows)) / n, 4),
        "chat_format": round(sum(arith.is_format(t) for t in texts) / n, 4),
        "chat_accuracy": round(sum(arith.is_correct(t, r["answer"]) for t, r in zip(texts, rows)) / n, 4),
        "chat_examples": [f"{r['prompt']} -> {t!r}" for r, t in list(zip(rows, texts))[:5]],
    }


def passes(q: dict) -> bool:
    return q["sum_accuracy"] >= MIN_SUM_ACC and q["chat_answered"] >= MIN_CHAT_ANSWERED and q["chat_format"] <= MAX_CHAT_FORMAT


def save(model, tok, out: Path, report: dict) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    # Stop at the end of the assistant turn; sampling settings are left to the caller.
    GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id).save_pretrained(out)
    tok.save_pretrained(out)
    # Name the class explicitly so AutoTokenizer never guesses one from the model type.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "build_report.json").write_text(json.dumps(report, indent=2) + "\n")


def check_only(path: str) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    q = check(model, tok)
    print(json.dumps({**q, "passes": passes(q)}, indent=2))
    return 0 if passes(q) else 1


# --- Agent mode (`--agent`): the tool-calling "tiny-agent", warm-started from the committed tiny weights. ---
# Continued pre-training on 256-token rows: most rows open with a tool transcript for a train-split two-digit
# product (agent_task), the rest is make_doc (so chat and sums stay) and short copy exercises (copying is the
# skill a tool user needs: operands into the call, the tool's answer into the reply). Whether a transcript
# calls the calculator or guesses depends on the question's phrasing (AGENT_CALL_P by template), so the base
# model calls on about half of held-out questions; answers after a call use other styles than guesses, and
# never "Answer: N" (SFT's format to teach). Copying appears suddenly, after ~2000 steps.
AGENT_SEQ_LEN, AGENT_BATCH, AGENT_LR, AGENT_WARMUP, AGENT_STEPS = 256, 8, 1.5e-3, 50, 3000
AGENT_ROW_P = 0.85  # share of rows that open with a whole transcript (one packed later is usually cut)
AGENT_CALL_P = [0.9, 0.1] * 4  # P(call) per agent_task.QUESTION_TEMPLATES entry
ANSWER_STYLES = ["The calculator says {c}.", "{c}", "= {c}", "It is {c}.", "{a}*{b}={c}", "The result is {c}."]
GUESS_STYLES = ["I think it is about {c}.", "Roughly {c}.", "Maybe {c}?", "My guess: {c}."]
AGENT_PROBE_ROWS = 200
# Agent build passes: calls on some but not all questions, copies the operands, copies the result back.
AGENT_CALL_RANGE, MIN_RIGHT_CALLS, MIN_COPIED_RESULT = (0.3, 0.7), 0.6, 0.8


def agent_doc(rng: random.Random, tok) -> str:
    """One tool transcript: tools line, a product question, then a calculator call and answer, or a guess."""
    a, b = agent_task.make_pair(rng, "train")
    t = rng.randrange(len(agent_task.QUESTION_TEMPLATES))
    msgs = [{"role": "user", "content": agent_task.question(a, b, rng, template=t)}]
    if rng.random() < AGENT_CALL_P[t]:
        msgs += [agent_task.tool_call(f"{a}*{b}"), {"role": "tool", "name": "calculator", "content": str(a * b)},
                 {"role": "assistant", "content": rng.choice(ANSWER_STYLES).format(a=a, b=b, c=a * b)}]
    else:  # a guess in the model's head, rarely right
        style = rng.choice(GUESS_STYLES)
        msgs.append({"role": "assistant", "content": style.format(c=a * b + rng.choice([-1, 1]) * rng.randint(10, 900))})
    return tok.apply_chat_template(msgs, tools=[agent_task.calculator], tokenize=False)


def copy_doc(rng: random.Random) -> str:
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 6)))
    return chatml(rng.choice(["Repeat: ", "Say ", "Copy: "]) + digits, rng.choice(["", "It is ", "= "]) + digits)


def make_agent_batch(rng: random.Random, vocab: dict[str, int], tok) -> torch.Tensor:
    rows = []
    for _ in range(AGENT_BATCH):
        ids: list[int] = []
        if rng.random() < AGENT_ROW_P:
            ids += tok.encode(agent_doc(rng, tok), add_special_tokens=False) + [vocab[EOT]]
        while len(ids) < AGENT_SEQ_LEN:
            r = rng.random()
            doc = agent_doc(rng, tok) if r < 0.2 else copy_doc(rng) if r < 0.35 else make_doc(rng)
            ids += tok.encode(doc, add_special_tokens=False) + [vocab[EOT]]
        rows.append(ids[:AGENT_SEQ_LEN])
    return torch.tensor(rows)


def train_agent(seed: int, steps: int, tok) -> tuple[LlamaForCausalLM, float]:
    """Continue pre-training the committed tiny model on the agent mixture."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = LlamaForCausalLM.from_pretrained(TINY_DIR)
    print(f"[agent seed {seed}] warm start from {TINY_DIR}, {steps} steps of {AGENT_BATCH}x{AGENT_SEQ_LEN}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=AGENT_LR, betas=(0.9, 0.95), weight_decay=0.01)
    vocab = tok.get_vocab()
    return optimise(model, opt, lambda s: min(1.0, (s + 1) / AGENT_WARMUP) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / max(steps, 1)))),
        steps, lambda: make_agent_batch(rng, vocab, tok), f"[agent seed {seed}]", 200)


def check_agent(model, tok) -> dict:
    """Held-out product questions with the calculator: how often it calls, with what, and what it answers."""
    rows = agent_task.eval_rows(AGENT_PROBE_ROWS)
    runs = agent_task.trajectories(model, tok, rows)
    called = calls = right = copied = 0
    for r, run in zip(rows, runs):
        a, b = re.findall(r"\d+", r["prompt"])
        made = [c for m in run["messages"] for c in m.get("tool_calls") or []]
        answers = [m["content"] for m in run["messages"] if m["role"] == "tool"]
        called += bool(made)
        for call in made:
            calls += 1
            expr = str((call["function"].get("arguments") or {}).get("expression", "")).replace(" ", "")
            right += expr in (f"{a}*{b}", f"{b}*{a}")
        final = agent_task.final_text(run["messages"])
        copied += bool(answers) and str(arith.last_int(final)) == answers[0]
    finals = [agent_task.final_text(run["messages"]) for run in runs]
    n = len(rows)
    return {
        "tool_call_rate": round(called / n, 4),
        "right_call_share": round(right / max(calls, 1), 4),
        "copied_result_share": round(copied / max(called, 1), 4),
        "answered_any_style": round(sum(arith.last_int(t) == int(r["answer"]) for t, r in zip(finals, rows)) / n, 4),
        "agent_format": round(sum(agent_task.is_format(t) for t in finals) / n, 4),
        "agent_accuracy": round(sum(agent_task.is_correct(t, r["answer"]) for t, r in zip(finals, rows)) / n, 4),
        "truncated": round(sum(run["truncated"] for run in runs) / n, 4),
        "agent_examples": [f"{r['prompt']} -> {run['messages']!r}" for r, run in list(zip(rows, runs))[:4]],
    }


def agent_passes(q: dict) -> bool:
    lo, hi = AGENT_CALL_RANGE
    return (lo <= q["tool_call_rate"] <= hi and q["right_call_share"] >= MIN_RIGHT_CALLS
            and q["copied_result_share"] >= MIN_COPIED_RESULT and q["agent_format"] <= MAX_CHAT_FORMAT)


def build_agent(args) -> int:
    tok = build_tokenizer()
    steps = args.steps if args.steps != 3000 else AGENT_STEPS
    model, seconds = train_agent(args.seed, steps, tok)
    q = {**check_agent(model, tok), **check(model, tok)}
    out = Path(args.out) if args.out != str(TINY_DIR) else TINY_AGENT_DIR  # never overwrite assets/tiny
    report = {
        "warm_start": "assets/tiny", "seed": args.seed, "steps": steps, "seconds": round(seconds, 1),
        "threads": torch.get_num_threads(), "batch": AGENT_BATCH, "seq_len": AGENT_SEQ_LEN, "lr": AGENT_LR,
        "row_p": AGENT_ROW_P, "call_p": AGENT_CALL_P, "probe_rows": AGENT_PROBE_ROWS, "passes": agent_passes(q),
        "torch": torch.__version__, **q,
    }
    save(model, tok, out, report)
    print(json.dumps(report, indent=2))
    print(f"wrote {out} (training {seconds:.0f}s)")
    return 0 if report["passes"] else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(TINY_DIR), help="output folder (replaced)")
    ap.add_argument("--seed", type=int, default=0, help="first seed to try")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--tries", type=int, default=3, help="seeds to try until one passes the check")
    ap.add_argument("--check-only", metavar="DIR", help="evaluate an existing build and print the report")
    ap.add_argument("--agent", action="store_true", help="build tiny-agent (tool calling) from the committed tiny")
    args = ap.parse_args(argv)

    torch.set_num_threads(2)  # results depend on the thread count; keep it fixed
    if args.check_only:
        return check_only(args.check_only)
    if args.agent:
        return build_agent(args)

    tok = build_tokenizer()
    best = None
    for seed in range(args.seed, args.seed + args.tries):
        model, seconds = train(seed, args.steps, tok)
        q = check(model, tok)
        ok = passes(q)
        print(f"[seed {seed}] {json.dumps({k: v for k, v in q.items() if k != 'chat_examples'})}  passes={ok}", flush=True)
        if best is None or q["chat_answered"] > best[1]["chat_answered"]:
            best = (model, q, seed, seconds)
        if ok:
            break
    model, q, seed, seconds = best
    report = {
        "seed": seed, "steps": args.steps, "seconds": round(seconds, 1), "threads": torch.get_num_threads(),
        "batch": BATCH, "seq_len": SEQ_LEN, "lr": LR, "probe_rows": PROBE_ROWS, "passes": passes(q),
        "torch": torch.__version__, **q,
    }
    save(model, tok, Path(args.out), report)
    print(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    if not report["passes"]:
        print("WARNING: no seed passed the quality check; kept the best one", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
