#!/usr/bin/env bash
# Long-tail CPU results (docs/results.md): CIFAR-10-LT-100 (JPEG copy), ResNet-32, 5 epochs.
# Needs the real data unpacked into .data: python ../shared/data/materialize.py .data
set -x
cd "$(dirname "$0")/.."
export WANDB_MODE=offline WANDB_SILENT=true
.venv/bin/python -m longtail.benchmark --dataset imagefolder --data-root .data/cifar10-jpeg --imbalance-ratio 100 \
  --grid-loss ce --grid-transform none rotation --sd --epochs 5 --channels-last --num-threads 1 --seed 0 --out runs/lt_cpu5/ce
.venv/bin/python -m longtail.benchmark --dataset imagefolder --data-root .data/cifar10-jpeg --imbalance-ratio 100 \
  --grid-loss ldam --drw --grid-transform none rotation --sd --epochs 5 --channels-last --num-threads 1 --seed 0 --out runs/lt_cpu5/ldam_drw
# The longer LDAM-DRW pair (10 epochs, 2 threads):
.venv/bin/python -m longtail.benchmark --dataset imagefolder --data-root .data/cifar10-jpeg --imbalance-ratio 100 \
  --grid-loss ldam --drw --grid-transform none rotation --sd --epochs 10 --channels-last --num-threads 2 --seed 0 --out runs/lt_cpu10/ldam_drw
