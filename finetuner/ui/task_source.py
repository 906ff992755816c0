"""The Data tab's "Ready-made task" source: a verifiable RFT task from reasoning-gym in one click.

`make_task(ctx, project, task_label, size, difficulty, seed, *settings)` writes the task's train and held-out
JSONL files into the app's uploads folder, loads them as an uploaded training file and evaluation file would be
(tab_data's `_with_source` and `check`, with the method set to RFT), and adds the task's grader (its own scorer,
`graders.gym_grader`) to `project["graders"]`, which the Graders tab redraws from. The rows carry a `difficulty`
column (0-100) for the RFT curriculum. Engine side: finetuner.data.gym_tasks.
"""

from __future__ import annotations

import gradio as gr

from finetuner.data import gym_tasks
from finetuner.ui import grader_forms as gf
from finetuner.ui.context import AppContext, bind, safe

DIFFICULTY_CHOICES = [("Easy", "easy"), ("Medium", "medium"), ("Hard", "hard"),
                      ("Mixed (every level: a spread for the curriculum)", "mixed")]
EVAL_FILE_MODE = "Use a separate evaluation file"  # tab_data.EVAL_FILE, the eval mode radio's value
TASK_CHOICES = [(f"{name}: {what}", name) for name, what in gym_tasks.TASKS.items()]


def make_task(ctx: AppContext, load, project, task, size, difficulty, seed, *settings):
    """(tab_data's check outputs..., method radio, eval mode radio, fraction, eval file): the task is the data.
    `load(project, train, held, *settings)` is tab_data.load_made (passed in: tab_data imports this module)."""
    task, difficulty = task or "basic_arithmetic", difficulty or "mixed"
    size, seed = int(size or 200), int(seed or 0)
    stem = f"gym-{task}-{difficulty}-{size}-s{seed}-"  # one pair of files per choice; remaking the same is a no-op
    train, held = gym_tasks.make_files(task, size, difficulty, seed, ctx.uploads_for(), stem)
    out = load(project, str(train), str(held), *settings)
    project = out[0]
    project["graders"] = gf.add_spec(project.get("graders") or [], gym_tasks.grader_spec(task))
    project["dry_run"] = None  # the graders changed, so an earlier test no longer describes them
    rft = project.setdefault("config", {}).setdefault("rft", {})
    if difficulty == "mixed":  # a spread of levels is what the curriculum needs: it is turned on with them
        rft.update(curriculum="adarft", difficulty="column", difficulty_column="difficulty")
        said = "the Train tab's curriculum is set to AdaRFT, reading it"
    else:
        said = "one level only, so the curriculum stays off (make a mixed task for it)"
    note = (f"\n\n**Ready-made task `{task}`** ({difficulty}, {size:,} rows, seed {seed}) with a held-out file; "
            f"grader `correct` (the task's own scorer) added on the Graders tab. Rows carry a `difficulty` column "
            f"(0-100): {said}.")
    return (project, out[1] + note, *out[2:], gr.update(value="rft"), gr.update(value=EVAL_FILE_MODE),
            gr.update(visible=False), gr.update(visible=True))


def build_controls():
    """The accordion's components (placed where this is called): (task, size, difficulty, seed, button)."""
    with gr.Accordion("…or a ready-made task (verifiable RFT data + its grader)", open=False):
        gr.Markdown("Procedural tasks from reasoning-gym, generated here (nothing is downloaded). Each comes with a "
                    "held-out file and a grader that runs the task's own checker.", elem_classes="ft-help")
        task = gr.Dropdown(TASK_CHOICES, value="basic_arithmetic", label="Task",
                           info="A procedural task from reasoning-gym with its own answer checker.")
        with gr.Row():
            size = gr.Number(value=500, precision=0, minimum=1, maximum=100_000, label="Rows",
                             info="Training prompts to generate (a held-out tenth more is made too).")
            seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", info="Same seed, same problems.")
        difficulty = gr.Radio(DIFFICULTY_CHOICES, value="mixed", label="Difficulty",
                              info="Mixed spreads the task's levels, so the RFT curriculum has easy and hard prompts.")
        button = gr.Button("Make the task")
    return task, size, difficulty, seed, button


def wire(ctx: AppContext, load, controls, project_state, settings, outputs):
    """`outputs`: tab_data's check outputs, then its method radio, eval mode radio, fraction and eval file."""
    task, size, difficulty, seed, button = controls
    button.click(safe(bind(ctx, make_task, load)), [project_state, task, size, difficulty, seed, *settings], outputs)
