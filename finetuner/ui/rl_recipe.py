"""The Train tab's "RL recipe" box (RFT runs only): the algorithm preset, the curriculum, and how several
graders are combined, with one line on what the choice does and the TRL fields it sets. The fields each
preset governs stay editable in "Advanced: RFT stage" (`auto` there means "as the algorithm sets")."""

from __future__ import annotations

import gradio as gr

from finetuner.config import RunConfig
from finetuner.training.algorithms import WHY, trl_fields

RECIPE = ("rft.algorithm", "rft.curriculum", "rft.reward_aggregation")
MEASURED = ("Measured on the demo (`python -m finetuner bench --only rl`, README's table: 100 steps, 3 seeds): the "
            "presets tie within seed noise (held-out accuracy 0.758-0.772 from 0.700; GSPO, the default, highest); "
            "the curriculum lowered it there (0.68-0.72), where the prompts already give signal.")
# the fields' own help is long; the note below the box says it in full
SHORT = {"rft.algorithm": "The RL recipe; what it does and sets is said below.",
         "rft.curriculum": "Which prompts each batch takes; said below."}
CURRICULUM = {
    "none": "Prompts come in shuffled order.",
    "adarft": "AdaRFT (arXiv 2504.05520): each batch takes prompts near a target difficulty that follows the "
              "pass rate towards 50 %, where every group has right and wrong answers to compare. Difficulty: the "
              "`rft.difficulty_column` if the data has it (ready-made tasks do), else measured before the first "
              "step from `rft.curriculum_samples` samples per prompt. The Monitor draws the target.",
}


def note(algorithm: str, curriculum: str) -> str:
    """What the chosen recipe does, and the exact TRL fields it sets (the defaults of the other fields)."""
    r = RunConfig().rft
    r.algorithm = algorithm if algorithm in WHY else r.algorithm
    sets = ", ".join(f"`{k}={v}`" for k, v in trl_fields(r).items()
                     if k not in ("top_entropy_quantile", "multi_objective_aggregation"))
    return (f"{WHY[r.algorithm]}" + (f" Sets {sets}." if sets else "") + "  \n"
            f"Curriculum: {CURRICULUM.get(curriculum, CURRICULUM['none'])}  \n<small>{MEASURED}</small>")


def build(comps: dict, control) -> gr.Group:
    """The box, its controls added to `comps`; the note follows the two choices."""
    with gr.Group(visible=False) as box:
        gr.Markdown("### RL recipe")
        with gr.Row():
            for name in RECIPE:
                comps[name] = control(name, **({"info": SHORT[name]} if name in SHORT else {}))
        text = gr.Markdown(note(RunConfig().rft.algorithm, "none"))
    for name in RECIPE[:2]:
        comps[name].change(note, [comps["rft.algorithm"], comps["rft.curriculum"]], [text], show_progress="hidden")
    return box
