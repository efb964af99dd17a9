#!/usr/bin/env bash
# SLA's gain against training length on the CPU (docs/results.md, "Long tail: the budget curve"):
# CIFAR-10-LT-100 (the JPEG copy), ResNet-32, each loss's baseline vs SLA+SD at 10, 20 and 60 epochs, the
# 30-epoch protocol's schedule scaled (cosine, batch 64, scale_epochs' warm-up set once per epoch, CIFAR-10's
# fixed statistics, as the 30-epoch point in docs/runs/longtail_cpu_protocol ran): lab/grids/longtail_cpu_protocol.yaml
# at each length. Runs land in RUNS/e<epochs>/imagefolder_ir100/<loss>_<baseline|slasd>_s<seed>/ and resume.
#
#   python ../shared/data/materialize.py .data --only cifar10             # the images, once
#   scripts/results_longtail_budget_cpu.sh                                 # the whole list, in this order
#   POINTS="10:logit-adjusted:0 20:logit-adjusted:0" scripts/results_longtail_budget_cpu.sh   # a part of it
#
# POINTS: "epochs:loss:seed" items (default: LA at 10 epochs, seeds 0 and 1, then at 20, then CE seeds 0, 1 at 10
# and 20, then at 60 epochs LA seeds 0, 1 and CE seed 0; POINTS=" " only copies the committed and carried runs in).
# DATA (default .data), RUNS (default runs/lt_budget_cpu), THREADS (default 1), AMP (default --amp: bf16 autocast;
# set AMP= on a CPU without bf16), EXTRA (more sla-longtail options for every run, e.g. EXTRA="--eval-every 5").
# COMMITTED (default docs/runs/longtail_budget_cpu, the same layout as RUNS) keeps the list going across sessions
# whose machines keep nothing: after each point the record of every finished run (config.yaml, recipe.json,
# metrics.json; no checkpoint) is copied there, to be committed; at the start the committed records are copied into
# RUNS, where the protocol counts them as finished and skips them, so the default list continues where they end.
# A run longer than a session (a 60-epoch SLA+SD run on one thread) is carried over too: stop the lanes cleanly at
# the session's end (`kill -TERM` each lane's sla-grid process: its runs stop, each keeps its last finished epoch), then
#   scripts/results_longtail_budget_cpu.sh --save-unfinished
# copies every started, unfinished run folder of RUNS (its checkpoint.pt and record; no wandb/ or plots) into
# UNFINISHED (default docs/runs_unfinished/longtail_budget_cpu), to be committed; the next session's start copies
# each one back into RUNS when RUNS lacks its checkpoint, the protocol resumes it (--resume), and once it finishes
# its carried copy is deleted (commit the deletion with the record).
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-.venv/bin/python}
data=${DATA:-.data}
runs=${RUNS:-runs/lt_budget_cpu}
committed=${COMMITTED:-docs/runs/longtail_budget_cpu}
unfinished=${UNFINISHED:-docs/runs_unfinished/longtail_budget_cpu}
finished() { grep -qs '"test/acc"' "$1/metrics.json" && ! grep -qs '"finished": false' "$1/metrics.json"; }  # RUN: test/acc in its metrics.json (protocol.is_finished)
epochs_done() { if [ -f "$1/history.jsonl" ]; then wc -l < "$1/history.jsonl"; else echo 0; fi; }  # RUN: rows logged
copy_finished() {  # FROM TO: the records of FROM's finished runs into TO, same layout
  [ -d "$1" ] || return 0
  local metrics run dest
  while IFS= read -r metrics; do
    run=$(dirname "$metrics"); dest="$2/${run#"$1"/}"
    finished "$run" || continue
    rm -rf "${unfinished:?}/${run#"$1"/}"  # a carried run, finished: its checkpoint is no longer needed
    [ ! -e "$dest/metrics.json" ] && [ ! -e "$dest/checkpoint.pt" ] || continue
    mkdir -p "$dest" && cp "$run"/{config.yaml,recipe.json,metrics.json} "$dest/"
  done < <(find "$1" -name metrics.json -not -path '*/wandb/*' | sort)
}
copy_started() {  # FROM TO [overwrite]: FROM's started, unfinished run folders (checkpoint.pt) into TO, same layout;
  # never a run finished anywhere (FROM, TO or COMMITTED: another lane's RUNS may hold a stale copy of a run that a
  # second lane finished), and with overwrite only over a copy with fewer epochs done (the most advanced copy wins)
  [ -d "$1" ] || return 0
  local ckpt run dest
  while IFS= read -r ckpt; do
    run=$(dirname "$ckpt"); dest="$2/${run#"$1"/}"
    finished "$run" || finished "$dest" || finished "$committed/${run#"$1"/}" && continue
    if [ -e "$dest/checkpoint.pt" ]; then  # without overwrite: this machine's own copy is as new or newer
      [ -z "${3:-}" ] || [ "$(epochs_done "$dest")" -ge "$(epochs_done "$run")" ] && continue
    fi
    rm -rf "$dest" && mkdir -p "$dest"
    find "$run" -maxdepth 1 -type f -not -name '*.png' -exec cp {} "$dest/" \;
    echo "carried: $dest (from $run)"
  done < <(find "$1" -name checkpoint.pt -not -path '*/wandb/*' | sort)
}
if [ "${1:-}" = --save-unfinished ]; then
  copy_finished "$runs" "$committed"
  copy_started "$runs" "$unfinished" overwrite
  exit 0
fi
copy_finished "$committed" "$runs"
copy_started "$unfinished" "$runs"
default="10:logit-adjusted:0 10:logit-adjusted:1 20:logit-adjusted:0 20:logit-adjusted:1 10:ce:0 20:ce:0 10:ce:1 20:ce:1
         60:logit-adjusted:0 60:logit-adjusted:1 60:ce:0"
for point in ${POINTS:-$default}; do
  IFS=: read -r epochs loss seed <<<"$point"
  # one point: the loss's baseline and SLA+SD at this seed, the CPU protocol's grid at this length
  "$py" -m fewshot_sla.grid lab/grids/longtail_cpu_protocol.yaml --only "${loss}_*_s$seed" --jobs 1 \
    --out "$runs/e$epochs/imagefolder_ir100" -- --data-root "$data/cifar10-jpeg" --epochs "$epochs" ${AMP---amp} \
    --num-threads "${THREADS:-1}" ${EXTRA:-}
  copy_finished "$runs" "$committed"
done
