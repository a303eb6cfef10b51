#!/usr/bin/env bash
# The study's training as recorded: 5 projectors x 3 seeds (seed-major), then maxpool-144 as the
# extra. One process per (projector, seed) - pretrain then finetune - so each picks up the code
# as it is when it starts; finished runs (runs/sweep_status.jsonl) are skipped, so rerunning
# resumes. One thread per process: on a shared 2-core machine OpenMP's default (one thread per
# core) spends most of its time waiting on the other thread (measured: 15 s/step vs 2 s/step).
set -uo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
python=${PYTHON:-.venv/bin/python}
status=0
for seed in 1 2 3; do
  for projector in qformer:144 avgpool:144 qformer:64 avgpool:64 linear:576; do
    $python experiments/projector_study/sweep.py --seeds "$seed" --projectors "$projector" "$@" || status=1
  done
done
for seed in 1 2 3; do
  $python experiments/projector_study/sweep.py --seeds "$seed" --projectors maxpool:144 "$@" || status=1
done
exit $status
