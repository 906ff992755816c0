"""RunConfig validation: every field's own rule (from its metadata), the cross-field checks of the stages a
run uses, and the grader list (names, types, no pasted keys). Raises ConfigError naming the field; runs before
anything heavy loads (config.from_dict calls it)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from graders.errors import ConfigError

if TYPE_CHECKING:
    from finetuner.config.fields import RunConfig


def _check_range(value, lo, hi, where: str, what: str):
    if not (lo <= value <= hi):
        raise ConfigError(f"`{where}` is {value}; {what}.")


def validate(cfg: RunConfig) -> None:
    """Cross-field checks, run before anything heavy loads. Raises ConfigError naming the field."""
    if not cfg.name.strip() or any(c in cfg.name for c in "/\\") or cfg.name in (".", ".."):
        raise ConfigError("`name` must be a short name without slashes, such as `math-sft`.")
    if not cfg.data.train:
        raise ConfigError("`data.train` is empty. Name a data file (.jsonl, .csv, .parquet, .json) or a "
                          "Hugging Face dataset id.")
    _check_range(cfg.data.eval_fraction, 0.0, 0.5, "data.eval_fraction", "use a share between 0 and 0.5")
    _check_range(cfg.adapter.dropout, 0.0, 0.5, "adapter.dropout", "use a value between 0 and 0.5")
    for where, value in (("adapter.r", cfg.adapter.r), ("adapter.alpha", cfg.adapter.alpha),
                         ("model.max_length", cfg.model.max_length)):
        if value < 1:
            raise ConfigError(f"`{where}` is {value}; it must be at least 1.")
    for stage in cfg.stages:
        s = getattr(cfg, stage)
        if s.learning_rate <= 0 or s.learning_rate > 1:
            raise ConfigError(f"`{stage}.learning_rate` is {s.learning_rate}; use a small positive number such "
                              f"as {'2e-4' if stage == 'sft' else '1e-5'}.")
        for name in ("batch_size", "grad_accum", "save_steps", "logging_steps"):
            if getattr(s, name) < 1:
                raise ConfigError(f"`{stage}.{name}` is {getattr(s, name)}; it must be at least 1.")
        if s.max_steps < 0 or (s.max_steps == 0 and s.epochs <= 0):
            raise ConfigError(f"`{stage}.max_steps` is {s.max_steps} and `{stage}.epochs` is {s.epochs}: set "
                              f"`max_steps` above 0, or leave it 0 and set `epochs` above 0.")
        _check_range(s.warmup_ratio, 0.0, 0.5, f"{stage}.warmup_ratio", "use a share between 0 and 0.5")
    if "rft" in cfg.stages:
        r = cfg.rft
        if r.num_generations < 2:
            raise ConfigError(f"`rft.num_generations` is {r.num_generations}; GRPO compares completions of the "
                              f"same prompt, so it needs at least 2.")
        if (r.batch_size * r.grad_accum) % r.num_generations:
            raise ConfigError(
                f"`rft.batch_size` x `rft.grad_accum` = {r.batch_size * r.grad_accum} completions per step must be "
                f"a multiple of `rft.num_generations` ({r.num_generations}): every prompt's group must be whole. "
                f"Try batch_size {r.num_generations * max(1, r.batch_size // r.num_generations)}.")
        if r.max_completion_length < 1:
            raise ConfigError("`rft.max_completion_length` must be at least 1 token.")
        if r.temperature <= 0:
            raise ConfigError("`rft.temperature` must be above 0 (sampling needs randomness to compare answers).")
        if r.beta < 0:
            raise ConfigError("`rft.beta` cannot be negative; use 0 to turn the KL penalty off.")
        _check_range(r.max_grader_error_rate, 0.0, 1.0, "rft.max_grader_error_rate", "use a share from 0 to 1")
        if r.use_vllm == "server" and not r.vllm_server_url.startswith(("http://", "https://")):
            raise ConfigError(f"`rft.vllm_server_url` is {r.vllm_server_url!r}; give the address of `trl vllm-serve`, "
                              f"such as http://127.0.0.1:8000.")
        if not cfg.graders:
            raise ConfigError(f"Method `{cfg.method}` trains on graders' scores, but `graders` is empty. Add at "
                              f"least one grader, or choose method `sft`.")
    # The checks above give the used stages their most specific messages; these cover every field.
    _check_fields(cfg)
    for i, tracker in enumerate(cfg.report_to):
        if not isinstance(tracker, str) or not tracker.strip():
            raise ConfigError(f"`report_to[{i}]` is {tracker!r}; give a tracker name such as `tensorboard`.")
    _validate_graders(cfg)
    _validate_tools(cfg)


def _validate_tools(cfg: RunConfig) -> None:
    """Tools are read (not run) here, so a bad tool is refused before anything starts."""
    if not isinstance(cfg.tools, list):
        raise ConfigError("`tools` must be a list of tool definitions (each with `source`, `file` or `example`).")
    if cfg.tools:
        from graders.tools import build_tools

        build_tools(cfg.tools, cfg.base_dir)


def _check_fields(section, prefix: str = "") -> None:
    """Every field's own rule from its metadata (required text, bounds), in any section."""
    for f in dataclasses.fields(section):
        meta, value, where = f.metadata, getattr(section, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_fields(value, where + ".")
            continue
        hint = meta.get("help", "")
        if meta.get("required") and isinstance(value, str) and not value.strip():
            raise ConfigError(f"`{where}` is empty. {hint}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        lo, hi, above = meta.get("lo"), meta.get("hi"), meta.get("above")
        if (lo is None or value >= lo) and (hi is None or value <= hi) and (above is None or value > above):
            continue
        rule = [f"at least {lo}" if lo is not None else "", f"above {above}" if above is not None else "",
                f"at most {hi}" if hi is not None else ""]
        raise ConfigError(f"`{where}` is {value}; it must be {' and '.join(r for r in rule if r)}. {hint}")


def _validate_graders(cfg: RunConfig) -> None:
    if not isinstance(cfg.graders, list):
        raise ConfigError("`graders` must be a list of grader definitions.")
    seen = set()
    for i, spec in enumerate(cfg.graders):
        where = f"graders[{i}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"`{where}` must be a mapping with `name` and `type`.")
        name = spec.get("name")
        if not name or not isinstance(name, str):
            raise ConfigError(f"`{where}` has no `name`. Give each grader a short unique name.")
        if name in seen:
            raise ConfigError(f"`{where}`: the name `{name}` is used twice; grader names must be unique.")
        seen.add(name)
        if not spec.get("type"):
            raise ConfigError(f"`{where}` (`{name}`) has no `type`, such as `string_check` or `python`.")
        _refuse_pasted_keys(spec, where)


# ---------------------------------------------------------------- reference text


def _refuse_pasted_keys(node, where: str) -> None:
    """A judge's key belongs in an environment variable; the config (saved into the run folder and bundles)
    holds only the variable's name. Checked here too, so the CLI and YAML paths refuse before anything is saved."""
    from graders.secrets import is_variable_name

    if isinstance(node, list):
        for i, item in enumerate(node):
            _refuse_pasted_keys(item, f"{where}[{i}]")
    if not isinstance(node, dict):
        return
    if node.get("api_key"):
        raise ConfigError(f"`{where}.api_key`: keys are never written to run files. Put the key in an environment "
                          f"variable and give its name as `api_key_env` (e.g. JUDGE_API_KEY).")
    env = node.get("api_key_env")
    if isinstance(env, str) and env and not is_variable_name(env):
        raise ConfigError(f"`{where}.api_key_env` must be the NAME of an environment variable that holds the key "
                          f"(e.g. JUDGE_API_KEY), not the key itself.")
    for key, value in node.items():
        if isinstance(value, (dict, list)):
            _refuse_pasted_keys(value, f"{where}.{key}")
