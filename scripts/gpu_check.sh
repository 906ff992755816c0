#!/usr/bin/env bash
# One prepared GPU check: QLoRA SFT / RFT / SFT->RFT on the built-in model, then the `gpu` tests.
# Usage on a CUDA machine: bash scripts/gpu_check.sh [OUT_DIR]. Exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_check_out}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, transformers, trl, peft, bitsandbytes as b; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'bnb', b.__version__)"
rc=0
"$PY" scripts/gpu_check.py --out "$out" || rc=1
"$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py || rc=1
echo "gpu_check.sh: exit $rc"
exit $rc
