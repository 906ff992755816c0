"""`python -m finetuner lab SPEC.yaml | --preset NAME [--runs-dir D] [--json]`, and `--lab-dir` to run a Lab
the app has created. Prints each arm's progress; with `--json` the last line is the headline object:
{"size", "arms": {method: {"score", "spread", "seconds", "keep_score", ...}}, "sweep", "keep_before", ...}."""

from __future__ import annotations

import json
import sys
import time


def add_parser(sub) -> None:
    lab = sub.add_parser("lab", help="compare SFT, RFT and SFT then RFT on the same data and budget (the Lab)")
    lab.add_argument("spec", nargs="?", help="a Lab spec YAML (see examples/lab/demo.yaml)")
    lab.add_argument("--preset", help="a built-in spec instead: demo (the arithmetic task, about 15 minutes on 2 "
                                      "CPU cores) or small (a minute)")
    lab.add_argument("--runs-dir", default="runs", help="folder for the arms' runs and the Lab (default: runs)")
    lab.add_argument("--lab-dir", help="run a Lab already created in this folder (what the app starts)")
    lab.add_argument("--owner", help="record this user as the owner of the arms (the app passes it)")
    lab.add_argument("--json", action="store_true", help="print the headline as one JSON object on the last line")
    lab.set_defaults(func=cmd_lab)


def cmd_lab(args) -> int:
    from graders.errors import FinetunerError
    from finetuner.lab import LabFolder, create_lab, load_spec, preset, run_lab
    from finetuner.lab.report import table_rows

    if args.lab_dir:
        lab = LabFolder(args.lab_dir)
        if not lab.read():
            raise FinetunerError(f"{args.lab_dir} is not a Lab folder (no lab.json).")
    else:
        if bool(args.spec) == bool(args.preset):
            raise FinetunerError("Give a Lab spec file or --preset NAME (one of them): python -m finetuner lab "
                                 "--preset demo")
        spec = preset(args.preset) if args.preset else load_spec(args.spec)
        lab = create_lab(spec, args.runs_dir, owner=args.owner)
    status = lab.read()
    started = time.time()
    print(f"Lab {lab.path}: {len(status['arms'])} arms ({', '.join(status['spec']['methods'])}; seeds "
          f"{status['spec']['seeds']}; sizes {status['spec']['sizes'] or 'all'}), one at a time", flush=True)
    result = run_lab(lab, args.runs_dir, say=lambda line: print(line, flush=True))
    if lab.read().get("state") != "finished":
        print(f"The Lab ended {lab.read().get('state')}.")
        return 1
    rows = table_rows(result)
    if rows:
        keys = list(rows[0])
        print("\n" + "  ".join(keys))
        for r in rows:
            print("  ".join(str(r[k]) for k in keys))
    print(f"\nReport: {lab.path / 'report.html'} (and report.md). Total {time.time() - started:.0f} s.")
    if args.json:
        print(json.dumps({**result["summary"], "seconds": round(time.time() - started, 1), "lab_dir": str(lab.path)}))
    sys.stdout.flush()
    return 0
