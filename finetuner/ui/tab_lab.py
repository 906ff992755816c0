"""The Lab tab: SFT vs RFT vs SFT then RFT, side by side on the same data and budget, over seeds and data sizes.

A Lab starts from a built-in preset or from the project (the Data and Graders tabs, the Train tab's settings).
Start creates it here (so a bad setting is said at once), then runs it in its own process
(`python -m finetuner lab --lab-dir`): every arm is an ordinary run, queued, one at a time per device, shown
in the Runs tab. The tab reads `lab.json` and, when the Lab ends, its results and report (finetuner/lab).

Handlers are plain functions: `start(ctx, project, ...)`, `show(ctx, lab_id)`, `stop(ctx, lab_id)`,
`lab_choices(ctx)`, tested without a browser.
"""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from graders.errors import ConfigError, RunError
from finetuner.ui.context import AppContext, Shared, bind, new_project, safe

SOURCES = ("A built-in preset", "My project (Data, Graders and Train tabs)")
METHOD_LABELS = {"SFT": "sft", "RFT": "rft", "SFT then RFT": "sft+rft"}
ARM_HEADERS = ["method", "rows", "seed", "run", "state", "held-out score"]
TICK_SECONDS = 3.0
INTRO = ("**SFT, RFT or both?** The Lab trains each method on the same data under the same budget, over several "
         "seeds and data sizes, and shows the held-out score of each with its spread, the score against training "
         "seconds and examples seen, the cost, and what each forgets of a *keep* set. Every arm is an ordinary "
         "run: it waits in the queue and shows on the Runs tab.")


def _numbers(text: str, what: str, lo: int) -> list[int]:
    try:
        values = [int(v) for v in str(text or "").replace(",", " ").split()]
    except ValueError:
        raise ConfigError(f"{what} must be whole numbers separated by commas, e.g. 25, 50, 100; got {text!r}.") from None
    if any(v < lo for v in values):
        raise ConfigError(f"{what} must each be at least {lo}; got {text!r}.")
    return values


def spec_data(ctx: AppContext, project, source: str, preset_name: str, methods, seeds: str, sizes: str,
              budget_kind: str, budget: float, keep_file) -> tuple[dict, str]:
    """(the Lab spec as plain data, the folder its paths are relative to) from the form."""
    from finetuner.lab.spec import preset as load_preset

    picked = [METHOD_LABELS[m] for m in methods or []]
    if not picked:
        raise ConfigError("Tick at least one method to compare (two or more make a comparison).")
    if source == SOURCES[0]:
        spec = load_preset(preset_name or "demo")
        data, base_dir = spec.to_dict(), Path(spec.source).parent
    else:
        data, base_dir = _project_spec(ctx, project), ctx.uploads_for()
    data.update(methods=picked, seeds=_numbers(seeds, "Seeds", 0) or [0], sizes=_numbers(sizes, "Data sizes", 2))
    if not budget or budget <= 0:
        raise ConfigError("The budget must be above 0 (seconds of training, or examples, per arm).")
    data["budget"] = {"seconds" if budget_kind.startswith("seconds") else "examples": float(budget)}
    if keep_file:
        ctx.check_path(keep_file)
        data["keep"] = str(keep_file)
    return data, str(base_dir)


def _project_spec(ctx: AppContext, project) -> dict:
    """The project as a Lab's base run file (written to the user's uploads) and its data."""
    from finetuner.config import from_dict, portable_config, save_config
    from finetuner.ui.tab_train import config_dict

    project = project or new_project()
    if not (project.get("data") or {}).get("path"):
        raise ConfigError("The project has no data yet: load a file on the Data tab, or pick a built-in preset.")
    if (project.get("data") or {}).get("ok") is False:
        raise ConfigError("The project's data has problems: fix them on the Data tab first.")
    raw = config_dict(project, {})
    raw.setdefault("name", "lab")
    raw["method"] = "sft+rft" if raw.get("graders") else "sft"
    cfg = from_dict(raw)
    ctx.check_config_paths(cfg)  # --auth: a model folder or data file of another user's is refused, as on Launch
    base = ctx.uploads_for() / f"lab-base-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
    save_config(portable_config(cfg), base)
    return {"name": Path(project["data"]["path"]).stem[:40] or "lab", "base": str(base), "eval_rows": 100,
            "eval_every": 10}


