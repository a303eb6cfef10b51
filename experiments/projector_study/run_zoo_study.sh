#!/usr/bin/env bash
# The projector study on the pretrained zoo (README.md, "On the zoo"): each projector finetuned from
# model=tiny with the default recipe (same scenes, same order per seed), then the four shapes benchmarks
# (200 held-out questions each) and relevance box scores. Two lanes in parallel, one thread each.
#   bash experiments/projector_study/run_zoo_study.sh                 # RUNS / SEEDS / STEPS / OUT / CURVE override
#   EXTRA="data.train.negatives=adversarial" adds overrides to every training run
#   python experiments/projector_study/zoo_table.py multirun/zoo_study > experiments/projector_study/zoo_results.md
set -euo pipefail
OUT=${OUT:-multirun/zoo_study}
STEPS=${STEPS:-400}
EXTRA=${EXTRA:-}
SEEDS=${SEEDS:-"42"}
RUNS=${RUNS:-"avgpool:64 qformer:64 avgpool:144 qformer:144 pixelshuffle:64 cabstractor:64"}
LANES=${LANES:-3}
PTFT=${PTFT:-0}  # 1: LLaVA's two stages, experiment=shapes_pretrain (projector only) then experiment=shapes_finetune (runs ptft-*)
# JOBS="avgpool:64:42 ptft-qformer:64:1 ...": an explicit list (projector:tokens:seed, ptft- = PTFT) instead of SEEDS x RUNS
JOBS=${JOBS:-}
CURVE=${CURVE:-0}  # N > 0: a checkpoint every N steps, scored on existence, attribute and grounding (steps to 80 % / 50 %)
PY=${PY:-python}
export OMP_NUM_THREADS=1

one() {  # projector:query_num seed
  local proj=${1%%:*} q=${1##*:} seed=$2 ptft=$PTFT
  [ "${proj#ptft-}" != "$proj" ] && { proj=${proj#ptft-}; ptft=1; }
  local dir=$OUT/${proj}-q${q}-s${seed} stage=()
  if [ "$ptft" = 1 ]; then
    dir=$OUT/ptft-${proj}-q${q}-s${seed}
    [ -f "$dir-pretrain/done" ] || { $PY -m deco.train experiment=shapes_pretrain projector="$proj" query_num="$q" \
      seed="$seed" logger=csv threads=1 hydra.run.dir="$dir-pretrain" > "$dir-pretrain.log" 2>&1 && touch "$dir-pretrain/done"; }
    stage=(experiment=shapes_finetune init_from="$dir-pretrain/checkpoints/last.ckpt")
  fi
  if [ ! -f "$dir/checkpoints/last.ckpt" ] || [ ! -f "$dir/done" ]; then
    local curve=()
    [ "$CURVE" -gt 0 ] && curve=(+callbacks.curve._target_=lightning.pytorch.callbacks.ModelCheckpoint
      +callbacks.curve.dirpath="$dir/checkpoints/curve" +callbacks.curve.every_n_train_steps="$CURVE"
      +callbacks.curve.save_top_k=-1 "+callbacks.curve.filename='step{step}'" +callbacks.curve.auto_insert_metric_name=false
      +callbacks.curve.mode=max)  # mode (unused without a monitor) keeps Lightning's state key apart from last_checkpoint's
    $PY -m deco.train "${stage[@]}" projector="$proj" query_num="$q" seed="$seed" trainer.max_steps="$STEPS" \
      data.train.num_samples=$((STEPS * 32)) logger=csv threads=1 hydra.run.dir="$dir" "${curve[@]}" $EXTRA > "$dir.log" 2>&1
    touch "$dir/done"
  fi
  for b in shapes_existence shapes_attribute shapes_grounding shapes_caption; do
    [ -f "$dir/eval/$b/metrics.json" ] || $PY -m deco.evaluate ckpt="$dir/checkpoints/last.ckpt" benchmark="$b" \
      threads=1 progress=false hydra.run.dir="$dir/eval/$b" >> "$dir.log" 2>&1
  done
  for ckpt in "$dir"/checkpoints/curve/step*.ckpt; do
    [ -f "$ckpt" ] || continue
    local step; step=$(basename "$ckpt" .ckpt)
    [ "$step" = "step$STEPS" ] && continue  # the last checkpoint, evaluated above
    for b in shapes_existence shapes_attribute shapes_grounding; do
      [ -f "$dir/curve/$step/$b/metrics.json" ] || $PY -m deco.evaluate ckpt="$ckpt" benchmark="$b" threads=1 \
        progress=false hydra.run.dir="$dir/curve/$step/$b" >> "$dir.log" 2>&1
    done
  done
  [ -f "$dir/score/summary.json" ] || $PY -m deco.explain ckpt="$dir/checkpoints/last.ckpt" mode=score \
    threads=1 hydra.run.dir="$dir/score" >> "$dir.log" 2>&1 || echo "score failed for $dir (see $dir.log)"
}

mkdir -p "$OUT"
jobs_list=()
for seed in $SEEDS; do for run in $RUNS; do jobs_list+=("$run $seed"); done; done
[ -n "$JOBS" ] && { jobs_list=(); for job in $JOBS; do jobs_list+=("${job%:*} ${job##*:}"); done; }
for job in "${jobs_list[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$LANES" ]; do sleep 5; done
  one $job &
done
wait
echo "study runs in $OUT"
