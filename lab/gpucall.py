"""The long-tail protocol's GPU call: one prepared command that spends a lent GPU's minutes with nothing left to
decide, and brings every result back in a handful of files.

    scripts/gpu_call.sh --data-root /tmp/cifar10-jpeg --unpack .gpu/data/materialize.py --out "$OUT"   # the device
    scripts/gpu_call.sh --dry-run --out /tmp/dry                                                      # CPU rehearsal
    python -m lab.gpucall ...                                                # the same, from the checkout's root

What it does, in one process, within ``--budget`` seconds of wall time (default 540: 9 minutes):

1. prints the environment (GPU, driver, torch, CUDA, Python) into ``OUT/environment.json`` and the log;
2. makes the data ready: the image folder at ``--data-root`` (written first by ``--unpack SCRIPT`` when it is
   missing), decoded once into its cache so that the concurrent runs only read it;
3. measures the throughput table (:mod:`lab.throughput`; about a minute on a GPU): ``sla-longtail``'s own step
   at batch 128 for the baseline and SLA+SD (M = 4) as ``fp32``, ``bf16+cl``, ``compile`` and ``graphs``, and K
   processes at once; median step from CUDA events after a warm-up; images/s per model and in total, peak memory;
4. plans (:func:`plan_runs`): from the measured step times, which runs of :func:`priority_queue` finish in the time
   left and how many run at once (the variant and process count that finish the most);
5. runs them concurrently (:class:`Lanes`: one ``sla-longtail`` process each, W&B disabled, all stopped at the
   budget); every run it starts is planned to finish in this call, and runs already finished under ``--committed``
   (default ``docs/runs/longtail_gpu`` of the working directory) are skipped, so a second call continues the list;
6. packs into ``OUT`` (at most 8 files): ``gpu_call.log``, ``environment.json``, ``throughput.md``, ``throughput.json``,
   ``plan.json`` and ``runs.tar.gz`` (each run's ``metrics.json``, ``config.yaml``, ``recipe.json``,
   ``protocol.log``), to unpack into ``docs/runs/longtail_gpu/`` with ``tar xzf runs.tar.gz -C docs/runs/longtail_gpu``.

Priority (:func:`priority_queue`): CIFAR-10-LT-100 LDAM-DRW and logit adjustment, each baseline then SLA+SD, seed 0
of both losses, then seed 1, then 2; then VS and CE likewise; then imbalance ratio 10 (all four losses). The
protocol is LDAM-DRW's 200 epochs (the recipes ``longtail/cifar10_ir<r>_<loss>`` shipped with ``longtail``) on the
image folder, with
CIFAR-10's normalisation (``--norm-stats cifar``, as LDAM-DRW).

``--dry-run`` rehearses the same steps on a CPU: a small synthetic image folder, 1-epoch runs, a tiny throughput
table, the same plan and packing. It needs neither wandb, learn2learn, qpth nor submitit (the device has none of
them: hence its own small lanes runner rather than ``sla-grid``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from fewshot_sla.config import find_recipe
from fewshot_sla.grid import is_finished
from lab import throughput as tp

__all__ = ["QueueItem", "Rates", "Slot", "Plan", "priority_queue", "candidate_rates", "run_seconds", "schedule",
           "plan_runs", "RunPlan", "Lanes", "main"]

COMMITTED = Path("docs") / "runs" / "longtail_gpu"  # relative to the working directory (the checkout's root)
# Recipe name of each loss (longtail/configs/cifar10_ir<ratio>_<name>.yaml); the protocol's "ldam" is LDAM-DRW.
RECIPE_NAMES = {"ce": "ce", "ldam": "ldam_drw", "logit-adjusted": "logit_adjusted", "vs": "vs"}
DRW_LOSSES = frozenset({"ldam"})
POLL_S = 0.2
PRIORITY: tuple[tuple[float, tuple[str, ...]], ...] = (
    (100.0, ("ldam", "logit-adjusted")),
    (100.0, ("vs", "ce")),
    (10.0, ("ldam", "logit-adjusted", "vs", "ce")),
)
SEEDS = (0, 1, 2)
STARTUP_S = 20.0  # a run's process: imports, data from the cache, model, first checkpoint (estimate)
EVAL_S = 10.0  # a run's final test evaluation, every prediction mode (estimate, GPU)
MARGIN = 0.15  # planned run times are stretched by this fraction (the measured rates are short medians)
PACK_S = 30.0  # seconds kept for packing at the end
MAX_FILES = 8


# -- the plan ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueItem:
    """One run of the priority list."""

    ratio: float
    loss: str
    method: str  # "baseline" or "slasd"
    seed: int

    @property
    def regime(self) -> str:
        return "baseline" if self.method == "baseline" else "SLA+SD"

    @property
    def name(self) -> str:
        return f"imagefolder_ir{self.ratio:g}/{self.loss}_{self.method}_s{self.seed}"


def priority_queue(done: Collection[str] = ()) -> list[QueueItem]:
    """Every run of the GPU protocol in launch order, less those named in ``done`` (:attr:`QueueItem.name`)."""
    out = []
    for ratio, losses in PRIORITY:
        for seed in SEEDS:
            for loss in losses:
                for method in ("baseline", "slasd"):
                    item = QueueItem(ratio, loss, method, seed)
                    if item.name not in done:
                        out.append(item)
    return out


def committed_runs(folder: Path) -> set[str]:
    """Names (``imagefolder_ir<r>/<run>``) of the finished runs under ``folder``."""
    if not folder.is_dir():
        return set()
    return {f"{d.parent.name}/{d.name}" for d in folder.glob("*/*") if d.is_dir() and is_finished(d)}


@dataclass(frozen=True)
class Rates:
    """Seconds per training step of each regime while ``processes`` runs share the device as ``variant``, and the
    warm-up (compilation) each run pays once."""

    variant: str
    processes: int
    step_s: dict[str, float]
    warmup_s: float


def candidate_rates(rows: Sequence[tp.StepTiming]) -> list[Rates]:
    """One :class:`Rates` per measured SLA+SD row (variant, processes). A baseline step at ``K`` processes is the
    SLA+SD step there times the two regimes' ratio measured in one process (of the same variant, else of the
    eager ``bf16+cl`` or ``fp32``, the ones measured for both)."""
    ok = [r for r in rows if r.error is None and r.step_ms == r.step_ms]
    single = {(r.regime, r.variant): r.step_ms for r in ok if r.processes == 1}

    def ratio(variant: str) -> float | None:
        for v in (variant, "bf16+cl", "fp32"):
            if ("baseline", v) in single and ("SLA+SD", v) in single:
                return single[("baseline", v)] / single[("SLA+SD", v)]
        return None

    out = []
    for r in ok:
        if r.regime != "SLA+SD":
            continue
        q = ratio(r.variant)
        if q is None:
            continue
        sla = r.step_ms / 1e3
        out.append(Rates(r.variant, r.processes, {"SLA+SD": sla, "baseline": sla * q}, r.warmup_s))
    return out


def steps_per_epoch(n_train: int, batch: int, drop_last: bool) -> int:
    """Optimiser steps of an epoch of ``n_train`` images (as ``longtail.recipe.make_loop`` counts them)."""
    full, rest = divmod(n_train, batch)
    return full + (not drop_last and rest >= 2)


def run_seconds(item: QueueItem, rates: Rates, n_train: dict[float, int], epochs: int, batch: int = 128) -> float:
    """Planned wall time of one run: its steps at the measured rate, stretched by :data:`MARGIN`, plus the start,
    the warm-up and the final evaluation."""
    steps = epochs * steps_per_epoch(n_train[item.ratio], batch, tp.VARIANTS[rates.variant].drop_last)
    return steps * rates.step_s[item.regime] * (1 + MARGIN) + rates.warmup_s + STARTUP_S + EVAL_S


@dataclass(frozen=True)
class Slot:
    item: QueueItem
    lane: int
    start_s: float
    end_s: float


@dataclass
class Plan:
    """What the call runs: the variant, how many at once, and each run's lane and planned times."""

    variant: str | None
    processes: int
    seconds: float  # the time the runs may take
    slots: list[Slot] = field(default_factory=list)
    left: list[QueueItem] = field(default_factory=list)  # what a later call continues with

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "processes": self.processes, "seconds": self.seconds,
                "flags": tp.variant_flags(self.variant) if self.variant else [],
                "runs": [{**asdict(s.item), "name": s.item.name, "lane": s.lane, "start_s": round(s.start_s, 1),
                          "end_s": round(s.end_s, 1)} for s in self.slots],
                "left": [i.name for i in self.left]}


