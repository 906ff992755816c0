"""How a training run ends when something goes wrong: a crash, OOM, a full disk, a signal, becomes a final
status a person can act on, never a dead process or a traceback in the Monitor.

`stages.train_run` runs its stage loop inside `RunEnding`; the loop itself only calls `final` for the ends it
decides (finished, stopped by request, stopped by a callback). Everything else that can end a run lives here.
"""

from __future__ import annotations

import errno
import logging
import signal
import time
import traceback

from finetuner.config import RunConfig
from finetuner.runs import RunFolder
from graders.errors import FinetunerError

log = logging.getLogger("finetuner.training.stages")  # the name log.txt readers and tests already know

RESERVE_FILE = ".disk-reserve"
RESERVE_BYTES = 256 * 1024  # freed to write the final status when the disk fills up mid-run


class StopOnSignal:
    """SIGTERM / SIGINT become a polite stop request: the step finishes, the adapter is saved. A second
    Ctrl-C falls back to the default (an immediate KeyboardInterrupt) for someone who really wants out."""

    def __init__(self, run: RunFolder):
        self.run = run
        self.previous: dict = {}
        self.asked = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self)
            except ValueError:
                pass  # not the main thread (tests calling in-process); stop files still work

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def __call__(self, signum, frame):
        # "Second" means to this process: under `accelerate launch` one Ctrl-C reaches every rank, and the
        # first rank's stop file must not turn the others' polite stop into a crash.
        if signum == signal.SIGINT and self.asked:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.asked = self.asked or signum == signal.SIGINT
        self.run.stop_path.write_text(f"signal {signum}")


class RunEnding:
    """`with RunEnding(cfg, run) as ending:` around the stage loop. Installs the signal handlers; an exception
    that escapes becomes the run's final status (in `ending.status`) instead of propagating. SystemExit and
    the like still propagate, as before."""

    def __init__(self, cfg: RunConfig, run: RunFolder):
        self.cfg, self.run = cfg, run
        self.signals = StopOnSignal(run)
        self.status: dict | None = None

    def __enter__(self) -> "RunEnding":
        self.signals.install()
        return self

    def __exit__(self, kind, err, tb) -> bool:
        try:
            if err is None or not isinstance(err, (Exception, KeyboardInterrupt)):
                return False
            self.status = self._ended_by(err, tb)
            return True
        finally:
            self.signals.restore()  # after the final write, so a signal during it is still a stop request

    def _ended_by(self, err: BaseException, tb) -> dict:
        from finetuner.training import distributed

        if isinstance(err, FinetunerError):
            log.error("Run failed: %s", err)
            return final(self.run, "failed", str(err))
        if isinstance(err, KeyboardInterrupt):
            return final(self.run, "stopped", "Interrupted (Ctrl-C twice) without saving; the last checkpoint is "
                                              "kept.")
        log.error("Training crashed:\n%s", "".join(traceback.format_exception(type(err), err, tb)))
        if disk_full(err) and distributed.is_main():
            self.run.discard_incomplete_checkpoints()  # frees space; a resume could not use them anyway
        return final(self.run, "failed", explain_crash(err, self.cfg, self.run))


def final(run: RunFolder, state: str, error: str | None = None, **extra) -> dict:
    """Write a final state; a stop request that arrived too late to act on is cleared with it. On a full disk
    the space reserved at the start is given back first, so the run still ends with its reason."""
    from finetuner.training.distributed import FollowerRun

    run.stop_path.unlink(missing_ok=True)
    # Another rank's view of the folder must not touch rank 0's reserve: a name nothing will find.
    reserve = run.path / (RESERVE_FILE if not isinstance(run, FollowerRun) else ".no-reserve")
    try:
        return run.write_status(state=state, finished=time.time(), error=error, **extra)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        reserve.unlink(missing_ok=True)
        return run.write_status(state=state, finished=time.time(), error=error, **extra)
    finally:
        reserve.unlink(missing_ok=True)


