"""The long-tail protocol in one command: losses x {baseline, SLA+SD} x seeds, in chunks, then one report.

    scripts/longtail_protocol.sh --data-root DATA                        # CIFAR-10-LT-100, 4 losses x 2 x 3 seeds
    scripts/longtail_protocol.sh --data-root DATA --time-limit 14000 --amp --channels-last   # one chunk of a job
    scripts/longtail_protocol.sh --data-root DATA --report               # only (re)write the report
    python -m longtail.protocol ...                                      # the same

Every run of the grid is one ``sla-longtail`` process writing ``OUT/<dataset>_ir<ratio>/<loss>_<method>_s<seed>/``
(``method`` = ``baseline`` or ``slasd``: ``--transform rotation --sd``) with ``--resume``, so an invocation
picks up where the previous one stopped: runs whose ``metrics.json`` holds ``test/acc`` are skipped, started
ones continue from their last checkpoint (written atomically after every epoch), the others start. With
``--jobs N`` up to N runs train concurrently (on one GPU, ResNet-32 at batch 128 leaves most of it idle, so
several processes fill it); the default is 1 on CPU and :data:`DEFAULT_CUDA_JOBS` on CUDA.

``--time-limit SECONDS`` bounds an invocation (a batch job's wall time): ``--grace`` seconds before the
limit no run is launched any more and the running ones get SIGTERM (their whole process group), then
SIGKILL after ``--grace`` more seconds at most; a killed run loses only its unfinished epoch. When every
run of the grid is finished, ``sla-report`` writes ``OUT/<dataset>_ir<ratio>/report/report.md`` (mean +-
std over seeds per loss and method).

Recipes: for ``--dataset cifar10`` the runs take ``configs/longtail/cifar10_ir<ratio>_<recipe>.yaml``
(``--recipes auto``; recipe = ``ce``, ``ldam_drw``, ``logit_adjusted``, ``vs`` for the losses ``ce``,
``ldam``, ``logit-adjusted``, ``vs``), which fix the weight decay and the rest of the LDAM-DRW protocol;
``--recipes PREFIX`` takes ``PREFIX<recipe>.yaml`` instead and ``--recipes none`` uses sla-longtail's
defaults. The loss ``ldam`` always runs with DRW (LDAM-DRW). Unknown options (``--amp --channels-last``,
``--limit-test 500``, ``--stop-after 1``, ...) and everything after ``--`` go to every run unchanged;
they come last, so they override the recipe.

Exit status: 0 every run finished (report written), 3 runs remain (time limit, ``--max-runs``, a
pass-through ``--stop-after``, a signal): run the same command again, 1 a run failed, 2 bad usage.

The grid tool of ``sla-longtail --grid-loss L... --grid-transform T...`` is here too (:func:`run_grid`): every
(loss, transform) pair as one run in ``OUT/<loss>_<transform>/``, in this process (so also under ``torchrun``),
then one table in ``OUT/results.md`` and ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .config import LTConfig
from .losses import LOSSES

__all__ = [
    "DEFAULT_CUDA_JOBS",
    "EXIT_DONE",
    "EXIT_FAILED",
    "EXIT_INCOMPLETE",
    "EXIT_USAGE",
    "ProtocolError",
    "RunPlan",
    "is_finished",
    "main",
    "plan_grid",
    "grid_configs",
    "grid_row",
    "run_grid",
]

ROOT = Path(__file__).resolve().parents[1]
RECIPE_DIR = ROOT / "configs" / "longtail"
DEFAULT_CUDA_JOBS = 6  # concurrent ResNet-32 runs on one GPU (each uses a fraction of it at batch 128)
EXIT_DONE, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
# Recipe file stem of each protocol loss (configs/longtail/<dataset>_ir<ratio>_<stem>.yaml).
RECIPE_NAMES = {"ce": "ce", "ldam": "ldam_drw", "logit-adjusted": "logit_adjusted", "vs": "vs"}
DRW_LOSSES = frozenset({"ldam"})  # the protocol's "ldam" is LDAM-DRW
METHODS = ("baseline", "slasd")
# sla-longtail flags the protocol sets for every run itself; passing them through would break the grid.
OWNED_FLAGS = frozenset(
    {"--out", "--seed", "--loss", "--transform", "--sd", "--no-sd", "--config", "--resume", "--no-resume",
     "--grid-loss", "--grid-transform"}
)
POLL_S = 0.2


class ProtocolError(ValueError):
    """Bad protocol options; the message says which and what to pass instead."""


@dataclass(frozen=True)
class RunPlan:
    """One run of the grid: where it writes and the ``sla-longtail`` arguments that make it."""

    loss: str
    method: str  # "baseline" or "slasd"
    seed: int
    out: Path
    argv: tuple[str, ...]
    recipe: Path | None = None

    @property
    def name(self) -> str:
        return self.out.name

    @property
    def started(self) -> bool:
        return (self.out / "checkpoint.pt").is_file()


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir/metrics.json`` holds ``test/acc`` (what ``sla-report`` counts as finished)."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):  # missing, or unreadable: the run is redone/resumed, not trusted
        return False
    return isinstance(metrics, dict) and "test/acc" in metrics


# -- command line -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="longtail_protocol.sh",
        description="Run the long-tail protocol (losses x {baseline, SLA+SD} x seeds) in resumable chunks, then "
        "write one report. Unknown options and everything after -- are passed to every sla-longtail run.",
        allow_abbrev=False,  # else --seed (a pass-through mistake) would silently become --seeds
    )
    ap.add_argument("--data-root", default="data", help="sla-longtail's --data-root (default: data)")
    ap.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100", "imagefolder"))
    ap.add_argument("--imbalance-ratio", type=float, default=100.0, help="n_max / n_min (default: 100)")
    ap.add_argument("--losses", nargs="+", default=["ce ldam logit-adjusted vs"],
                    help='losses, space- or comma-separated (default: "ce ldam logit-adjusted vs"; ldam = LDAM-DRW)')
    ap.add_argument("--seeds", nargs="+", default=["0 1 2"], help='seeds (default: "0 1 2")')
    ap.add_argument("--epochs", type=int, default=200, help="epochs per run (default: 200)")
    ap.add_argument("--sla-transform", default="rotation",
                    help="SLA transformation of the slasd runs (default: rotation)")
    ap.add_argument("--out", default="runs/protocol", help="output root (default: runs/protocol)")
    ap.add_argument("--recipes", default="auto",
                    help="auto (configs/longtail/<dataset>_ir<ratio>_<recipe>.yaml for cifar10 when present), "
                    "none, or a path prefix P (P<recipe>.yaml, every one required)")
    ap.add_argument("--jobs", type=int, default=0,
                    help=f"runs at once (default 0 = 1 on CPU, {DEFAULT_CUDA_JOBS} on CUDA)")
    ap.add_argument("--time-limit", type=float, default=0.0,
                    help="seconds this invocation may take (0 = no limit); runs are stopped --grace seconds before")
    ap.add_argument("--grace", type=float, default=30.0,
                    help="seconds before the limit at which runs are stopped, and that they get to exit (default: 30)")
    ap.add_argument("--max-runs", type=int, default=0, help="launch at most N runs in this invocation (0 = all)")
    ap.add_argument("--report", action="store_true", help="only write the report of the runs there (no training)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands of the runs left and exit")
    return ap


def _split_words(values: list[str]) -> list[str]:
    return [w for v in values for w in v.replace(",", " ").split()]


def _flag_name(arg: str) -> str:
    return arg.split("=", 1)[0].replace("_", "-")


def check_passthrough(extra: list[str]) -> None:
    """Refuse pass-through flags the protocol sets per run (naming the protocol option to use)."""
    owned = sorted({_flag_name(a) for a in extra if _flag_name(a) in OWNED_FLAGS})
    if owned:
        raise ProtocolError(
            f"{', '.join(owned)} cannot be passed through: the protocol sets these for every run "
            "(use --losses, --seeds, --sla-transform, --out; runs always --resume)"
        )


def _passthrough_value(extra: list[str], flag: str) -> str | None:
    """The last value given to ``flag`` in the pass-through arguments (``--flag V`` or ``--flag=V``)."""
    value = None
    for i, a in enumerate(extra):
        if _flag_name(a) == flag:
            value = a.split("=", 1)[1] if "=" in a else (extra[i + 1] if i + 1 < len(extra) else None)
    return value


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _uses_cuda(extra: list[str]) -> bool:
    return _is_cuda(_passthrough_value(extra, "--device") or "auto")


def _is_cuda(device: str) -> bool:
    """Whether sla-longtail's ``--device`` value trains on a GPU here (``auto``: when one is present)."""
    if device != "auto":
        return device.startswith("cuda")
    import torch

    return torch.cuda.is_available()


