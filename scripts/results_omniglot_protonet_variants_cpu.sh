#!/usr/bin/env bash
# Why easyfsl's PrototypicalNetworks beat our ProtoNet baseline at equal budget (docs/results.md): the two
# differences between them, one at a time, on the peers' protocol -- real Omniglot (Vinyals split, 28 px), Conv4,
# 5-way 1-shot 15-query, Adam 1e-3, 220 training episodes, no SLA, tested on 1000 5-way 1-shot 15-query episodes --
# over SEEDS (default 0 1 2):
#   encode   joint (support + query in one encoder call: BatchNorm normalises both with their union's statistics)
#            or separate (two calls, as easyfsl and Snell et al.'s code)
#   distance sqeuclidean (Snell et al.'s squared Euclidean) or euclidean (easyfsl's plain distance)
# Needs .data (python ../shared/data/materialize.py .data --only omniglot). Every run resumes; finished runs skip.
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true
runs=${RUNS:-runs/omni_protonet_variants}
py=${PYTHON:-.venv/bin/python}
for seed in ${SEEDS:-0 1 2}; do
  for encode in joint separate; do
    for distance in sqeuclidean euclidean; do
      out="$runs/${encode}_${distance}_s$seed"
      if [ -f "$out/metrics.json" ] && grep -q '"test/acc"' "$out/metrics.json" && ! grep -q '"finished": false' "$out/metrics.json"; then continue; fi
      "$py" -m episodes.train --dataset omniglot --data-root "${DATA:-.data}" --learner protonet --backbone conv4 \
        --transform none --ways 5 --shots 1 --queries 15 --train-episodes 220 --val-every 0 --val-episodes 100 \
        --test-episodes 1000 --lr 1e-3 --encode "$encode" --distance "$distance" --seed "$seed" \
        --num-threads "${THREADS:-1}" --resume --out "$out"
    done
  done
done
"$py" -m fewshot_sla.report "$runs" --out "$runs/report"
