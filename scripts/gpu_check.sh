#!/usr/bin/env bash
# One prepared GPU check: QLoRA SFT / RFT / SFT->RFT on the built-in model (peak memory against the estimate,
# steps per second), then the `gpu` tests, then the memory-estimate calibration on real shapes (GPU_CALIBRATE).
# Usage on a CUDA machine: bash scripts/gpu_check.sh [OUT_DIR]. Exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_check_out}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
# On a bare GPU machine the pinned trl / bitsandbytes / transformers / peft / datasets come as carried wheels
# (.whl/, see /work/.library/device/README.md); a machine that has them installed needs no .whl folder.
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check.sh: installing the carried wheels failed"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, transformers, trl, peft, bitsandbytes as b; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'bnb', b.__version__)"
rc=0
"$PY" scripts/gpu_check.py --out "$out" || rc=1
"$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py || rc=1
# Memory-estimate calibration on random-weight models of real shapes (scripts/gpu_calibrate.py, docs/gpu/).
# GPU_CALIBRATE=quick (default: Qwen2.5-0.5B + Llama-3.2-1B, about 3 min on an H200), full (all six shapes,
# about 10 min: run it on its own, split with --models if a command is capped at 10 min), or off.
case "${GPU_CALIBRATE:-quick}" in
  off) ;;
  full) "$PY" scripts/gpu_calibrate.py --out "$out/calibration" || rc=1 ;;
  *) "$PY" scripts/gpu_calibrate.py --quick --out "$out/calibration" || rc=1 ;;
esac
echo "gpu_check.sh: exit $rc"
exit $rc
