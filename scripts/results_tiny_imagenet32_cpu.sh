#!/usr/bin/env bash
# Tiny ImageNet at 32 px on the CPU (docs/results.md, "Tiny ImageNet at 32 px: a budget where the baseline
# plateaus"): Conv4 on real ImageNet photographs resized to 32 px (the size of CIFAR-FS and FC100, the SLA paper's
# 32 px few-shot benchmarks), the package's fixed 128 / 32 / 40 class split. Episodic learners train on 6,000
# 5-way 1-shot 5-query episodes (Adam 1e-3, halved at 2,000 and 4,000), validated every 500 steps on 200 val
# episodes (best checkpoint); pre-training runs 20 epochs (validated every 2 with the NCM head; tested with the NCM and
# the logistic-regression heads). Each trained run is tested on 10,000 5-way 1-shot
# 15-query episodes, then re-tested 5-way 5-shot into RUN_5shot/ (the same best.pt, a run record of its own).
#
#   python ../shared/data/materialize.py .data --only tiny-imagenet     # the images, once
#   scripts/results_tiny_imagenet32_cpu.sh protonet                     # ProtoNet: baseline and SLA, SEEDS="0 1 2"
#   scripts/results_tiny_imagenet32_cpu.sh svm                          # MetaOptNet-SVM: baseline and SLA
#   scripts/results_tiny_imagenet32_cpu.sh pretrain                     # pre-training: plain and SLA, NCM and logreg
#   scripts/results_tiny_imagenet32_cpu.sh --save-unfinished            # started, unfinished runs -> UNFINISHED
#
# Runs longer than a machine is kept: --save-unfinished copies each started, unfinished run folder of RUNS (its
# record, config, checkpoints, history; no wandb/) into UNFINISHED (default docs/runs_unfinished/tiny_imagenet32_cpu);
# every invocation first copies those back into RUNS where RUNS has no checkpoint of its own, so they resume.
#
# SEEDS, TRANSFORMS (default "none rotation"), DATA (.data), RUNS (runs/tiny32_cpu), THREADS (torch threads per run,
# default 1). Every run resumes (--resume) and a finished one is skipped, so the script can be stopped and started
# again; the report is regenerated at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true
what=${1:?usage: $0 protonet|svm|pretrain}
data=${DATA:-.data}
runs=${RUNS:-runs/tiny32_cpu}
py=${PYTHON:-.venv/bin/python}
common=(--dataset tiny-imagenet --data-root "$data" --image-size 32 --backbone conv4 --ways 5 --shots 1 --queries 5
        --test-ways 5 --test-shots 1 --test-queries 15 --val-episodes 200 --test-episodes 10000
        --num-threads "${THREADS:-1}" --resume)

unfinished=${UNFINISHED:-docs/runs_unfinished/tiny_imagenet32_cpu}
finished() { [ -f "$1/metrics.json" ] && grep -q '"test/acc"' "$1/metrics.json" && ! grep -q '"finished": false' "$1/metrics.json"; }

if [ "$what" = --save-unfinished ]; then
  for d in "$runs"/*/; do
    d=${d%/}
    if [ -f "$d/checkpoint.pt" ] && ! finished "$d"; then
      mkdir -p "$unfinished/${d##*/}"
      find "$d" -maxdepth 1 -type f -exec cp {} "$unfinished/${d##*/}/" \;
      echo "saved $d -> $unfinished/${d##*/}"
    fi
  done
  exit 0
fi
for d in "$unfinished"/*/; do  # carried runs come back where this machine has no checkpoint of its own
  [ -d "$d" ] || continue
  n=$(basename "$d")
  if [ ! -f "$runs/$n/checkpoint.pt" ]; then mkdir -p "$runs/$n" && cp "$d"* "$runs/$n/" && echo "carried $n"; fi
done

retest() {  # retest RUN COPY FLAGS...: the trained RUN's best.pt re-tested with other test options into COPY
  local out=$1 copy=$2; shift 2
  if ! finished "$copy"; then
    mkdir -p "$copy"
    cp "$out/recipe.json" "$out/config.yaml" "$out/best.pt" "$copy/"
    "$py" -m episodes.train --config "$out/config.yaml" --test-only --out "$copy" --test-episodes 10000 "$@"
  fi
}

one() {  # one run: train + test 5w1s, then the 5w5s re-test
  local out=$1; shift
  if ! finished "$out"; then
    "$py" -m episodes.train "${common[@]}" "$@" --out "$out"
  fi
  retest "$out" "${out}_5shot" --test-shots 5
}

episodic=(--train-episodes 6000 --lr 1e-3 --lr-milestones 2000 4000 --lr-gamma 0.5 --val-every 500)
for seed in ${SEEDS:-0 1 2}; do
  for tf in ${TRANSFORMS:-none rotation}; do
    case "$what" in
      protonet) one "$runs/protonet_${tf}_s$seed" --learner protonet --distance sqeuclidean --encode joint \
                  --transform "$tf" "${episodic[@]}" --seed "$seed" ;;
      svm) one "$runs/svm_${tf}_s$seed" --learner svm --transform "$tf" "${episodic[@]}" --seed "$seed" ;;
      pretrain)  # trained and validated with the NCM head, re-tested with the logistic-regression head
        run="$runs/pretrain_${tf}_s$seed"
        one "$run" --learner pretrain --transform "$tf" --pretrain-epochs 20 --batch-size 64 --val-every-epochs 2 \
          --optimizer sgd --lr 0.05 --lr-milestones 12 16 --lr-gamma 0.1 --weight-decay 5e-4 --test-head ncm \
          --seed "$seed"
        retest "$run" "${run}_logreg" --test-head logreg
        retest "$run" "${run}_logreg_5shot" --test-head logreg --test-shots 5 ;;
      *) echo "unknown part $what: protonet, svm or pretrain" >&2; exit 2 ;;
    esac
  done
done
"$py" -m fewshot_sla.report "$runs"/"$what"_* --out "$runs/report_$what"