def start(ctx: AppContext, project, *form):
    """Create the Lab (every setting checked now) and start its process; (lab dropdown, message)."""
    from finetuner.lab import create_lab, spec_from_dict, start_lab_process

    data, base_dir = spec_data(ctx, project, *form)
    spec = spec_from_dict(data, base_dir, "the Lab form")
    lab = create_lab(spec, ctx.runs_dir, owner=ctx.user())
    start_lab_process(lab, ctx.runs_dir)
    n = len(lab.read()["arms"])
    return (gr.Dropdown(choices=lab_choices(ctx), value=lab.id),
            f"✅ Lab `{lab.id}` started: {n} arms, queued one at a time. Follow them below or on the Runs tab.")


def _open(ctx: AppContext, lab_id: str):
    from finetuner.lab import open_lab

    lab = open_lab(ctx.runs_dir, lab_id)
    status = lab.read()
    if not ctx.may_see(status):
        raise RunError(f"Lab {lab.id} belongs to another user. Pick one of your own Labs from the list.")
    return lab


def lab_choices(ctx: AppContext) -> list[str]:
    from finetuner.lab import list_labs

    return [s["id"] for s in list_labs(ctx.runs_dir) if ctx.may_see(s)]


def refresh_choices(ctx: AppContext, current: str):
    choices = lab_choices(ctx)
    return gr.Dropdown(choices=choices, value=current if current in choices else (choices[0] if choices else None))


def show(ctx: AppContext, lab_id: str):
    """(progress, arms table, results table, reading, charts, report file) of one Lab."""
    from finetuner.lab import lab_status
    from finetuner.lab.reading import read_claims
    from finetuner.lab.report import table_rows

    if not lab_id:
        return "No Lab yet: start one above.", _frame([], ARM_HEADERS), *_results(None, "", [], None)
    lab = _open(ctx, lab_id)
    status = lab_status(lab)
    result = lab.results() if status.get("state") == "finished" else None
    scores = {a["run_id"]: a["score"] for a in (result or {}).get("arms", [])}
    arms = [[a["method"], a["size"], a["seed"], a.get("run_id") or "", a.get("state", ""),
             "" if scores.get(a.get("run_id")) is None else f"{scores[a['run_id']]:.1%}"] for a in status.get("arms", [])]
    done = sum(a[4] in ("finished", "stopped", "failed", "cancelled") for a in arms)
    state = status.get("state", "unknown")
    progress = f"**Lab `{lab.id}`: {state}**, {done} of {len(arms)} arms done."
    if status.get("error"):
        progress += f"\n\n❌ {status['error']}"
    if not result:
        return progress, _frame(arms, ARM_HEADERS), *_results(None, "", [], None)
    reading = "\n".join(f"- **{c['verdict']}** — *{c['claim']}* {c['measured']}" for c in read_claims(result))
    charts = [(str(p), p.stem) for p in sorted((lab.path / "charts").glob("*.png"))]
    report = lab.path / "report.html"
    return (progress, _frame(arms, ARM_HEADERS),
            *_results(table_rows(result), "**What the numbers say** (the article's claims, measured here)\n\n" + reading,
                      charts, str(report) if report.exists() else None))


def _results(rows, reading: str, charts: list, report):
    """The result components, shown only once the Lab has a result (empty boxes would only say "nothing")."""
    done = rows is not None
    table = _frame([list(r.values()) for r in rows or []], list(rows[0]) if rows else [])
    return (gr.Dataframe(value=table, visible=done), reading, gr.Gallery(value=charts, visible=done),
            gr.File(value=report, visible=done))


def _frame(rows: list, headers: list):
    import pandas as pd

    return pd.DataFrame(rows, columns=headers)


