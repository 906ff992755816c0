"""Bad config: every invalid value a YAML field or a Train-tab control can hold is refused with a message naming
the field, and impossible combinations are refused before any weights load.

The invalid values are generated from the fields' own metadata (config.iter_fields, the dataclass fields'
bounds, choices and required text), so a field added later is covered without touching this file.
"""

import dataclasses
import json
import math
import typing

import pytest

from finetuner.modeling import load as models
from finetuner.config import RunConfig, from_dict, iter_fields
from graders.errors import ConfigError
from finetuner.runs import new_run
from finetuner.training.stages import train_run

BASE = {"data": {"train": "rows.jsonl"}}
GRADER = {"name": "exact", "type": "string_check", "input": "{{sample.output_text}}",
          "reference": "{{item.answer}}", "operation": "eq"}


def leaf_meta() -> dict:
    """dotted name -> (python type, field metadata) for every user field."""
    out = {}

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
            else:
                out[f"{prefix}{f.name}"] = (hints[f.name], f.metadata)

    walk(RunConfig, "")
    return out


LEAVES = leaf_meta()
WRONG_TYPE = {int: ["many", 1.5, True, {"a": 1}], float: ["abc", True, [1], "nan", float("inf")],
              bool: ["maybe", 3, [True]], str: [{"a": 1}, [1, 2]], list: [{"a": 1}, 5], dict: ["x", [1], 3]}


def invalid_values():
    """(field, value, why) for every way each field can be wrong."""
    cases = []
    for name, (tp, meta) in LEAVES.items():
        for value in WRONG_TYPE[tp]:
            cases.append((name, value, "wrong type"))
        if meta.get("choices"):
            cases.append((name, "nope", "unknown choice"))
            cases.append((name, str(meta["choices"][0]).upper() + "x", "unknown choice"))
        if meta.get("required"):
            cases += [(name, "", "empty"), (name, "   ", "empty")]
        step = 1 if tp is int else 0.01
        if "lo" in meta:
            cases.append((name, meta["lo"] - step, "below range"))
        if "hi" in meta:
            cases.append((name, meta["hi"] + step, "above range"))
        if "above" in meta:
            cases.append((name, meta["above"], "at the open bound"))
    cases += [("graders", ["not a mapping"], "wrong item"), ("graders", [{"type": "regex"}], "no name"),
              ("graders", [GRADER, GRADER], "name twice"), ("graders", [{"name": "x"}], "no type"),
              ("report_to", [""], "empty item"), ("report_to", [3], "wrong item")]
    return cases


def with_value(dotted: str, value) -> dict:
    data = json.loads(json.dumps(BASE))
    node = data
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return data


@pytest.mark.parametrize("field,value,why", invalid_values(), ids=lambda v: repr(v)[:30])
def test_every_invalid_value_names_its_field(field, value, why):
    # method sft: a wrong RFT value is refused even when the RFT stage would not run
    with pytest.raises(ConfigError) as info:
        from_dict(with_value(field, value))
    message = str(info.value)
    assert f"`{field}" in message, (why, message)
    assert "Traceback" not in message and len(message) > len(field) + 20  # says more than the name


def test_the_generated_cases_cover_every_field():
    fields = {name for name, tp, *_ in iter_fields() if tp != "section"}
    covered = {case[0] for case in invalid_values()}
    assert fields == covered == set(LEAVES)
    # a field with bounds in its metadata is checked by validate, not only described
    assert LEAVES["rft.num_generations"][1]["lo"] == 2 and LEAVES["data.eval_fraction"][1]["hi"] == 0.5


def test_valid_bounds_are_accepted():
    for name, (tp, meta) in LEAVES.items():
        for key in ("lo", "hi"):
            if key in meta and tp in (int, float) and not name.endswith((".max_steps", ".epochs")):
                assert from_dict(with_value(name, meta[key])) is not None, name


@pytest.mark.parametrize("section", ["model", "data", "adapter", "sft", "rft", ""])
def test_unknown_keys_and_typos_name_the_section_and_suggest(section):
    prefix = f"{section}." if section else ""
    with pytest.raises(ConfigError, match=f"Unknown field `{prefix}nope`"):
        from_dict(with_value(f"{prefix}nope", 1))
    for name in [n for n in LEAVES if n.startswith(prefix) and n.count(".") == prefix.count(".")]:
        leaf = name.rsplit(".", 1)[-1]
        with pytest.raises(ConfigError) as info:
            from_dict(with_value(f"{prefix}{leaf[:-1]}", 1))  # one letter short
        assert f"Did you mean `{leaf}`" in str(info.value) or f"`{prefix}{leaf[:-1]}`" in str(info.value)
    if section:
        with pytest.raises(ConfigError, match=f"`{section}`: expected a mapping"):
            from_dict({**BASE, section: "oops"} if section != "data" else {"data": "rows.jsonl"})


