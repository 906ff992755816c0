"""The CLI verbs that do what the Evaluate and Runs tabs do, headless: evaluate, export, chat.

    python -m finetuner evaluate runs/<id> --rows 20 --json   # table, then eval/results.json as one line
    python -m finetuner export <id> --merged                  # prints the path of what was made, last
    printf 'What is 2+3?\\n/quit\\n' | python -m finetuner chat runs/<id>

RUN_DIR is a run folder, or a run id inside --runs-dir, as for `stop`. Progress goes to stderr so that stdout's
last line stays the answer a script reads (the path, or the JSON). Registered by cli.build_parser; kept apart
from cli.py so that file stays readable. Heavy libraries are imported inside the verbs, so `--help` is quick.
"""

from __future__ import annotations

import json
import sys

from graders.errors import FinetunerError

EXPORT_KINDS = ("adapter", "merged", "gguf", "bundle")


def _progress(fraction: float, text: str) -> None:
    print(f"[{fraction:4.0%}] {text}", file=sys.stderr, flush=True)


def _run(args):
    from pathlib import Path

    from finetuner.runs import open_run

    # A folder that exists is taken as it is; otherwise a run id inside --runs-dir (open_run keeps it inside).
    return open_run(None if Path(args.run).is_dir() else args.runs_dir, args.run)


# ------------------------------------------------------------------ evaluate


def results_table(results: dict) -> str:
    """The Evaluate tab's summary (evaluation.heldout.summary_table) as aligned text."""
    from finetuner.evaluation.heldout import summary_table

    table = summary_table(results)
    headers, rows = table["headers"], [[str(c) for c in row] for row in table["data"]]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, rows)])


def cmd_evaluate(args) -> int:
    from finetuner.evaluation.heldout import evaluate_run

    run = _run(args)
    results = evaluate_run(run, rows=args.rows, progress=_progress)
    print(f"Run {run.id}: {results['rows']} held-out rows, greedy, up to {results['max_new_tokens']} new tokens, "
          f"{results['seconds']:.0f}s")
    print(results_table(results))
    for note in results.get("notes") or []:
        print(f"note: {note}")
    print(f"Saved: {run.eval_dir / 'results.json'}")
    if args.json:
        # As saved, not as returned: a script reading this line gets exactly the file's object.
        print(json.dumps(json.loads((run.eval_dir / "results.json").read_text(encoding="utf-8"))), flush=True)
    return 0


# ------------------------------------------------------------------ export


def cmd_export(args) -> int:
    from finetuner.runs import export

    run = _run(args)
    kind = next(k for k in EXPORT_KINDS if getattr(args, k))
    if kind == "adapter":
        path = export.export_adapter(run)
    elif kind == "merged":
        path = export.export_merged(run, progress=_progress)
    elif kind == "bundle":
        path = export.export_bundle(run)
    else:
        export.final_adapter(run)  # the same clear message as the other kinds before importing anything heavy
        try:
            from finetuner.runs.export_gguf import export_gguf
        except ImportError as err:
            raise export.ExportError(f"GGUF export is not available in this installation ({err}). Export the "
                                     f"merged model (--merged) and convert it with llama.cpp instead.") from None
        path = export_gguf(run, args.quant, _progress)
    print(json.dumps({"kind": kind, "path": str(path)}) if args.json else str(path), flush=True)
    return 0


# ------------------------------------------------------------------ chat

CHAT_HELP = "Type a message and press Enter. /reset starts a new conversation; /quit (or Ctrl-D) ends."


def cmd_chat(args) -> int:
    from graders.tools import build_tools

    from finetuner.config import load_config
    from finetuner.evaluation.heldout import chat_reply
    from finetuner.runs.export import final_adapter

    run = _run(args)
    cfg = load_config(run.config_path)
    adapter = None if args.base else str(final_adapter(run))
    tty = sys.stdin.isatty()
    print(f"Chatting with {cfg.model.name}" + (" (base model, no adapter)" if args.base else f" + {adapter}")
          + f". {CHAT_HELP}", file=sys.stderr, flush=True)
    history: list[dict] = []
    tools = build_tools(cfg.tools, cfg.base_dir)  # an agent run chats with its tools, as it trained
    while True:
        try:
            # No prompt when piped: stdout then holds only the replies, one per message.
            line = input("you> " if tty else "")
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text == "/quit":
            break
        if text == "/reset":
            history.clear()
            print("(conversation cleared)", file=sys.stderr, flush=True)
            continue
        history.append({"role": "user", "content": text})
        reply = chat_reply(cfg.model.name, adapter, history, args.temperature, args.max_new_tokens,
                           cfg.model.quantization, cfg.model.trust_remote_code,
                           template_kwargs=cfg.model.chat_template_kwargs, tools=tools,
                           max_calls=cfg.rft.max_tool_calls)
        history.append({"role": "assistant", "content": reply})
        print(f"model> {reply}", flush=True)
    return 0


# ------------------------------------------------------------------ registration


def add_parsers(sub) -> None:
    """Add evaluate, export and chat to cli.build_parser's sub-parsers."""
    run_help = "run folder, or run id inside --runs-dir"

    e = sub.add_parser("evaluate", help="score base / SFT / RFT on held-out rows with the run's graders")
    e.add_argument("run", metavar="RUN_DIR", help=run_help)
    e.add_argument("--runs-dir", default="runs")
    e.add_argument("--rows", type=int, default=50, help="held-out rows to answer (0: all; default 50)")
    e.add_argument("--json", action="store_true", help="print eval/results.json as one JSON line, last")
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("export", help="export a run: adapter zip, merged model, GGUF file or reproducible bundle")
    x.add_argument("run", metavar="RUN_DIR", help=run_help)
    x.add_argument("--runs-dir", default="runs")
    what = x.add_mutually_exclusive_group(required=True)
    what.add_argument("--adapter", action="store_true", help="zip of the LoRA adapter (PEFT format)")
    what.add_argument("--merged", action="store_true", help="base model with the adapter merged in (HF folder)")
    what.add_argument("--gguf", action="store_true", help="merged model as one .gguf file (llama.cpp, Ollama)")
    what.add_argument("--bundle", action="store_true", help="zip to train this run again: config, data, graders")
    x.add_argument("--quant", default="q8_0", help="GGUF type (with --gguf): q8_0, f16 or bf16, made from the "
                   "merged model (bf16 for real models); default q8_0")
    x.add_argument("--json", action="store_true", help='print {"kind": ..., "path": ...} as one JSON line')
    x.set_defaults(func=cmd_export)

    c = sub.add_parser("chat", help="chat in the terminal with the tuned model (or --base); reads stdin")
    c.add_argument("run", metavar="RUN_DIR", help=run_help)
    c.add_argument("--runs-dir", default="runs")
    c.add_argument("--base", action="store_true", help="chat with the base model, without the adapter")
    c.add_argument("--temperature", type=float, default=0.7, help="0 for greedy (default 0.7)")
    c.add_argument("--max-new-tokens", type=int, default=128, help="longest reply in tokens (default 128)")
    c.set_defaults(func=cmd_chat)
