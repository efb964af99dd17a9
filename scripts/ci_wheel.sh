#!/usr/bin/env bash
# The package as a user installs it: build the wheel and the sdist, install the wheel with no extras into a fresh
# virtual environment outside the checkout (inside another git repository, so that a run must not take that
# repository's commit for its own), and from a folder that is not the checkout run both CLIs on tiny real data,
# sla-report, both predictors, --help of every console script and runs that ask for a missing extra; then install
# the [all] extras into the same environment and run what they add (the SVM learner, plots, logistic regression).
#
#   scripts/ci_wheel.sh            # what `make test-wheel` (and so `make test`) runs
#
# PYTHON: the interpreter for the fresh environment (default python3); WORK: its folder (default: a new temporary
# one, removed at the end); VENV: reuse that environment instead of making one; DATA: the materialized data (default .data, written by materialize.py when missing).
# torch comes from wherever pip finds it; pip's cache is reused between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PYTHON=${PYTHON:-python3}
data=$(realpath -m "${DATA:-.data}")
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
keep=${WORK:+1}
trap '[ -n "$keep" ] || rm -rf "$work"' EXIT
step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }
fail() { echo "ci_wheel: FAILED: $*" >&2; exit 1; }

step "build the wheel and the sdist"
"${BUILD_PYTHON:-.venv/bin/python}" -m build --no-isolation --outdir "$work/dist" . >"$work/build.log" 2>&1 \
  || { tail -20 "$work/build.log"; fail "python -m build"; }
wheel=$(ls "$work"/dist/*.whl)
members=$(tar -tzf "$work"/dist/*.tar.gz)
grep -q "longtail/configs/cifar10_ir100_ldam_drw.yaml" <<<"$members" || fail "the sdist lacks the recipes"

step "a fresh environment inside another git repository, the wheel with no extras"
mkdir -p "$work/other" && git -C "$work/other" init -q && git -C "$work/other" -c user.email=a@b -c user.name=a \
  commit -q --allow-empty -m other
venv=${VENV:-$work/other/venv}  # VENV: an environment made by an earlier run of this script (quicker re-runs)
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
py=$venv/bin/python
bin=$venv/bin
"$py" -m pip install -q --force-reinstall --no-deps "$wheel" 2>&1 | grep -v "^WARNING: Location" || true
"$py" -m pip install -q "$wheel" 2>&1 | grep -v "^WARNING: Location" || true
"$py" -c "import fewshot_sla, episodes, longtail" || fail "the installed packages do not import"
for m in wandb sklearn matplotlib qpth learn2learn submitit; do
  "$py" -c "import importlib.util as u, sys; sys.exit(u.find_spec('$m') is not None)" || fail "$m came with no extras"
done
"$py" -c "import numpy, torch; print('numpy', numpy.__version__, 'torch', torch.__version__)"

for part in omniglot cifar10; do  # the tiny runs' data (idempotent; the test suite unpacks the same)
  [ -d "$data/$([ $part = omniglot ] && echo omniglot-py || echo cifar10-jpeg)" ] \
    || "$py" "$repo/../shared/data/materialize.py" "$data" --only $part >/dev/null
done
mkdir -p "$work/use" && cd "$work/use"   # not the checkout
export WANDB_MODE=offline WANDB_SILENT=true

step "--help of every console script"
scripts=$("$py" -c "from importlib.metadata import distribution as d
print(' '.join(e.name for e in d('fewshot-sla').entry_points if e.group == 'console_scripts'))")
for s in $scripts; do "$bin/$s" --help >/dev/null || fail "$s --help"; done
echo "ok: $scripts"

step "sla-fewshot and sla-longtail on tiny real data"
fs=(--dataset omniglot --data-root "$data" --ways 5 --shots 1 --queries 2 --test-ways 5 --train-episodes 3
    --val-every 0 --val-episodes 2 --test-episodes 20 --num-threads 1)
"$bin/sla-fewshot" "${fs[@]}" --transform rotation --out runs/fs >/dev/null 2>"$work/fs.err" \
  || { cat "$work/fs.err"; fail "sla-fewshot"; }
lt=(--dataset imagefolder --data-root "$data/cifar10-jpeg" --imbalance-ratio 10 --limit-train 200 --limit-test 100
    --epochs 1 --batch-size 32 --num-threads 1)
"$bin/sla-longtail" "${lt[@]}" --transform rotation --sd --out runs/lt >/dev/null 2>"$work/lt.err" \
  || { cat "$work/lt.err"; fail "sla-longtail"; }
"$py" - <<'PY' || fail "the run records' provenance"
import json
from importlib.metadata import version
for run in ("runs/fs", "runs/lt"):
    rec = json.load(open(f"{run}/recipe.json"))
    assert rec["package_version"] == version("fewshot-sla"), rec.get("package_version")
    assert rec["git_commit"] is None, f"{run}: git_commit {rec['git_commit']!r} is another repository's"
    assert rec["torch"] and rec["numpy"] and rec["cpu"], rec
print("ok: records carry version", rec["package_version"], "and no foreign git commit")
PY

step "sla-report and both predictors"
"$bin/sla-report" runs --out report >/dev/null || fail "sla-report"
grep -q "SLA" report/report.md || fail "report.md has no SLA row"
mkdir -p sup qry lt_img
chars=("$data"/omniglot-py/images_evaluation/*/*)
for n in 1 2 3 4 5; do  # 5 characters: 1 support and 2 query drawings each
  pngs=("${chars[$n]}"/*.png)
  mkdir -p "sup/c$n" "qry/c$n" && cp "${pngs[0]}" "sup/c$n/" && cp "${pngs[1]}" "${pngs[2]}" "qry/c$n/"
done
"$bin/sla-fewshot-predict" --run runs/fs --support sup --query qry --out fs_pred.csv >/dev/null || fail "sla-fewshot-predict"
[ "$(wc -l < fs_pred.csv)" -ge 11 ] || fail "sla-fewshot-predict wrote $(wc -l < fs_pred.csv) lines"
tests=("$data"/cifar10-jpeg/test/*/*)
cp "${tests[@]:0:4}" lt_img/
"$bin/sla-longtail-predict" --run runs/lt lt_img --out lt_pred.csv >/dev/null || fail "sla-longtail-predict"
[ "$(wc -l < lt_pred.csv)" -ge 5 ] || fail "sla-longtail-predict wrote $(wc -l < lt_pred.csv) lines"
echo "ok: report and predictions"

