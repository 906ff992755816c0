"""What every tab shares: the app context (runs folder, uploads, one-run-at-a-time rule), the components that
cross tabs, and `safe`, the wrapper that turns any handler failure into a plain message instead of a traceback.

Tabs talk to each other only through `Shared`: the `project` state (data, graders, method choices as plain
data) and `run_id` (the run the Monitor and Evaluate tabs show). The engine is reached through its public
functions; training always runs in a child process (finetuner.runs.launch).
"""

from __future__ import annotations

import functools
import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from graders.errors import FinetunerError

log = logging.getLogger("finetuner.ui")


def new_project() -> dict:
    """The project a person builds across tabs, as plain data (it lives in a gr.State per browser session).

    data:    {"path", "name", "method_hint", "format", "rows", "columns", "has_labels", "ok", "tokens"} after the
             Data tab; tokens = {"what", "p95", "max"} feeds the memory estimate
    graders: list of grader specs exactly as in a run's YAML `graders:` list
    dry_run: the last grader test summary (graders.dryrun summary_json) plus "source" ("base" or "column")
             and "k", "failed_graders" ({grader: latest error} for graders that failed on every row: Launch
             refuses while they stand) and "graders_key" (which graders were tested), or None; only
             base-model samples give the pass rate the method advice uses
    config:  overrides for the RunConfig the Train tab writes (nested dict), may be empty
    """
    return {"data": {}, "graders": [], "dry_run": None, "config": {}}


@dataclass
class AppContext:
    runs_dir: str | Path = "runs"
    uploads: Path = field(init=False)

    def __post_init__(self):
        self.runs_dir = Path(self.runs_dir).resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.uploads = self.runs_dir / "_uploads"
        self.uploads.mkdir(exist_ok=True)

    def active_run(self) -> dict | None:
        """The run now training, if any (one run at a time per GPU)."""
        from finetuner.runs import active_run

        return active_run(self.runs_dir)

    def launch(self, config):
        """Start `config` unless a run is training: the check and the start are one step under a lock file in
        the runs folder, so two Launch clicks (two browser tabs, two app processes) never start two runs.
        Raises RunError naming the run in the way."""
        from graders.errors import RunError
        from finetuner.runs import launch
        from finetuner.planning.step_time import active_probe

        probe = active_probe(self.runs_dir)
        if probe is not None:  # "Measure a step" is timing a few steps: a run beside it would spoil both
            raise RunError(f"A step is being measured (probe `{probe.get('id')}`, a few steps): launch again when "
                           "it ends, in a minute or two.")
        return launch(config, self.runs_dir, exclusive=True)


@dataclass
class Shared:
    """Components that cross tabs; created once in build_app, before the tabs."""

    project: object  # gr.State holding new_project()
    run_id: object  # gr.State holding the id (folder name) of the run being watched, or ""
    tabs: object  # gr.Tabs, so a handler can switch to another tab (e.g. Monitor after Launch)
    # (fn, outputs) pairs: fn(project) -> values for outputs. A tab registers one so that when the project is
    # replaced from outside (the "Try the demo" button, opening a run's project), the tab shows the new one.
    refreshers: list = field(default_factory=list)

    def on_project_loaded(self, fn, outputs) -> None:
        self.refreshers.append((fn, outputs))


def message(err: BaseException) -> str:
    """What a person sees for an error: our own messages as they are, anything else summarised."""
    if isinstance(err, FinetunerError):
        return str(err)
    return f"Something went wrong: {type(err).__name__}: {err}. Details are in the app's log."


def confirm_row(question: str, yes_label: str):
    """A hidden "are you sure?" row for a destructive button: (row, yes button, cancel button)."""
    import gradio as gr

    with gr.Row(visible=False, elem_classes="ft-warn") as row:
        gr.Markdown(question)
        yes = gr.Button(yes_label, variant="stop", size="md", scale=0, min_width=160)
        no = gr.Button("Cancel", size="md", scale=0, min_width=100)
    return row, yes, no


def bind(ctx, fn, *extra):
    """fn(ctx, *extra, *inputs) as a Gradio handler. No functools.wraps: Gradio inspects the signature and
    must see (*args), not ctx; the name is kept for `safe`'s log lines."""
    def bound(*args):
        return fn(ctx, *extra, *args)

    bound.__name__ = fn.__name__
    return bound


def safe(handler):
    """Wrap a Gradio handler: a failure becomes a gr.Warning toast (and the log gets the traceback), never a
    traceback on the page. The handler's outputs are left unchanged (gr.skip()) when it fails."""
    import gradio as gr

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - the page must never show a traceback
            if not isinstance(err, FinetunerError):
                log.error("UI handler %s failed:\n%s", handler.__name__, traceback.format_exc())
            gr.Warning(message(err))
            return gr.skip()

    return wrapper