def schedule(queue: Sequence[QueueItem], rates: Rates, n_train: dict[float, int], epochs: int, seconds: float,
             max_runs: int = 0, batch: int = 128) -> list[Slot]:
    """The runs the protocol's runner would start, in queue order, each on the first lane to come free, as long as
    the next one still ends within ``seconds`` (the order is kept: nothing later jumps ahead of a run that does not
    fit, so a later call continues the same list)."""
    lanes = [0.0] * rates.processes
    slots: list[Slot] = []
    for item in queue:
        if max_runs and len(slots) >= max_runs:
            break
        lane = min(range(len(lanes)), key=lambda i: (lanes[i], i))
        end = lanes[lane] + run_seconds(item, rates, n_train, epochs, batch)
        if end > seconds:
            break
        slots.append(Slot(item, lane, lanes[lane], end))
        lanes[lane] = end
    return slots


def plan_runs(queue: Sequence[QueueItem], candidates: Sequence[Rates], n_train: dict[float, int], epochs: int,
              seconds: float, max_runs: int = 0, batch: int = 128) -> Plan:
    """The candidate (variant, processes) that finishes the most runs of ``queue`` in ``seconds``; ties go to the
    earlier end of the last run, then to fewer processes."""
    best: tuple[tuple[float, ...], Plan] | None = None
    for rates in candidates:
        slots = schedule(queue, rates, n_train, epochs, seconds, max_runs, batch)
        key = (-len(slots), max((s.end_s for s in slots), default=0.0), rates.processes)
        plan = Plan(rates.variant, rates.processes, seconds, slots, list(queue[len(slots):]))
        if best is None or key < best[0]:
            best = (key, plan)
    return best[1] if best else Plan(None, 0, seconds, [], list(queue))


