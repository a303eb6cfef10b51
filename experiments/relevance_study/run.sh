#!/usr/bin/env bash
# The relevance leaderboard: every method on the given checkpoints, two passes of `deco.explain mode=score`.
#   A: 16 shapes probes + 64 distractor probes (seed 1000), box energy / pointing / distractor energy / top-query
#      margin / causal mean-ablation test (12.5 % of the visual tokens), no perturbation curves;
#   B: 16 shapes probes with the deletion (MoRF / LeRF) and insertion curves.
#   CKPTS="a.ckpt b.ckpt" OUT=outputs/relevance_study [SHAPES=16 DISTRACTORS=64] bash experiments/relevance_study/run.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/relevance_study}
METHODS=${METHODS:-[rgae,rawattn,gradcam,relatt,tam,perturb]}
for ckpt in $CKPTS; do
    name=$(basename "$(dirname "$(dirname "$ckpt")")")
    "$PY" -m deco.explain mode=score ckpt="$ckpt" score.methods="$METHODS" score.num_samples=${SHAPES:-16} \
        score.num_distractors=${DISTRACTORS:-64} score.causal=0.125 score.perturbation=false progress=false device=cpu \
        hydra.run.dir="$OUT/$name/A" &
    "$PY" -m deco.explain mode=score ckpt="$ckpt" score.methods="$METHODS" score.probes=[shapes] \
        score.num_samples=${SHAPES:-16} score.causal=0 score.perturbation=true progress=false device=cpu \
        hydra.run.dir="$OUT/$name/B" &
done
wait
