#!/usr/bin/env bash
# Create .venv in the checkout (if missing) and install everything the project needs:
# torch + torchvision, learn2learn (built, see build_learn2learn.sh; only the interop tests need it), the project in editable
# mode with its dev extras. Idempotent: `make` calls it only when this file or pyproject changed.
#
# TORCH_SPEC overrides the torch pins, e.g. TORCH_SPEC="torch torchvision" for the newest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
fail() { echo "install: $*" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv || fail "'$PYTHON -m venv' failed; install Python >= 3.10 with venv"
fi
PY=.venv/bin/python
"$PY" -m pip install -q --upgrade pip setuptools wheel || fail "could not upgrade pip"

if [ -z "${TORCH_SPEC:-}" ]; then
    case "$(uname -m)" in
        x86_64) TORCH_SPEC="torch==2.14.1 torchvision==0.29.1" ;;
        aarch64|arm64) TORCH_SPEC="torch==2.9.1 torchvision==0.24.1" ;;
        *) TORCH_SPEC="torch torchvision" ;;
    esac
fi
echo "install: $TORCH_SPEC"
# shellcheck disable=SC2086
"$PY" -m pip install -q $TORCH_SPEC || fail "could not install '$TORCH_SPEC'; set TORCH_SPEC to a torch build for this platform"
scripts/build_learn2learn.sh "$PY"
"$PY" -m pip install -q -e ".[dev]" || fail "could not install the project"
"$PY" -c "import fewshot_sla, episodes, longtail" || fail "the project does not import"
echo "install: done ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
