#!/usr/bin/env bash
# Omniglot rows for the other learners (docs/results.md): MAML (second order), R2D2 and
# MetaOptNet-SVM on Conv4, each without SLA and with rotation SLA (M = 4), on one CPU-sized budget: 1000 steps
# of 2 episodes of 5-way 1-shot with 5 queries per class, Adam 1e-3 halved at step 500, validated every 250
# steps on 100 episodes, tested 5-way 1-shot with 15 queries (MAML 600 episodes, SVM 2000, R2D2 10000).
# Needs the real data unpacked into .data (python ../shared/data/materialize.py .data)
# and qpth for the SVM. Seeds: SEEDS="0 1" scripts/results_omniglot_learners_cpu.sh. Every run resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=offline WANDB_SILENT=true
runs=${RUNS:-runs/omni_learners}
declare -A episodes=([maml]=600 [svm]=2000 [r2d2]=10000)
for seed in ${SEEDS:-0}; do
  for learner in ${LEARNERS:-r2d2 maml svm}; do
    for transform in none rotation; do
      .venv/bin/sla-fewshot --dataset omniglot --data-root .data --learner "$learner" --backbone conv4 \
        --ways 5 --shots 1 --queries 5 --test-ways 5 --test-shots 1 --test-queries 15 --transform "$transform" \
        --train-episodes 1000 --meta-batch 2 --lr 1e-3 --lr-step 500 --lr-gamma 0.5 --val-every 250 \
        --val-episodes 100 --test-episodes "${episodes[$learner]}" --seed "$seed" --num-threads 1 \
        --distance sqeuclidean --encode joint --resume \
        --out "$runs/${learner}_${transform}_s$seed"
    done
  done
done
.venv/bin/sla-report "$runs"/*_s* --out "$runs/report"
