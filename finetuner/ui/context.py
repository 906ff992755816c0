"""What every tab shares: the app context (runs folder, uploads, one-run-at-a-time rule), the components that
cross tabs, and `safe`, the wrapper that turns any handler failure into a plain message instead of a traceback.

Tabs talk to each other only through `Shared`: the `project` state (data, graders, method choices as plain
data) and `run_id` (the run the Monitor and Evaluate tabs show). The engine is reached through its public
functions; training always runs in a child process (finetuner.runs.launch).
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import inspect
import logging
import re
import traceback
import typing
from dataclasses import dataclass, field
from pathlib import Path

from graders.errors import FinetunerError, RunError

log = logging.getLogger("finetuner.ui")

# The signed-in user of the handler now running (--auth), None without auth. `safe` sets it from the gr.Request
# Gradio injects, so every handler and the AppContext methods it calls know who is asking without each
# signature carrying a request.
current_user: contextvars.ContextVar[str | None] = contextvars.ContextVar("finetuner_user", default=None)
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


class NotYours(RunError):
    """A run (or a path in it) that belongs to another signed-in user."""


def user_folder(user: str) -> str:
    """A user's name as one safe file or folder name: `u-<name>`, or `h-<hash>` when the name holds anything
    but [A-Za-z0-9_.@-] (so no name can reach outside the folder it is put in)."""
    if USER_NAME.fullmatch(user) and ".." not in user:
        return f"u-{user}"
    return "h-" + hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()[:32]


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
    # --auth: with `auth` on, each user sees only the runs and uploads they own; `teachers` see everything.
    auth: bool = False
    teachers: frozenset = frozenset()
    uploads: Path = field(init=False)

    def __post_init__(self):
        self.runs_dir = Path(self.runs_dir).resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.uploads = self.runs_dir / "_uploads"
        self.uploads.mkdir(exist_ok=True)
        self.teachers = frozenset(self.teachers)

    # ------------------------------------------------------------ who may see what (--auth)

    def user(self, user: str | None = None) -> str | None:
        """`user`, else the signed-in user of the handler now running."""
        return user or current_user.get()

    def is_teacher(self, user: str | None = None) -> bool:
        """Sees every run and upload: everyone without auth, a teacher account with it."""
        return not self.auth or self.user(user) in self.teachers

    def may_see(self, status: dict, user: str | None = None) -> bool:
        """A run without an owner (made before --auth, or by the CLI) is shown only to teachers."""
        user = self.user(user)
        return self.is_teacher(user) or (user is not None and status.get("owner") == user)

    def list_runs(self, user: str | None = None) -> list[dict]:
        """finetuner.runs.list_runs, cut to the runs this user may see."""
        from finetuner.runs import list_runs

        return [st for st in list_runs(self.runs_dir) if self.may_see(st, user)]

    def open_run(self, run_id, user: str | None = None):
        """finetuner.runs.open_run (ids cannot leave runs_dir), refusing another user's run."""
        from finetuner.runs import open_run

        run = open_run(self.runs_dir, run_id)
        user = self.user(user)
        if not self.may_see(run.read_status(), user):
            if user is None:
                raise RunError("This app needs a signed-in user to open a run: reload the page and sign in.")
            raise NotYours(f"Run {run.id} belongs to another user, so {user} cannot open, stop or delete it. "
                           "Pick one of your own runs from the list (a teacher account sees every run).")
        return run

    def uploads_for(self, user: str | None = None) -> Path:
        """Where this user's uploads go: runs_dir/_uploads/<user>/ with auth, runs_dir/_uploads without."""
        user = self.user(user)
        if not self.auth:
            return self.uploads
        if user is None:
            raise RunError("This app needs a signed-in user to keep uploads: reload the page and sign in.")
        folder = self.uploads / user_folder(user)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def check_path(self, path, user: str | None = None) -> None:
        """Refuse a path typed by the user that lies inside another user's uploads or run folders (runs_dir
        is shared by the class). Paths outside runs_dir are not ours to police: see README, "A class"."""
        user = self.user(user)
        if self.is_teacher(user) or not str(path).strip():
            return
        target = Path(str(path).strip()).expanduser().resolve()
        if not target.is_relative_to(self.runs_dir):
            return
        if target.is_relative_to(self.uploads_for(user)):
            return
        inside = target.relative_to(self.runs_dir).parts
        if inside and inside[0] != self.uploads.name:
            try:
                self.open_run(inside[0], user)
                return
            except RunError:
                pass
        raise NotYours(f"{path} is in another user's part of the runs folder, so it cannot be used here. Upload "
                       "your own copy of the file on the Data tab, or pick one of your own runs.")

    def check_config_paths(self, cfg) -> None:
        """check_path for what a RunConfig reads: a model folder or data file typed by hand on the Train tab."""
        files = [g.get("file") for g in cfg.graders or [] if isinstance(g, dict)]
        files += [t.get(k) for t in cfg.tools or [] if isinstance(t, dict) for k in ("file", "table")]
        for typed in (cfg.model.name, cfg.data.train, cfg.data.eval, cfg.data.rft_train, *files):
            self.check_path(cfg.resolve(typed) if typed else "")

    def active_run(self) -> dict | None:
        """The run now training, if any (one run at a time per GPU)."""
        from finetuner.runs import active_run

        return active_run(self.runs_dir)

    def launch(self, config, owner: str | None = None):
        """Queue `config` (runs.enqueue): it starts at once when a device slot is free, else its folder waits
        (state `waiting`) and starts by itself in queue order. Every check and start is under a lock file in
        the runs folder, so two Launch clicks never put two runs on one device. While a step is being measured
        the run waits too (a run beside the probe would spoil both timings) rather than being refused.
        `owner` (default: the signed-in user, None without auth) goes in status.json from the start."""
        from finetuner.runs import enqueue

        return enqueue(config, self.runs_dir, owner=self.user(owner))


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
    must see (*args), not ctx; the name is kept for `safe`'s log lines. Who is asking reaches fn through
    `safe` (current_user), which puts a gr.Request parameter before the *args."""
    def bound(*args):
        return fn(ctx, *extra, *args)

    bound.__name__ = fn.__name__
    return bound


def safe(handler):
    """Wrap a Gradio handler: a failure becomes a gr.Warning toast (and the log gets the traceback), never a
    traceback on the page. The handler's outputs are left unchanged (gr.skip()) when it fails.

    It also tells the handler who is asking: Gradio injects a gr.Request into a positional parameter annotated
    gr.Request (gradio.helpers.special_args, which stops at *args), so the wrapper's signature is the
    handler's with one such parameter put first; its username is `current_user` while the handler runs. Called
    directly (tests, one handler calling another) without a request, the current user is left as it is."""
    import gradio as gr

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        token = None
        if args and isinstance(args[0], gr.Request):
            token = current_user.set(getattr(args[0], "username", None) or None)
            args = args[1:]
        try:
            return handler(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - the page must never show a traceback
            if not isinstance(err, FinetunerError):
                log.error("UI handler %s failed:\n%s", handler.__name__, traceback.format_exc())
            gr.Warning(message(err))
            return gr.skip()
        finally:
            if token is not None:
                current_user.reset(token)

    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):
        return wrapper
    if "_asking" in sig.parameters:  # safe(safe(fn)): the inner wrapper's signature (copied) already asks
        return wrapper
    asking = inspect.Parameter("_asking", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)
    wrapper.__signature__ = sig.replace(parameters=[asking, *sig.parameters.values()])
    try:  # resolved here: Gradio reads the hints of the wrapper, whose module is not the handler's
        hints = typing.get_type_hints(handler)
    except (NameError, TypeError):  # as before: Gradio cannot read them either, so it injects nothing
        hints = dict(getattr(handler, "__annotations__", {}))
    wrapper.__annotations__ = {**hints, "_asking": gr.Request}
    return wrapper
