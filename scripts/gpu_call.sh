#!/usr/bin/env bash
# The long-tail protocol's GPU call (lab/gpucall.py): environment, throughput table, plan, the 200-epoch runs
# that fit in the budget, everything packed into at most 8 files under --out. One command, nothing to decide.
#
# On the device (docs/usage.md, "The GPU call"): the device's own python3 as it is, the checkout on PYTHONPATH,
# W&B disabled (wandb, learn2learn and qpth are not needed):
#   scripts/gpu_call.sh --data-root /tmp/gpu_data/cifar10-jpeg --unpack .gpu/data/materialize.py --out "$OUT"
# Rehearsal on a CPU (tiny synthetic data, 1-epoch runs, the same plan and packing):
#   scripts/gpu_call.sh --dry-run --out /tmp/gpu_dry
# Every option: scripts/gpu_call.sh --help
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python="$(command -v python3)"; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=disabled WANDB_SILENT=true
exec "$python" -m lab.gpucall "$@"
