"""Grader specs from form fields, as plain functions the Graders tab (and tests) call.

Every function returns specs exactly as a run's YAML `graders:` list holds them, and `add_spec` validates the
whole list with `graders.build_graders`, so a mistake shows its ConfigError next to the form, not at step 1.

    spec = builtin_spec("regex", "format", 0.1, pattern="^Answer: \\d+$", mode="fullmatch")
    specs = add_spec(specs, spec)                       # raises GraderConfigError with a readable message
    judge_spec("score_model", "correct", 1, system, user, base_url, model, "JUDGE_KEY")
    python_template(["prompt", "answer"], first_row)    # a commented starting point listing item["answer"]
    test_connection(spec, item)                         # (ok, message) after one real request to the judge
"""

from __future__ import annotations

import copy
import json
import os
import re

from graders import build_graders
from graders.base import GraderConfigError
from graders.rubrics import RUBRICS

OUTPUT = "{{sample.output_text}}"
BUILTIN = {
    "string_check": "Exact match: the output equals (`eq`), differs from (`ne`), contains (`like`) or contains in "
                    "any case (`ilike`) the reference.",
    "text_similarity": "Similarity from 0 to 1 with a reference: fuzzy_match, BLEU, ROUGE, METEOR...",
    "regex": "A regular expression must match the output (or must not, with negate).",
    "json_schema": "The output parses as JSON and validates against a JSON schema.",
    "math": "Mathematical equivalence with the reference (\\frac{1}{2} == 0.5, \\boxed{42} == 42), via math-verify.",
    "length": "Length bounds in characters or words, against answers that win by being long.",
}
# Which form fields each built-in type uses (the tab shows only these).
BUILTIN_FIELDS = {
    "string_check": ("input", "reference", "operation"),
    "text_similarity": ("input", "reference", "evaluation_metric", "pass_threshold"),
    "regex": ("input", "pattern", "mode", "flags", "negate"),
    "json_schema": ("input", "schema"),
    "math": ("input", "reference"),
    "length": ("input", "unit", "min", "max", "penalty", "tolerance"),
}
FIELD_HELP = {
    "input": "What is graded: a template, usually {{sample.output_text}} (the model's answer); "
             "{{sample.output_json.key}} reads a key of a JSON answer.",
    "reference": "What to compare with: a template over the data row, e.g. {{item.answer}}.",
    "operation": "eq: equal; ne: not equal; like: contains; ilike: contains, ignoring case.",
    "evaluation_metric": "fuzzy_match (edit distance), bleu, gleu, meteor, rouge_1..rouge_5, rouge_l.",
    "pass_threshold": "Optional: a score from which the log says 'pass' (the score itself is unchanged).",
    "pattern": "A regular expression; {{item.column}} inserts a row's value (escaped).",
    "mode": "search: anywhere in the output; match: at its start; fullmatch: the whole output.",
    "flags": "IGNORECASE, MULTILINE (^ and $ per line), DOTALL (. matches newlines).",
    "negate": "Score 1 when the pattern does NOT match (e.g. to penalise a forbidden phrase).",
    "schema": "A JSON schema, e.g. {\"type\": \"object\", \"required\": [\"answer\"]}.",
    "unit": "Count characters or words.",
    "min": "Fewest allowed (empty: no lower bound).",
    "max": "Most allowed (empty: no upper bound).",
    "penalty": "hard: 0 outside the bounds; linear: fades to 0 over `tolerance` units.",
    "tolerance": "With linear penalty: how far outside the bounds the score reaches 0.",
    "name": "A short unique name; it becomes the metric rewards/<name>/mean.",
    "weight": "The reward is the weighted sum of the graders' scores.",
}
METRICS = ("fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")
FLAGS = ("IGNORECASE", "MULTILINE", "DOTALL")


def _num(value):
    """A form number: None for empty, an int when whole."""
    if value is None or value == "":
        return None
    value = float(value)
    return int(value) if value.is_integer() else value


def _name(name: str, fallback: str) -> str:
    name = (name or "").strip() or fallback
    return re.sub(r"\s+", "_", name)


