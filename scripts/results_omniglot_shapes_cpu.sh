#!/usr/bin/env bash
# Omniglot against the standard baseline (docs/results.md): ProtoNet baseline, baseline + class rotations and
# rotation SLA, each trained as in scripts/results_omniglot_cpu.sh (2000 20-way 1-shot episodes, seed 0), then
# tested in four episode shapes on 10,000 episodes each (--test-only, embed once); sla-report makes the table.
# Needs the real data unpacked into .data: python ../shared/data/materialize.py .data
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=offline WANDB_SILENT=true
runs=runs/omni_cpu_engine
for model in "none" "none --class-rotations" "rotation"; do
  set -- $model
  name=protonet_$1${2:+_classrot}
  .venv/bin/sla-fewshot --dataset omniglot --data-root .data --learner protonet --backbone conv4 \
    --ways 20 --shots 1 --queries 5 --test-ways 5 --test-shots 1 --test-queries 15 --transform "$@" \
    --train-episodes 2000 --lr 1e-3 --lr-step 1000 --lr-gamma 0.5 --val-every 500 --val-episodes 100 \
    --test-episodes 600 --seed 0 --num-threads 1 --resume --out $runs/$name
  for shape in "5 1" "5 5" "20 1" "20 5"; do
    set -- $shape
    out=$runs/test/${name}_${1}w${2}s
    mkdir -p "$out" && cp $runs/$name/{best.pt,checkpoint.pt,config.yaml} "$out"/
    .venv/bin/sla-fewshot --config $runs/$name/config.yaml --out "$out" --test-only --test-ways "$1" --test-shots "$2" \
      --test-queries 15 --test-episodes 10000 --num-threads 1 --wandb disabled
  done
done
.venv/bin/sla-report $runs/test --out $runs/report
