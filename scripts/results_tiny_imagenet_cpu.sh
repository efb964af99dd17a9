#!/usr/bin/env bash
# Tiny ImageNet on the CPU (docs/results.md): Conv4 at 64 px (native), real ImageNet photographs, the package's
# fixed 128 / 32 / 40 class split. Every learner is trained on 5-way 1-shot episodes with 5 queries per class (or
# pre-trained on batches of 64 training images) and tested on 10,000 5-way 1-shot 15-query episodes; each trained
# run is then re-tested 5-way 5-shot 15-query into RUN_5shot/ (the same best.pt; a run record of its own).
#
#   python ../shared/data/materialize.py .data --only tiny-imagenet      # the images, once
#   scripts/results_tiny_imagenet_cpu.sh protonet                        # ProtoNet: baseline and SLA, SEEDS="0 1 2"
#   scripts/results_tiny_imagenet_cpu.sh pretrain                        # pre-training: plain and SLA, SEEDS="0 1"
#   scripts/results_tiny_imagenet_cpu.sh others                          # R2D2, MetaOptNet-SVM, first-order MAML, seed 0
#
# STEPS (default 300 optimiser steps of one episode; lr halved at half-way), EPOCHS (pre-training, default 1),
# DATA (default .data), RUNS (default runs/tiny_cpu), TEST_EPISODES (default 0: the learner's, 10,000 or 600 for
# MAML), THREADS (torch threads per run, default 1: two parts run side by side on 2 cores). Every run resumes (--resume) and a finished one is skipped,
# so the script can be stopped and started again; the report is regenerated at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true
what=${1:?usage: $0 protonet|pretrain|others}
data=${DATA:-.data}
runs=${RUNS:-runs/tiny_cpu}
steps=${STEPS:-300}
epochs=${EPOCHS:-1}
py=${PYTHON:-.venv/bin/python}
common=(--dataset tiny-imagenet --data-root "$data" --backbone conv4 --ways 5 --shots 1 --queries 5 --test-ways 5
        --test-shots 1 --test-queries 15 --val-episodes 50 --test-episodes "${TEST_EPISODES:-0}"
        --num-threads "${THREADS:-1}" --distance sqeuclidean --encode joint --resume)

finished() { [ -f "$1/metrics.json" ] && grep -q '"test/acc"' "$1/metrics.json" && ! grep -q '"finished": false' "$1/metrics.json"; }

one() {  # one run: train + test 5w1s, then the 5w5s re-test
  local out=$1; shift
  if ! finished "$out"; then
    "$py" -m episodes.train "${common[@]}" "$@" --out "$out"
  fi
  local five="${out}_5shot"
  if ! finished "$five"; then
    mkdir -p "$five"
    cp "$out/recipe.json" "$out/config.yaml" "$out/best.pt" "$five/"
    "$py" -m episodes.train --config "$out/config.yaml" --test-only --test-shots 5 --out "$five" \
      --test-episodes "${TEST_EPISODES:-0}"
  fi
}

episodic=(--train-episodes "$steps" --lr 1e-3 --lr-milestones $((steps / 2)) --lr-gamma 0.5 --val-every $((steps / 2)))
case "$what" in
  protonet)
    for seed in ${SEEDS:-0 1 2}; do
      for tf in none rotation; do
        one "$runs/protonet_${tf}_s$seed" --learner protonet --transform "$tf" "${episodic[@]}" --seed "$seed"
      done
    done ;;
  pretrain)
    for seed in ${SEEDS:-0 1}; do
      for tf in none rotation; do
        one "$runs/pretrain_${tf}_s$seed" --learner pretrain --transform "$tf" --pretrain-epochs "$epochs" \
          --batch-size 64 --val-every-epochs 1 --optimizer sgd --lr 0.05 --weight-decay 5e-4 --test-head ncm \
          --seed "$seed"
      done
    done ;;
  others)
    for seed in ${SEEDS:-0}; do
      for learner in ${LEARNERS:-r2d2 svm fomaml}; do
        for tf in none rotation; do
          extra=()
          [ "$learner" = fomaml ] && extra=(--inner-lr 0.01 --inner-steps 1 --test-inner-steps 3)
          one "$runs/${learner}_${tf}_s$seed" --learner "$learner" --transform "$tf" "${episodic[@]}" \
            "${extra[@]}" --seed "$seed"
        done
      done
    done ;;
  *) echo "unknown part $what: protonet, pretrain or others" >&2; exit 2 ;;
esac
"$py" -m fewshot_sla.report "$runs" --out "$runs/report"
