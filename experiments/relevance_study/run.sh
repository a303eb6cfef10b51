#!/usr/bin/env bash
# The relevance leaderboard: every method on the given checkpoints, `deco.explain mode=score`, one run at a time.
#   A: SHAPES shapes probes + DISTRACTORS distractor probes + SHAPES caption probes (seed 1000): box energy /
#      pointing / distractor energy / top-query margin / TAM's Obj-/Func-IoU on captions / the causal
#      mean-ablation test (12.5 % of the visual tokens); no perturbation curves;
#   B (PERTURB=1): SHAPES shapes probes with the deletion (MoRF / LeRF) and insertion curves.
# Each checkpoint is NAME=PATH with NAME = <projector>-s<seed> (the leaderboard's CI is over seeds):
#   RUNS="avgpool64-s42=a.ckpt qformer64-s42=b.ckpt" OUT=outputs/relevance_study [SHAPES=8 DISTRACTORS=32] \
#       bash experiments/relevance_study/run.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/relevance_study}
METHODS=${METHODS:-[rgae,rawattn,gradcam,relatt,tam,perturb,attnlrp]}
for run in $RUNS; do
    name=${run%%=*} ckpt=${run#*=}
    [ -f "$OUT/$name/A/scores.csv" ] && continue  # finished earlier
    "$PY" -m deco.explain mode=score ckpt="$ckpt" score.methods="$METHODS" score.probes=[shapes,distractors,captions] \
        score.num_samples=${SHAPES:-8} score.num_distractors=${DISTRACTORS:-32} score.causal=0.125 \
        score.perturbation=false progress=false device=cpu hydra.run.dir="$OUT/$name/A"
    if [ "${PERTURB:-0}" = 1 ]; then
        "$PY" -m deco.explain mode=score ckpt="$ckpt" score.methods="$METHODS" score.probes=[shapes] \
            score.num_samples=${SHAPES:-8} score.causal=0 score.perturbation=true progress=false device=cpu \
            hydra.run.dir="$OUT/$name/B"
    fi
done