def builtin_spec(gtype: str, name: str = "", weight=1.0, *, input=OUTPUT, reference="", operation="eq",
                 evaluation_metric="fuzzy_match", pass_threshold=None, pattern="", mode="search", flags=(),
                 negate=False, schema="", unit="chars", min=None, max=None, penalty="hard", tolerance=None) -> dict:
    """A built-in grader's spec from the form (only the type's own fields; empty optional fields left out)."""
    if gtype not in BUILTIN:
        raise GraderConfigError(f"Pick a grader type: one of {', '.join(BUILTIN)}.")
    values = {"input": input or OUTPUT, "reference": reference, "operation": operation,
              "evaluation_metric": evaluation_metric, "pass_threshold": _num(pass_threshold), "pattern": pattern,
              "mode": mode, "flags": list(flags or []), "negate": bool(negate), "unit": unit, "min": _num(min),
              "max": _num(max), "penalty": penalty, "tolerance": _num(tolerance)}
    if gtype == "json_schema":
        try:
            values["schema"] = json.loads(schema) if (schema or "").strip() else None
        except ValueError as err:
            raise GraderConfigError(f"grader '{name or gtype}': the schema is not valid JSON: {err}.") from None
    spec = {"name": _name(name, gtype), "type": gtype, "weight": _num(weight) if _num(weight) is not None else 1}
    for key in BUILTIN_FIELDS[gtype]:
        value = values[key]
        if value in (None, "", []) or (key == "negate" and not value) or (key == "tolerance" and penalty == "hard"):
            continue
        spec[key] = value
    return spec


def rubric_messages(key: str) -> tuple[str, str]:
    """(system, user) text of a ready-made rubric, to edit in the form."""
    msgs = RUBRICS[key]["input"]
    return tuple(next((m["content"] for m in msgs if m["role"] == role), "") for role in ("system", "user"))


def judge_spec(kind: str, name: str, weight, system: str, user: str, base_url: str, model: str,
               api_key_env: str = "", low=0, high=1, labels: str = "", passing: str = "") -> dict:
    """An LLM judge's spec. The key itself is never stored: only the name of the variable that holds it."""
    if api_key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env.strip()):
        raise GraderConfigError("API key variable: give the NAME of an environment variable (e.g. JUDGE_API_KEY), "
                                "not the key itself. Keys are never stored in the run file.")
    if not (model or "").strip():
        raise GraderConfigError("Judge model: give the model name the server serves, e.g. "
                                "Qwen/Qwen2.5-7B-Instruct (for Ollama, e.g. qwen2.5:7b).")
    messages = [{"role": "system", "content": system}] if (system or "").strip() else []
    messages.append({"role": "user", "content": user or OUTPUT})
    spec = {"name": _name(name, "judge"), "type": kind, "weight": _num(weight) if _num(weight) is not None else 1,
            "model": (model or "").strip(), "input": messages}
    if (base_url or "").strip():
        spec["base_url"] = base_url.strip()
    if (api_key_env or "").strip():
        spec["api_key_env"] = api_key_env.strip()
    if kind == "score_model":
        spec["range"] = [_num(low) or 0, _num(high) if _num(high) is not None else 1]
    else:
        spec["labels"] = [x.strip() for x in (labels or "").split(",") if x.strip()]
        spec["passing_labels"] = [x.strip() for x in (passing or "").split(",") if x.strip()]
    return spec


def python_spec(name: str, weight, source: str, timeout_s=10) -> dict:
    spec = {"name": _name(name, "python"), "type": "python", "weight": _num(weight) if _num(weight) is not None else 1,
            "source": source or ""}
    if _num(timeout_s) not in (None, 10):
        spec["timeout_s"] = _num(timeout_s)
    return spec


def openai_specs(text: str, default_name: str = "openai") -> list[dict]:
    """Our specs from pasted OpenAI grader JSON (a grader, a list, a fine-tuning job body or {"grader": ...})."""
    from graders.openai_compat import from_openai, unwrap

    try:
        obj = json.loads(text or "")
    except ValueError as err:
        raise GraderConfigError(f"The pasted text is not JSON: {err}. Paste the grader object as OpenAI shows "
                                "it, starting with {.") from None
    obj = unwrap(obj)
    items = obj if isinstance(obj, list) else [obj]
    name = _name(default_name, "openai")
    return [from_openai(g, name if len(items) == 1 else f"{name}_{i}") for i, g in enumerate(items)]


