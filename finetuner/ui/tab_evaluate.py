"""Tab 5, Evaluate & chat: score base / after SFT / after RFT on held-out rows with the run's own graders,
compare answers row by row, and chat with the base and the tuned model side by side.

The work is finetuner/evaluate.py's (`evaluate_run`, `chat_reply`, the model cache); this module lays it out.
An evaluation runs in Gradio's worker thread with a progress bar and `concurrency_limit=1`, so two people
pressing Evaluate queue up instead of loading models twice, while every other event keeps flowing.
"""

from __future__ import annotations

import time

import gradio as gr

from .. import evaluate as ev
from ..config import load_config
from ..errors import RunError
from ..runs import list_runs, open_run
from . import figures
from .context import AppContext, Shared, bind, safe
from .tab_monitor import run_choices

COMPARE_FILTERS = ("all rows", "B scored higher", "B scored lower", "same score")


def pick_run(ctx: AppContext, wanted: str | None, choices) -> str:
    """`wanted` if listed, else the newest run with a trained adapter, else the newest run."""
    ids = [c[1] for c in choices]
    if wanted and wanted in ids:
        return wanted
    for st in list_runs(ctx.runs_dir):
        if len(ev.model_variants(open_run(ctx.runs_dir, st["id"]))) > 1:
            return st["id"]
    return ids[0] if ids else ""


def attach(ctx: AppContext, wanted: str | None):
    choices = run_choices(ctx)
    return gr.update(choices=choices, value=pick_run(ctx, wanted, choices) or None)


def summary_table(results: dict | None) -> dict:
    """{"headers", "data"}: one row per model, one column per grader, the weighted total, grader errors and
    the mean answer length in characters."""
    if not results:
        return {"headers": ["model", "total"], "data": []}
    graders = [g["name"] for g in results["graders"]]
    weights = {g["name"]: g["weight"] for g in results["graders"]}
    headers = ["model", *[f"{g} (×{weights[g]:g})" for g in graders], "total", "errors", "chars"]
    data = []
    for m in results["models"].values():
        data.append([m["label"], *[f"{m['scores'][g]:.3f}" for g in graders], f"{m['total']:.3f}",
                     sum(m["errors"].values()), f"{m['mean_chars']:.0f}"])
    return {"headers": headers, "data": data}


def comparison_table(samples: list[dict], a: str, b: str, which: str = COMPARE_FILTERS[0]) -> dict:
    """Per held-out row: prompt, reference, model A's and model B's answers and totals."""
    headers = ["row", "prompt", "reference", "A answer", "A total", "B answer", "B total"]
    data = []
    for s in samples:
        oa, ob = s["outputs"].get(a), s["outputs"].get(b)
        if oa is None or ob is None:
            continue
        diff = ob["total"] - oa["total"]
        if (which == COMPARE_FILTERS[1] and diff <= 0) or (which == COMPARE_FILTERS[2] and diff >= 0) or \
                (which == COMPARE_FILTERS[3] and diff != 0):
            continue
        data.append([s["row"], s["prompt"], s.get("reference") or "", oa["completion"], f"{oa['total']:.3g}",
                     ob["completion"], f"{ob['total']:.3g}"])
    return {"headers": headers, "data": data}


def _status_line(run_id: str, results: dict | None, variants) -> str:
    if not results:
        names = ", ".join(label for _k, label, _a in variants)
        if len(variants) < 2:
            return f"Run `{run_id}` has no trained adapter yet: evaluate it once a stage has finished."
        return f"Not evaluated yet. **Evaluate** will compare: {names}."
    when = time.strftime("%d %b %H:%M", time.localtime(results.get("created", 0)))
    best = max(results["models"].values(), key=lambda m: m["total"])
    base = results["models"].get("base", {}).get("total", 0.0)
    notes = " ".join(results.get("notes") or [])
    return (f"Evaluated {when} on **{results['rows']} held-out rows** (greedy, up to {results['max_new_tokens']} "
            f"new tokens, {results['seconds']:.0f}s). Best: **{best['label']}** with total {best['total']:.3f} "
            f"(base {base:.3f}). {notes}")


def show_run(ctx: AppContext, run_id: str, a: str | None = None, b: str | None = None,
             which: str = COMPARE_FILTERS[0]):
    """Everything the tab shows for a run: status, summary, chart, comparison, playground choices."""
    if not run_id:
        empty = {"headers": ["model"], "data": []}
        return ("Pick a run.", empty, figures.eval_bar_figure({}), gr.update(choices=[]), gr.update(choices=[]),
                empty, gr.update(choices=[]))
    run = open_run(ctx.runs_dir, run_id)
    variants = ev.model_variants(run)
    results, samples = ev.load_results(run)
    keys = [(label, key) for key, label, _p in variants]
    done = list((results or {}).get("models", {}))
    a = a if a in done else (done[0] if done else None)
    b = b if b in done and b != a else (done[-1] if done else None)
    tuned = [(label, key) for key, label, _p in variants if key != "base"]
    return (_status_line(run_id, results, variants), summary_table(results),
            figures.eval_bar_figure(results or {}),
            gr.update(choices=[c for c in keys if c[1] in done], value=a),
            gr.update(choices=[c for c in keys if c[1] in done], value=b),
            comparison_table(samples, a, b, which) if results else {"headers": ["row"], "data": []},
            gr.update(choices=tuned, value=tuned[-1][1] if tuned else None))


def run_evaluation(ctx: AppContext, run_id: str, rows: int, max_tokens: int, progress=gr.Progress()):
    if not run_id:
        raise RunError("Pick a run to evaluate.")
    run = open_run(ctx.runs_dir, run_id)
    ev.evaluate_run(run, rows=int(rows), max_new_tokens=int(max_tokens) or None,
                    progress=lambda fraction, text: progress(fraction, desc=text))
    gr.Info("Evaluation done; results saved in the run folder (eval/results.json).")
    return show_run(ctx, run_id)


