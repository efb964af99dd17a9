"""``sla-grid GRID.yaml``: a grid of ``sla-fewshot`` or ``sla-longtail`` runs on one machine or a SLURM cluster.

    sla-grid lab/grids/longtail_cifar10_ir100.yaml --jobs 4 -- --data-root DATA      # 4 runs at once, here
    sla-grid GRID.yaml --launcher slurm --partition gpu --gpus-per-job 1 --cpus-per-job 8 --time 600 --mem-gb 32
    sla-grid GRID.yaml --dry-run                                                     # what would run, and how
    sla-grid GRID.yaml --only 'ce_*' --out runs/other                                # a part, elsewhere

A grid file names the CLI, an output folder, the options every run shares, and the runs: the cartesian product
of ``axes`` and/or an explicit list ``runs``::

    cli: sla-longtail                  # or sla-fewshot
    out: runs/protocol/cifar10_ir100   # each run writes OUT/<name>/
    options: {dataset: cifar10, data_root: data, epochs: 200}
    axes:
      loss:                            # a mapping axis: each label names a bundle of options
        ce: {config: longtail/cifar10_ir100_ce}
        ldam: {config: longtail/cifar10_ir100_ldam_drw}
      method:
        baseline: {transform: none, sd: false}
        slasd: {transform: rotation, sd: true}
      seed: [0, 1, 2]                  # a list axis: one option, one value per run
    runs:                              # more runs, each a name and its options
      - {name: ce_long, config: longtail/cifar10_ir100_ce, epochs: 400}
    report:                            # optional: sla-report groups (run-name patterns) into OUT/report/<group>/
      ldam: ["ldam_*"]

Options are the CLI's config keys (``data_root`` or ``data-root``): ``true`` gives ``--key``, ``false``
``--no-key``, a list ``--key v1 v2``. A run's folder name joins its axis parts in the file's order: a mapping
axis gives the label, ``seed`` gives ``s<seed>``, any other list axis ``<key>-<value>`` (``ce_baseline_s0``).
Later wins: ``options`` < axes < a run's own options < the arguments after ``--`` on the command line. Every
run's arguments are parsed by the CLI's own config parser before anything starts, so an unknown key or value is
one line naming the run.

Resumable through the run records: a run whose ``metrics.json`` holds ``test/acc`` is finished and skipped; every
other run is launched with ``--resume``, so a started one continues exactly from its ``checkpoint.pt`` and a new
one starts. When every run is finished, ``sla-report`` writes ``OUT/report/`` (one report, or one per ``report``
group). Exit status: 0 every run finished (report written), 3 runs remain (run the same command again), 1 a run
failed, 2 bad usage. submitit's own files (pickled jobs, their logs) go to ``OUT/.submitit/``.

Launchers (submitit, imported only to launch: ``pip install 'fewshot-sla[grid]'``): ``local`` runs ``--jobs``
runs at once on this machine (``submitit.LocalExecutor``), each with ``--num-threads`` = cores / jobs unless the
grid sets it; ``slurm`` submits one job per run (``submitit.AutoExecutor``: ``--partition``, ``--gpus-per-job``,
``--cpus-per-job``, ``--time`` minutes, ``--mem-gb``) and waits for them; a job preempted or out of time is
requeued by submitit and runs the same command, which resumes from the run's last checkpoint; ``debug`` runs
each run in this process, one after the other (``submitit.DebugExecutor``; breakpoints work). Each run's console
output is appended to ``OUT/<name>/grid.log``, one ``=== `` header per launch.

The CLIs are found by name at run time (:data:`CLIS`); this module imports neither package.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import importlib
import io
import itertools
import json
import os
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CLIS", "Cli", "Grid", "GridError", "GridRun", "RunJob", "is_finished", "load_grid", "make_executor",
           "option_args", "select", "slurm_parameters", "main"]

EXIT_DONE, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
GRID_KEYS = frozenset({"cli", "out", "options", "axes", "runs", "report"})
#: Options the grid sets for every run itself.
OWNED = frozenset({"out", "resume"})
POLL_S = 0.5
CANCEL_WAIT_S = 30.0  # seconds the jobs get to stop on Ctrl-C or SIGTERM
LOCAL_TIMEOUT_MIN = 60 * 24 * 365  # a local run has no wall-time limit unless --time gives one
INSTALL = "pip install 'fewshot-sla[grid]'"


class GridError(ValueError):
    """A bad grid file or option; the message says which and what to do instead."""


@dataclass(frozen=True)
class Cli:
    """A run CLI by name: its entry point, its config class and the package whose recipes ``--config`` names."""

    entry: str  # "module:function"
    config: str  # "module:Class"
    package: str

    def resolve(self, what: str) -> Any:
        module, _, name = what.partition(":")
        return getattr(importlib.import_module(module), name)


CLIS: dict[str, Cli] = {
    "sla-fewshot": Cli("episodes.train:main", "episodes.config:FewShotConfig", "episodes"),
    "sla-longtail": Cli("longtail.benchmark:main", "longtail.config:LTConfig", "longtail"),
}


@dataclass(frozen=True)
class GridRun:
    """One run: its name (its folder under the grid's ``out``) and its CLI arguments (``--out`` and ``--resume``
    included)."""

    name: str
    out: Path
    argv: tuple[str, ...]


@dataclass
class Grid:
    cli: str
    out: Path
    runs: list[GridRun]
    report: dict[str, list[str]] = field(default_factory=dict)  # group -> run names


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir/metrics.json`` holds ``test/acc`` of a finished run (what ``sla-report`` counts as finished:
    not the ``"finished": false`` of an unfinished run re-tested with ``--allow-unfinished``)."""
    try:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError):  # missing or unreadable: resumed, not trusted
        return False
    return isinstance(metrics, dict) and "test/acc" in metrics and metrics.get("finished") is not False