def multi_spec(specs: list[dict], name: str, formula: str) -> dict:
    """One `multi` grader combining `specs` with `formula` over their names (OpenAI's calculate_output)."""
    if not specs:
        raise GraderConfigError("Add graders first; the formula combines them by name.")
    subs = {}
    for spec in specs:
        if spec.get("type") == "multi":
            raise GraderConfigError(f"'{spec['name']}' is already a multi grader, and a multi cannot contain "
                                    "another. Remove it, or edit its formula in the YAML.")
        subs[spec["name"]] = {k: v for k, v in spec.items() if k not in ("name", "weight")}
    out = {"name": _name(name, "combined"), "type": "multi", "graders": subs}
    if (formula or "").strip():
        out["calculate_output"] = formula.strip()
    return out


def check_specs(specs: list[dict], base_dir: str = "") -> None:
    """Build every grader once (raising GraderConfigError), then release what they hold."""
    for grader in build_graders(specs, base_dir):
        grader.close()


def add_spec(specs: list[dict], spec: dict, base_dir: str = "") -> list[dict]:
    """`specs` plus `spec` (replacing a grader of the same name), validated as a whole."""
    out = [s for s in copy.deepcopy(specs or []) if s.get("name") != spec.get("name")] + [spec]
    check_specs(out, base_dir)
    return out


def _pick_reference(columns: list[str]) -> str | None:
    usual = ("answer", "solution", "label", "target", "reference", "completion", "output")
    return next((k for k in usual if k in columns), next((c for c in columns if c not in ("prompt", "messages")), None))


def python_template(columns: list[str], example: dict | None = None) -> str:
    """A commented grader to start from, listing the data's columns as item["..."] with example values."""
    example = example or {}
    cols = list(dict.fromkeys(["prompt", *columns])) if columns else []
    lines = ["# A Python grader: score one model output. It runs in a sandbox (no network, no files outside",
             "# its temporary folder) and gets:",
             '#   sample["output_text"]      the model\'s answer, as text',
             '#   sample.get("output_json")  the answer parsed as JSON, when it is JSON',
             "#   item                       the data row. Your data's columns:"]
    if cols:
        width = max(len(c) for c in cols) + 8
        for c in cols:
            value, key = example.get(c), f'item["{c}"]'
            shown = "" if value is None else " e.g. " + repr(value[:40] if isinstance(value, str) else value)[:60]
            lines.append(f"#     {key:<{width}}{shown}".rstrip())
    else:
        lines.append("#     (upload data on the Data tab to list its columns here)")
    lines += ['#   item["prompt"] is the prompt as text (several chat turns: "role: content" lines), and',
              '#   item["messages"] the same prompt as chat turns, in tests as in training.',
              "# print(...) output appears in the test table's log column. Return a number, usually 0 to 1.", "", ""]
    ref = _pick_reference(columns)
    check = [f'    expected = str(item["{ref}"]).strip()', '    print("expected", expected)',
             "    return 1.0 if output == expected else 0.0"] if ref else ["    return 1.0 if output else 0.0"]
    lines += ["def grade(sample, item) -> float:", '    output = sample["output_text"].strip()', *check, ""]
    return "\n".join(lines)


def test_connection(spec: dict, item: dict | None = None, sample: str | None = None) -> tuple[bool, str]:
    """Send one tiny request through the judge (no retries, 20 s limit) and say plainly what happened."""
    probe = dict(spec, max_retries=0, timeout_s=min(20, float(spec.get("timeout_s", 20))), cache=False)
    item = dict(item or {})
    variables = set(re.findall(r"\{\{\s*item\.([A-Za-z_][\w]*)", json.dumps(spec.get("input", ""))))
    for var in variables:  # a stand-in for columns the test row lacks, so only the connection is tested
        item.setdefault(var, "4" if var != "prompt" else "What is 2 + 2?")
    text = sample if sample is not None else str(item.get("completion") or item.get("answer") or "4")
    grader = build_graders([probe])[0]
    try:
        result = grader.grade({"output_text": text}, item)
    finally:
        grader.close()
    where = f"`{spec.get('model')}` at {spec.get('base_url') or 'OpenAI (or OPENAI_BASE_URL)'}"
    if result.ok:
        return True, f"✅ Connected to {where}: the judge scored a sample {result.score:g}. {result.log[:300]}"
    err = result.error
    if err.type == "judge_parse_error":
        return False, (f"⚠️ Reached {where}, but its answer could not be read as a score: {err.message}. A larger "
                       "judge model, or a clearer rubric, usually fixes this.")
    if err.type == "invalid_variable":
        return False, f"⚠️ The judge prompt uses a value the test row lacks: {err.message}"
    if "connection failed" in err.message or "timed out" in err.message:
        # Nothing answered: the usual cause is a server that was never started, or another port or path.
        url = spec.get("base_url") or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        return False, (f"❌ Could not use the judge at {where}: {err.message}. Is the server running at {url}? "
                       "Start it (or fix the address) and test again.")
    return False, f"❌ Could not use the judge at {where}: {err.message}"


