#!/usr/bin/env bash
# One prepared GPU run (README.md, "GPU"): gpu.py at LLaVA-1.5-7B dimensions, every part, under 9 minutes.
# Writes gpu_device.txt (device, versions), gpu_results.json and gpu_log.txt to $OUT (the device tool's
# folder) or experiments/perf/. Carried wheels in .whl/ (hydra-core, omegaconf, antlr4: the device image
# lacks them) are installed first. Extra arguments go to gpu.py (e.g. --parts steps).
set -euo pipefail
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
out="${OUT:-experiments/perf}"
mkdir -p "$out"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python3 -c "import torch, transformers, lightning; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"; } | tee "$out/gpu_device.txt"
timeout 540 python3 -m experiments.perf.gpu --out "$out/gpu_results.json" "$@" 2>&1 | tee "$out/gpu_log.txt"
