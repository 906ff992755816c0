"""A Lab spec: which methods to compare, on what data, under which budget, over which seeds and data sizes.

    spec = load_spec("examples/lab/demo.yaml")      # or preset("demo")
    spec.methods, spec.seeds, spec.sizes, spec.budget   # ["sft", "rft", "sft+rft"], [0, 1], [25, 50], {"seconds": 15}

The YAML (paths relative to the spec's own folder):

    name: demo
    base: ../arithmetic/run.yaml   # the run file every arm starts from: model, graders, per-method settings
    data: ../arithmetic/train.jsonl  # optional: labelled rows (SFT learns the labels, RFT only the prompts)
    eval: ../arithmetic/eval.jsonl   # optional: held-out rows; without one the Lab holds out the last rows
    keep: keep.jsonl               # optional: what the model must not lose, scored before and after each arm
    keep_graders: [...]            # optional: how the keep set is scored (default: the run's graders)
    graders: [...]                 # optional: replaces the base run's graders
    methods: [sft, rft, sft+rft]
    seeds: [0, 1]
    sizes: [25, 50, 100, 200]      # training rows per comparison (the first N rows); empty: all rows
    budget: {seconds: 15}          # per arm: seconds of training steps, or {examples: 800} rows seen
    eval_rows: 100                 # held-out rows scored (greedy) every `eval_every` steps and at each end
    eval_every: 10
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from graders.errors import ConfigError

PRESETS_DIR = Path(__file__).resolve().parents[2] / "examples" / "lab"
METHODS = ("sft", "rft", "sft+rft")
KEYS = ("name", "base", "data", "eval", "keep", "keep_graders", "graders", "methods", "seeds", "sizes", "budget",
        "eval_rows", "eval_every")


@dataclass
class LabSpec:
    name: str
    base: str  # absolute path of the base run file
    data: str = ""
    eval: str = ""
    keep: str = ""
    keep_graders: list = field(default_factory=list)
    graders: list | None = None
    methods: list = field(default_factory=lambda: list(METHODS))
    seeds: list = field(default_factory=lambda: [0, 1])
    sizes: list = field(default_factory=list)
    budget: dict = field(default_factory=lambda: {"seconds": 30})
    eval_rows: int = 100
    eval_every: int = 10
    source: str = ""  # where the spec was read from, for the report

    @property
    def budget_kind(self) -> str:
        return next(iter(self.budget))

    @property
    def budget_value(self) -> float:
        return float(self.budget[self.budget_kind])

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in KEYS}


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def preset(name: str) -> LabSpec:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"There is no Lab preset {name!r}. Presets: {', '.join(preset_names())}.")
    return load_spec(path)


def load_spec(path: str | Path) -> LabSpec:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Lab spec {path} does not exist. Give a YAML file (see examples/lab/demo.yaml).") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"Lab spec {path} is not valid YAML: {err}") from None
    return spec_from_dict(data, path.parent, str(path))


def spec_from_dict(data, base_dir: str | Path = ".", source: str = "") -> LabSpec:
    """Check every field (what, where, what to do) and resolve paths against `base_dir`."""
    where = source or "the Lab spec"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of fields ({', '.join(KEYS)}).")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}. Known fields: {', '.join(KEYS)}.")
    base_dir = Path(base_dir)

    def path_of(key: str, required: bool = False) -> str:
        value = data.get(key) or ""
        if not value:
            if required:
                raise ConfigError(f"{where}: `{key}` is required (the run file every arm starts from).")
            return ""
        p = Path(str(value)).expanduser()
        p = p if p.is_absolute() else base_dir / p
        if not p.exists():
            raise ConfigError(f"{where}: `{key}` names {p}, which does not exist. Fix the path.")
        return str(p.resolve())

    methods = list(data.get("methods") or METHODS)
    bad = [m for m in methods if m not in METHODS]
    if bad or len(set(methods)) != len(methods):
        raise ConfigError(f"{where}: `methods` must list distinct methods among {', '.join(METHODS)}; got {methods}.")
    seeds = _int_list(data.get("seeds", [0, 1]), "seeds", where, lo=0)
    if not seeds:
        raise ConfigError(f"{where}: `seeds` needs at least one seed, e.g. [0, 1] (two give a spread).")
    sizes = sorted(set(_int_list(data.get("sizes") or [], "sizes", where, lo=2)))
    budget = data.get("budget") or {"seconds": 30}
    if not (isinstance(budget, dict) and len(budget) == 1 and next(iter(budget)) in ("seconds", "examples")):
        raise ConfigError(f"{where}: `budget` is one of {{seconds: S}} (training seconds per arm) or "
                          f"{{examples: N}} (rows seen per arm); got {budget!r}.")
    value = next(iter(budget.values()))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where}: the budget must be a positive number; got {value!r}.")
    graders = data.get("graders")
    if graders is not None and not isinstance(graders, list):
        raise ConfigError(f"{where}: `graders` is a list of grader definitions, as in a run file.")
    keep_graders = data.get("keep_graders") or []
    if not isinstance(keep_graders, list):
        raise ConfigError(f"{where}: `keep_graders` is a list of grader definitions, as in a run file.")
    eval_rows, eval_every = data.get("eval_rows", 100), data.get("eval_every", 10)
    for key, v in (("eval_rows", eval_rows), ("eval_every", eval_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{where}: `{key}` must be a whole number of at least 1; got {v!r}.")
    name = str(data.get("name") or "lab")
    return LabSpec(name=name, base=path_of("base", required=True), data=path_of("data"), eval=path_of("eval"),
                   keep=path_of("keep"), keep_graders=keep_graders, graders=graders, methods=methods, seeds=seeds,
                   sizes=sizes, budget={next(iter(budget)): value}, eval_rows=eval_rows, eval_every=eval_every,
                   source=source)


def _int_list(value, key: str, where: str, lo: int) -> list[int]:
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) or v < lo for v in value):
        raise ConfigError(f"{where}: `{key}` must be a list of whole numbers of at least {lo}; got {value!r}.")
    return list(value)