def test_cross_field_impossibilities_are_refused():
    def err(**over):
        with pytest.raises(ConfigError) as info:
            from_dict({**BASE, **over})
        return str(info.value)

    assert "`graders` is empty" in err(method="rft") and "`graders` is empty" in err(method="sft+rft")
    assert "multiple of `rft.num_generations`" in err(method="rft", graders=[GRADER],
                                                      rft={"batch_size": 6, "num_generations": 4})
    assert "`sft.max_steps` is 0 and `sft.epochs` is 0.0" in err(sft={"max_steps": 0, "epochs": 0})
    assert "slashes" in err(name="a/b")


# ------------------------------------------------------------------ refused before any weights load


@pytest.fixture
def no_weights(monkeypatch):
    """Records any attempt to load model weights; the refusals below must come first."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(models, "load_model", refuse)
    return calls


def rows_file(tmp_path, rows):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_sft_on_data_without_answers_is_refused_before_loading(tmp_path, no_weights):
    data = rows_file(tmp_path, [{"prompt": f"Add {i} and 1.", "answer": str(i + 1)} for i in range(6)])
    run = new_run(tmp_path / "runs", "nolabels")
    status = train_run(from_dict({"method": "sft", "data": {"train": data}}), run)
    assert status["state"] == "failed" and not no_weights and not run.metrics()
    assert "completion" in status["error"] and "rows.jsonl" in status["error"]


@pytest.mark.parametrize("cuda, bnb, expected", [
    (False, True, "`model.quantization: 4bit` needs an NVIDIA GPU with CUDA"),
    (True, False, "`model.quantization: 4bit` needs bitsandbytes"),
])
def test_4bit_without_cuda_or_its_library_is_refused_before_loading(tmp_path, no_weights, monkeypatch, cuda, bnb,
                                                                     expected):
    monkeypatch.setattr(models, "cuda_available", lambda: cuda)
    monkeypatch.setattr(models, "bitsandbytes_available", lambda: bnb)
    data = rows_file(tmp_path, [{"prompt": "Add 1 and 1.", "completion": "Answer: 2"}] * 4)
    run = new_run(tmp_path / "runs", "q4")
    status = train_run(from_dict({"data": {"train": data}, "model": {"quantization": "4bit"}}), run)
    assert status["state"] == "failed" and not no_weights and not run.metrics()
    assert expected in status["error"]


def test_the_train_tab_refuses_rft_without_graders_and_starts_nothing(tmp_path):
    from finetuner.ui import tab_data, tab_train
    from finetuner.ui.context import AppContext
    from finetuner.ui.welcome import demo_project

    ctx = AppContext(tmp_path / "runs")
    project = tab_data.from_project(demo_project())[0]
    project["graders"] = []
    vals = dict(zip(tab_train.FIELDS, tab_train.form_values(project)), method="rft")
    message = tab_train.launch(ctx, project, *vals.values(), "detected", None)[2]
    assert message.startswith("❌") and "`graders` is empty" in message
    assert not [p for p in ctx.runs_dir.iterdir() if p.name != "_uploads"]


# ------------------------------------------------------------------ what the Train tab's controls can send


def _train_tab_cases():
    from finetuner.ui import tab_train

    cases = []
    for name in tab_train.FIELDS:
        tp, meta = LEAVES[name]
        if tp in (int, float):
            # a number box holds any number: below the lowest allowed, above the highest, a fraction for an integer
            if "lo" in meta:
                cases.append((name, meta["lo"] - 1))
            if "above" in meta:
                cases.append((name, -1))
            if "hi" in meta and math.isfinite(meta["hi"]):
                cases.append((name, meta["hi"] + 1))
            if tp is int:
                cases.append((name, 2.5))
        elif tp is str and (meta.get("required") or name == "name"):
            cases.append((name, ""))  # an emptied text box
    return cases


@pytest.fixture(scope="module")
def checked_project():
    from finetuner.ui import tab_data
    from finetuner.ui.welcome import demo_project

    return tab_data.from_project(demo_project())[0]


@pytest.mark.parametrize("field,value", _train_tab_cases())
def test_every_train_tab_control_value_is_refused_naming_the_field(tmp_path, checked_project, field, value):
    from finetuner.ui import tab_train
    from finetuner.ui.context import AppContext

    ctx = AppContext(tmp_path / "runs")
    vals = dict(zip(tab_train.FIELDS, tab_train.form_values(checked_project)))
    vals[field] = value
    message = tab_train.launch(ctx, checked_project, *vals.values(), "detected", None)[2]
    assert message.startswith("❌") and f"`{field}" in message, message
    assert not [p for p in ctx.runs_dir.iterdir() if p.name != "_uploads"]  # nothing started

