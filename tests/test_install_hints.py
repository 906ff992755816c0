"""Install advice names only what we own: `finetuner` on PyPI is an unrelated package, so nothing may tell a user
to `pip install finetuner`; the bundle README says how to install from the project instead."""

import re
import subprocess
import sys
from pathlib import Path

from finetuner.runs import export

ROOT = Path(__file__).resolve().parents[1]
# `pip install finetuner`, `pip install -U finetuner`, `pip3 install finetuner[all]`, `uv pip install finetuner`...
PYPI_INSTALL = re.compile(r"pip3?\s+install\s+(?:-\S+\s+)*finetuner(?![\w/.-])", re.I)
WHERE = ("README.md", "app.py", "pyproject.toml", "docs", "examples", "finetuner", "scripts", "graders", "benchmarks")


def test_the_pattern_finds_what_it_must():
    assert PYPI_INSTALL.search("pip install finetuner   # or: ...")
    assert PYPI_INSTALL.search("pip install -U finetuner")
    assert not PYPI_INSTALL.search("pip install finetuner-extras") and not PYPI_INSTALL.search("pip install ./finetuner/")
    assert not PYPI_INSTALL.search("pip install bitsandbytes")


def test_no_file_tells_users_to_install_finetuner_from_pypi():
    found = []
    for top in WHERE:
        path = ROOT / top
        for f in ([path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []):
            if f.is_file() and f.suffix in (".md", ".py", ".sh", ".yaml", ".yml", ".toml", ".txt", ".json", ".cfg"):
                for n, line in enumerate(f.read_text(encoding="utf-8", errors="ignore").splitlines(), 1):
                    if PYPI_INSTALL.search(line):
                        found.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


class _Run:
    id = "20250101-000000-demo"


def test_bundle_readme_installs_from_the_project_with_commands_that_exist():
    readme = export._readme(_Run(), {"method": "sft+rft", "model": {"name": "tiny"}}, [], False)
    assert not PYPI_INSTALL.search(readme)
    commands = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert commands[0].startswith("cd path/to/finetuner")
    assert commands[1].startswith("bash scripts/setup.sh") and (ROOT / "scripts" / "setup.sh").is_file()
    train = commands[2].split()
    assert train[:4] == [".venv/bin/python", "-m", "finetuner", "train"]
    assert train[4] == f"{export.BUNDLE_PLACEHOLDER}/run.yaml" and export.BUNDLE_PLACEHOLDER in readme
    # run from the project folder, as the README says, the verb exists and takes a config file
    done = subprocess.run([sys.executable, "-m", "finetuner", "train", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "config" in done.stdout
    assert f".venv/bin/accelerate launch -m finetuner train {export.BUNDLE_PLACEHOLDER}/run.yaml" in readme