def reserve_space(run: RunFolder) -> None:
    try:
        with open(run.path / RESERVE_FILE, "wb") as fh:
            fh.write(b"\0" * RESERVE_BYTES)
    except OSError:
        pass  # already full: final's write may still fit in the space status.json had


def disk_full(err: BaseException) -> OSError | None:
    """The ENOSPC behind `err`, also when a library wrapped it (torch.save, safetensors), or None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return err
        if "no space left on device" in str(err).lower():
            return OSError(errno.ENOSPC, "No space left on device")
        err = err.__cause__ or err.__context__
    return None


def explain_crash(err: Exception, cfg: RunConfig | None = None, run: RunFolder | None = None) -> str:
    """What a person reads in the Monitor for a crash: what happened, where, what to change."""
    status = run.read_status() if run is not None else {}
    stage = status.get("stage") or ""
    # The status step is the last one finished, as of the last status write (at most half a second old).
    where = (f" during {stage.upper()} ({int(status.get('step') or 0)} of {status.get('total') or '?'} steps done)"
             if stage else "")
    kept = _kept(run, stage)
    name = type(err).__name__
    if "OutOfMemory" in name or "out of memory" in str(err).lower():
        return f"Out of memory{where}: {_oom_advice(err, cfg, stage)} {kept}"
    full = disk_full(err)
    if full is not None:
        folder = run.path.parent if run is not None else "the runs folder"
        target = f" writing {full.filename}" if getattr(full, "filename", None) else ""
        saves = ""
        if cfg is not None:
            steps = " / ".join(f"`{s}.save_steps` (now {getattr(cfg, s).save_steps})" for s in cfg.stages)
            saves = f", or keep fewer checkpoints: raise {steps}"
            if "rft" in cfg.stages and cfg.rft.keep_best:
                saves += f" and lower `rft.keep_best` (now {cfg.rft.keep_best})"
        return (f"The disk is full (No space left on device){target}{where}. Free space on the disk holding "
                f"{folder} (delete old runs on the Runs tab, or their checkpoints/ folders){saves}. {kept}")
    return f"Training crashed{where}: {name}: {err}. The full traceback is in log.txt. {kept}"


def _oom_advice(err: Exception, cfg: RunConfig | None, stage: str) -> str:
    gpu = "CUDA" in str(err) or _cuda()
    what = "the GPU's memory ran out" if gpu else "this machine's memory ran out"
    if cfg is None:
        return (f"{what}. Lower the batch size (raise grad_accum to keep the effective batch), shorten "
                f"`model.max_length`, or pick a smaller model.")
    stages = [stage] if stage in ("sft", "rft") else list(cfg.stages)
    lower = []
    for st in stages:
        s = getattr(cfg, st)
        lower.append(f"`{st}.batch_size` (now {s.batch_size}; raise `{st}.grad_accum`, now {s.grad_accum}, to keep "
                     f"the effective batch)")
    lower.append(f"`model.max_length` (now {cfg.model.max_length})")
    if "rft" in stages:
        lower.append(f"`rft.num_generations` (now {cfg.rft.num_generations})")
        lower.append(f"`rft.max_completion_length` (now {cfg.rft.max_completion_length})")
    quant = "" if cfg.model.quantization == "4bit" or not gpu else ", or set `model.quantization: 4bit`"
    return f"{what}. Lower {', '.join(lower)}; or pick a smaller model{quant}. The Train tab's memory estimate " \
           f"shows what fits."


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _kept(run: RunFolder | None, stage: str) -> str:
    if run is None:
        return "The last checkpoint is kept."
    ckpts = [(s, run.last_checkpoint(s)) for s in ("sft", "rft")]
    ckpts = [(s, p) for s, p in ckpts if p is not None]
    if not ckpts:
        return "No checkpoint had been saved yet: a resume starts the stage again."
    names = ", ".join(f"{s} {p.name}" for s, p in ckpts)
    return f"The last complete checkpoint is kept ({names}): resume with `python -m finetuner train --resume " \
           f"{run.path}`."
