#!/usr/bin/env bash
# SLA's gain against training length on the CPU (docs/results.md, "Long tail: the budget curve"):
# CIFAR-10-LT-100 (the JPEG copy), ResNet-32, each loss's baseline vs SLA+SD at 10, 20 and 60 epochs, the
# 30-epoch protocol's schedule scaled (cosine, batch 64, scale_epochs' warm-up set once per epoch, CIFAR-10's
# fixed statistics: the 30-epoch point in docs/runs/longtail_cpu_protocol ran so, hence --warmup epoch
# --norm-stats cifar). Runs land in RUNS/e<epochs>/imagefolder_ir100/<loss>_<baseline|slasd>_s<seed>/ and resume.
#
#   python ../shared/data/materialize.py .data --only cifar10             # the images, once
#   scripts/results_longtail_budget_cpu.sh                                 # the whole list, in this order
#   POINTS="10:logit-adjusted:0 20:logit-adjusted:0" scripts/results_longtail_budget_cpu.sh   # a part of it
#
# POINTS: "epochs:loss:seed" items (default: LA at 10 epochs, seeds 0 and 1, then at 20, then CE seed 0 at 10
# and 20, then the 60-epoch points in the same order). DATA (default .data), RUNS (default runs/lt_budget_cpu),
# THREADS (default 1), AMP (default --amp: bf16 autocast; set AMP= on a CPU without bf16).
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true
data=${DATA:-.data}
runs=${RUNS:-runs/lt_budget_cpu}
default="10:logit-adjusted:0 10:logit-adjusted:1 20:logit-adjusted:0 20:logit-adjusted:1 10:ce:0 20:ce:0
         60:logit-adjusted:0 60:logit-adjusted:1 60:ce:0"
for point in ${POINTS:-$default}; do
  IFS=: read -r epochs loss seed <<<"$point"
  scripts/longtail_protocol.sh --dataset imagefolder --data-root "$data/cifar10-jpeg" --imbalance-ratio 100 \
    --losses "$loss" --seeds "$seed" --epochs "$epochs" --jobs 1 --out "$runs/e$epochs" -- \
    --schedule cosine --batch-size 64 ${AMP---amp} --channels-last --num-threads "${THREADS:-1}" \
    --warmup epoch --norm-stats cifar
done