# ---------------------------------------------------------------- the forms (Gradio components)
# Each returns {"button", "inputs", "message"} (plus extras); the tab wires the button to its handler with
# the project state first, so that handler gets the inputs in this order.

BUILTIN_KEYS = tuple(dict.fromkeys(k for fields in BUILTIN_FIELDS.values() for k in fields))  # every field, once


def type_changed(gtype):
    """The description of a built-in type, and only its own fields visible."""
    import gradio as gr

    used = BUILTIN_FIELDS.get(gtype, ())
    return (BUILTIN.get(gtype, ""), *[gr.update(visible=k in used) for k in BUILTIN_KEYS])


def rubric_changed(key):
    system, user = rubric_messages(key)
    r = RUBRICS[key]
    uses = ", ".join(f"`{{{{{v}}}}}`" for v in r["variables"]) or "only the answer"
    return system, user, f"{r['description']} Uses {uses}: rename them in the text to your columns."


def _name_weight(default: str):
    import gradio as gr

    with gr.Row():
        return (gr.Textbox(default, label="Name", info=FIELD_HELP["name"]),
                gr.Number(1.0, label="Weight", info=FIELD_HELP["weight"]))


def builtin_form() -> dict:
    import gradio as gr

    h = FIELD_HELP
    with gr.Tab("Built-in check"):
        gtype = gr.Dropdown(list(BUILTIN), value="string_check", label="Type",
                            info="Checks that need no code. Each type shows its own fields.")
        about = gr.Markdown(BUILTIN["string_check"], elem_classes="ft-help")
        name, weight = _name_weight("correct")
        fields = [
            gr.Textbox(OUTPUT, label="Input", info=h["input"]),
            gr.Textbox("{{item.answer}}", label="Reference", info=h["reference"]),
            gr.Dropdown(["eq", "ne", "like", "ilike"], value="eq", label="Operation", info=h["operation"]),
            gr.Dropdown(list(METRICS), value="fuzzy_match", label="Metric", info=h["evaluation_metric"]),
            gr.Number(None, label="Pass threshold", info=h["pass_threshold"]),
            gr.Textbox("", label="Pattern", info=h["pattern"], placeholder="^Answer: -?\\d+$"),
            gr.Dropdown(["search", "match", "fullmatch"], value="search", label="Mode", info=h["mode"]),
            gr.CheckboxGroup(list(FLAGS), label="Flags", info=h["flags"]),
            gr.Checkbox(False, label="Negate", info=h["negate"]),
            gr.Code('{"type": "object", "required": ["answer"]}', language="json", label="JSON schema", lines=5),
            gr.Radio(["chars", "words"], value="words", label="Unit", info=h["unit"]),
            gr.Number(None, label="Min", info=h["min"]),
            gr.Number(None, label="Max", info=h["max"]),
            gr.Radio(["hard", "linear"], value="hard", label="Penalty", info=h["penalty"]),
            gr.Number(None, label="Tolerance", info=h["tolerance"]),
        ]
        for key, comp in zip(BUILTIN_KEYS, fields):
            comp.visible = key in BUILTIN_FIELDS["string_check"]
        button = gr.Button("Add built-in grader", variant="primary")
        message = gr.Markdown()
    gtype.change(type_changed, [gtype], [about, *fields])
    return {"button": button, "inputs": [gtype, name, weight, *fields], "message": message}


