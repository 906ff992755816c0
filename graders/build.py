"""`build_graders(specs, base_dir)`: a run's YAML `graders:` list -> ready `Grader` objects.

Each spec is a dict with `name`, `type`, optional `weight` (default 1.0) and the type's fields. Problems
raise `GraderConfigError` (a `graders.errors.ConfigError`) naming the grader and field and saying what
to do; nothing is left to fail at training step 1 that could be checked here.
"""

from __future__ import annotations

import importlib

from graders.base import Grader, GraderConfigError
from graders.spec import SpecReader, did_you_mean

# type -> "module:Class"; imported on use so that e.g. a string_check never loads openai or sympy
TYPES = {
    "string_check": "graders.builtin:StringCheck",
    "text_similarity": "graders.similarity:TextSimilarity",
    "regex": "graders.builtin:Regex",
    "json_schema": "graders.builtin:JsonSchema",
    "length": "graders.builtin:Length",
    "overlong": "graders.builtin:SoftOverlong",
    "math": "graders.math_grader:MathGrader",
    "reasoning_gym": "graders.gym_grader:GymGrader",
    "python": "graders.python_grader:PythonGrader",
    "score_model": "graders.judge:ScoreModelGrader",
    "label_model": "graders.judge:LabelModelGrader",
    "multi": "graders.multi:MultiGrader",
}


def grader_class(type_name: str):
    module, _, cls = TYPES[type_name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_one(spec: dict, base_dir: str = "", parent: str | None = None) -> Grader:
    where = f"grader '{spec.get('name', '?')}'" + (f" in multi '{parent}'" if parent else "")
    type_name = spec.get("type")
    if not type_name:
        raise GraderConfigError(f"{where}: field 'type' is missing. Use one of: {', '.join(TYPES)}.")
    if type_name not in TYPES:
        raise GraderConfigError(f"{where}: unknown type '{type_name}'.{did_you_mean(type_name, TYPES)} "
                                f"Known types: {', '.join(TYPES)}.")
    cls = grader_class(type_name)
    reader = SpecReader(spec, cls.FIELDS, getattr(cls, "IGNORED", set()))
    if parent:
        reader.name = f"{parent}.{reader.name}"
    reader.number("weight", 1.0)
    return cls.from_spec(reader, base_dir)


def build_graders(specs: list[dict], base_dir: str = "") -> list[Grader]:
    """Build every grader in a run's `graders:` list (names must be unique)."""
    if isinstance(specs, dict):
        specs = [specs]
    if not isinstance(specs, list):
        raise GraderConfigError(f"graders must be a list of grader specs, not {type(specs).__name__}.")
    built, seen = [], set()
    for index, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise GraderConfigError(f"graders[{index}] must be a mapping with name and type, not "
                                    f"{type(spec).__name__}.")
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip():
            raise GraderConfigError(f"graders[{index}] ({spec.get('type', 'no type')}): field 'name' is "
                                    "missing. Give each grader a short unique name, e.g. name: correct.")
        if "/" in name or name != name.strip():
            raise GraderConfigError(f"grader '{name}': its name may not contain '/' or surrounding spaces "
                                    "(it becomes a metric name, rewards/<name>/mean).")
        if name in seen:
            raise GraderConfigError(f"grader '{name}': two graders have this name; names must be unique.")
        seen.add(name)
        built.append(build_one(spec, base_dir))
    return built
