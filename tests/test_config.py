"""RunConfig: parsing, validation messages that name the field, YAML round trip, the generated reference."""

import subprocess
import sys

import pytest

from finetuner.config import explain, from_dict, help_for, iter_fields, load_config, save_config
from graders.errors import ConfigError

BASE = {"data": {"train": "rows.jsonl"}}
GRADER = [{"name": "exact", "type": "string_check", "input": "{{sample.output_text}}",
           "reference": "{{item.answer}}", "operation": "eq"}]


def cfg(**extra):
    data = {**BASE, **extra}
    return from_dict(data)


def error_of(**extra) -> str:
    with pytest.raises(ConfigError) as info:
        cfg(**extra)
    return str(info.value)


def test_defaults_are_valid_and_sft():
    c = cfg()
    assert c.method == "sft" and c.stages == ["sft"]
    assert c.adapter.r == 16 and c.adapter.target_modules == "all-linear"


def test_unknown_key_suggests_the_close_one():
    assert "Did you mean `method`" in error_of(methd="sft")
    assert "`rft.num_generation`" in error_of(rft={"num_generation": 4})
    assert "Did you mean `num_generations`" in error_of(rft={"num_generation": 4})


def test_wrong_types_name_the_field():
    assert "`sft.batch_size`: expected a whole number" in error_of(sft={"batch_size": "many"})
    assert "`rft.beta`: expected a number" in error_of(rft={"beta": [1]})
    assert "`model.trust_remote_code`: expected true or false" in error_of(model={"trust_remote_code": 3})


def test_yaml_string_numbers_are_accepted():
    # PyYAML reads 1e-3 as a string; the user meant a number.
    assert cfg(sft={"learning_rate": "1e-3"}).sft.learning_rate == pytest.approx(1e-3)


def test_bad_choice_lists_the_allowed_values():
    msg = error_of(method="grpo")
    assert "`method`" in msg and "sft+rft" in msg
    assert "Did you mean `lora`" in error_of(adapter={"type": "loraa"})


def test_generation_batch_must_hold_whole_groups():
    msg = error_of(method="rft", graders=GRADER, rft={"batch_size": 6, "num_generations": 4})
    assert "multiple of `rft.num_generations` (4)" in msg and "batch_size 4" in msg
    assert cfg(method="rft", graders=GRADER, rft={"batch_size": 6, "grad_accum": 2, "num_generations": 4})


def test_rft_without_graders_is_refused_before_loading():
    msg = error_of(method="sft+rft")
    assert "`graders` is empty" in msg and "choose method `sft`" in msg


def test_other_cross_field_checks():
    assert "at least 2" in error_of(method="rft", graders=GRADER, rft={"num_generations": 1, "batch_size": 1})
    assert "`data.train` is empty" in str(pytest.raises(ConfigError, from_dict, {}).value)
    assert "`data.eval_fraction`" in error_of(data={"train": "x", "eval_fraction": 0.9})
    assert "used twice" in error_of(method="rft", graders=GRADER + GRADER)
    assert "has no `type`" in error_of(method="rft", graders=[{"name": "x"}])
    assert "`sft.learning_rate`" in error_of(sft={"learning_rate": 0})
    assert "slashes" in error_of(name="../evil")


def test_yaml_round_trip(tmp_path):
    c = cfg(method="sft+rft", graders=GRADER, rft={"max_steps": 7}, report_to=["tensorboard"])
    path = save_config(c, tmp_path / "run.yaml")
    back = load_config(path)
    assert back.method == "sft+rft" and back.rft.max_steps == 7 and back.graders == GRADER
    assert back.base_dir == str(tmp_path.resolve())


def test_load_errors_are_plain(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: sft\n  data: [\n")
    assert "not valid YAML at line" in str(pytest.raises(ConfigError, load_config, bad).value)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert "is empty" in str(pytest.raises(ConfigError, load_config, empty).value)
    assert "does not exist" in str(pytest.raises(ConfigError, load_config, tmp_path / "none.yaml").value)


def test_every_field_has_help_and_explain_lists_it():
    text = explain()
    for name, tp, _default, help_text, _choices in iter_fields():
        assert help_text, f"{name} has no help text"
        if tp != "section":
            assert f"`{name}`" in text
    assert help_for("rft.beta").startswith("KL penalty")


def test_cli_explain_and_field_help():
    out = subprocess.run([sys.executable, "-m", "finetuner", "explain", "rft.num_generations"],
                         capture_output=True, text=True, check=True).stdout
    assert "Completions sampled per prompt" in out
    bad = subprocess.run([sys.executable, "-m", "finetuner", "explain", "rft.nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "No config field" in bad.stderr and "Traceback" not in bad.stderr


def test_runconfig_resolve_against_yaml_folder(tmp_path, monkeypatch):
    (tmp_path / "rows.jsonl").write_text("{}\n")
    c = from_dict(BASE, base_dir=str(tmp_path))
    assert c.resolve("rows.jsonl") == str(tmp_path / "rows.jsonl")
    assert c.resolve("org/dataset") == "org/dataset"
    # Without a YAML folder (the UI), an existing relative path still becomes absolute for the run folder.
    monkeypatch.chdir(tmp_path)
    assert from_dict(BASE).resolve("rows.jsonl") == str(tmp_path / "rows.jsonl")