# -- the call ------------------------------------------------------------------------------------------------------
class _Log:
    """Prints and appends to ``OUT/gpu_call.log``, each line stamped with the seconds since the start."""

    def __init__(self, path: Path, t0: float) -> None:
        self.path, self.t0 = path, t0
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f} s] {msg}"
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def environment() -> dict[str, Any]:
    """The GPU, driver, torch, CUDA and Python this call runs on."""
    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                           "cpu_count": os.cpu_count(), "gpus": []}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            env["gpus"].append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                                "capability": f"{p.major}.{p.minor}"})
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            env["driver"] = None
    return env


def write_synthetic_folder(root: Path, per_class: int = 100, test_per_class: int = 5, seed: int = 0) -> Path:
    """A small image folder in ``sla-longtail``'s layout (``root/{train,test}/<class>/NNNN.png``, 10 classes of
    random 32x32 RGB images): the dry run's data."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c in range(10):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{k:04d}.png")
    return root


def prepare_data(args: argparse.Namespace, ratios: Sequence[float], log: _Log) -> dict[float, int]:
    """Make the image folder ready (unpacked, decoded into its cache); the training images of each ratio."""
    from longtail.data import load_longtail

    root = Path(args.data_root)
    if args.dry_run and not (root / "train").is_dir():
        write_synthetic_folder(root)
        log(f"dry run: a synthetic image folder at {root}")
    elif not (root / "train").is_dir():
        if not args.unpack:
            raise SystemExit(f"error: no image folder at {root} (expected {root}/train/<class>/ and test/); pass "
                             "--unpack SCRIPT (../shared/data/materialize.py, carried) or point --data-root at one")
        out = root.parent
        log(f"unpacking: {args.unpack} {out} --only cifar10")
        subprocess.run([sys.executable, args.unpack, str(out), "--only", "cifar10"], check=True)
        if not (root / "train").is_dir():
            raise SystemExit(f"error: {args.unpack} did not write {root}/train; pass the folder it writes as "
                             "--data-root")
    counts = {}
    for ratio in ratios:
        t = time.monotonic()
        d = load_longtail("imagefolder", root, ratio, progress=False)
        counts[ratio] = int(sum(d.counts))
        log(f"data: {root}, imbalance ratio {ratio:g}: {counts[ratio]} training images, {len(d.test_labels)} test "
            f"({time.monotonic() - t:.1f} s)")
    return counts


def measure_table(args: argparse.Namespace, log: _Log) -> list[tp.StepTiming]:
    """The throughput rows, most useful first, within ``--bench-seconds`` (a row is skipped once it is spent)."""
    device = "cpu" if args.dry_run else "cuda"
    kw = dict(device=device, batch=args.bench_batch, warmup=args.bench_warmup, steps=args.bench_steps)
    eager = ["fp32", "bf16+cl"]
    plan: list[tuple[str, str, int]] = [(r, v, 1) for v in eager for r in ("baseline", "SLA+SD")]
    plan += [("SLA+SD", "bf16+cl", k) for k in args.processes]
    if not args.dry_run:  # compiling costs each run its warm-up: measured after the eager rows the plan needs
        plan += [("SLA+SD", "compile", 1), ("SLA+SD", "graphs", 1)]
        plan += [("SLA+SD", "compile", k) for k in args.processes]
    rows: list[tp.StepTiming] = []
    t_end = time.monotonic() + args.bench_seconds
    for regime, variant, k in plan:
        if time.monotonic() > t_end:
            log(f"throughput: --bench-seconds {args.bench_seconds:g} spent; skipping {regime} {variant} x{k}")
            continue
        t = time.monotonic()
        fn = tp.measure_processes
        threads = 1 if args.dry_run else max(1, (os.cpu_count() or 1) // k)  # as the runs get them (run_plans)
        row = tp.safe(fn, regime, variant, k, k, regime, variant, timeout=args.bench_timeout, threads=threads, **kw)
        rows.append(row)
        what = row.error or f"{row.step_ms:.1f} ms/step, {row.images_s:,.0f} img/s per model, " \
                            f"{row.total_images_s:,.0f} total, peak {row.peak_mib:,.0f} MiB"
        log(f"throughput: {regime} {variant} x{k}: {what} ({time.monotonic() - t:.0f} s)")
    return rows


@dataclass(frozen=True)
class RunPlan:
    """One planned run: where it writes and the ``sla-longtail`` arguments that make it."""

    out: Path
    argv: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.out.name

    @property
    def started(self) -> bool:
        return (self.out / "checkpoint.pt").is_file()


def run_argv(item: QueueItem, out: Path, data_root: str, epochs: int, extra: Sequence[str]) -> tuple[str, ...]:
    """The ``sla-longtail`` arguments of one run of the priority list: its loss's shipped recipe for the item's
    imbalance ratio on the image folder, the baseline (``--transform none --no-sd``) or SLA+SD (rotation)."""
    recipe = find_recipe(f"cifar10_ir{item.ratio:g}_{RECIPE_NAMES[item.loss]}", "longtail")
    argv = ["--config", str(recipe), "--dataset", "imagefolder", "--data-root", data_root,
            "--imbalance-ratio", f"{item.ratio:g}", "--epochs", str(epochs), "--loss", item.loss,
            *(["--drw"] if item.loss in DRW_LOSSES else [])]
    argv += ["--transform", "none", "--no-sd"] if item.method == "baseline" else ["--transform", "rotation", "--sd"]
    return (*argv, "--seed", str(item.seed), "--out", str(out), "--resume", *extra)


def run_plans(plan: Plan, args: argparse.Namespace) -> list[RunPlan]:
    """The ``sla-longtail`` arguments of each planned run, into ``RUNS/imagefolder_ir<r>/<loss>_<method>_s<seed>``."""
    threads = max(1, (os.cpu_count() or 1) // max(1, plan.processes))
    extra = [*tp.variant_flags(plan.variant or "fp32"), "--norm-stats", "cifar", "--wandb", "disabled",
             "--device", "cpu" if args.dry_run else "cuda", "--num-threads", str(threads)]
    if args.dry_run:
        extra += ["--batch-size", "32"]
    out = []
    for s in plan.slots:
        run_dir = Path(args.runs) / s.item.name
        out.append(RunPlan(run_dir, run_argv(s.item, run_dir, args.data_root, args.epochs, extra)))
    return out


@dataclass
class _Active:
    plan: RunPlan
    proc: subprocess.Popen[bytes]
    log: IO[str]


@dataclass
class Outcome:
    finished: list[RunPlan] = field(default_factory=list)
    stopped: list[RunPlan] = field(default_factory=list)  # exited 0 before the last epoch
    interrupted: list[RunPlan] = field(default_factory=list)  # stopped at the time limit
    failed: list[RunPlan] = field(default_factory=list)
    not_started: list[RunPlan] = field(default_factory=list)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the run's own session: it and any worker it started
    except (ProcessLookupError, PermissionError):
        pass


class Lanes:
    """Runs ``sla-longtail`` processes, at most ``jobs`` at once, within ``time_limit`` seconds: ``grace`` seconds
    before it no run is started any more and the running ones get SIGTERM, then SIGKILL after ``grace`` more
    seconds at most (a killed run loses only its unfinished epoch). Each run's output goes to ``RUN/protocol.log``."""

    def __init__(self, jobs: int, time_limit: float, grace: float, say: Callable[[str], None]) -> None:
        self.jobs, self.grace, self.say = jobs, grace, say
        self.stop_at = time.monotonic() + time_limit - grace

    def launch(self, plan: RunPlan) -> _Active:
        plan.out.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "longtail.benchmark", *plan.argv]
        log = open(plan.out / "protocol.log", "a")
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} gpu call: {shlex.join(cmd)}\n")
        log.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.say(f"start   {plan.name}{' (resuming from its checkpoint)' if plan.started else ''}")
        return _Active(plan, proc, log)

    def reap(self, a: _Active, rc: int, outcome: Outcome) -> None:
        a.log.close()
        if rc == 0 and is_finished(a.plan.out):
            acc = json.loads((a.plan.out / "metrics.json").read_text())["test/acc"]
            outcome.finished.append(a.plan)
            self.say(f"done    {a.plan.name}: test/acc {acc:.4f}")
        elif rc == 0:
            outcome.stopped.append(a.plan)
            self.say(f"stopped {a.plan.name} before its last epoch")
        else:
            outcome.failed.append(a.plan)
            lines = (a.plan.out / "protocol.log").read_text(errors="replace").splitlines()[-15:]
            self.say(f"FAILED  {a.plan.name} (exit {rc}); the end of its protocol.log:\n" + "\n".join(lines))

    def terminate(self, running: list[_Active], outcome: Outcome) -> None:
        if not running:
            return
        self.say(f"time limit near: stopping {len(running)} run(s) (SIGTERM, then up to {self.grace:g} s)")
        for a in running:
            _signal_group(a.proc, signal.SIGTERM)
        end = time.monotonic() + self.grace
        while any(a.proc.poll() is None for a in running) and time.monotonic() < end:
            time.sleep(POLL_S)
        for a in running:
            if a.proc.poll() is None:
                _signal_group(a.proc, signal.SIGKILL)
            a.proc.wait()
            a.log.close()
            (outcome.finished if is_finished(a.plan.out) else outcome.interrupted).append(a.plan)

    def run(self, todo: list[RunPlan]) -> Outcome:
        outcome = Outcome()
        queue = list(todo)
        running: list[_Active] = []
        try:
            while (queue or running) and time.monotonic() < self.stop_at:
                while queue and len(running) < self.jobs:
                    running.append(self.launch(queue.pop(0)))
                for a in [a for a in running if a.proc.poll() is not None]:
                    running.remove(a)
                    self.reap(a, a.proc.returncode, outcome)
                time.sleep(POLL_S)
        finally:  # also on an exception: no orphaned runs
            self.terminate(running, outcome)
            outcome.not_started.extend(queue)
        return outcome


