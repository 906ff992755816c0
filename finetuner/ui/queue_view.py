"""The run queue on the page: the waiting runs (Runs tab and Monitor), Up / Down / Cancel, the Launch message
for a run that waits, and the worker thread that starts the next run when a slot frees.

The queue itself lives in the runs folder (finetuner/runs/queue.py): these are plain functions over it,
tested without a browser, wrapped with `safe` where they are wired.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from pathlib import Path

import gradio as gr

from finetuner.runs import WAITING, advance, cancel, move, waiting
from finetuner.runs.queue import PROBES
from finetuner.ui.context import AppContext, Shared, bind, safe
from finetuner.ui.run_watch import fmt_seconds
from graders.errors import RunError

log = logging.getLogger("finetuner.ui")

HEADERS = ["position", "run", "method", "owner", "waiting"]
TICK_SECONDS = 2.0


# ------------------------------------------------------------------ the worker


_workers: dict[Path, threading.Thread] = {}
_workers_lock = threading.Lock()


def start_worker(ctx: AppContext, interval: float = TICK_SECONDS) -> threading.Thread:
    """Advance the queue every `interval` seconds for as long as the app lives (a daemon thread; one per runs
    folder however many times the page is built). It is what resumes the queue after an app restart, and what
    starts a run held back by a step probe; a failure is logged and the next tick tries again."""
    key = Path(ctx.runs_dir).resolve()
    with _workers_lock:
        worker = _workers.get(key)
        if worker is not None and worker.is_alive():
            return worker

        def loop():
            while _workers.get(key) is threading.current_thread():  # stop_worker ends it
                try:
                    advance(key)
                except Exception:  # noqa: BLE001 - the worker must outlive any one bad tick
                    log.exception("the run queue could not advance")
                time.sleep(interval)

        worker = _workers[key] = threading.Thread(target=loop, name="finetuner-queue", daemon=True)
        worker.start()
        return worker


def stop_worker(ctx: AppContext) -> None:
    """End the worker of `ctx`'s runs folder after its current tick (tests; an app simply exits)."""
    with _workers_lock:
        _workers.pop(Path(ctx.runs_dir).resolve(), None)


# ------------------------------------------------------------------ words


def _ahead(ctx: AppContext) -> str:
    """What the queue waits for, in words: the run (or step probe) training now."""
    busy = ctx.active_run()
    if busy is not None:
        state = busy.get("state")
        return f"after `{busy['id']}` ({'stopping' if state == 'stopping' else 'training'} now)"
    from finetuner.runs import active_run

    probe = active_run(Path(ctx.runs_dir) / PROBES)
    if probe is not None:
        return f"after the step measurement `{probe['id']}` (a minute or two)"
    return "it starts within seconds"


def position_text(ctx: AppContext, run_id: str) -> str:
    """'Queued: position N, after <run> (training now)' for a waiting run, '' for any other."""
    rows = waiting(ctx.runs_dir)
    n = next((r["position"] for r in rows if r["id"] == run_id), None)
    if n is None:
        return ""
    more = f", behind {n - 1} other waiting run{'s' if n > 2 else ''}" if n > 1 else ""
    return f"Queued: position {n}, {_ahead(ctx)}{more}."


def launch_message(ctx: AppContext, run) -> str:
    """What Launch says: started, or queued with its place."""
    queued = position_text(ctx, run.id)
    if queued:
        return (f"⏳ {queued} Run `{run.id}` starts by itself when the machine is free; the Monitor shows it "
                f"meanwhile, and the queue (Runs tab) can reorder or cancel it.")
    return f"✅ Started run `{run.id}`. The Monitor tab follows it live."


def monitor_html(ctx: AppContext, run_id: str) -> str:
    """The Monitor's progress box for a waiting run (it has no process, steps or charts yet); '' otherwise."""
    text = position_text(ctx, run_id)
    if not text:
        return ""
    text = f"Waiting in the queue: {text.removeprefix('Queued: ')}"
    body = html.escape(text).replace("`", "")
    return (f'<div class="ft-progress"><span style="background:#868e96;color:white;border-radius:4px;padding:1px '
            f'6px;font-weight:600">{WAITING}</span> <code>{html.escape(run_id)}</code> · {body} Cancel or reorder '
            f'it in the queue below.</div>')


# ------------------------------------------------------------------ the panel's handlers


