"""`python -m finetuner <verb>`: the headless face of the engine.

Verbs: train, stop, runs, queue, explain, check-data, test-grader, demo, bench, make-task; evaluate, export, chat live in
cli_runs.py. Heavy libraries are imported inside the
verbs so `--help` and `explain` answer at once. A FinetunerError prints its message (what, where, what to
do) and exits 2; no traceback is shown for mistakes a user can fix.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from finetuner import cli_runs
from graders.errors import FinetunerError


def _offline_defaults() -> None:
    # Nothing in the engine may reach for the network unless the user set these otherwise.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.environ.get("FINETUNER_ONLINE") != "1":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def parse_overrides(pairs: list[str]) -> dict:
    """`--set rft.beta=0.1 --set name=x` -> nested dict, values read as YAML scalars."""
    import yaml

    out: dict = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise FinetunerError(f"--set {pair!r}: write it as FIELD=VALUE, e.g. --set rft.max_steps=20.")
        key, value = pair.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""
    return out


def load_with_overrides(path: str, overrides: list[str] | None):
    from finetuner.config import from_dict, load_config, to_dict

    cfg = load_config(path)
    if not overrides:
        return cfg
    data = to_dict(cfg)
    _deep_merge(data, parse_overrides(overrides))
    return from_dict(data, base_dir=cfg.base_dir)


def _deep_merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def _log_to_run(run) -> None:
    """Log to the run's log.txt, unless stdout already goes there (a launched child). Under `accelerate
    launch` only rank 0 writes log.txt; every rank's lines on stderr carry its rank."""
    from finetuner.training import distributed

    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    try:
        same = run.log_path.exists() and os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(run.log_path))
    except (OSError, ValueError):
        same = False
    if not same and distributed.is_main():
        handlers.append(logging.FileHandler(run.log_path, encoding="utf-8"))
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if distributed.world_size() > 1:
        fmt = f"[rank {distributed.rank()}] {fmt}"
    logging.basicConfig(level=logging.INFO, format=fmt, handlers=handlers, force=True)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_train(args) -> int:
    nice = os.environ.get("FINETUNER_NICE", "")  # set by runs.process.child_env for runs the app starts
    if nice.lstrip("-").isdigit():
        try:
            os.nice(int(nice))
        except OSError:  # not allowed to change it here: train at the priority given
            pass
    try:
        return _train(args)
    finally:
        _advance_queue(args)


def _advance_queue(args) -> None:
    """This run has ended (or never began): start the next waiting run in its runs folder, so the queue moves
    on with no app open. Nothing here may change this process's exit status."""
    try:
        from finetuner.training import distributed

        if not distributed.is_main():
            return
        from finetuner.runs import advance

        folder = args.resume or args.run_dir
        advance(Path(folder).resolve().parent if folder else args.runs_dir)
    except Exception:  # noqa: BLE001 - the queue is the app's worker's to retry; the run's own result stands
        logging.getLogger("finetuner.queue").exception("could not advance the run queue")


def cmd_queue(args) -> int:
    from finetuner.runs import advance, cancel, move, waiting

    for run in advance(args.runs_dir):  # a run killed outright moved nothing on: looking at the queue does
        print(f"Started {run.id}: a device was free.")
    if args.cancel:
        cancel(args.runs_dir, args.cancel)
        print(f"Cancelled {args.cancel}: removed from the queue and its folder deleted.")
    if args.move:
        move(args.runs_dir, args.move[0], _position(args.move[1]))
    rows = waiting(args.runs_dir)
    if not rows:
        print(f"No runs waiting in {args.runs_dir}.")
    for r in rows:
        print(f"{r['position']:>3}. {r['id']:<40} {r.get('method', ''):<8} {r.get('owner') or ''}")
    return 0


def _position(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FinetunerError(f"--move RUN_ID POSITION: {text!r} is not a position; give a number, 1 = next.") \
            from None


def _train(args) -> int:
    from finetuner.training import distributed
    from finetuner.config import load_config, save_config
    from finetuner.modeling.load import keep_bitsandbytes_quiet
    from finetuner.runs import RunFolder, new_run, open_run
    from finetuner.training.stages import train_run

    keep_bitsandbytes_quiet()  # before peft / trl import it: its CPU warning would fill every run log
    distributed.start()  # under `accelerate launch`: join the other ranks before choosing the run folder
    main = distributed.is_main()
    if args.resume:
        from graders.errors import RunError
        from finetuner.runs import ACTIVE_STATES, refresh_state

        run = open_run(None, args.resume)
        busy = None
        if main:  # one rank checks (refresh_state may write status.json) and tells the others
            status = refresh_state(run)
            # The Runs tab's Resume marks the run queued, then records this very process's pid once it has
            # started: neither is another trainer.
            if status.get("state") in ACTIVE_STATES and status.get("pid") not in (os.getpid(), None):
                busy = (f"Run {run.id} is still training (pid {status.get('pid')}); stop it first with "
                        f"`python -m finetuner stop {run.path}`.")
        busy = distributed.from_main(busy)
        if busy:
            raise RunError(busy)
        if args.set:
            raise FinetunerError("--set cannot change a run being resumed; edit its config.yaml if you must.")
        cfg = load_config(run.config_path)
        _log_to_run(run)
        status = train_run(cfg, run, resume=True)
    else:
        if not args.config:
            raise FinetunerError("Name a config file: python -m finetuner train RUN.yaml (or --resume RUN_DIR).")
        cfg = load_with_overrides(args.config, args.set)
        if args.run_dir:
            run = RunFolder(Path(args.run_dir))
            run.path.mkdir(parents=True, exist_ok=True)
        else:
            # One folder for all ranks: rank 0 makes it (its name has the time) and hands the path over.
            run = RunFolder(distributed.from_main(str(new_run(args.runs_dir, cfg.name).path) if main else None))
        if main and (not run.config_path.exists() or Path(args.config).resolve() != run.config_path.resolve()):
            from finetuner.config import portable_config

            save_config(portable_config(cfg), run.config_path)
        _log_to_run(run)
        if main:
            print(f"Run folder: {run.path}", flush=True)
        status = train_run(cfg, run)
    state = status.get("state")
    if main:
        print(f"Run {run.id}: {state}" + (f" - {status['error']}" if status.get("error") else ""), flush=True)
    return 0 if state in ("finished", "stopped") else 1


def cmd_stop(args) -> int:
    from finetuner.runs import force_stop, open_run, request_stop

    run = open_run(args.runs_dir, args.run)
    if args.force:
        force_stop(run)
        print(f"Run {run.id} killed; its last checkpoint is kept.")
    else:
        request_stop(run)
        print(f"Run {run.id} will stop after the current step and save its adapter.")
    return 0


def cmd_runs(args) -> int:
    from finetuner.runs import list_runs

    rows = list_runs(args.runs_dir)
    if not rows:
        print(f"No runs in {args.runs_dir}.")
    for r in rows:
        step = f"{r.get('stage', '')} {r.get('step', 0)}/{r.get('total', '?')}"
        print(f"{r['id']:<40} {r.get('state', '?'):<9} {r.get('method', ''):<8} {step}")
    return 0


def cmd_explain(args) -> int:
    from finetuner.config import explain, help_for

    if args.field:
        try:
            print(f"{args.field}: {help_for(args.field)}")
        except KeyError:
            raise FinetunerError(f"No config field `{args.field}`. Run `python -m finetuner explain` for the "
                                 f"full list.") from None
    else:
        print(explain(), end="")
    return 0


def cmd_check_data(argv: list[str]) -> int:
    from finetuner.data import main_check_data

    return main_check_data(argv)


def cmd_test_grader(argv: list[str]) -> int:
    from finetuner.evaluation.grader_check import main_test_grader

    return main_test_grader(argv)


def cmd_demo(args) -> int:
    from finetuner.demo.run import run_demo
    from finetuner.modeling.load import keep_bitsandbytes_quiet

    keep_bitsandbytes_quiet()
    if args.agent and args.model != "tiny":
        print(f"demo --agent runs on the built-in tiny-agent model; leave out --model {args.model}.", file=sys.stderr)
        return 2
    return run_demo(runs_dir=args.runs_dir, as_json=args.json, rft_steps=args.rft_steps,
                    model="agent" if args.agent else args.model)


def cmd_bench(args) -> int:
    # The benchmark lives in benchmarks/ beside the engine (it imports the engine and the UI; the engine imports
    # none of it), so this verb runs it as its own process from the project folder.
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "__main__.py").is_file():
        raise FinetunerError(f"The benchmark is not here: {root / 'benchmarks'} is missing. Run it from a checkout "
                             "of the Finetuner project.")
    flags = (["--quick"] if args.quick else []) + (["--out", args.out] if args.out else []) + \
        (["--only", args.only] if args.only else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "benchmarks", *flags], cwd=root, env=env).returncode


def cmd_make_task(args) -> int:
    from finetuner.config import yaml_text
    from finetuner.data import gym_tasks

    if args.list or not args.task:
        for name, what in gym_tasks.TASKS.items():
            print(f"{name:24} {what}")
        return 0
    train, held = gym_tasks.make_files(args.task, args.size, args.difficulty, args.seed, args.out)
    run_yaml = Path(args.out) / "run.yaml"
    run_yaml.write_text(yaml_text(gym_tasks.run_config(args.task, args.difficulty, args.model)), encoding="utf-8")
    print(f"wrote {train}, {held} and {run_yaml}; train with: python -m finetuner train {run_yaml}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetuner",
                                description="Finetuner: SFT, RFT (GRPO with your graders) or SFT then RFT, "
                                            "from one YAML file.")
    sub = p.add_subparsers(dest="verb", required=True)

    t = sub.add_parser("train", help="train a run from a YAML config (or resume one)")
    t.add_argument("config", nargs="?", help="the run's YAML file")
    t.add_argument("--runs-dir", default="runs", help="folder that holds run folders (default: runs)")
    t.add_argument("--run-dir", help="write into this run folder instead of a new one (used by launch)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or failed run from its last "
                                                         "checkpoint")
    t.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a config field, e.g. --set rft.max_steps=20 (see `explain`)")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("stop", help="stop a run at its next step (or kill it with --force)")
    s.add_argument("run", help="run folder, or run id inside --runs-dir")
    s.add_argument("--runs-dir", default="runs")
    s.add_argument("--force", action="store_true", help="kill now without saving")
    s.set_defaults(func=cmd_stop)

    r = sub.add_parser("runs", help="list runs and their state")
    r.add_argument("--runs-dir", default="runs")
    r.set_defaults(func=cmd_runs)

    q = sub.add_parser("queue", help="list the runs waiting their turn; cancel or reorder one")
    q.add_argument("--runs-dir", default="runs")
    q.add_argument("--cancel", metavar="RUN_ID", help="take a waiting run out of the queue (deletes its folder)")
    q.add_argument("--move", nargs=2, metavar=("RUN_ID", "POSITION"), help="put a waiting run at POSITION (1 = next)")
    q.set_defaults(func=cmd_queue)

    e = sub.add_parser("explain", help="print the config reference (or one field's help)")
    e.add_argument("field", nargs="?", help="a dotted field name such as rft.beta")
    e.set_defaults(func=cmd_explain)

    sub.add_parser("check-data", help="check a data file and preview it (see check-data --help)", add_help=False)
    sub.add_parser("test-grader", help="dry-run graders on data before training (see test-grader --help)",
                   add_help=False)

    d = sub.add_parser("demo", help="offline demo: SFT teaches a format, RFT raises accuracy (built-in model)")
    d.add_argument("--runs-dir", default="runs")
    d.add_argument("--json", action="store_true", help="print one JSON object with the results last")
    d.add_argument("--rft-steps", type=int, default=None, help="override the demo's RFT steps")
    d.add_argument("--model", choices=("tiny", "smollm2-135m"), default="tiny",
                   help="tiny: 2-digit sums on the built-in model (~3 min); smollm2-135m: a number plus a digit, on "
                        "SmolLM2-135M-Instruct (longer)")
    d.add_argument("--agent", action="store_true",
                   help="Agent RFT: 2-digit products the built-in tiny-agent model can only do with a calculator tool; "
                        "SFT on a few tool-use demonstrations, then RFT with the tool (~10 min)")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="speed figures: engine vs plain TRL, grader throughput, UI timings")
    b.add_argument("--quick", action="store_true", help="one short run of each (under a minute), for tests")
    b.add_argument("--out", metavar="FILE.json", help="also write the results as one JSON object")
    b.add_argument("--only", metavar="SECTIONS", help="comma-separated: train, graders, ui (the default), rollouts, rl, class (only when named)")
    b.set_defaults(func=cmd_bench)

    m = sub.add_parser("make-task", help="a ready-made verifiable RFT task (reasoning-gym): data + grader + run.yaml")
    m.add_argument("task", nargs="?", help="task name (see --list)")
    m.add_argument("--list", action="store_true", help="print the tasks and what each asks")
    m.add_argument("--size", type=int, default=500, help="training rows (the held-out file gets 10%% more)")
    m.add_argument("--difficulty", choices=("easy", "medium", "hard", "mixed"), default="mixed")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", default="gym-task", help="folder for train.jsonl, eval.jsonl and run.yaml")
    m.add_argument("--model", default="smollm2-135m", help="model in run.yaml (tiny knows only sums)")
    m.set_defaults(func=cmd_make_task)

    cli_runs.add_parsers(sub)  # evaluate, export, chat: the Evaluate and Runs tabs, headless
    from finetuner.lab import cli as lab_cli

    lab_cli.add_parser(sub)  # the Lab: SFT vs RFT vs both
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _offline_defaults()
    try:
        # These verbs own their argument parsing (their modules also serve the UI).
        if argv and argv[0] == "check-data":
            return cmd_check_data(argv[1:])
        if argv and argv[0] == "test-grader":
            return cmd_test_grader(argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except FinetunerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