def recipe_prefix(option: str, dataset: str, ratio: float) -> tuple[str | None, bool]:
    """``(prefix, required)`` of the recipe files for ``--recipes option`` (None: no recipes)."""
    if option == "none":
        return None, False
    if option == "auto":
        return (str(RECIPE_DIR / f"{dataset}_ir{ratio:g}_"), False) if dataset != "imagefolder" else (None, False)
    return option, True


def plan_grid(args: argparse.Namespace, extra: list[str], threads: int | None) -> list[RunPlan]:
    """Every run of the grid in launch order (loss, then method, then seed), with its arguments."""
    grid_dir = Path(args.out) / f"{args.dataset}_ir{args.imbalance_ratio:g}"
    prefix, required = recipe_prefix(args.recipes, args.dataset, args.imbalance_ratio)
    plans = []
    for loss in args.losses:
        recipe = None
        if prefix is not None:
            path = Path(f"{prefix}{RECIPE_NAMES.get(loss, loss.replace('-', '_'))}.yaml")
            if path.is_file():
                recipe = path
            elif required:
                raise ProtocolError(f"--recipes {args.recipes}: no recipe {path} for loss {loss!r}")
        for method in METHODS:
            for seed in args.seeds:
                out = grid_dir / f"{loss}_{method}_s{seed}"
                argv = ["--config", str(recipe)] if recipe else []
                argv += ["--dataset", args.dataset, "--data-root", args.data_root,
                         "--imbalance-ratio", f"{args.imbalance_ratio:g}", "--epochs", str(args.epochs),
                         "--loss", loss, *(["--drw"] if loss in DRW_LOSSES else [])]
                argv += ["--transform", "none", "--no-sd"] if method == "baseline" else [
                    "--transform", args.sla_transform, "--sd"]
                argv += ["--seed", str(seed), "--out", str(out), "--resume"]
                argv += ["--num-threads", str(threads)] if threads else []
                plans.append(RunPlan(loss, method, seed, out, tuple(argv + extra), recipe))
    return plans


