"""`python -m finetuner test-grader`: dry-run graders on data before training.

Two forms, one output (graders.dryrun's report):
  test-grader RUN.yaml [--rows N] [--samples column|base] [--k K] [--sample-column COL] [--json]
  test-grader --grader FILE --data FILE --sample-column COL [--rows N] [--json]
The run form grades what training would grade: the RFT stage's rows as the reward functions see them,
with completions from a data column (e.g. the reference answers, a sanity check) or sampled from the base
model (`--samples base`, K per prompt, to see whether RFT gets a learning signal). `dry_run_config` is the
library function the UI calls.
"""

from __future__ import annotations

import argparse
import os

from graders.errors import DataError, FinetunerError


def rft_items(cfg, tokenizer, rows: int | None, data=None):
    """(prompts, items) of the RFT stage: prompts as the model sees them, items as graders see them in training
    (graders.item.build_item, the reward bridge's own function: `{{item.prompt}}` is the prompt's text). `data`:
    the stage's StageData when the caller has it loaded already (training's curriculum), else it is loaded."""
    from graders.item import build_item

    from finetuner.data import load_stage_data

    data = data or load_stage_data(cfg, "rft", tokenizer)
    n = len(data.train) if not rows else min(rows, len(data.train))
    records = data.train.select(range(n)).to_list()
    prompts = [r["prompt"] for r in records]
    return prompts, [build_item({k: v for k, v in r.items() if k != "prompt"}, p) for r, p in zip(records, prompts)]


def dry_run_config(cfg, rows: int = 20, samples: str = "column", k: int = 4, sample_column: str | None = None,
                   model_and_tokenizer=None, data=None):
    """Grade `rows` rows of the run's data with the run's graders; returns a graders.dryrun.DryRunReport.

    samples="column": the text comes from `sample_column` (default: the reference answer, `completion`).
    samples="base": `k` completions per prompt sampled from the base model at the run's RFT settings.
    `model_and_tokenizer` / `data`: what the caller already loaded (the model, the RFT StageData), reused.
    """
    from graders import build_graders
    from graders.dryrun import dry_run

    from finetuner.modeling.load import load_tokenizer

    graders = build_graders(cfg.graders, cfg.base_dir)
    try:
        if samples == "base":
            from finetuner.modeling.generate import generate, load_for_inference

            model, tok = model_and_tokenizer or load_for_inference(cfg.model.name, None, cfg.model.quantization,
                                                                    cfg.model.trust_remote_code)
            prompts, items = rft_items(cfg, tok, rows, data)
            outs = generate(model, tok, prompts, n=k, max_new_tokens=cfg.rft.max_completion_length,
                            temperature=cfg.rft.temperature, seed=cfg.seed,
                            template_kwargs=cfg.model.chat_template_kwargs)
            report = dry_run(graders, items, samples=outs)
            report.threshold = cfg.rft.pass_threshold
            return report
        tok = load_tokenizer(cfg.model.name, cfg.model.trust_remote_code)
        _prompts, items = rft_items(cfg, tok, rows, data)
        column = sample_column or "completion"
        if items and all(item.get(column) is None for item in items):
            cols = ", ".join(k for k, v in items[0].items() if v is not None)
            raise DataError(f"The RFT data has no `{column}` values to grade (columns: {cols}). Name one with "
                            f"--sample-column, or grade base-model samples with --samples base.")
        return dry_run(graders, items, sample_column=column)
    finally:
        for g in graders:
            g.close()


def _file_form(args):
    from graders import build_graders, build_item
    from graders.dryrun import dry_run, load_grader_file

    from finetuner.data import read_source

    if not (args.data and args.sample_column):
        raise FinetunerError("With --grader, also give --data FILE and --sample-column COLUMN (the text to grade).")
    specs = load_grader_file(args.grader)
    graders = build_graders(specs, base_dir=os.path.dirname(os.path.abspath(args.grader)))
    try:
        # A file read as it is: its own `prompt` column (text or chat turns) is the prompt, as in training.
        rows = [build_item(row) for row in read_source(args.data).rows]
        return dry_run(graders, rows, sample_column=args.sample_column, rows_limit=args.rows)
    finally:
        for g in graders:
            g.close()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetuner test-grader",
                                description="Grade data with your graders before training and see whether the "
                                            "rewards can teach anything.")
    p.add_argument("config", nargs="?", help="a run's YAML file (its graders and data)")
    p.add_argument("--grader", help="a grader file instead: our YAML/JSON, or an OpenAI grader JSON")
    p.add_argument("--data", help="with --grader: the data file")
    p.add_argument("--sample-column", help="the column holding the text to grade (default: completion)")
    p.add_argument("--rows", type=int, default=None, help="grade only the first N rows (run form: 20)")
    p.add_argument("--samples", choices=("column", "base"), default="column",
                   help="run form: grade a data column, or K samples per prompt from the base model")
    p.add_argument("--k", type=int, default=4, help="samples per prompt with --samples base (default 4)")
    p.add_argument("--json", action="store_true", help="one JSON object per graded sample, then a summary")
    return p


def main_test_grader(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.grader:
        report = _file_form(args)
    elif args.config:
        from finetuner.config import load_config

        cfg = load_config(args.config)
        if not cfg.graders:
            raise FinetunerError(f"{args.config} has no graders to test. Add some under `graders:`.")
        report = dry_run_config(cfg, rows=args.rows or 20, samples=args.samples, k=args.k,
                                sample_column=args.sample_column)
    else:
        raise FinetunerError("Give a run file (test-grader RUN.yaml) or --grader FILE --data FILE "
                             "--sample-column COL.")
    from graders.cli import emit

    emit(report, args.json)
    return 0
