"""Evaluate a run on its held-out rows: the base model, after SFT and after RFT, scored by the run's graders.

    results = evaluate_run(open_run("runs", run_id), rows=50, progress=lambda f, desc: ...)
    results["models"]["rft"]["total"]      # mean weighted score of the tuned model
    # written: runs/<id>/eval/results.json and eval/samples.jsonl (one row per held-out prompt)

Generation is greedy (generate.py) so the numbers are repeatable. Models are kept in `MODELS`, a small
cache holding one copy of each base model with its adapters attached by name, so the Evaluate tab and the
playground (`chat_reply`) switch between base / SFT / RFT without loading weights again, and without a
second copy of a large model in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections import OrderedDict
from pathlib import Path

from graders.errors import DataError, FinetunerError, RunError
from finetuner.runs import RunFolder

LABELS = {"base": "Base model", "sft": "After SFT", "rft": "After RFT"}
# Scores a run without graders (plain SFT) by the reference answer, so the comparison still means something.
REFERENCE_GRADER = {"name": "matches_reference", "type": "string_check", "input": "{{sample.output_text}}",
                    "reference": "{{item.completion}}", "operation": "eq"}


# ------------------------------------------------------------------ which models


def _has_adapter(path: Path) -> bool:
    return (path / "adapter_config.json").exists()


def model_variants(run: RunFolder) -> list[tuple[str, str, str | None]]:
    """[(key, label, adapter folder or None)]: base, then each stage's adapter that exists.

    A run stopped mid-stage has that stage's adapter only in `adapter/`; it is used, and labelled so."""
    status = run.read_status()
    method = status.get("method") or ""
    stages = status.get("stages") or (["sft", "rft"] if method == "sft+rft" else [method] if method else [])
    out: list[tuple[str, str, str | None]] = [("base", LABELS["base"], None)]
    for stage in stages:
        path = run.stage_adapter(stage)
        label = LABELS.get(stage, stage)
        if not _has_adapter(path) and stage == status.get("stage") and _has_adapter(run.adapter):
            path = run.adapter
            if status.get("state") != "finished":
                label += f" (stopped at step {status.get('step')})"
        if _has_adapter(path):
            out.append((stage, label, str(path)))
    if len(out) == 1 and _has_adapter(run.adapter):
        out.append(("tuned", "Tuned", str(run.adapter)))
    return out


# ------------------------------------------------------------------ the model cache


class _Entry:
    def __init__(self, model, tok):
        self.model, self.tok = model, tok
        self.lock = threading.Lock()
        self.adapters: dict[str, tuple[str, str]] = {}  # folder -> (fingerprint, adapter name)


class ModelCache:
    """One loaded copy per base model; adapters are attached to it by name and switched per call."""

    def __init__(self, max_models: int = 2):
        self.max_models = max_models
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def _entry(self, model_name: str, quantization: str, trust: bool) -> _Entry:
        key = (model_name, quantization, trust)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                from finetuner.modeling.generate import load_for_inference

                entry = self._entries[key] = _Entry(*load_for_inference(model_name, None, quantization, trust))
                while len(self._entries) > self.max_models:
                    self._entries.popitem(last=False)
            self._entries.move_to_end(key)
            return entry

    @contextlib.contextmanager
    def use(self, model_name: str, adapter: str | None = None, quantization: str = "auto", trust: bool = False):
        """(model, tokenizer) with `adapter` active (None: the base model alone), held exclusively."""
        entry = self._entry(model_name, quantization, trust)
        with entry.lock:
            if adapter is None:
                if hasattr(entry.model, "disable_adapter"):
                    with entry.model.disable_adapter():
                        yield entry.model, entry.tok
                else:
                    yield entry.model, entry.tok
                return
            name = self._attach(entry, adapter)
            entry.model.set_adapter(name)
            yield entry.model, entry.tok

    @staticmethod
    def _attach(entry: _Entry, adapter: str) -> str:
        from peft import PeftModel

        folder = str(Path(adapter).resolve())
        weights = next(iter(Path(folder).glob("adapter_model.*")), None)
        if weights is None:
            raise RunError(f"No adapter weights in {folder}. The stage did not finish saving; pick another model.")
        stat = weights.stat()
        fingerprint = f"{stat.st_size}-{stat.st_mtime_ns}"
        known = entry.adapters.get(folder)
        if known and known[0] == fingerprint:
            return known[1]
        name = "a" + hashlib.sha1(f"{folder}{fingerprint}".encode()).hexdigest()[:12]
        if not isinstance(entry.model, PeftModel):
            entry.model = PeftModel.from_pretrained(entry.model, folder, adapter_name=name)
        else:
            entry.model.load_adapter(folder, adapter_name=name)
            if known:  # the folder was re-trained: drop the stale copy
                entry.model.delete_adapter(known[1])
        entry.model.eval()
        entry.adapters[folder] = (fingerprint, name)
        return name

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


MODELS = ModelCache()


# ------------------------------------------------------------------ evaluation