def check_run_args(plans: list[RunPlan]) -> None:
    """Parse each recipe's run arguments as ``sla-longtail`` will, so that a bad pass-through option or recipe
    is one clear error now rather than a failure of every run; warn when a recipe's imbalance ratio is not the
    grid's (its weight decay was chosen for the other one), and say once, on the console, what each run would
    otherwise write only into its own log: ``--amp`` on a CPU without native bf16 makes runs many times slower."""
    import contextlib
    import io

    from fewshot_sla.config import parse_config
    from fewshot_sla.engine import EMULATED_BF16, cpu_has_native_bf16

    emulated_bf16 = False
    seen: set[Path | None] = set()
    for plan in plans:
        if plan.recipe in seen:
            continue
        seen.add(plan.recipe)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                cfg = parse_config(LTConfig, list(plan.argv), prog="sla-longtail")
                base = parse_config(LTConfig, ["--config", str(plan.recipe)]) if plan.recipe else cfg
        except SystemExit:
            why = (err.getvalue().strip().splitlines() or ["invalid arguments"])[-1]
            raise ProtocolError(
                f"the runs' arguments are not valid sla-longtail arguments ({why}); they were: "
                f"{shlex.join(plan.argv)}"
            ) from None
        if plan.recipe and base.imbalance_ratio != cfg.imbalance_ratio:
            print(f"warning: recipe {plan.recipe} is for imbalance ratio {base.imbalance_ratio:g}, the grid's is "
                  f"{cfg.imbalance_ratio:g}", file=sys.stderr)
        emulated_bf16 |= cfg.amp and not _is_cuda(cfg.device) and not cpu_has_native_bf16()
    if emulated_bf16:
        print(f"warning: {EMULATED_BF16} (from the runs' options)", file=sys.stderr)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Protocol options and the pass-through arguments (unknown options, then everything after ``--``)."""
    after: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, after = argv[:i], argv[i + 1 :]
    args, extra = build_parser().parse_known_args(argv)
    extra += after
    args.losses = _split_words(args.losses)
    unknown = [x for x in args.losses if x not in LOSSES]
    if unknown or not args.losses:
        raise ProtocolError(f"--losses: unknown loss(es) {unknown}; choose from {', '.join(LOSSES)}")
    try:
        args.seeds = [int(s) for s in _split_words(args.seeds)]
    except ValueError:
        raise ProtocolError(f"--seeds must be integers, got {' '.join(args.seeds)!r}") from None
    if not args.seeds or min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        raise ProtocolError(f"--seeds must be distinct integers >= 0, got {args.seeds}")
    if args.epochs < 1 or args.jobs < 0 or args.max_runs < 0 or args.grace < 0 or args.time_limit < 0:
        raise ProtocolError("--epochs must be >= 1; --jobs, --max-runs, --grace and --time-limit must be >= 0")
    if args.time_limit and args.time_limit <= args.grace:
        raise ProtocolError(
            f"--time-limit {args.time_limit:g} must exceed --grace {args.grace:g} (runs stop --grace seconds "
            "before the limit)"
        )
    check_passthrough(extra)
    return args, extra


# -- running ------------------------------------------------------------------------------------------
@dataclass
class _Active:
    plan: RunPlan
    proc: subprocess.Popen[bytes]
    log: IO[str]
    started_at: float


@dataclass
class _Outcome:
    skipped: list[RunPlan] = field(default_factory=list)  # finished before this invocation
    finished: list[RunPlan] = field(default_factory=list)
    stopped: list[RunPlan] = field(default_factory=list)  # exited 0 before the last epoch (--stop-after)
    interrupted: list[RunPlan] = field(default_factory=list)  # killed at the time limit or on a signal
    failed: list[RunPlan] = field(default_factory=list)
    not_started: list[RunPlan] = field(default_factory=list)


def _fmt_s(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # `python -m longtail.benchmark` must find this checkout from any working directory.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"  # the run's log shows where it is while it runs
    return env


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the run's own session: it and any worker it started
    except (ProcessLookupError, PermissionError):
        pass


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


class _Runner:
    """Launches the runs of a grid as child processes, at most ``jobs`` at once, within a time limit."""

    def __init__(self, args: argparse.Namespace, jobs: int, t0: float) -> None:
        self.args, self.jobs, self.t0 = args, jobs, t0
        self.stop_at = t0 + args.time_limit - args.grace if args.time_limit else None
        self.stop_reason: str | None = None
        self.env = _child_env()

    def say(self, msg: str) -> None:
        print(f"[{_fmt_s(time.monotonic() - self.t0)}] {msg}", flush=True)

    def launch(self, plan: RunPlan) -> _Active:
        plan.out.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "longtail.benchmark", *plan.argv]
        log = open(plan.out / "protocol.log", "a")
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} longtail.protocol: {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.say(f"start   {plan.name}{' (resuming from its checkpoint)' if plan.started else ''}")
        return _Active(plan, proc, log, time.monotonic())

    def reap(self, a: _Active, rc: int, outcome: _Outcome) -> None:
        a.log.close()
        took = _fmt_s(time.monotonic() - a.started_at)
        if rc == 0 and is_finished(a.plan.out):
            acc = json.loads((a.plan.out / "metrics.json").read_text())["test/acc"]
            outcome.finished.append(a.plan)
            self.say(f"done    {a.plan.name}: test/acc {acc:.4f} ({took})")
        elif rc == 0:
            outcome.stopped.append(a.plan)
            self.say(f"stopped {a.plan.name} before its last epoch ({took}); it resumes next time")
        else:
            outcome.failed.append(a.plan)
            log = a.plan.out / "protocol.log"
            self.say(f"FAILED  {a.plan.name} (exit {rc}, {took}); the end of {log}:\n{_log_tail(log)}")

    def terminate(self, running: list[_Active], outcome: _Outcome) -> None:
        """SIGTERM every run's process group, wait up to ``--grace`` seconds, then SIGKILL what is left."""
        if not running:
            return
        self.say(f"{self.stop_reason}: stopping {len(running)} run(s) (SIGTERM, then up to {self.args.grace:g} s)")
        for a in running:
            _signal_group(a.proc, signal.SIGTERM)
        end = time.monotonic() + self.args.grace
        while any(a.proc.poll() is None for a in running) and time.monotonic() < end:
            time.sleep(POLL_S)
        for a in running:
            if a.proc.poll() is None:
                _signal_group(a.proc, signal.SIGKILL)
            a.proc.wait()
            a.log.close()
            if is_finished(a.plan.out):  # it finished in the meantime
                outcome.finished.append(a.plan)
            else:
                outcome.interrupted.append(a.plan)
                self.say(f"stopped {a.plan.name}; it resumes from its last finished epoch next time")

    def run(self, todo: list[RunPlan], outcome: _Outcome) -> None:
        queue = deque(todo)
        running: list[_Active] = []
        launched = 0
        try:
            while queue or running:
                if self.stop_reason is None and self.stop_at is not None and time.monotonic() >= self.stop_at:
                    self.stop_reason = f"time limit ({self.args.time_limit:g} s) near"
                if self.stop_reason is not None:
                    break
                while queue and len(running) < self.jobs and (not self.args.max_runs or launched < self.args.max_runs):
                    running.append(self.launch(queue.popleft()))
                    launched += 1
                if not running:  # --max-runs reached
                    break
                for a in list(running):
                    rc = a.proc.poll()
                    if rc is not None:
                        running.remove(a)
                        self.reap(a, rc, outcome)
                time.sleep(POLL_S)
        finally:  # also on an exception (KeyboardInterrupt in a terminal): no orphaned runs
            if running and self.stop_reason is None:
                self.stop_reason = "interrupted"
            self.terminate(running, outcome)
            outcome.not_started.extend(queue)


