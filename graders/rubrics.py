"""Ready-made judge rubrics a non-coder can pick and edit (the UI lists `RUBRICS`).

Each rubric is a `score_model` prompt scoring 0 to 1. `variables` names the dataset columns the prompt
uses: rename them in the text to match your data (e.g. `{{item.answer}}` -> `{{item.solution}}`).
`{{item.prompt}}` is the prompt the model was given (in training the reward bridge puts it there).
`rubric_spec("correctness", name="correct", model="qwen2.5-7b", base_url="http://localhost:8000/v1")`
returns a grader spec ready for a run's `graders:` list.
"""

from __future__ import annotations

import copy

_SCALE = ("Score from 0 to 1: 1 = fully meets the criterion, 0.5 = partly, 0 = not at all. "
          "Think step by step, then give the score.")

RUBRICS: dict[str, dict] = {
    "correctness": {
        "title": "Correct answer (against a reference)",
        "description": "Is the model's final answer the same as the reference answer? Wording may differ.",
        "variables": ["item.prompt", "item.answer"],
        "input": [
            {"role": "system", "content": "You are a strict grader. You compare a model's answer with a "
             "reference answer and judge whether the final answer is correct. Ignore style and length. "
             + _SCALE},
            {"role": "user", "content": "Question:\n{{item.prompt}}\n\nReference answer:\n{{item.answer}}\n\n"
             "Model answer:\n{{sample.output_text}}"},
        ],
    },
    "instruction_following": {
        "title": "Follows the instructions",
        "description": "Does the answer do everything the prompt asked (format, length, constraints)?",
        "variables": ["item.prompt"],
        "input": [
            {"role": "system", "content": "You check whether a response follows every instruction in a prompt: "
             "requested format, length limits, language, things to include or avoid. Do not judge whether "
             "facts are true. " + _SCALE},
            {"role": "user", "content": "Prompt:\n{{item.prompt}}\n\nResponse:\n{{sample.output_text}}"},
        ],
    },
    "tone_style": {
        "title": "Tone and style",
        "description": "Does the answer have the wanted tone? Edit the style description in the prompt.",
        "variables": [],
        "input": [
            {"role": "system", "content": "You judge the tone and style of a response. Wanted style: friendly, "
             "concise, plain language, no jargon, no exaggerated enthusiasm. Judge only the style, not the "
             "content. " + _SCALE},
            {"role": "user", "content": "Response:\n{{sample.output_text}}"},
        ],
    },
    "faithfulness": {
        "title": "Faithful to the given context",
        "description": "Is every claim in the answer supported by the context (no made-up facts)?",
        "variables": ["item.context"],
        "input": [
            {"role": "system", "content": "You check a response against a context document. Every claim in the "
             "response must be supported by the context; anything unsupported or contradicted lowers the "
             "score. Saying the context does not contain the answer, when it does not, is faithful. "
             + _SCALE},
            {"role": "user", "content": "Context:\n{{item.context}}\n\nResponse:\n{{sample.output_text}}"},
        ],
    },
}


def rubric_spec(key: str, name: str | None = None, **fields) -> dict:
    """A `score_model` grader spec from a rubric; `fields` (model, base_url, api_key_env, ...) are added."""
    rubric = RUBRICS[key]
    spec = {"name": name or key, "type": "score_model", "input": copy.deepcopy(rubric["input"]),
            "range": [0, 1]}
    spec.update(fields)
    return spec
