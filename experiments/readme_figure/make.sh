#!/usr/bin/env bash
# The README's comparison figure, made with the project's own commands on the embedded default (the zoo):
# finetune qformer / avgpool / pixelshuffle at 64 tokens with the default recipe (STEPS steps of 32 scenes;
# 400 = `make train`'s budget, ~10 min per projector on 2 CPU cores), explain the same probe with the three
# checkpoints in one call, copy the comparison figure to docs/img/. STUDY=<dir> reuses the checkpoints of
# experiments/projector_study/run_zoo_study.sh instead of training (how docs/img/comparison.png was made).
#   make figure                                   # = bash experiments/readme_figure/make.sh
#   STUDY=multirun/zoo_study make figure
#   STUDY=multirun/zoo_study RUNS="qformer-q64 avgpool-q64 linear-q576" make figure   # other seed-42 study runs
set -euo pipefail
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-400}
OUT=${OUT:-outputs/readme_figure}
PROBE=experiments/projector_study/probe.png

if [ -n "${STUDY:-}" ]; then
    ckpts=""
    for run in ${RUNS:-qformer-q64 avgpool-q64 pixelshuffle-q64}; do ckpts="$ckpts,$STUDY/$run-s42/checkpoints/last.ckpt"; done
    ckpts="[${ckpts#,}]"
else
    "$PY" -m deco.train -m projector=qformer,avgpool,pixelshuffle query_num=64 trainer.max_steps="$STEPS" \
        data.train.num_samples=$((STEPS * 32)) logger=none hydra.sweep.dir="$OUT/runs"
    runs="$OUT/runs"
    ckpts="[$runs/0-qformer-q64/checkpoints/last.ckpt,$runs/1-avgpool-q64/checkpoints/last.ckpt,$runs/2-pixelshuffle-q64/checkpoints/last.ckpt]"
fi
"$PY" -m deco.explain "ckpt=$ckpts" image="$PROBE" question="What colour is the square?" text="Red." \
    hydra.run.dir="$OUT/explain"
cp "$OUT/explain/comparison-rgae-Red.png" docs/img/comparison.png
echo "figure: docs/img/comparison.png (from $OUT)"
