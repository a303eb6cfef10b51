#!/usr/bin/env bash
# The README's comparison figure, made with the project's own commands on the embedded default:
# train linear / qformer / avgpool on the shapes world (experiment=shapes_existence, STEPS steps of BATCH
# scenes each; the default 60 x 16 is a few minutes on 2 CPU cores, the linear projector's 576 tokens
# being the slow one, and shows models that have barely started to look),
# explain the same probe with all three checkpoints in one call, copy the comparison figure to docs/img/.
#   make figure                 # = bash experiments/readme_figure/make.sh
#   STEPS=800 BATCH=32 make figure   # the full shapes_existence budget (an hour or more on 2 CPU cores)
set -euo pipefail
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-60}
BATCH=${BATCH:-16}
OUT=${OUT:-outputs/readme_figure}
PROBE=experiments/projector_study/probe.png

"$PY" -m deco.train -m experiment=shapes_existence projector=linear,qformer,avgpool \
    trainer.max_steps="$STEPS" data.batch_size="$BATCH" logger=none hydra.sweep.dir="$OUT/runs"
runs="$OUT/runs"
ckpts="[$runs/0-linear-q64/checkpoints/last.ckpt,$runs/1-qformer-q64/checkpoints/last.ckpt,$runs/2-avgpool-q64/checkpoints/last.ckpt]"
"$PY" -m deco.explain "ckpt=$ckpts" image="$PROBE" question="What colour is the square?" text="Red." \
    hydra.run.dir="$OUT/explain"
cp "$OUT/explain/comparison-rgae-Red.png" docs/img/comparison.png
echo "figure: docs/img/comparison.png (from $OUT)"