# -- the grid file -------------------------------------------------------------------------------------------------
def _key(key: str) -> str:
    return str(key).replace("-", "_")


def option_args(options: dict[str, Any]) -> list[str]:
    """``{key: value}`` as CLI flags: ``true`` -> ``--key``, ``false`` -> ``--no-key``, a list -> ``--key v1 v2``."""
    out: list[str] = []
    for key, value in options.items():
        flag = "--" + _key(key).replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            out += [flag, *map(str, value)]
        elif value is None:
            raise GridError(f"option {key!r} has no value; give one or leave the key out")
        else:
            out += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return out


def _options(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GridError(f"{where} must be a mapping of option: value, got {type(value).__name__}")
    owned = sorted(k for k in value if _key(k) in OWNED)
    if owned:
        raise GridError(f"{where}: {', '.join(owned)} is set by the grid (each run writes OUT/<name>/ and resumes); "
                        "set the grid's out instead")
    return {_key(k): v for k, v in value.items()}


def _axis(name: str, values: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(folder part, options)`` of each value of an axis."""
    if isinstance(values, dict):
        parts = [(str(label), _options(f"axes.{name}.{label}", opts)) for label, opts in values.items()]
    elif isinstance(values, list):
        if _key(name) in OWNED:
            raise GridError(f"axes.{name}: {name} is set by the grid; it cannot be an axis")
        prefix = "s" if _key(name) == "seed" else f"{name}-"
        parts = [(f"{prefix}{_fmt(v)}", {_key(name): v}) for v in values]
    else:
        raise GridError(f"axes.{name} must be a list of values or a mapping label: options, got {values!r}")
    if not parts:
        raise GridError(f"axes.{name} is empty: the grid would have no run; give it at least one value")
    return parts


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)


def load_grid(path: str | Path, out: str | None = None, extra: Sequence[str] = ()) -> Grid:
    """Read and expand a grid file; ``out`` replaces its ``out``; ``extra`` arguments go last to every run.

    Raises:
        GridError: the file is missing or not a grid (unknown CLI or key, no run, a duplicate name, ...).
    """
    import yaml

    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except OSError as e:
        raise GridError(f"cannot read the grid file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise GridError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(spec, dict):
        raise GridError(f"{path} must be a mapping with cli, out and axes and/or runs")
    unknown = sorted(set(spec) - GRID_KEYS)
    if unknown:
        raise GridError(f"{path}: unknown key(s) {', '.join(unknown)}; a grid has {', '.join(sorted(GRID_KEYS))}")
    cli = spec.get("cli")
    if cli not in CLIS:
        raise GridError(f"{path}: cli must be one of {', '.join(CLIS)}, got {cli!r}")
    out_dir = out or spec.get("out")
    if not out_dir:
        raise GridError(f"{path}: no out folder; add out: DIR (or pass --out DIR)")
    owned = sorted({a.split("=")[0] for a in extra} & {"--out", "--resume", "--no-resume"})
    if owned:
        raise GridError(f"{', '.join(owned)} cannot be passed to the runs: the grid sets it (use --out for the grid)")
    common = _options(f"{path}: options", spec.get("options"))

    named: list[tuple[str, dict[str, Any]]] = []
    axes = spec.get("axes") or {}
    if not isinstance(axes, dict):
        raise GridError(f"{path}: axes must be a mapping of axis name: values")
    if axes:
        for combo in itertools.product(*(_axis(k, v) for k, v in axes.items())):
            opts: dict[str, Any] = {}
            for _, o in combo:
                opts.update(o)
            named.append(("_".join(part for part, _ in combo), opts))
    for i, item in enumerate(spec.get("runs") or []):
        if not isinstance(item, dict) or not item.get("name"):
            raise GridError(f"{path}: runs[{i}] must be a mapping with a name and its options")
        item = dict(item)
        named.append((str(item.pop("name")), _options(f"{path}: runs[{i}]", item)))
    if not named:
        raise GridError(f"{path}: the grid has no run; give axes and/or runs")
    names = [n for n, _ in named]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise GridError(f"{path}: run name(s) {', '.join(dup)} used twice; each run needs a folder of its own")
    bad = [n for n in names if not n or "/" in n or n in (".", "..")]
    if bad:
        raise GridError(f"{path}: run name {bad[0]!r} is not a folder name")

    runs = []
    for name, opts in named:
        cfg = {**common, **opts}
        if "config" in cfg and (path.parent / str(cfg["config"])).is_file():  # a recipe beside the grid file
            cfg["config"] = str(path.parent / str(cfg["config"]))
        run_out = Path(out_dir) / name
        runs.append(GridRun(name, run_out, tuple(option_args(cfg) + ["--out", str(run_out), "--resume", *extra])))

    report = spec.get("report") or {}
    if not isinstance(report, dict):
        raise GridError(f"{path}: report must be a mapping of group: [run-name patterns]")
    groups = {}
    for group, patterns in report.items():
        patterns = [patterns] if isinstance(patterns, str) else list(patterns or [])
        members = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if not members:
            raise GridError(f"{path}: report group {group!r} matches no run ({patterns}); runs: {', '.join(names)}")
        groups[str(group)] = members
    return Grid(str(cli), Path(out_dir), runs, groups)


def select(grid: Grid, patterns: Sequence[str]) -> Grid:
    """The grid restricted to the runs whose names match one of ``patterns`` (all runs when there is none)."""
    if not patterns:
        return grid
    runs = [r for r in grid.runs if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]
    if not runs:
        raise GridError(f"--only {' '.join(patterns)} matches no run; runs: {', '.join(r.name for r in grid.runs)}")
    names = {r.name for r in runs}
    report = {k: [n for n in v if n in names] for k, v in grid.report.items()}
    return Grid(grid.cli, grid.out, runs, {k: v for k, v in report.items() if v})


def check_runs(grid: Grid) -> None:
    """Parse every run's arguments with its CLI's own config parser (nothing is imported from the CLI's package
    but its config), so that a bad key or value is one line now rather than a failure of every job."""
    from .config import parse_config

    cli = CLIS[grid.cli]
    try:
        cls = cli.resolve(cli.config)
    except ImportError as e:
        raise GridError(f"{grid.cli} cannot be imported here ({e}); install fewshot-sla with that package") from None
    for run in grid.runs:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                parse_config(cls, list(run.argv), prog=grid.cli, package=cli.package)
        except SystemExit:
            why = (err.getvalue().strip().splitlines() or ["invalid arguments"])[-1]
            raise GridError(f"run {run.name}: {why}") from None


def _has_flag(argv: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def with_threads(runs: list[GridRun], threads: int | None) -> list[GridRun]:
    """``--num-threads threads`` for each run that does not set it (concurrent runs share the cores; torch's
    default, all of them in each run, would oversubscribe them)."""
    if not threads:
        return runs
    return [r if _has_flag(r.argv, "--num-threads")
            else GridRun(r.name, r.out, (*r.argv, "--num-threads", str(threads))) for r in runs]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# -- launching -----------------------------------------------------------------------------------------------------
def call_entry(entry: str, argv: Sequence[str]) -> int:
    """Run a CLI's ``main(argv)`` found by its ``module:function`` name; its exit status (an exception inside the run
    is printed and gives 1)."""
    module, _, name = entry.partition(":")
    try:
        rc = getattr(importlib.import_module(module), name)(list(argv))
    except SystemExit as e:  # the CLI's argument parser
        return e.code if isinstance(e.code, int) else 1
    except Exception:  # noqa: BLE001 -- the traceback goes into the run's log; the grid goes on
        traceback.print_exc()
        return 1
    return int(rc or 0)


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """This process's stdout and stderr (file descriptors 1 and 2, so native libraries' output too) appended to
    ``path`` for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