def judge_form() -> dict:
    import gradio as gr

    first = next(iter(RUBRICS))
    system, user = rubric_messages(first)
    with gr.Tab("LLM judge"):
        gr.Markdown("A language model grades each answer, on any OpenAI-compatible server (vLLM, llama.cpp, "
                    "Ollama, LM Studio, OpenAI). Slower and costlier than checks: best for style or meaning.",
                    elem_classes="ft-help")
        with gr.Row():
            kind = gr.Radio([("Score (score_model)", "score_model"), ("Label (label_model)", "label_model")],
                            value="score_model", label="Judge kind",
                            info="Score: a number in a range. Label: one of your labels; passing labels score 1.")
            rubric = gr.Dropdown([(r["title"], k) for k, r in RUBRICS.items()], value=first, label="Rubric",
                                 info="A ready-made prompt to start from; edit it below.")
        about = gr.Markdown(rubric_changed(first)[2], elem_classes="ft-help")
        sys_box = gr.Textbox(system, label="System message", lines=4, info="How the judge should grade.")
        user_box = gr.Textbox(user, label="User message", lines=4,
                              info="What the judge sees: {{item.<column>}} from the row, {{sample.output_text}}.")
        name, weight = _name_weight("judge")
        with gr.Row():
            base_url = gr.Textbox("http://localhost:8000/v1", label="Endpoint (base_url)",
                                  info="The server's OpenAI-compatible URL; empty for OpenAI; `local` runs a "
                                       "Hugging Face model in the training process.")
            model = gr.Textbox("", label="Judge model", info="The model name the server knows, e.g. "
                               "Qwen/Qwen2.5-7B-Instruct.")
            key_env = gr.Textbox("", label="API key variable", placeholder="JUDGE_API_KEY",
                                 info="The NAME of an environment variable holding the key, never the key itself. "
                                      "Empty: OPENAI_API_KEY if set, else none (local servers).")
        with gr.Row():
            low = gr.Number(0, label="Range low", info="Lowest score the judge may give.")
            high = gr.Number(1, label="Range high", info="Highest score the judge may give.")
            labels = gr.Textbox("", label="Labels", visible=False, info="Comma-separated, e.g. good, ok, bad.")
            passing = gr.Textbox("", label="Passing labels", visible=False, info="Those scoring 1, e.g. good.")
        with gr.Row():
            test = gr.Button("Test connection")
            button = gr.Button("Add judge", variant="primary")
        message = gr.Markdown()
    rubric.input(rubric_changed, [rubric], [sys_box, user_box, about])
    kind.change(lambda k: [gr.update(visible=k == "score_model")] * 2 + [gr.update(visible=k != "score_model")] * 2,
                [kind], [low, high, labels, passing])
    inputs = [kind, name, weight, sys_box, user_box, base_url, model, key_env, low, high, labels, passing]
    return {"button": button, "inputs": inputs, "message": message, "test": test}


def python_form() -> dict:
    import gradio as gr

    with gr.Tab("Python"):
        gr.Markdown("Your own `grade(sample, item) -> float`, run in a sandbox with time and memory limits.",
                    elem_classes="ft-help")
        code = gr.Code(python_template([]), language="python", lines=16, label="grader.py")
        with gr.Row():
            name = gr.Textbox("my_check", label="Name", info=FIELD_HELP["name"])
            weight = gr.Number(1.0, label="Weight", info=FIELD_HELP["weight"])
            timeout = gr.Number(10, label="Time limit (s)", info="Per call; a slower call scores 0 as a timeout.")
        button = gr.Button("Add Python grader", variant="primary")
        message = gr.Markdown()
    return {"button": button, "inputs": [name, weight, code, timeout], "message": message, "code": code}


def openai_form() -> dict:
    import gradio as gr

    with gr.Tab("OpenAI JSON"):
        gr.Markdown("Paste a grader written for OpenAI's reinforcement fine-tuning (string_check, text_similarity, "
                    "python, score_model, label_model, multi), or a whole job body.", elem_classes="ft-help")
        text = gr.Code("", language="json", lines=10, label="OpenAI grader JSON")
        name = gr.Textbox("openai", label="Name (when the JSON has none)", info=FIELD_HELP["name"])
        button = gr.Button("Import", variant="primary")
        message = gr.Markdown()
    return {"button": button, "inputs": [text, name], "message": message}


def formula_form() -> dict:
    import gradio as gr

    with gr.Tab("Formula"):
        gr.Markdown("Combine the current graders into one score with a formula over their names: `+ - * / ^`, "
                    "`min max abs floor ceil exp sqrt log`, e.g. `correct * (1 + 0.1 * format)`. Empty: their "
                    "mean. They become the parts of one `multi` grader.", elem_classes="ft-help")
        name = gr.Textbox("combined", label="Name", info=FIELD_HELP["name"])
        formula = gr.Textbox("", label="Formula (calculate_output)", placeholder="correct * (1 + 0.1 * format)",
                             info="A part's error makes the whole score an error, never a hidden 0 in a mean.")
        button = gr.Button("Combine", variant="primary")
        message = gr.Markdown()
    return {"button": button, "inputs": [name, formula], "message": message}
