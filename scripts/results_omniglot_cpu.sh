#!/usr/bin/env bash
# Omniglot CPU results (docs/results.md): Conv4 ProtoNet, trained on 20-way 1-shot episodes (5 queries),
# tested 5-way 1-shot and 20-way 1-shot (600 episodes, 15 queries); baseline vs rotation SLA.
# Needs the real data unpacked into .data: python ../shared/data/materialize.py .data
set -x
cd "$(dirname "$0")/.."
export WANDB_MODE=offline WANDB_SILENT=true
for tf in none rotation; do
  .venv/bin/python -m episodes.train --dataset omniglot --data-root .data --learner protonet --backbone conv4 \
    --ways 20 --shots 1 --queries 5 --test-ways 5 --test-shots 1 --test-queries 15 --transform $tf \
    --train-episodes 2000 --lr 1e-3 --lr-step 1000 --lr-gamma 0.5 --val-every 500 --val-episodes 100 \
    --test-episodes 600 --seed 0 --num-threads 1 --distance sqeuclidean --encode joint \
    --out runs/omni_cpu/protonet_$tf
  rm -rf runs/omni_cpu/protonet_${tf}_test20w && cp -r runs/omni_cpu/protonet_$tf runs/omni_cpu/protonet_${tf}_test20w
  rm -rf runs/omni_cpu/protonet_${tf}_test20w/wandb
  .venv/bin/python -m episodes.train --config runs/omni_cpu/protonet_$tf/config.yaml --resume --test-ways 20 \
    --out runs/omni_cpu/protonet_${tf}_test20w
done
