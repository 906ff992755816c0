"""The Lab: SFT vs RFT vs SFT then RFT on the same data and budget, over seeds and data sizes, measured.

    spec = load_spec("examples/lab/demo.yaml")          # spec.py: methods, seeds, sizes, budget, keep set
    lab = create_lab(spec, "runs")                      # arms.py: one ordinary run per method x size x seed
    result = run_lab(lab, "runs")                       # runner.py: through the run queue; results.py; keep.py
    # runs/_lab/<id>/: lab.json, results.json, report.md + charts/, report.html (report.py, reading.py)

`python -m finetuner lab SPEC.yaml | --preset demo [--json]` runs one headless (cli.py); the app's Lab tab
creates one and starts this same command as a child process.
"""

from finetuner.lab.runner import (  # noqa: F401
    LabFolder, collect, create_lab, lab_status, list_labs, open_lab, run_lab, start_lab_process)
from finetuner.lab.spec import LabSpec, load_spec, preset, preset_names, spec_from_dict  # noqa: F401