class RunJob:
    """One run as a submitit job: the CLI's ``main`` with ``--resume`` in the job's process, its output appended to
    ``OUT/<name>/grid.log`` (``log_to_file=False``: left on the console, for ``--launcher debug``).

    It is checkpointable the way ``submitit.helpers.Checkpointable`` is (a ``checkpoint`` method returning the same
    call), written without subclassing so that importing this module does not need submitit: when a SLURM job is
    preempted or reaches its time limit, submitit requeues the same command, and ``--resume`` continues the run
    from its last ``checkpoint.pt``."""

    def __init__(self, entry: str, name: str, out: Path, argv: Sequence[str], log_to_file: bool = True) -> None:
        self.entry, self.name, self.out, self.argv, self.log_to_file = entry, name, Path(out), list(argv), log_to_file

    @property
    def log(self) -> Path:
        return self.out / "grid.log"

    def __call__(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} sla-grid: {self.entry} {shlex.join(self.argv)}\n")
        if not self.log_to_file:
            return call_entry(self.entry, self.argv)
        with _output_to(self.log):
            return call_entry(self.entry, self.argv)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's requeue hook: the same call again (it resumes from the run's checkpoint)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def slurm_parameters(args: argparse.Namespace, name: str = "sla-grid") -> dict[str, Any]:
    """The ``submitit.AutoExecutor`` parameters of ``--launcher slurm`` (one task of one node per run)."""
    params: dict[str, Any] = {"name": name, "nodes": 1, "tasks_per_node": 1, "slurm_signal_delay_s": 120}
    if args.partition:
        params["slurm_partition"] = args.partition
    if args.gpus_per_job is not None:
        params["gpus_per_node"] = args.gpus_per_job
    if args.cpus_per_job is not None:
        params["cpus_per_task"] = args.cpus_per_job
    if args.time is not None:
        params["timeout_min"] = args.time
    if args.mem_gb is not None:
        params["mem_gb"] = args.mem_gb
    return params


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise GridError(f"sla-grid launches runs through submitit, which is not installed: {INSTALL}") from None
    return submitit