# -- report -------------------------------------------------------------------------------------------
def write_report(plans: list[RunPlan], report_dir: Path) -> int:
    """``sla-report`` over the grid's run folders (those that exist) into ``report_dir``."""
    from fewshot_sla.report.cli import main as report_main

    dirs = [str(p.out) for p in plans if (p.out / "metrics.json").is_file() or (p.out / "config.yaml").is_file()]
    if not dirs:
        print(f"error: no run of this grid has started yet (under {plans[0].out.parent}); nothing to report",
              file=sys.stderr)
        return EXIT_USAGE
    return report_main([*dirs, "--out", str(report_dir)])


# -- the in-process grid (sla-longtail --grid-loss ... --grid-transform ...) -------------------------------
def grid_configs(cfg: LTConfig) -> list[LTConfig]:
    """The runs of ``cfg``'s ``--grid-loss`` x ``--grid-transform`` (``cfg``'s own loss or transform where a list
    is empty), each into ``OUT/<loss>_<transform>/``; ``--sd`` only where the transform is not ``none``.

    Every entry goes through :func:`fewshot_sla.config.config_from_dict`, so it is checked like a flag (an unknown
    loss is a clear error)."""
    from fewshot_sla.config import config_from_dict

    return [
        config_from_dict(LTConfig, {"loss": loss, "transform": tf, "sd": cfg.sd and tf != "none", "grid_loss": (),
                                    "grid_transform": (), "out": str(Path(cfg.out) / f"{loss}_{tf}")},
                         base=cfg, source="grid")
        for loss in cfg.grid_loss or (cfg.loss,)
        for tf in cfg.grid_transform or (cfg.transform,)
    ]