def eval_split(cfg, tok, rows: int) -> tuple[list, list[dict], list[str]]:
    """(prompts as the model sees them, items as graders see them, notes) for the first `rows` held-out rows."""
    from graders.item import build_item

    from finetuner.data import load_stage_data

    try:
        data = load_stage_data(cfg, "rft", tok, limit_prompts=False)  # held-out rows only: no training limit
    except DataError as err:
        raise DataError(f"This run's data cannot be turned into prompts to answer: {err}") from None
    if data.eval is None or not len(data.eval):
        raise DataError("This run has no held-out rows to evaluate on. Set `data.eval` to a file, or "
                        "`data.eval_fraction` above 0, and train again.")
    n = min(rows, len(data.eval)) if rows > 0 else len(data.eval)
    prompts = data.eval.select(range(n))["prompt"]
    # The items training's reward bridge would build for these prompts (graders.item), on the rows as read.
    return prompts, [build_item(row, p) for row, p in zip(data.eval_rows[:n], prompts)], data.notes


ANSWER_MARGIN = 16  # tokens over the longest reference answer, so a slightly longer right answer is not cut


def answer_token_limit(cfg, items: list[dict], tok) -> int:
    """Longest greedy answer generated for the held-out rows. A run with an RFT stage keeps
    `rft.max_completion_length`: its RFT model was trained to answer within it. An SFT-only run never uses that
    field, so its answers are bounded by the data instead: the longest reference answer (`completion`) in tokens
    plus ANSWER_MARGIN (a quarter more for long answers), never past `model.max_length`; with no references,
    `model.max_length` itself (generation stops at the end-of-turn token anyway). `eval.max_new_tokens`, when set,
    is the limit whatever the method (the Lab: every arm scored alike)."""
    if cfg.eval.max_new_tokens:
        return cfg.eval.max_new_tokens
    if "rft" in cfg.stages:
        return cfg.rft.max_completion_length
    refs = [str(item["completion"]) for item in items if item.get("completion") is not None]
    if not refs:
        return cfg.model.max_length
    longest = max(len(ids) for ids in tok(refs, add_special_tokens=False)["input_ids"])
    return min(cfg.model.max_length, longest + max(ANSWER_MARGIN, longest // 4))


def evaluate_run(run: RunFolder, rows: int = 50, progress=None, max_new_tokens: int | None = None) -> dict:
    """Score base / SFT / RFT on `rows` held-out rows with the run's graders; write eval/results.json and
    eval/samples.jsonl; return the results. `progress(fraction, text)` is told how far it got."""
    from graders import build_graders

    from graders.tools import build_tools

    from finetuner.config import load_config
    from finetuner.evaluation.answers import answers
    from finetuner.modeling.load import load_tokenizer

    say = progress or (lambda fraction, text: None)
    started = time.time()
    cfg = load_config(run.config_path)
    variants = model_variants(run)
    if len(variants) == 1:
        raise RunError(f"Run {run.id} has no trained adapter yet, so there is nothing to compare with the base "
                       f"model. Evaluate it after a stage finishes.")
    say(0.02, "Reading the held-out rows")
    run_tok = load_tokenizer(cfg.model.name, cfg.model.trust_remote_code)
    prompts, items, _notes = eval_split(cfg, run_tok, rows)
    specs, notes = cfg.graders, []
    if not specs:
        if not any(item.get("completion") for item in items):
            raise DataError("This run has no graders and its held-out rows have no reference answer "
                            "(`completion`), so there is nothing to score answers with. Add a grader.")
        specs = [REFERENCE_GRADER]
        notes.append("The run has no graders: answers are scored by exact match with the reference answer.")
    graders = build_graders(specs, cfg.base_dir)
    tools = build_tools(cfg.tools, cfg.base_dir)  # an agent run is evaluated with its tools, as it trained
    tokens = max_new_tokens or answer_token_limit(cfg, items, run_tok)
    outputs: dict[str, list[dict]] = {}
    try:
        for i, (key, label, adapter) in enumerate(variants):
            span = 0.9 / len(variants)
            say(0.05 + i * span, f"{label}: generating {len(prompts)} answers")
            with MODELS.use(cfg.model.name, adapter, cfg.model.quantization, cfg.model.trust_remote_code) as (m, tok):
                texts = answers(m, tok, list(prompts), tokens, cfg.model.chat_template_kwargs, tools,
                                cfg.rft.max_tool_calls)
            say(0.05 + (i + 0.7) * span, f"{label}: grading")
            outputs[key] = _grade(graders, texts, items)
    finally:
        for g in graders:
            g.close()
    say(0.97, "Writing eval/results.json")
    results = _summarise(run, cfg, graders, variants, outputs, len(prompts), tokens, notes, started)
    _write(run, results, prompts, items, outputs)
    say(1.0, "Done")
    return results


def _grade(graders, completions: list, items: list[dict]) -> list[dict]:
    """One row per completion (text, or a tool-use trajectory: its final answer plus the turns)."""
    from graders.base import make_sample
    from graders.trajectory import row_fields

    samples = [make_sample(c) for c in completions]
    per = {g.name: g.grade_batch(samples, items) for g in graders}
    rows = []
    for i, sample in enumerate(samples):
        scores = {name: (r[i].score if r[i].ok else None) for name, r in per.items()}
        errors = {name: r[i].error.to_dict() for name, r in per.items() if not r[i].ok}
        total = sum(g.weight * (scores[g.name] or 0.0) for g in graders)
        row = {"completion": sample["output_text"], "scores": scores, "total": total, "errors": errors}
        row.update(row_fields(sample))  # a tool-use answer: its turns and tool numbers
        rows.append(row)
    return rows


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _summarise(run, cfg, graders, variants, outputs, n, tokens, notes, started) -> dict:
    models = {}
    for key, label, adapter in variants:
        rows = outputs[key]
        models[key] = {"label": label, "adapter": adapter,
                       "scores": {g.name: _mean(r["scores"][g.name] or 0.0 for r in rows) for g in graders},
                       "total": _mean(r["total"] for r in rows),
                       "errors": {g.name: sum(1 for r in rows if g.name in r["errors"]) for g in graders},
                       "mean_chars": _mean(len(r["completion"]) for r in rows)}
        if cfg.tools:  # Agent RFT: how often each model reached for a tool on the held-out rows
            models[key]["tool_call_rate"] = _mean(bool((r.get("tools") or {}).get("calls")) for r in rows)
    return {"run_id": run.id, "rows": n, "created": time.time(), "seconds": round(time.time() - started, 2),
            "model": cfg.model.name, "max_new_tokens": tokens, "greedy": True,
            "graders": [{"name": g.name, "weight": g.weight} for g in graders], "models": models, "notes": notes}


def _write(run: RunFolder, results: dict, prompts, items, outputs) -> None:
    from graders.item import prompt_text

    run.eval_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, item in enumerate(items):
        lines.append({"row": i, "prompt": prompt_text(prompts[i]), "reference": item.get("completion"),
                      "item": item, "outputs": {k: rows[i] for k, rows in outputs.items()}})
    tmp = run.eval_dir / "samples.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in lines), encoding="utf-8")
    tmp.replace(run.eval_dir / "samples.jsonl")
    tmp = run.eval_dir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1), encoding="utf-8")
    tmp.replace(run.eval_dir / "results.json")


