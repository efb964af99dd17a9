#!/usr/bin/env bash
# The long-tail protocol in one command: every loss x {baseline, SLA+SD} x seed as sla-longtail runs under
# OUT/<dataset>_ir<ratio>/<loss>_<baseline|slasd>_s<seed>/, resumable in chunks, then the sla-report table.
#
#   scripts/longtail_protocol.sh --data-root DATA                                  # CIFAR-10-LT-100, 24 runs
#   scripts/longtail_protocol.sh --data-root DATA --imbalance-ratio 10 --jobs 6 --amp --channels-last
#   scripts/longtail_protocol.sh --data-root DATA --time-limit 14000   # one chunk of a batch job; rerun it
#   scripts/longtail_protocol.sh --data-root DATA --report             # only (re)write the report
#   scripts/longtail_protocol.sh --help                                # every option
#
# Options: --data-root, --dataset cifar10, --imbalance-ratio 100, --losses "ce ldam logit-adjusted vs",
# --seeds "0 1 2", --epochs 200, --out runs/protocol, --jobs N (default 1 on CPU, 6 on CUDA), --time-limit
# SECONDS, --grace SECONDS, --max-runs N, --recipes auto|none|PREFIX, --report, --dry-run. Any other option
# (and everything after --) is passed to every run. Exit status: 0 all finished and reported, 3 runs remain
# (run the same command again), 1 a run failed, 2 bad usage. The logic is longtail/protocol.py.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then
        python="$root/.venv/bin/python"
    else
        python="$(command -v python3 || true)"
    fi
fi
if [[ -z "$python" ]]; then
    echo "error: no Python found: run scripts/install.sh, or set PYTHON=/path/to/python" >&2
    exit 2
fi
# The checkout's packages, whatever the working directory (paths given stay relative to it).
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
# exec: a batch system's SIGTERM reaches the protocol, which stops its runs cleanly.
exec "$python" -m longtail.protocol "$@"