def grid_row(cfg: LTConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    """One row of the grid's table: the run's loss and transform, its accuracies (NaN where a mode is missing)."""
    import math

    return {
        "loss": cfg.loss + ("+DRW" if cfg.drw else ""),
        "transform": cfg.transform,
        "SI": metrics["test/acc"],
        "AG": metrics.get("test/acc_agg", math.nan),
        "SD": metrics.get("test/acc_distilled", math.nan),
        "balanced": metrics["test/balanced_acc"],
        "many": metrics["test/acc_many"],
        "medium": metrics["test/acc_medium"],
        "few": metrics["test/acc_few"],
    }


def run_grid(cfg: LTConfig, run: Callable[[LTConfig], dict[str, Any]]) -> list[dict[str, Any]]:
    """Run every entry of :func:`grid_configs` with ``run`` (``longtail.benchmark.run``), then print and write the
    table of the finished ones (rank 0): ``OUT/results.md`` and ``OUT/results.json``."""
    from fewshot_sla.distributed import info as dist_info
    from fewshot_sla.tracking import format_table
    from fewshot_sla.utils import write_json

    rows = []
    for sub in grid_configs(cfg):
        met = run(sub)
        if met.get("test/acc") is not None:
            rows.append(grid_row(sub, met))
    if rows and dist_info().is_main:
        table = format_table(rows)
        print("\n" + table)
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "results.md").write_text(table + "\n")
        write_json(rows, Path(cfg.out) / "results.json")
    return rows


