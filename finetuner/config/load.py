"""RunConfig from and to plain data and YAML: `from_dict` / `load_config` build a config and validate it
(messages name the field and say what to do), `save_config` / `yaml_text` write the YAML the CLI reads back,
`portable_config` makes its paths absolute for a run folder elsewhere, `load_with_overrides` applies
`--set field=value` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from pathlib import Path
from typing import Any

import yaml

from finetuner.config.fields import RunConfig, is_section
from finetuner.config.validate import validate
from graders.errors import ConfigError

def _coerce(value: Any, tp: Any, where: str):
    """Turn a YAML value into the field's type, or say plainly what was expected."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise ConfigError(f"{where}: expected true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}.")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a whole number, got {value!r}.")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}.")
        try:
            # YAML 1.1 reads `1e-3` as a string; accept it as the number the user meant.
            out = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number such as 0.0002 or 2e-4, got {value!r}.") from None
        if not math.isfinite(out):
            raise ConfigError(f"{where}: must be a finite number, got {value!r}.")
        return out
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {type(value).__name__} {value!r}.")
        return value
    if tp is list:
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}.")
        return value
    if tp is dict:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where}: expected a mapping of names to values, such as `{{enable_thinking: false}}`, "
                              f"got {type(value).__name__} {value!r}.")
        return value
    return value


def _section_from_dict(cls, data: Any, where: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{f'`{where}`' if where else 'The config'}: expected a mapping of fields, got "
                          f"{type(data).__name__}. Write it as `key: value` lines under it.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f" Did you mean `{close[0]}`?" if close else f" Known fields: {', '.join(fields)}."
            raise ConfigError(f"Unknown field `{path}`.{hint}")
        tp = hints[key]
        if is_section(tp):
            kwargs[key] = _section_from_dict(tp, value, path)
            continue
        value = _coerce(value, tp, f"`{path}`")
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise ConfigError(f"`{path}`: {value!r} is not allowed; choose one of {', '.join(choices)}.{hint}")
        kwargs[key] = value
    return cls(**kwargs)


def from_dict(data: dict, base_dir: str = "") -> RunConfig:
    """Build and validate a RunConfig from plain data (as read from YAML or sent by the UI)."""
    cfg = _section_from_dict(RunConfig, data, "")
    cfg.base_dir = base_dir
    validate(cfg)
    return cfg


def to_dict(cfg: RunConfig) -> dict:
    out = dataclasses.asdict(cfg)
    out.pop("base_dir", None)
    return out


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist. Write one with the app or start from "
                          f"examples/arithmetic/run.yaml.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(err, 'problem', err)}. "
                          f"Check indentation and quoting there.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text. Save it as UTF-8.") from None
    if data is None:
        raise ConfigError(f"{path} is empty. Start from examples/arithmetic/run.yaml.")
    return from_dict(data, base_dir=str(path.resolve().parent))


class _BlockDumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line text (a Python grader's `source`, a judge's rubric) as a literal
    block (`|`), so the Run file reads like the code it holds instead of one escaped line."""


# Unicode line breaks that PyYAML writes raw (with allow_unicode) and a loader then reads back as "\n".
_RAW_BREAKS = ("\x85", "\u2028", "\u2029")


def _represent_str(dumper, value: str):
    # "|" is only a request: PyYAML's emitter falls back to a double-quoted string by itself when a block
    # cannot hold the text exactly (a line ending in spaces, a tab, a \r), so loading gives the same value.
    # Double quotes escape the unicode breaks, which any other style would let a loader turn into "\n".
    style = '"' if any(b in value for b in _RAW_BREAKS) else "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def yaml_text(data: Any) -> str:
    """Plain data as YAML, keys in their order, multi-line text as literal blocks. Every YAML a person reads
    (the Train tab's run.yaml, a run's config.yaml, the export's run.yaml) goes through here."""
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True)


def dump_yaml(cfg: RunConfig) -> str:
    return yaml_text(to_dict(cfg))


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(dump_yaml(cfg), encoding="utf-8")
    return path


def portable_config(config):
    """The config with data and grader file paths made absolute, since the run folder is elsewhere."""
    import copy

    cfg = copy.deepcopy(config)
    for key in ("train", "eval", "rft_train"):
        setattr(cfg.data, key, cfg.resolve(getattr(cfg.data, key)))
    for spec in cfg.graders:
        _absolute_grader_paths(spec, cfg.resolve)
    for spec in cfg.tools:
        for key in ("file", "table"):
            if isinstance(spec, dict) and isinstance(spec.get(key), str) and spec[key]:
                spec[key] = cfg.resolve(spec[key])
    return cfg


# Grader fields that may name a file relative to the YAML (`tokenizer` may also be a model id: only an
# existing path is rewritten, since resolve() leaves anything else as it is).
_GRADER_PATH_KEYS = ("file", "schema_file", "tokenizer")


def _absolute_grader_paths(spec, resolve) -> None:
    if not isinstance(spec, dict):
        return
    for key in _GRADER_PATH_KEYS:
        if isinstance(spec.get(key), str) and spec[key]:
            spec[key] = resolve(spec[key])
    inner = spec.get("graders")  # a multi grader's own graders
    for sub in (inner.values() if isinstance(inner, dict) else inner or []):
        _absolute_grader_paths(sub, resolve)