def pack(out: Path, runs_root: Path, log: _Log) -> list[Path]:
    """``OUT/runs.tar.gz``: each run's metrics.json, config.yaml, recipe.json and protocol.log."""
    tar = out / "runs.tar.gz"
    keep = ("metrics.json", "config.yaml", "recipe.json", "protocol.log")
    n = 0
    with tarfile.open(tar, "w:gz") as t:
        for f in sorted(runs_root.glob("*/*/*")):
            if f.name in keep:
                t.add(f, arcname=str(f.relative_to(runs_root)))
                n += 1
    log(f"packed {n} files of {len(list(runs_root.glob('*/*')))} run folders into {tar}")
    files = sorted(p for p in out.iterdir() if p.is_file())
    if len(files) > MAX_FILES:
        log(f"warning: {len(files)} files in {out}, more than the {MAX_FILES} that come back")
    return files


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gpu_call.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="where the packed files go ($OUT on the device)")
    ap.add_argument("--data-root", default="/tmp/gpu_data/cifar10-jpeg", help="the CIFAR-10 image folder")
    ap.add_argument("--unpack", default=None, help="script writing the folder when missing (materialize.py)")
    ap.add_argument("--runs", default="/tmp/gpu_runs", help="where the runs train (not packed whole)")
    ap.add_argument("--committed", type=Path, default=COMMITTED,
                    help=f"finished runs here are skipped (default: {COMMITTED}, relative to the working directory)")
    ap.add_argument("--budget", type=float, default=540.0, help="wall seconds of the whole call (default 540)")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--processes", type=int, nargs="+", default=[4, 8], help="K processes at once to measure")
    ap.add_argument("--bench-seconds", type=float, default=120.0, help="time for the throughput table")
    ap.add_argument("--bench-timeout", type=float, default=150.0, help="seconds one measurement may take")
    ap.add_argument("--bench-batch", type=int, default=128)
    ap.add_argument("--bench-warmup", type=int, default=5)
    ap.add_argument("--bench-steps", type=int, default=30)
    ap.add_argument("--max-runs", type=int, default=0, help="plan at most N runs (0 = as many as fit)")
    ap.add_argument("--dry-run", action="store_true",
                    help="rehearse on a CPU: synthetic folder, 1-epoch runs, a tiny table, the same plan and packing")
    return ap