def tick(ctx: AppContext, lab_id: str, seen):
    """The timer's refresh: everything again only when the Lab's state or its arms changed (no flicker)."""
    from finetuner.lab import lab_status

    if not lab_id:
        return (*[gr.skip()] * 6, seen)
    status = lab_status(_open(ctx, lab_id))
    now = [lab_id, status.get("state"), [a.get("state") for a in status.get("arms", [])]]
    if now == seen:
        return (*[gr.skip()] * 6, seen)
    return (*show(ctx, lab_id), now)


def preset_form(name: str):
    """The preset's own methods, seeds, sizes and budget, put in the form when it is picked."""
    from finetuner.lab.spec import preset as load_preset

    spec = load_preset(name or "demo")
    kind = "seconds of training" if spec.budget_kind == "seconds" else "examples seen"
    return ([k for k, v in METHOD_LABELS.items() if v in spec.methods], ", ".join(map(str, spec.seeds)),
            ", ".join(map(str, spec.sizes)), kind, spec.budget_value)


def stop(ctx: AppContext, lab_id: str) -> str:
    if not lab_id:
        return "No Lab is selected."
    lab = _open(ctx, lab_id)
    if lab.read().get("state") not in ("planned", "running"):
        return f"Lab `{lab.id}` is {lab.read().get('state')}: there is nothing to stop."
    lab.stop_path.write_text(str(time.time()))
    return f"Lab `{lab.id}` will stop: its waiting arms leave the queue and the arm training now stops at its next step."


def build(ctx: AppContext, shared: Shared):
    from finetuner.lab.spec import preset_names

    gr.Markdown(INTRO, elem_classes="ft-help")
    with gr.Row():
        source = gr.Radio(list(SOURCES), value=SOURCES[0], label="Compare on")
        preset = gr.Dropdown(preset_names(), value="small", label="Preset",
                             info="demo: the arithmetic task, 24 arms, about 15 minutes on 2 CPU cores; small: 3 arms")
    with gr.Row():
        methods = gr.CheckboxGroup(list(METHOD_LABELS), value=list(METHOD_LABELS), label="Methods")
        seeds = gr.Textbox("0", label="Seeds", info="Two or more give a spread, e.g. 0, 1")
        sizes = gr.Textbox("25", label="Data sizes (rows)", info="e.g. 25, 50, 100, 200; empty: all rows")
    with gr.Row():
        budget_kind = gr.Radio(["seconds of training", "examples seen"], value="seconds of training",
                               label="Same budget for every arm")
        budget = gr.Number(3, label="Budget per arm", minimum=0)
        keep = gr.File(label="Keep set (optional): what the model must not forget", file_types=[".jsonl", ".csv"],
                       type="filepath")
    with gr.Row():
        start_btn = gr.Button("Start the Lab", variant="primary")
        stop_btn = gr.Button("Stop the Lab", variant="stop")
    message = gr.Markdown()
    with gr.Row():
        picked = gr.Dropdown(choices=lab_choices(ctx), label="Lab", scale=3)
        refresh_btn = gr.Button("↻ Refresh", size="md", scale=0, min_width=100)
    progress = gr.Markdown()
    arms = gr.Dataframe(headers=ARM_HEADERS, interactive=False, label="Arms (each an ordinary run)", max_height=300)
    reading = gr.Markdown()
    table = gr.Dataframe(interactive=False, wrap=True, label="Results per data size and method", visible=False)
    charts = gr.Gallery(label="Charts", columns=2, height="auto", object_fit="contain", visible=False)
    report = gr.File(label="Report (self-contained HTML)", interactive=False, visible=False)
    timer = gr.Timer(TICK_SECONDS)
    seen = gr.State(None)

    form = [source, preset, methods, seeds, sizes, budget_kind, budget, keep]
    shown = [progress, arms, table, reading, charts, report]
    start_btn.click(safe(bind(ctx, start)), [shared.project] + form, [picked, message])
    stop_btn.click(safe(bind(ctx, stop)), [picked], [message])
    picked.change(safe(bind(ctx, show)), [picked], shown)
    refresh_btn.click(safe(bind(ctx, refresh_choices)), [picked], [picked])
    timer.tick(safe(bind(ctx, tick)), [picked, seen], shown + [seen])
    preset.change(safe(preset_form), [preset], [methods, seeds, sizes, budget_kind, budget])