# -- main ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run (a chunk of) the protocol; returns the exit status (see the module docstring)."""
    t0 = time.monotonic()
    try:
        args, extra = parse(list(sys.argv[1:] if argv is None else argv))
        jobs = args.jobs or (DEFAULT_CUDA_JOBS if not (args.report or args.dry_run) and _uses_cuda(extra) else 1)
        # Concurrent runs share the cores; torch's default (all of them each) would oversubscribe.
        threads = max(1, _cpu_count() // jobs) if jobs > 1 and _passthrough_value(extra, "--num-threads") is None \
            else None
        plans = plan_grid(args, extra, threads)
        check_run_args(plans)
    except ProtocolError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    grid_dir = plans[0].out.parent
    report_dir = grid_dir / "report"
    if args.report:
        return write_report(plans, report_dir)
    outcome = _Outcome(skipped=[p for p in plans if is_finished(p.out)])
    # Started runs first: finishing them gives complete seeds sooner than starting new ones.
    todo = sorted((p for p in plans if p not in outcome.skipped), key=lambda p: not p.started)
    if args.dry_run:
        for p in todo:
            print(shlex.join([sys.executable, "-m", "longtail.benchmark", *p.argv]))
        return EXIT_DONE
    recipes = sorted({str(p.recipe) for p in plans if p.recipe})
    print(f"grid {grid_dir}: {len(plans)} runs ({len(outcome.skipped)} finished before), {jobs} at once"
          + (f", time limit {args.time_limit:g} s" if args.time_limit else "")
          + (f"; recipes: {', '.join(recipes)}" if recipes else "; no recipe (sla-longtail's defaults)"), flush=True)
    runner = _Runner(args, jobs, t0)

    def on_signal(signum: int, frame: Any) -> None:  # a batch system ending the job: stop the runs cleanly
        runner.stop_reason = f"signal {signal.Signals(signum).name}"

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        runner.run(todo, outcome)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    done = len(outcome.skipped) + len(outcome.finished)
    print(f"grid {grid_dir}: {done} of {len(plans)} runs finished ({len(outcome.finished)} in this invocation), "
          f"{len(outcome.stopped) + len(outcome.interrupted)} stopped, {len(outcome.failed)} failed, "
          f"{len(outcome.not_started)} not started", flush=True)
    if done == len(plans):
        rc = write_report(plans, report_dir)
        return EXIT_DONE if rc == 0 else rc
    if outcome.failed:
        print("failed runs: " + ", ".join(p.name for p in outcome.failed) + " (see their protocol.log)", flush=True)
    print("runs remain: run the same command again (finished runs are skipped, started ones resume)", flush=True)
    return EXIT_FAILED if outcome.failed else EXIT_INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