step "a run that needs a missing extra stops at once with one line"
expect_extra() {  # expect_extra EXTRA COMMAND...
  local extra=$1; shift
  if "$@" >"$work/x.out" 2>"$work/x.err"; then fail "$* ran without its extra"; fi
  grep -q "fewshot-sla\[$extra\]" "$work/x.err" || { cat "$work/x.err"; fail "$* did not name [$extra]"; }
  [ "$(wc -l < "$work/x.err")" -eq 1 ] || { cat "$work/x.err"; fail "$* printed more than one line"; }
  [ ! -e runs/x/checkpoint.pt ] || fail "$* trained before stopping"
  echo "ok: $(cat "$work/x.err")"
}
expect_extra svm "$bin/sla-fewshot" "${fs[@]}" --learner svm --out runs/x
expect_extra sklearn "$bin/sla-fewshot" "${fs[@]}" --learner pretrain --test-head logreg --out runs/x
expect_extra wandb "$bin/sla-longtail" "${lt[@]}" --wandb online --out runs/x

step "the same environment with the [all] extras"
"$py" -m pip install -q "${wheel}[all]" 2>&1 | grep -v "^WARNING: Location" || true
"$py" -c "import numpy, qpth, sklearn, matplotlib, wandb, submitit; print('numpy', numpy.__version__)"
"$bin/sla-fewshot" "${fs[@]}" --learner svm --out runs_all/svm >/dev/null 2>"$work/svm.err" \
  || { cat "$work/svm.err"; fail "sla-fewshot --learner svm with [all]"; }
"$bin/sla-report" runs runs_all --out report_all >/dev/null || fail "sla-report with [all]"
ls report_all/*.png >/dev/null 2>&1 || fail "sla-report drew no plot with matplotlib installed"
step "ci_wheel: passed"
