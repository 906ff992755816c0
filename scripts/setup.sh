#!/usr/bin/env bash
# Create .venv and install everything Finetuner needs. Safe to run again (it only adds what is missing).
# torch goes in first and pinned: otherwise pip may resolve a different, multi-GB build for a dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -r requirements.txt
if [ "${FINETUNER_BROWSER_TESTS:-1}" = "1" ] && [ -f requirements-dev.txt ]; then
  python -m pip install -q -r requirements-dev.txt
fi
python -c "import torch, transformers, trl, peft; print('installed: torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__, '| peft', peft.__version__)"
