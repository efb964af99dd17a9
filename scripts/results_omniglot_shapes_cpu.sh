#!/usr/bin/env bash
# Omniglot against the standard baseline (docs/results.md): ProtoNet baseline, baseline + class rotations and
# rotation SLA, each trained as in scripts/results_omniglot_cpu.sh (2000 20-way 1-shot episodes, seed 0), then
# tested in four episode shapes on 10,000 episodes each (--test-only, embed once); sla-report makes the table.
# Seeds: SEEDS="0 1 2" scripts/results_omniglot_shapes_cpu.sh (seed 0's folders keep their names, seed s > 0
# adds _s<s>; sla-report groups the runs that differ only by seed). Every run resumes.
# Needs the real data unpacked into .data: python ../shared/data/materialize.py .data
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=offline WANDB_SILENT=true
runs=runs/omni_cpu_engine
for seed in ${SEEDS:-0}; do
for model in "none" "none --class-rotations" "rotation"; do
  set -- $model
  name=protonet_$1${2:+_classrot}
  [[ $seed != 0 ]] && name=${name}_s$seed
  .venv/bin/sla-fewshot --dataset omniglot --data-root .data --learner protonet --backbone conv4 \
    --ways 20 --shots 1 --queries 5 --test-ways 5 --test-shots 1 --test-queries 15 --transform "$@" \
    --train-episodes 2000 --lr 1e-3 --lr-step 1000 --lr-gamma 0.5 --val-every 500 --val-episodes 100 \
    --test-episodes 600 --seed $seed --num-threads 1 --distance sqeuclidean --encode joint --resume \
    --out $runs/$name
  for shape in "5 1" "5 5" "20 1" "20 5"; do
    set -- $shape
    out=$runs/test/${name}_${1}w${2}s
    mkdir -p "$out" && cp $runs/$name/{best.pt,checkpoint.pt,config.yaml} "$out"/
    .venv/bin/sla-fewshot --config $runs/$name/config.yaml --out "$out" --test-only --test-ways "$1" --test-shots "$2" \
      --test-queries 15 --test-episodes 10000 --num-threads 1 --wandb disabled
  done
done
done
.venv/bin/sla-report $runs/test --out $runs/report