def make_executor(launcher: str, folder: Path, args: argparse.Namespace, name: str = "sla-grid") -> Any:
    """The submitit executor of ``--launcher`` writing its job files under ``folder``."""
    submitit = _submitit()
    if launcher == "debug":
        return submitit.DebugExecutor(folder)
    if launcher == "local":
        ex = submitit.LocalExecutor(folder)
        ex.update_parameters(timeout_min=args.time or LOCAL_TIMEOUT_MIN)
        return ex
    try:
        ex = submitit.AutoExecutor(folder, cluster="slurm")
    except RuntimeError as e:  # no srun here
        raise GridError(f"--launcher slurm needs a SLURM cluster ({e}); use --launcher local here") from None
    ex.update_parameters(**slurm_parameters(args, name))
    return ex


@dataclass
class Outcome:
    finished: list[GridRun] = field(default_factory=list)
    stopped: list[GridRun] = field(default_factory=list)  # exited 0 before the last epoch (--stop-after)
    failed: list[GridRun] = field(default_factory=list)
    interrupted: bool = False


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text[-lines:])


def launch(grid: Grid, todo: list[GridRun], executor: Any, jobs: int, launcher: str,
           say: Callable[[str], None]) -> Outcome:
    """Run ``todo`` through ``executor``: at most ``jobs`` at once (``local``), all submitted at once (``slurm``),
    one after the other (``debug``); wait for every one."""
    entry = CLIS[grid.cli].entry
    outcome = Outcome()
    queue = list(todo)
    running: list[tuple[GridRun, Any]] = []
    limit = len(queue) if launcher == "slurm" else max(1, jobs) if launcher == "local" else 1

    def done(run: GridRun, job: Any) -> None:
        try:
            rc = job.result()
        except Exception as e:  # noqa: BLE001 -- a job that died is reported, the grid goes on
            outcome.failed.append(run)
            why = (str(e).strip().splitlines() or [""])[-1]
            say(f"FAILED  {run.name}: the job ended without a result ({type(e).__name__}: {why}); see "
                f"{run.out / 'grid.log'} and the job's log under {grid.out / '.submitit'}")
            return
        if rc == 0 and is_finished(run.out):
            acc = json.loads((run.out / "metrics.json").read_text())["test/acc"]
            outcome.finished.append(run)
            say(f"done    {run.name}: test/acc {acc:.4f}")
        elif rc == 0:
            outcome.stopped.append(run)
            say(f"stopped {run.name} before its last epoch; it resumes next time")
        else:
            outcome.failed.append(run)
            say(f"FAILED  {run.name} (exit {rc}); the end of {run.out / 'grid.log'}:\n{_tail(run.out / 'grid.log')}")

    try:
        while queue or running:
            while queue and len(running) < limit:
                run = queue.pop(0)
                started = (run.out / "checkpoint.pt").is_file()
                job = executor.submit(RunJob(entry, run.name, run.out, run.argv, log_to_file=launcher != "debug"))
                say(f"start   {run.name}" + (" (resuming from its checkpoint)" if started else "")
                    + (f" as job {job.job_id}" if launcher == "slurm" else ""))
                running.append((run, job))
            for item in [x for x in running if x[1].done()]:
                running.remove(item)
                done(*item)
            if running:
                time.sleep(POLL_S)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (main): stop the running jobs; each keeps its last checkpoint
        say(f"interrupted: stopping {len(running)} running job(s); they resume next time")
        for _, job in running:
            with contextlib.suppress(Exception):
                job.cancel()
        end = time.monotonic() + CANCEL_WAIT_S
        while any(not job.done() for _, job in running) and time.monotonic() < end:
            time.sleep(POLL_S)
        outcome.stopped += [run for run, _ in running]
        outcome.interrupted = True
    return outcome