def load_results(run: RunFolder) -> tuple[dict | None, list[dict]]:
    """The last evaluation of a run (results, per-row samples), or (None, [])."""
    from finetuner.runs import read_jsonl

    path = run.eval_dir / "results.json"
    if not path.exists():
        return None, []
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None, []
    return results, read_jsonl(run.eval_dir / "samples.jsonl")[0]


# ------------------------------------------------------------------ playground


def chat_reply(model_name: str, adapter: str | None, history: list[dict], temperature: float = 0.7,
               max_new_tokens: int = 128, quantization: str = "auto", trust: bool = False,
               template_kwargs: dict | None = None, tools=None, max_calls: int = 3) -> str:
    """The model's next message for a chat `history` of {role, content} ending with the user's turn.
    `template_kwargs`: the run's `model.chat_template_kwargs`; `tools`: the run's tools (graders/tools.py)."""
    from graders.base import content_text

    from finetuner.modeling.generate import generate

    messages = [{"role": m["role"], "content": content_text(m.get("content"))} for m in history
                if m.get("role") in ("user", "assistant", "system")]
    if not messages or messages[-1]["role"] != "user":
        raise FinetunerError("Type a message first.")
    with MODELS.use(model_name, adapter, quantization, trust) as (model, tok):
        if tools:  # the run's tools, called as in training; the reply shows each call and its answer
            from finetuner.evaluation.answers import shown_reply
            from finetuner.modeling.tool_chat import run_with_tools

            [out] = run_with_tools(model, tok, [messages], [t.function for t in tools], max_calls=max_calls,
                                   max_new_tokens=int(max_new_tokens), do_sample=float(temperature) > 0,
                                   temperature=max(float(temperature), 1e-3))
            return shown_reply(out["messages"])
        return generate(model, tok, [messages], n=1, max_new_tokens=int(max_new_tokens),
                        temperature=float(temperature), template_kwargs=template_kwargs)[0][0]


def summary_table(results: dict | None) -> dict:
    """{"headers", "data"} of a results object: one row per model, one column per grader (× its weight), the
    weighted total, grader errors and the mean answer length in characters. The Evaluate tab shows it as a
    table, `python -m finetuner evaluate` prints it as text."""
    if not results:
        return {"headers": ["model", "total"], "data": []}
    graders = [g["name"] for g in results["graders"]]
    weights = {g["name"]: g["weight"] for g in results["graders"]}
    headers = ["model", *[f"{g} (×{weights[g]:g})" for g in graders], "total", "errors", "chars"]
    data = [[m["label"], *[f"{m['scores'][g]:.3f}" for g in graders], f"{m['total']:.3f}",
             sum(m["errors"].values()), f"{m['mean_chars']:.0f}"] for m in results["models"].values()]
    return {"headers": headers, "data": data}
