"""Seconds per training step on this machine, measured rather than guessed.

    found = measured_steps("runs", cfg, device="cuda")   # {"rft": StepTime(...)} from earlier runs
    found["rft"].text()    # "measured on run demo-20250101-120000: 8.4 s/step (median of 40 steps)"
    probe = run_probe(cfg, "runs")                      # a few real steps in a child process (blocks)

Two honest sources, in this order: a previous run in the runs folder that trained the same model with
similar settings of that stage on the same kind of device (its `time/step_s` rows in metrics.jsonl), and a
probe, which is a real run of `cfg` cut to PROBE_STEPS steps per stage, launched like any run (`python -m
finetuner train`, its own process group, so the web server stays responsive) into `<runs>/_probes/`, where the
Runs tab does not list it. A probe's folder keeps the run folder contract (status.json, metrics.jsonl), and the
lookup reads it like any other run. Without either, callers show memory.rft_cost's formula, labelled a guess.
"""

from __future__ import annotations

import copy
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml

from graders.errors import RunError
from finetuner.runs import ACTIVE_STATES, FINAL_STATES, RunFolder, active_run, force_stop, launch, wait

PROBES = "_probes"  # under the runs folder; starts with "_" like `_uploads`, and has no status.json itself
PROBE_STEPS = 3  # the first step of a stage carries warm-up (CUDA kernels, first generate): dropped below
PROBE_TIMEOUT_S = 900
KEEP_PROBES = 3
# Step time grows about linearly with these lengths: within this ratio a run's timing still says something.
LENGTH_RATIO = 1.25


@dataclass
class StepTime:
    stage: str
    seconds: float  # median seconds per optimizer step
    steps: int  # how many logged step times the median is over
    run_id: str
    probe: bool  # measured by a "Measure a step" probe rather than a full run
    same_data: bool = True

    def text(self) -> str:
        where = f"measured by a probe ({self.run_id})" if self.probe else f"measured on run {self.run_id}"
        data = "" if self.same_data else ", on other data"
        return f"{where}: {self.seconds:.1f} s/step (median of {self.steps} step{'s' * (self.steps != 1)}{data})"


# ------------------------------------------------------------------ which runs are comparable


def _get(conf: dict, dotted: str, default=None):
    node = conf
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return default if node is None else node


def _stages(conf: dict) -> list[str]:
    return {"sft": ["sft"], "rft": ["rft"], "sft+rft": ["sft", "rft"]}.get(conf.get("method"), [])


def _close(a, b) -> bool:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return False
    return a > 0 and b > 0 and max(a, b) / min(a, b) <= LENGTH_RATIO


def comparable(earlier: dict, now: dict, stage: str) -> bool:
    """Whether a run of config `earlier` says how long a `stage` step of config `now` takes (both plain dicts):
    same model, adapter kind and memory settings; for RFT the same group size and batch and a similar
    completion length, for SFT the same batch and a similar max_length."""
    same = ["model.name", "adapter.type", "train.gradient_checkpointing", f"{stage}.batch_size",
            f"{stage}.grad_accum"]
    if stage == "rft":
        same += ["rft.num_generations", "rft.use_vllm"]
        if (_get(earlier, "rft.beta", 0) > 0) != (_get(now, "rft.beta", 0) > 0):
            return False  # beta > 0 adds a reference forward pass to every step
        lengths = ("rft.max_completion_length",)
    else:
        lengths = ("model.max_length",)
    if stage not in _stages(earlier) or any(_get(earlier, k) != _get(now, k) for k in same):
        return False
    return all(_close(_get(earlier, k), _get(now, k)) for k in lengths)


def _quantized(status_quant, cfg_quant: str, device: str) -> bool:
    from finetuner.planning.memory import resolve_quantization

    return (status_quant == "4bit") == (resolve_quantization(cfg_quant, device) == "4bit")


def median_step_seconds(rows: list[dict], stage: str) -> tuple[float, int] | None:
    """(median `time/step_s` of the stage's logged steps, how many), leaving out the first of three or more
    (it carries the warm-up), or None when the stage logged none."""
    vals = [r["time/step_s"] for r in rows if r.get("stage") == stage and not isinstance(r.get("time/step_s"), bool)
            and isinstance(r.get("time/step_s"), (int, float)) and r["time/step_s"] > 0]
    if len(vals) >= 3:
        vals = vals[1:]
    if not vals:
        return None
    return float(statistics.median(vals)), len(vals)


# ------------------------------------------------------------------ earlier runs

_CACHE: dict[tuple, tuple[dict, dict, dict]] = {}  # (folder, file signatures) -> (config, status, medians)


def _signature(run: RunFolder) -> tuple:
    sig = [str(run.path)]
    for p in (run.config_path, run.status_path, run.metrics_path):
        try:
            st = p.stat()
            sig.append((st.st_mtime_ns, st.st_size))
        except OSError:
            sig.append(None)
    return tuple(sig)