# -- report ------------------------------------------------------------------------------------------------------
def write_reports(grid: Grid) -> int:
    """``sla-report`` over the grid's run folders (those that exist) into ``OUT/report/`` (per group if any)."""
    from .report import ReportError, write_report

    groups = grid.report or {"": [r.name for r in grid.runs]}
    by_name = {r.name: r for r in grid.runs}
    rc = 0
    for group, names in groups.items():
        dirs = [str(by_name[n].out) for n in names if (by_name[n].out / "metrics.json").is_file()
                or (by_name[n].out / "config.yaml").is_file()]
        if not dirs:
            print(f"error: no run of {group or 'the grid'} has started yet (under {grid.out}); nothing to report",
                  file=sys.stderr)
            rc = EXIT_USAGE
            continue
        out = grid.out / "report" / group
        command = "sla-report " + shlex.join([*dirs, "--out", str(out)])
        try:
            path = write_report(dirs, out, command=command)
        except ReportError as e:
            print(f"error: {e}", file=sys.stderr)
            rc = EXIT_USAGE
            continue
        print(path.read_text().split("\n## Runs")[0].rstrip())
        print(f"\nreport: {path}")
    return rc


# -- command line --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="sla-grid", allow_abbrev=False,
        description="Run a grid of sla-fewshot or sla-longtail runs (resumable) on this machine or a SLURM cluster, "
        "then sla-report. Arguments after -- go to every run.")
    ap.add_argument("grid", metavar="GRID.yaml", help="the grid file (see the module's documentation)")
    ap.add_argument("--out", default=None, help="output folder (default: the grid file's out)")
    ap.add_argument("--jobs", type=int, default=1, help="local: runs at once (default 1)")
    ap.add_argument("--launcher", choices=("local", "slurm", "debug"), default="local",
                    help="local: submitit's LocalExecutor; slurm: one SLURM job per run; debug: in this process")
    ap.add_argument("--partition", default=None, help="slurm: the partition")
    ap.add_argument("--gpus-per-job", type=int, default=None, help="slurm: GPUs of each job")
    ap.add_argument("--cpus-per-job", type=int, default=None, help="slurm: CPUs of each job (and --num-threads)")
    ap.add_argument("--time", type=int, default=None, help="minutes a job may run (slurm: then it is requeued)")
    ap.add_argument("--mem-gb", type=int, default=None, help="slurm: memory of each job")
    ap.add_argument("--only", action="append", default=[], metavar="PATTERN",
                    help="only the runs whose names match (shell pattern, e.g. 'ce_*_s0'; repeatable)")
    ap.add_argument("--report", action="store_true", help="only write the report of the runs there (no training)")
    ap.add_argument("--dry-run", action="store_true", help="print what each run would do, and the job parameters")
    return ap


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """``sla-grid``; returns the exit status (see the module's documentation)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    args = build_parser().parse_args(argv)
    try:
        if args.jobs < 1:
            raise GridError(f"--jobs must be >= 1, got {args.jobs}")
        grid = select(load_grid(args.grid, args.out, extra), args.only)
        check_runs(grid)
        if args.report:
            return write_reports(grid)
        threads = args.cpus_per_job if args.launcher == "slurm" else \
            max(1, cpu_count() // args.jobs) if args.launcher == "local" else None
        grid.runs = with_threads(grid.runs, threads)
        finished = [r for r in grid.runs if is_finished(r.out)]
        # Started runs first: finishing them completes seeds sooner than starting new ones.
        todo = sorted((r for r in grid.runs if r not in finished),
                      key=lambda r: not (r.out / "checkpoint.pt").is_file())
        if args.dry_run:
            for r in grid.runs:
                state = "finished" if r in finished else "resume" if (r.out / "checkpoint.pt").is_file() else "start"
                print(f"{state:8s} {r.name}: {grid.cli} {shlex.join(r.argv)}")
            if args.launcher == "slurm":
                print(f"slurm parameters: {json.dumps(slurm_parameters(args))}")
            return EXIT_DONE
        executor = make_executor(args.launcher, grid.out / ".submitit" / "%j", args) if todo else None
    except GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"grid {grid.out}: {len(grid.runs)} runs ({len(finished)} finished before), {grid.cli}, "
          f"launcher {args.launcher}" + (f", {args.jobs} at once" if args.launcher == "local" else ""), flush=True)
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        previous = signal.signal(signal.SIGTERM, _interrupt)  # a batch system ending sla-grid: stop the jobs cleanly
    try:
        outcome = launch(grid, todo, executor, args.jobs, args.launcher, _say) if todo else Outcome()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    done = len(finished) + len(outcome.finished)
    print(f"grid {grid.out}: {done} of {len(grid.runs)} runs finished ({len(outcome.finished)} in this invocation), "
          f"{len(outcome.stopped)} stopped, {len(outcome.failed)} failed", flush=True)
    if done == len(grid.runs) and not outcome.interrupted:
        rc = write_reports(grid)
        return EXIT_DONE if rc == 0 else rc
    if outcome.failed:
        print("failed runs: " + ", ".join(r.name for r in outcome.failed) + " (see their grid.log)", flush=True)
    print("runs remain: run the same command again (finished runs are skipped, started ones resume)", flush=True)
    return EXIT_FAILED if outcome.failed else EXIT_INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