def compare(ctx: AppContext, run_id: str, a: str, b: str, which: str):
    if not run_id:
        return gr.skip()
    _results, samples = ev.load_results(open_run(ctx.runs_dir, run_id))
    return comparison_table(samples, a, b, which)


def chat(ctx: AppContext, run_id: str, tuned: str, message: str, base_hist, tuned_hist, temperature, max_tokens):
    """Send one message to both models; each keeps its own conversation."""
    message = (message or "").strip()
    if not message:
        return gr.skip()
    if not run_id:
        raise RunError("Pick a run first: the playground uses its base model and adapters.")
    run = open_run(ctx.runs_dir, run_id)
    cfg = load_config(run.config_path)
    adapters = {key: path for key, _label, path in ev.model_variants(run)}
    if tuned not in adapters or tuned == "base":
        raise RunError("This run has no trained adapter to chat with yet.")
    out = []
    for hist, adapter in ((base_hist or [], None), (tuned_hist or [], adapters[tuned])):
        hist = [*hist, {"role": "user", "content": message}]
        reply = ev.chat_reply(cfg.model.name, adapter, hist, temperature, max_tokens, cfg.model.quantization,
                              cfg.model.trust_remote_code)
        out.append([*hist, {"role": "assistant", "content": reply}])
    return "", out[0], out[1]


def build(ctx: AppContext, shared: Shared):
    gr.Markdown("Does training help on prompts it never saw? **Evaluate** answers the held-out rows with the base "
                "model, after SFT and after RFT (greedy), and scores every answer with the run's own graders.",
                elem_classes="ft-help")
    with gr.Row():
        picker = gr.Dropdown(label="Run", choices=[], scale=3,
                             info="The run to evaluate; the one opened in the Monitor or Runs tab is picked.")
        rows = gr.Slider(5, 500, value=50, step=5, label="Held-out rows", scale=2,
                         info="More rows give steadier numbers but take longer: 3 models answer each row.")
        max_tokens = gr.Number(0, label="Max new tokens", precision=0, scale=1, minimum=0,
                               info="Answer length limit; 0: the run's own (rft.max_completion_length)")
    with gr.Row(equal_height=True):
        go_btn = gr.Button("Evaluate", variant="primary", size="md", scale=0, min_width=160)
        status = gr.Markdown()
    with gr.Row():
        summary = gr.Dataframe(label="Mean score per grader (× weight; total = weighted sum; errors = failed "
                               "grades; chars = mean answer length)",
                               interactive=False, scale=1)
        chart = gr.Plot(show_label=False, scale=1)
    with gr.Accordion("Row by row: compare two models' answers", open=True):
        with gr.Row():
            a = gr.Dropdown(label="Model A", choices=[], info="Usually the base model")
            b = gr.Dropdown(label="Model B", choices=[], info="Usually the most trained one")
            which = gr.Dropdown(list(COMPARE_FILTERS), value=COMPARE_FILTERS[0], label="Show",
                                info="Where B beats A, loses to it, or ties")
        rows_table = gr.Dataframe(interactive=False, wrap=True, max_height=480, label="Held-out rows")
    with gr.Accordion("Playground: chat with the base and the tuned model side by side", open=True):
        with gr.Row():
            tuned = gr.Dropdown(label="Tuned model", choices=[], info="Which adapter of the run answers on the right")
            temperature = gr.Slider(0, 1.5, value=0.7, step=0.05, label="Temperature",
                                    info="0: always the most likely answer; higher: more varied")
            chat_tokens = gr.Slider(8, 1024, value=128, step=8, label="Max new tokens",
                                    info="Length limit of each reply")
        with gr.Row():
            base_chat = gr.Chatbot(label="Base model", height=320, feedback_options=None,
                                   placeholder="The base model, without training, answers here.")
            tuned_chat = gr.Chatbot(label="Tuned model", height=320, feedback_options=None,
                                    placeholder="The same model with the run's adapter answers here.")
        msg = gr.Textbox(label="Message", placeholder="Ask both models the same thing, then press Enter",
                         info="Both models answer; each remembers its own side of the conversation.")
        with gr.Row():
            send = gr.Button("Send", variant="primary", size="md", scale=0, min_width=120)
            clear = gr.Button("Clear both chats", size="md", scale=0, min_width=160)

    outs = [status, summary, chart, a, b, rows_table, tuned]
    gr.on(triggers=None, fn=safe(bind(ctx, attach)), inputs=[shared.run_id], outputs=picker)
    picker.change(safe(bind(ctx, show_run)), inputs=[picker], outputs=outs)
    # One progress bar (on the summary) rather than a spinner over each of the seven outputs.
    def evaluate_clicked(run_id, n_rows, tokens, progress=gr.Progress()):
        # A named closure, not bind(): Gradio finds the progress bar by this default in the signature.
        return run_evaluation(ctx, run_id, n_rows, tokens, progress)

    go_btn.click(safe(evaluate_clicked), inputs=[picker, rows, max_tokens], outputs=outs,
                 concurrency_limit=1, concurrency_id="finetuner-evaluate", show_progress_on=[summary])
    gr.on([a.input, b.input, which.input], safe(bind(ctx, compare)), inputs=[picker, a, b, which], outputs=rows_table)
    gr.on([send.click, msg.submit], safe(bind(ctx, chat)),
          inputs=[picker, tuned, msg, base_chat, tuned_chat, temperature, chat_tokens],
          outputs=[msg, base_chat, tuned_chat])
    gr.on([clear.click, picker.change], lambda: ([], []), outputs=[base_chat, tuned_chat])