def queue_table(ctx: AppContext) -> dict:
    now = time.time()
    data = [[r["position"], r["id"], r.get("method", ""), r.get("owner") or "",
             fmt_seconds(now - (r.get("waiting_since") or r.get("created") or now))] for r in waiting(ctx.runs_dir)]
    return {"headers": HEADERS, "data": data}


def refresh(ctx: AppContext, selected: str | None = None):
    """(table, run picker, summary) for the panel; the picker keeps `selected` while it still waits."""
    table = queue_table(ctx)
    ids = [row[1] for row in table["data"]]
    ahead = _ahead(ctx).replace("it starts", "the first starts")
    summary = (f"**{len(ids)} run{'s' if len(ids) != 1 else ''} waiting**, {ahead}." if ids
               else "No run is waiting: a launch while the machine is busy queues here.")
    return table, gr.update(choices=ids, value=selected if selected in ids else (ids[0] if ids else None)), summary


def _pick(run_id: str | None) -> str:
    from graders.errors import RunError

    if not run_id:
        raise RunError("Pick a waiting run first (in the list under the queue).")
    return run_id


def step(ctx: AppContext, run_id: str | None, delta: int):
    """Up (delta -1) or Down (+1) one place; returns refresh()'s outputs."""
    run_id = ctx.open_run(_pick(run_id)).id  # --auth: another user's run is refused in words
    if not ctx.is_teacher():  # a student moving their own run up would jump the whole class's queue
        raise RunError("Only a teacher account can reorder the queue (a run moved up goes ahead of everyone "
                       "else's). Ask your teacher, or Cancel your run and launch it again later.")
    rows = {r["id"]: r["position"] for r in waiting(ctx.runs_dir)}
    if run_id in rows:
        move(ctx.runs_dir, run_id, max(1, rows[run_id] + delta))
    else:
        move(ctx.runs_dir, run_id, 1)  # raises the "not waiting" message
    return refresh(ctx, run_id)


def cancel_run(ctx: AppContext, run_id: str | None):
    """Cancel: out of the queue, folder deleted (it never trained); returns refresh()'s outputs."""
    run_id = ctx.open_run(_pick(run_id)).id  # --auth: another user's run is refused in words
    cancel(ctx.runs_dir, run_id)
    gr.Info(f"Cancelled {run_id}: it left the queue and its folder was deleted.")
    return refresh(ctx)


# ------------------------------------------------------------------ the panel


def build(ctx: AppContext, shared: Shared):
    """The queue panel, mounted by the Runs tab and the Monitor; starts the worker on first build."""
    start_worker(ctx)
    with gr.Accordion("Run queue: launches waiting their turn", open=True):
        gr.Markdown("A launch while the machine is busy waits here and starts by itself when a device is free "
                    "(one run per GPU, or one on a CPU machine), in this order. The queue is kept in the runs "
                    "folder, so it survives closing the app.", elem_classes="ft-help")
        summary = gr.Markdown()
        table = gr.Dataframe(value={"headers": HEADERS, "data": []}, interactive=False, label="Waiting runs")
        with gr.Row():
            picked = gr.Dropdown(label="Waiting run", choices=[], scale=3)
            up = gr.Button("▲ Up", size="md", min_width=80, scale=0)
            down = gr.Button("▼ Down", size="md", min_width=80, scale=0)
            drop = gr.Button("Cancel run", variant="stop", size="md", min_width=110, scale=0)
    outs = [table, picked, summary]
    timer = gr.Timer(TICK_SECONDS)
    timer.tick(safe(bind(ctx, refresh)), inputs=[picked], outputs=outs, show_progress="hidden")
    gr.on(triggers=None, fn=safe(bind(ctx, refresh)), inputs=[picked], outputs=outs)
    up.click(safe(bind(ctx, step)), inputs=[picked, gr.State(-1)], outputs=outs)
    down.click(safe(bind(ctx, step)), inputs=[picked, gr.State(1)], outputs=outs)
    drop.click(safe(bind(ctx, cancel_run)), inputs=[picked], outputs=outs)

    def on_select(evt: gr.SelectData):
        return gr.update(value=evt.row_value[1]) if evt.row_value else gr.skip()

    table.select(safe(on_select), outputs=picked)
    return {"table": table, "picked": picked, "summary": summary}