def main(argv: list[str] | None = None) -> int:
    t0 = time.monotonic()
    args = build_parser().parse_args(argv)
    if args.dry_run:  # tiny everything, unless given
        given = set(argv or sys.argv[1:])
        defaults = {"--epochs": ("epochs", 1), "--processes": ("processes", [2]), "--bench-batch": ("bench_batch", 8),
                    "--bench-warmup": ("bench_warmup", 1), "--bench-steps": ("bench_steps", 2),
                    "--max-runs": ("max_runs", 2), "--budget": ("budget", 3600.0)}
        for flag, (name, value) in defaults.items():
            if flag not in given:
                setattr(args, name, value)
        if "--data-root" not in given:
            args.data_root = str(args.out.parent / (args.out.name + "_data") / "folder")
        if "--runs" not in given:
            args.runs = str(args.out.parent / (args.out.name + "_runs"))
    args.out.mkdir(parents=True, exist_ok=True)
    log = _Log(args.out / "gpu_call.log", t0)
    log(f"gpu_call{' --dry-run' if args.dry_run else ''}: budget {args.budget:g} s, {args.epochs} epochs; "
        f"{shlex.join(sys.argv)}")
    env = environment()
    (args.out / "environment.json").write_text(json.dumps(env, indent=1))
    log(f"environment: {json.dumps(env)}")
    if not args.dry_run and not env["gpus"]:
        log("error: no CUDA device here; use --dry-run to rehearse on a CPU")
        return 2
    done = committed_runs(args.committed)
    queue = priority_queue(done)
    log(f"queue: {len(queue)} runs left ({len(done)} committed under {args.committed})")
    if not queue:
        log("nothing left to run")
        return 0
    n_train = prepare_data(args, sorted({i.ratio for i in queue}, reverse=True), log)
    rows = measure_table(args, log)
    (args.out / "throughput.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
    (args.out / "throughput.md").write_text(
        f"ResNet-32, batch {args.bench_batch} (x4 for SLA+SD), median of {args.bench_steps} steps after "
        f"{args.bench_warmup} warm-up; {env['gpus'][0]['name'] if env['gpus'] else 'CPU'}, torch {env['torch']}\n\n"
        + tp.table(rows) + "\n")
    seconds = args.budget - (time.monotonic() - t0) - PACK_S
    plan = plan_runs(queue, candidate_rates(rows), n_train, args.epochs, seconds, args.max_runs)
    (args.out / "plan.json").write_text(json.dumps(plan.to_dict(), indent=1))
    log(f"plan: {len(plan.slots)} runs, {plan.processes} at once as {plan.variant} in {seconds:.0f} s: "
        + ", ".join(f"{s.item.name} ({s.start_s:.0f}-{s.end_s:.0f} s)" for s in plan.slots))
    rc = 0
    if plan.slots:
        runs = run_plans(plan, args)
        lanes = Lanes(plan.processes, max(1.0, args.budget - (time.monotonic() - t0) - PACK_S / 2), 10.0, log)
        outcome = lanes.run(runs)
        log(f"runs: {len(outcome.finished)} finished, {len(outcome.failed)} failed, "
            f"{len(outcome.interrupted)} stopped at the time limit, {len(outcome.not_started)} not started")
        for p in outcome.finished:
            met = json.loads((p.out / "metrics.json").read_text())
            log(f"  {p.out.parent.name}/{p.name}: test/acc {met['test/acc']:.4f}"
                + (f", SD {met['test/acc_distilled']:.4f}" if "test/acc_distilled" in met else ""))
        rc = 1 if outcome.failed else 0
    files = pack(args.out, Path(args.runs), log)
    log(f"done in {time.monotonic() - t0:.0f} s; {len(files)} files in {args.out}: {', '.join(f.name for f in files)}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