def _read(run: RunFolder) -> tuple[dict, dict, dict]:
    """(config dict, status, {stage: (median, n)}), cached until one of the three files changes, so a Train
    tab redraw on every keystroke does not re-read long metrics files."""
    key = _signature(run)
    hit = _CACHE.get(key)
    if hit is None:
        try:
            conf = yaml.safe_load(run.config_path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            conf = {}
        rows = run.metrics() if isinstance(conf, dict) and conf else []
        medians = {s: m for s in ("sft", "rft") if (m := median_step_seconds(rows, s))}
        hit = (conf if isinstance(conf, dict) else {}, run.read_status(), medians)
        if len(_CACHE) > 512:
            _CACHE.clear()
        _CACHE[key] = hit
    return hit


def _run_folders(runs_dir: Path) -> list[tuple[RunFolder, bool]]:
    """(run, is a probe) for the runs folder's runs and its probes."""
    out = []
    for folder, probe in ((runs_dir, False), (runs_dir / PROBES, True)):
        if folder.is_dir():
            out += [(RunFolder(p), probe) for p in folder.iterdir()
                    if p.is_dir() and not p.is_symlink() and (p / "status.json").exists()]
    return out


def measured_steps(runs_dir: str | Path | None, cfg, device: str) -> dict[str, StepTime]:
    """{stage: StepTime} for each of `cfg`'s stages that the newest comparable earlier run (or probe) on a
    `device` of the same kind measured; stages nobody measured are absent."""
    from finetuner.config import to_dict

    if runs_dir is None or not Path(runs_dir).is_dir():
        return {}
    now = to_dict(cfg)
    found: dict[str, tuple[float, StepTime]] = {}
    for run, probe in _run_folders(Path(runs_dir)):
        conf, status, medians = _read(run)
        if status.get("device") != device or not _quantized(status.get("quantization"), cfg.model.quantization,
                                                             device):
            continue
        when = status.get("created") or status.get("started") or 0
        for stage in cfg.stages:
            if stage not in medians or not comparable(conf, now, stage):
                continue
            if stage in found and found[stage][0] >= when:
                continue
            seconds, n = medians[stage]
            same_data = _get(conf, "data.train") == now["data"]["train"]
            found[stage] = (when, StepTime(stage, seconds, n, run.id, probe, same_data))
    return {stage: st for stage, (_when, st) in found.items()}


# ------------------------------------------------------------------ the probe


def probe_config(cfg):
    """`cfg` cut to PROBE_STEPS steps per stage, with nothing that is not a training step: no checkpoints,
    no evaluation, no trackers. Everything that sets a step's cost (model, batch, lengths, groups) is kept."""
    from finetuner.config import from_dict, to_dict

    spec = copy.deepcopy(to_dict(cfg))
    spec["name"] = f"probe-{cfg.name}"[:60]
    spec["report_to"] = []
    for stage in ("sft", "rft"):
        spec[stage].update(max_steps=PROBE_STEPS, save_steps=10**6, logging_steps=1)
    spec["rft"].update(eval_steps=0, keep_best=0)
    if isinstance(spec.get("eval"), dict):
        spec["eval"]["every_steps"] = 0  # held-out scoring during training: not a training step's cost
    return from_dict(spec, base_dir=cfg.base_dir)


def active_probe(runs_dir: str | Path) -> dict | None:
    """The probe measuring now under `runs_dir`, if any (a real run should not start beside it)."""
    return active_run(Path(runs_dir) / PROBES)


def _prune(probes: Path, keep: int = KEEP_PROBES) -> None:
    """Delete all but the newest `keep` finished probes: they are only needed for their metrics."""
    done = [(RunFolder(p).read_status(), p) for p in probes.iterdir() if p.is_dir()] if probes.is_dir() else []
    done = [(s, p) for s, p in done if s.get("state") not in ACTIVE_STATES]
    done.sort(key=lambda sp: sp[0].get("created") or 0, reverse=True)
    for _status, path in done[keep:]:
        shutil.rmtree(path, ignore_errors=True)


def start_probe(cfg, runs_dir: str | Path) -> RunFolder:
    """Launch the probe of `cfg`; refuses (RunError) while a run or another probe trains under `runs_dir`,
    since two trainings on one GPU would time neither truly."""
    runs_dir = Path(runs_dir)
    busy = active_run(runs_dir)
    if busy is not None:
        raise RunError(f"Run {busy['id']} is {busy.get('state')}: a probe beside it would share the machine and "
                       "measure neither run truly. Measure after it ends, or read its own step time on the "
                       "Monitor tab.")
    probes = runs_dir / PROBES
    _prune(probes)
    try:
        return launch(probe_config(cfg), probes, exclusive=True)
    except RunError:
        raise RunError("A step is being measured already (one probe at a time). Wait for it to finish.") from None


def _drop_weights(run: RunFolder) -> None:
    # A probe's adapter is three steps old and useless; only its metrics and log are worth the disk.
    for part in (run.adapter, run.path / "stages", run.checkpoints):
        shutil.rmtree(part, ignore_errors=True)


def run_probe(cfg, runs_dir: str | Path, timeout: float = PROBE_TIMEOUT_S) -> dict[str, StepTime]:
    """Launch the probe, wait for it, and return {stage: StepTime} measured by it. Raises RunError (with the
    probe's own error and where its log is) when it fails or runs past `timeout` seconds."""
    run = start_probe(cfg, runs_dir)
    status = wait(run, timeout=timeout)
    if status.get("state") not in FINAL_STATES:
        force_stop(run)
        _drop_weights(run)
        raise RunError(f"Measuring a step took more than {timeout / 60:.0f} min (model loading included), so it "
                       f"was stopped. Its log: {run.log_path}. A step this slow is worth lowering "
                       f"`rft.max_completion_length` or the batch sizes for.")
    _drop_weights(run)
    if status.get("state") != "finished":
        raise RunError(f"The probe run did not finish ({status.get('state')}): {status.get('error') or 'no reason'}"
                       f" Its log: {run.log_path}.")
    out = {}
    rows = run.metrics()
    for stage in cfg.stages:
        got = median_step_seconds(rows, stage)
        if got:
            out[stage] = StepTime(stage, got[0], got[1], run.id, probe=True)
    if not out:
        raise RunError(f"The probe run finished but logged no step time (time/step_s) in {run.metrics_path}. "
                       f"Its log: {run.log_path}.")
    return out
