#!/usr/bin/env bash
# The arena on one lent GPU (the device tool): many one-thread jobs side by side on the same card.
#
#   bash experiments/arena/gpu_device.sh tune  [run.py args]   # the tuning budget, then select -> configs/arena
#   bash experiments/arena/gpu_device.sh arena [run.py args]   # the arena at the configs' settings, then the table
#
# Run dirs (checkpoints) stay on the device in $RUNS; what comes back under $OUT is small: every job's metrics
# and logs (no checkpoints) in $OUT/runs, the chosen configs (tune) or table.md (arena). A stop at the time
# limit keeps every finished job; a second call on the same warm machine resumes in $RUNS (run.py skips
# what is done).
# LANES (default 12), DEVICE_EXTRA (default: `trainer=gpu trainer.precision=32-true`, fp32 as on CPU) and
# LIMIT_S (default 480, the run's share of one 10-minute call) can be set; carried wheels in .whl/ are
# installed first, as experiments/perf/gpu_device.sh does.
set -euo pipefail
mode="${1:?usage: gpu_device.sh tune|arena [run.py args]}"; shift
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
out="${OUT:-multirun/arena_device}"; runs="${RUNS:-/tmp/arena_runs}/$mode"
read -r -a device_extra <<< "${DEVICE_EXTRA:-trainer=gpu trainer.precision=32-true}"
mkdir -p "$out/runs" "$runs"; back="$(cd "$out/runs" && pwd)"
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"; } > "$out/device.txt"
tune=(); [ "$mode" = tune ] && tune=(--tune)
timeout "${LIMIT_S:-480}" python3 -m experiments.arena.run --out "$runs" "${tune[@]}" --lanes "${LANES:-12}" \
  --cache /tmp/arena_tower_features --extra model=tiny_shuffled "${device_extra[@]}" "$@" > "$out/run.txt" 2>&1 \
  || echo "run.py stopped (exit $?): finished jobs are kept" >> "$out/run.txt"
# metrics and logs only: a checkpoint is ~9 MB a run
(cd "$runs" && find . \( -name metrics.json -o -name metrics.jsonl -o -name hparams.yaml -o -name done \
  -o -name '*.log' \) -print0 | xargs -0 -r cp --parents -t "$back" 2>/dev/null) || true
if [ "$mode" = tune ]; then
  python3 -m experiments.arena.select "$runs" --table > "$out/select.txt"
  mkdir -p "$out/configs" && cp configs/arena/*.yaml "$out/configs/"
else
  python3 -m experiments.arena.table "$runs" > "$out/table.md"
fi
