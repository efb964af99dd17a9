"""``sla-report RUN_DIR... [--out DIR]``: one Markdown report (tables and plots) from finished runs.

    sla-report runs/c10_ce runs/c10_ldam_sla --out report     # two run folders
    sla-report runs/grid                                      # every run below a grid's folder

Every run of ``sla-longtail`` and ``sla-fewshot`` writes ``RUN_DIR/metrics.json``: the metrics at
top level plus ``"config"`` (the resolved config), ``"seed"``, ``"git_commit"`` and, for long-tail
runs, ``"class_counts"``. This module reads them, groups the runs that differ only by seed (and by
bookkeeping keys such as ``out`` or ``device``, see :data:`BOOKKEEPING_KEYS`), and writes
``OUT/report.md`` with one table row per group (mean +- sample std over seeds),
``OUT/per_class.png`` (long tail: per-class accuracy against training-class size) and
``OUT/fewshot.png`` (few-shot accuracy with its error bars).

:func:`per_class_plot` is the project's one per-class plot; ``sla-longtail`` and ``sla-demo`` call
it too. matplotlib is imported only inside the plotting functions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .tracking import GROUP_IGNORE, format_table  # the project's one table formatter

__all__ = [
    "BOOKKEEPING_KEYS",
    "Group",
    "ReportError",
    "Run",
    "find_run_dirs",
    "fewshot_plot",
    "format_table",
    "group_runs",
    "load_runs",
    "main",
    "mean_std",
    "per_class_plot",
    "report_table",
    "write_report",
]

# Config keys that say how or where a run ran, not what it computed: runs that differ only in
# these (and the seed) are repetitions of one method. ``amp`` and ``channels_last`` change the
# numerics slightly, like ``device``, but not the method, so they do not split a group either.
#: The keys W&B's run groups ignore too (one list: :data:`fewshot_sla.tracking.GROUP_IGNORE`).
BOOKKEEPING_KEYS: frozenset[str] = frozenset(GROUP_IGNORE)

# When only one group exists nothing differs between groups; these keys then name the method.
_NAME_KEYS = {"longtail": ("loss", "drw", "transform", "sd"), "fewshot": ("learner", "ways", "shots", "transform")}
# Settings printed above a table when every row shares them (the context of the numbers).
_CONTEXT_KEYS = {
    "longtail": ("dataset", "imbalance_ratio", "profile", "backbone", "epochs", "sampler", "limit_train", "limit_test"),
    "fewshot": ("dataset", "backbone", "learner", "ways", "shots", "test_ways", "test_shots", "train_episodes"),
}
_KIND_TITLES = {"longtail": "Long-tailed classification", "fewshot": "Few-shot classification"}


class ReportError(ValueError):
    """A run folder or metrics file the report cannot use; the message names it and the fix."""


# -- loading ----------------------------------------------------------------------------------------
@dataclass
class Run:
    """One run folder.

    Attributes:
        path: the run folder.
        metrics: the content of ``metrics.json`` (empty when the run never wrote one).
        config: the resolved config (``metrics["config"]``, else ``config.yaml``).
        kind: ``"longtail"`` (sla-longtail), ``"fewshot"`` (sla-fewshot) or ``"other"`` (e.g. sla-demo).
        finished: True when ``metrics.json`` holds ``test/acc``.
        status: why an unfinished or other run is not in the tables (empty for a finished run).
    """

    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]
    kind: str
    finished: bool
    status: str = ""

    @property
    def seed(self) -> Any:
        """The run's seed (``metrics["seed"]``, else the config's), or None."""
        return self.metrics.get("seed", self.config.get("seed"))

    @property
    def git_commit(self) -> str | None:
        return self.metrics.get("git_commit")

    @property
    def class_counts(self) -> list[int] | None:
        """Training images per class (long-tail runs), or None."""
        return self.metrics.get("class_counts")


def _run_kind(config: Mapping[str, Any]) -> str:
    if "imbalance_ratio" in config and "loss" in config:
        return "longtail"
    if "learner" in config and "ways" in config:
        return "fewshot"
    return "other"  # e.g. sla-demo: several methods per metrics.json, no top-level test/acc


def find_run_dirs(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Run folders in or below ``paths``, in the order given (sorted below each path), without duplicates.

    A run folder is one holding ``metrics.json`` or ``config.yaml`` (an unfinished run writes only
    the latter); the search does not descend into a run folder (W&B keeps a copy of metrics.json
    under ``RUN/wandb/``) nor into ``wandb`` or hidden folders.

    Raises:
        ReportError: a path that does not exist, or one with no run folder in or below it.
    """
    if isinstance(paths, (str, Path)):  # one folder given bare: not its characters
        paths = [paths]
    found: list[Path] = []
    seen: set[Path] = set()

    def is_run(d: Path) -> bool:
        return (d / "metrics.json").is_file() or (d / "config.yaml").is_file()

    def walk(d: Path) -> list[Path]:
        if is_run(d):
            return [d]
        out: list[Path] = []
        for sub in sorted(p for p in d.iterdir() if p.is_dir()):
            if sub.name == "wandb" or sub.name.startswith("."):
                continue
            out += walk(sub)
        return out

    for p in map(Path, paths):
        if not p.exists():
            raise ReportError(
                f"run folder {str(p)!r} does not exist; give the --out folder of a sla-longtail or "
                "sla-fewshot run (or a folder holding such run folders)"
            )
        if p.is_file():
            if p.name != "metrics.json":
                raise ReportError(f"{str(p)!r} is a file, not a run folder; give the folder holding metrics.json")
            p = p.parent
        runs = walk(p)
        if not runs:
            raise ReportError(
                f"no metrics.json in or below {str(p)!r}: it is not a run folder. Give the --out folder of a "
                "sla-longtail or sla-fewshot run (or a folder holding run folders); a run writes metrics.json "
                "when it finishes"
            )
        for r in runs:
            key = r.resolve()
            if key not in seen:
                seen.add(key)
                found.append(r)
    return found


def _read_metrics(path: Path) -> dict[str, Any]:
    # Strict JSON (nulls become NaN in the tables). Bare NaN/Infinity tokens, which older writers
    # produced, are read as floats so that those runs still report.
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReportError(
            f"{str(path)!r} is not valid JSON ({e}); the run was interrupted while writing it or the file was "
            "edited: rerun the run (with --resume) or remove its folder from the report"
        ) from None
    if not isinstance(data, dict):
        raise ReportError(
            f"{str(path)!r} holds a {type(data).__name__}, not a JSON object of metrics; "
            "it was not written by sla-longtail or sla-fewshot"
        )
    return data


def _read_config_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ReportError(f"{str(path)!r} is not valid YAML ({e}); rerun the run or remove its folder") from None
    if not isinstance(data, dict):
        raise ReportError(f"{str(path)!r} does not hold a mapping of config keys; rerun the run")
    return data


def _unfinished_status(metrics: Mapping[str, Any], config: Mapping[str, Any], has_metrics: bool) -> str:
    if not has_metrics:
        return "unfinished: no metrics.json yet (config.yaml only); continue it with --resume"
    for done, total in (("epochs_done", "epochs"), ("episodes_done", "train_episodes")):
        if done in metrics:
            return f"unfinished: {metrics[done]} of {config.get(total, '?')} {total} done; continue it with --resume"
    return "unfinished: metrics.json has no test/acc; continue it with --resume"


def load_runs(dirs: str | Path | Iterable[str | Path]) -> list[Run]:
    """Every run in or below ``dirs`` (see :func:`find_run_dirs`), finished or not.

    Nothing is skipped: a run without ``test/acc`` (or without metrics.json but with config.yaml)
    comes back with ``finished=False`` and its ``status`` says why, so the report lists it.

    Raises:
        ReportError: a path that is not (and holds no) run folder, or a metrics.json that is not JSON.
    """
    runs = []
    for d in find_run_dirs(dirs):
        mpath = d / "metrics.json"
        has_metrics = mpath.is_file()
        metrics = _read_metrics(mpath) if has_metrics else {}
        config = metrics.get("config")
        if not isinstance(config, dict):
            config = _read_config_yaml(d / "config.yaml") if (d / "config.yaml").is_file() else {}
        kind = _run_kind(config)
        finished = "test/acc" in metrics
        if kind == "other":
            status = "not a sla-longtail or sla-fewshot run (no loss/imbalance_ratio or learner/ways in its config)"
        elif not finished:
            status = _unfinished_status(metrics, config, has_metrics)
        else:
            status = ""
        runs.append(Run(d, metrics, dict(config), kind, finished and kind != "other", status))
    return runs


# -- grouping ---------------------------------------------------------------------------------------
def _hashable(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((str(k), _hashable(x)) for k, x in v.items()))
    return v


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return str(v)


@dataclass
class Group:
    """Runs of one method: the same kind and config apart from the seed and :data:`BOOKKEEPING_KEYS`.

    Attributes:
        kind: ``"longtail"`` or ``"fewshot"``.
        settings: the config without the ignored keys (what defines the group).
        runs: every run of the group, finished or not.
        label: the fields that differ between the groups of this kind, e.g.
            ``loss=ldam drw=True transform=rotation sd=True``.
    """

    kind: str
    settings: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    label: str = ""
    label_keys: list[str] = field(default_factory=list)

    @property
    def finished(self) -> list[Run]:
        """The finished runs (the seeds whose numbers enter the table)."""
        return [r for r in self.runs if r.finished]


#: Config keys added after runs were recorded, per kind, with the value that gives the behaviour of a run
#: recorded without them (so that adding a field does not split old and new runs of one method).
ADDED_KEYS: dict[str, dict[str, Any]] = {
    "longtail": {"vs_gamma": 0.2, "vs_tau": 1.2, "sam_rho": 0.0},
}


def group_runs(runs: Sequence[Run], ignore: Iterable[str] = BOOKKEEPING_KEYS) -> list[Group]:
    """Group the long-tail and few-shot runs that differ only by the keys in ``ignore`` (the seed and
    bookkeeping), in order of first appearance, and label each group by the config fields that
    differ between the groups of its kind (a missing key counts as a value of its own, except the
    keys of :data:`ADDED_KEYS`, which take their old-behaviour value). With a
    single group of a kind, the label names its method keys (loss, drw, transform, sd; or learner,
    ways, shots, transform). Runs of kind ``"other"`` are not grouped.
    """
    ignored = set(ignore)
    groups: dict[tuple[Any, ...], Group] = {}
    for r in runs:
        if r.kind == "other":
            continue
        config = {**r.config, **{k: v for k, v in ADDED_KEYS.get(r.kind, {}).items() if k not in r.config}}
        settings = {k: v for k, v in config.items() if k not in ignored}
        key = (r.kind, _hashable(settings))
        if key not in groups:
            groups[key] = Group(r.kind, settings)
        groups[key].runs.append(r)
    out = list(groups.values())
    for kind in dict.fromkeys(g.kind for g in out):
        same = [g for g in out if g.kind == kind]
        keys = list(dict.fromkeys(k for g in same for k in g.settings))  # config order, as the scripts write it
        missing = object()
        differ = [k for k in keys if len({_hashable(g.settings.get(k, missing)) for g in same}) > 1]
        if not differ:
            differ = [k for k in _NAME_KEYS[kind] if k in keys]
        for g in same:
            g.label_keys = differ
            g.label = " ".join(f"{k}={_fmt_value(g.settings[k]) if k in g.settings else '(unset)'}" for k in differ)
            g.label = g.label or kind
    return out


# -- statistics and the table -----------------------------------------------------------------------
def _num(v: Any) -> float:
    """A metric value as a float; null (NaN in strict JSON) and non-numbers become NaN."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return math.nan
    return float(v)


def mean_std(values: Iterable[float | None]) -> tuple[float, float, int]:
    """Mean and sample standard deviation (ddof=1) of the finite values.

    NaN and None (a null in metrics.json) are left out and counted: the third value is how many
    values entered. The std is NaN with fewer than two values, the mean NaN with none.
    """
    v = np.asarray([_num(x) for x in values], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size)


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}"


def _cell_mean_std(runs: Sequence[Run], key: str) -> str:
    if not any(key in r.metrics for r in runs):
        return "-"  # the method has no such number (e.g. SD without --sd)
    mean, std, n = mean_std(r.metrics.get(key) for r in runs)
    if n == 0:
        return "n/a"
    cell = f"{_pct(mean)} +- {_pct(std)}"
    return cell if n == len(runs) else f"{cell} ({n} of {len(runs)} seeds)"


def _cell_mean_ci(runs: Sequence[Run], key: str) -> str:
    # Mean over seeds of each run's accuracy, +- the mean of the runs' 95% confidence half-widths.
    if not any(key in r.metrics for r in runs):
        return "-"
    pairs = [(_num(r.metrics.get(key)), _num(r.metrics.get(f"{key}_ci95"))) for r in runs]
    pairs = [(a, c) for a, c in pairs if math.isfinite(a)]
    if not pairs:
        return "n/a"
    acc = float(np.mean([a for a, _ in pairs]))
    cis = [c for _, c in pairs if math.isfinite(c)]
    cell = f"{_pct(acc)} +- {_pct(float(np.mean(cis)) if cis else math.nan)}"
    return cell if len(pairs) == len(runs) else f"{cell} ({len(pairs)} of {len(runs)} seeds)"


def _distinct(values: Iterable[Any]) -> str:
    vals = list(dict.fromkeys(_fmt_value(v) for v in values if v is not None))
    return "/".join(vals) if vals else "-"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _table_rows(groups: Sequence[Group], kind: str) -> tuple[list[dict[str, str]], list[str]]:
    rows = []
    for g in groups:
        runs = g.finished
        if not runs:
            continue
        row = {"method": _md(g.label), "seeds": str(len(runs))}
        if kind == "longtail":
            row.update(
                {
                    "SI": _cell_mean_std(runs, "test/acc"),
                    "AG": _cell_mean_std(runs, "test/acc_agg"),
                    "SD": _cell_mean_std(runs, "test/acc_distilled"),
                    "mode": _distinct(r.metrics.get("test/main_mode") for r in runs),
                    "balanced": _cell_mean_std(runs, "test/balanced_acc"),
                    "many": _cell_mean_std(runs, "test/acc_many"),
                    "medium": _cell_mean_std(runs, "test/acc_medium"),
                    "few": _cell_mean_std(runs, "test/acc_few"),
                }
            )
        else:
            row.update(
                {
                    "episodes": _distinct(r.metrics.get("test/episodes") for r in runs),
                    "acc +- 95% CI": _cell_mean_ci(runs, "test/acc"),
                    "acc +- std (seeds)": _cell_mean_std(runs, "test/acc"),
                    "SI +- 95% CI": _cell_mean_ci(runs, "test/acc_single"),
                    "SI +- std (seeds)": _cell_mean_std(runs, "test/acc_single"),
                }
            )
        rows.append(row)
    return rows, list(rows[0]) if rows else []


_LEGENDS = {
    "longtail": (
        "Test accuracy in %, mean +- sample std (ddof=1) over seeds; the std is n/a with one seed. "
        "SI: SLA+SI (`test/acc`, the plain prediction), AG: SLA+AG, SD: SLA+SD; balanced, many, medium "
        "and few use the best mode the model has (`mode`: distilled > aggregated > single); many > 100, "
        "medium 20-100, few < 20 training images. `-`: the method has no such number; "
        "`(k of n seeds)`: only k runs had a value (null in metrics.json); `n/a`: none had."
    ),
    "fewshot": (
        "Test accuracy in %. `acc +- 95% CI`: mean over seeds of each run's mean episode accuracy "
        "(`test/acc`: SLA+AG with SLA, plain accuracy for the baseline), +- the mean of the runs' 95% "
        "confidence half-widths (1.96 std / sqrt(episodes)). `acc +- std (seeds)`: the same mean +- the "
        "sample std (ddof=1) of the runs' accuracies, n/a with one seed. SI: SLA+SI, with its mean 95% CI and "
        "with its std over seeds. "
        "`(k of n seeds)`: only k runs had a value (null in metrics.json); `n/a`: none had."
    ),
}


def _context(groups: Sequence[Group], kind: str) -> str:
    shared = []
    for k in _CONTEXT_KEYS[kind]:
        vals = {_hashable(g.settings.get(k)) for g in groups}
        if len(vals) == 1 and k in groups[0].settings and k not in groups[0].label_keys:
            shared.append(f"{k}={_fmt_value(groups[0].settings[k])}")
    return " ".join(shared)


def _kind_table(groups: Sequence[Group], kind: str) -> str:
    rows, cols = _table_rows(groups, kind)
    if not rows:
        return ""
    return format_table(rows, cols)


def report_table(runs: Sequence[Run]) -> str:
    """Markdown tables of the finished runs, one row per group (see :func:`group_runs`).

    Long tail: SI (``test/acc``), AG, SD, the main mode's balanced accuracy and the many/medium/few
    accuracies; few-shot: the mean accuracy +- the mean per-run 95% CI, the same mean +- the std over
    seeds, and SI +- its CI. Values in % with two decimals, mean +- sample std (ddof=1) over seeds;
    with one seed the std is ``n/a``. One table per kind, each under a ``##`` heading and followed by
    a legend. Returns an empty string when no run is finished.
    """
    groups = group_runs(runs)
    parts = []
    for kind in ("longtail", "fewshot"):
        same = [g for g in groups if g.kind == kind]
        table = _kind_table(same, kind)
        if not table:
            continue
        ctx = _context([g for g in same if g.finished], kind)
        parts.append(
            f"## {_KIND_TITLES[kind]}\n\n"
            + (f"Shared by every row: `{ctx}`\n\n" if ctx else "")
            + table
            + "\n\n"
            + _LEGENDS[kind]
        )
    return "\n\n".join(parts)


# -- plots ------------------------------------------------------------------------------------------
def _figure(figsize: tuple[float, float]) -> Any:
    # A bare Figure (no pyplot): no global state, no backend switch in the caller's process.
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plotting needs matplotlib, which is not installed: pip install matplotlib "
            "(in this project: .venv/bin/pip install matplotlib)"
        ) from None
    return Figure(figsize=figsize)


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p")


def per_class_plot(
    series: Mapping[str, Sequence[float] | np.ndarray],
    counts: Sequence[float] | np.ndarray,
    path: str | Path,
    class_names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Per-class test accuracy against training-class size, one line with markers per method; PNG.

    The x axis is the number of training images of each class on a log scale, classes sorted by
    it (tied counts share an x); y is test accuracy in %. With 20 classes or fewer, the class names
    are written along the top axis. Serves one run (``{label: acc}``), the demo (10 methods) and a
    report (one mean line per group).

    Args:
        series: method label -> per-class test accuracy in [0, 1] (NaN: a class with no test images).
        counts: training images per class (``class_counts`` of metrics.json), same length as each series.
        path: the PNG to write (its folder is created).
        class_names: a name per class (optional).
        title: the plot title.

    Returns:
        ``path``.

    Raises:
        ValueError: no series, or a series or ``class_names`` whose length is not ``len(counts)``.
        ImportError: matplotlib is not installed (the message says how to install it).
    """
    n_cls = len(counts)
    if not series or n_cls == 0:
        raise ValueError("per_class_plot needs at least one series and one class count")
    for label, acc in series.items():
        if len(acc) != n_cls:
            raise ValueError(
                f"per_class_plot: series {label!r} has {len(acc)} per-class accuracies but there are {n_cls} "
                "class counts; pass the per_class_acc and class_counts of the same run"
            )
    if class_names is not None and len(class_names) != n_cls:
        raise ValueError(f"per_class_plot: {len(class_names)} class names for {n_cls} class counts")
    fig = _figure((8.0, 5.0))
    ax = fig.add_subplot()
    c = np.asarray(counts, dtype=np.float64)
    order = np.lexsort((np.arange(n_cls), c))  # by size, ties by class index
    x = c[order]
    colours = [f"C{i}" for i in range(10)]
    for k, (label, acc) in enumerate(series.items()):
        y = 100 * np.asarray([_num(a) for a in acc], dtype=np.float64)[order]
        ax.plot(
            x,
            y,
            marker=_MARKERS[k % len(_MARKERS)],
            color=colours[k % len(colours)],
            linestyle="-" if k < len(colours) else "--",  # 11+ methods: colours repeat, the dash tells them apart
            markersize=5 if n_cls <= 30 else 3,
            linewidth=1.3,
            label=label,
        )
    # A class with 0 training images (possible with --limit-train) has no place on a log axis.
    if x.min() > 0:
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=1)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    if n_cls <= 20:  # few classes: a tick at every class size, as a plain number (no 2x10^1)
        ax.set_xticks(sorted(set(x.tolist())))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", which="minor", length=0)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("training images per class (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(True, which="both", alpha=0.3)
    if class_names is not None and n_cls <= 20:
        names: dict[float, list[str]] = {}
        for i in order:
            names.setdefault(float(c[i]), []).append(str(class_names[i]))
        top = ax.secondary_xaxis("top")
        labels = ["/".join(v) for v in names.values()]
        long = max(len(t) for t in labels) > 3
        top.set_xticks(list(names), labels, rotation=45 if long else 0, fontsize=7, ha="left" if long else "center")
        top.xaxis.set_minor_formatter(NullFormatter())
        top.tick_params(axis="x", which="minor", length=0)
    if title:
        ax.set_title(title, fontsize=10)
    if len(series) <= 4:
        ax.legend(fontsize=8, loc="lower right")
    else:  # many methods: under the axes, out of the data's way
        ax.legend(fontsize=7, ncol=min(4, len(series)), loc="upper center", bbox_to_anchor=(0.5, -0.14))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def fewshot_plot(groups: Sequence[Group], path: str | Path, title: str = "") -> Path:
    """Few-shot test accuracy per group (horizontal), with two kinds of error bar, both in the legend.

    Each group's dot is the mean over seeds of ``test/acc``; the black bar is the mean of the runs'
    95% confidence half-widths (``test/acc_ci95``, over test episodes); with two or more seeds an
    orange bar shows the sample std (ddof=1) over seeds, and small circles the single seeds.

    Args:
        groups: few-shot groups (from :func:`group_runs`); groups without finished runs are left out.
        path: the PNG to write (its folder is created).
        title: the plot title.

    Returns:
        ``path``.

    Raises:
        ValueError: a group that is not few-shot, or no group with a finished run.
        ImportError: matplotlib is not installed.
    """
    bad = [g.label for g in groups if g.kind != "fewshot"]
    if bad:
        raise ValueError(f"fewshot_plot takes few-shot groups only; {bad} are not (use per_class_plot for long tail)")
    groups = [g for g in groups if g.finished]
    if not groups:
        raise ValueError("fewshot_plot: no few-shot group has a finished run (test/acc in metrics.json)")
    fig = _figure((8.0, 1.2 + 0.45 * len(groups)))
    ax = fig.add_subplot()
    first = {"ci": True, "std": True, "seed": True}
    for i, g in enumerate(groups):
        y = len(groups) - 1 - i  # first group on top, as in the table
        accs = [_num(r.metrics.get("test/acc")) for r in g.finished]
        cis = [_num(r.metrics.get("test/acc_ci95")) for r in g.finished]
        mean, std, n = mean_std(accs)
        if n == 0:
            continue
        ci_vals = [c for c in cis if math.isfinite(c)]
        ci = float(np.mean(ci_vals)) if ci_vals else math.nan
        ax.errorbar(
            100 * mean,
            y,
            xerr=None if math.isnan(ci) else 100 * ci,
            fmt="o",
            color="black",
            capsize=4,
            label="mean over seeds +- mean per-run 95% CI (test episodes)" if first["ci"] else None,
        )
        first["ci"] = False
        if n > 1:
            ax.errorbar(
                100 * mean,
                y - 0.18,
                xerr=100 * std,
                fmt="none",
                color="tab:orange",
                capsize=3,
                linewidth=2,
                label="+- std over seeds (ddof=1)" if first["std"] else None,
            )
            ax.scatter(
                [100 * a for a in accs if math.isfinite(a)],
                [y + 0.18] * n,
                s=14,
                facecolors="none",
                edgecolors="tab:blue",
                label="single seeds" if first["seed"] else None,
            )
            first["std"] = first["seed"] = False
    ax.set_yticks(range(len(groups)), [g.label for g in reversed(groups)], fontsize=8)
    ax.set_ylim(-0.7, len(groups) - 0.3)
    ax.set_xlabel("test accuracy (%)")
    ax.grid(True, axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # right of the axes: any group count
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _mean_per_class(g: Group) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean per-class accuracy over seeds, class counts) of a long-tail group, or None without them."""
    runs = [r for r in g.finished if isinstance(r.metrics.get("test/per_class_acc"), list) and r.class_counts]
    if not runs:
        return None
    lengths = {len(r.metrics["test/per_class_acc"]) for r in runs} | {len(r.class_counts or []) for r in runs}
    if len(lengths) != 1:
        raise ReportError(
            f"group {g.label!r}: its runs have different numbers of classes ({sorted(lengths)}) in "
            f"test/per_class_acc or class_counts ({', '.join(str(r.path) for r in runs)}); a run folder holds "
            "an older or foreign metrics.json: rerun it or leave it out"
        )
    acc = np.asarray([[_num(a) for a in r.metrics["test/per_class_acc"]] for r in runs], dtype=np.float64)
    counts = np.asarray([r.class_counts for r in runs], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class NaN in every seed stays NaN
        return np.nanmean(acc, axis=0), counts.mean(axis=0)


# -- the report -------------------------------------------------------------------------------------
def _rel(p: Path, start: Path) -> str:
    try:
        return os.path.relpath(p, start)
    except ValueError:  # another drive (Windows)
        return str(p)


def write_report(dirs: str | Path | Sequence[str | Path], out_dir: str | Path, command: str | None = None) -> Path:
    """Write ``out_dir/report.md`` with the tables, the command, the run list and the plots.

    Plots: ``per_class.png`` (long-tail groups: mean per-class accuracy over seeds against training
    class size; one file per distinct set of class counts, ``per_class_2.png``... for the others)
    and ``fewshot.png`` (few-shot groups). Without matplotlib the report is written without plots
    and says so.

    Args:
        dirs: run folders, or folders holding run folders (searched recursively).
        out_dir: the report folder (created).
        command: the command line to print in the report (default: the ``sla-report`` equivalent).

    Returns:
        The path of ``report.md``.

    Raises:
        ReportError: see :func:`load_runs`.
    """
    dirs = [dirs] if isinstance(dirs, (str, Path)) else list(dirs)
    out = Path(out_dir)
    runs = load_runs(dirs)
    groups = group_runs(runs)
    out.mkdir(parents=True, exist_ok=True)
    command = command or "sla-report " + shlex.join([*map(str, dirs), "--out", str(out_dir)])
    n_fin = sum(r.finished for r in runs)
    lines = [
        "# SLA results report",
        "",
        f"Made by `{command}`",
        "",
        f"{len(runs)} run(s), {n_fin} finished, in {len([g for g in groups if g.finished])} group(s) of finished "
        "runs. A group is the runs whose configs differ only by the seed and bookkeeping keys "
        f"({', '.join(sorted(BOOKKEEPING_KEYS - {'seed'}))}).",
    ]
    table = report_table(runs)
    if table:
        lines += ["", table]
    notes: list[str] = []
    plot_error: str | None = None

    # Long tail: the groups' mean per-class accuracy, one plot per set of class counts.
    by_counts: dict[tuple[float, ...], dict[str, np.ndarray]] = {}
    for g in groups:
        if g.kind != "longtail":
            continue
        mpc = _mean_per_class(g)
        if mpc is None:
            if g.finished:
                notes.append(f"`{g.label}`: no test/per_class_acc or class_counts in metrics.json: not plotted.")
            continue
        acc, counts = mpc
        n = len(g.finished)
        by_counts.setdefault(tuple(np.round(counts, 3)), {})[f"{g.label} ({n} seed{'s' * (n > 1)})"] = acc
    plots: list[tuple[str, str]] = []
    for i, (counts_key, series) in enumerate(by_counts.items()):
        name = "per_class.png" if i == 0 else f"per_class_{i + 1}.png"
        caption = (
            f"Per-class test accuracy (mean over seeds) against training images per class, {len(counts_key)} classes"
        )
        try:
            per_class_plot(series, list(counts_key), out / name, title=caption)
            plots.append((name, caption))
        except ImportError as e:
            plot_error = str(e)
    fs = [g for g in groups if g.kind == "fewshot" and g.finished]
    if fs:
        caption = "Few-shot test accuracy per group (error bars in the legend)"
        try:
            fewshot_plot(fs, out / "fewshot.png", title=caption)
            plots.append(("fewshot.png", caption))
        except ImportError as e:
            plot_error = str(e)
    if plots or plot_error:
        lines += ["", "## Plots", ""]
        for i, (name, cap) in enumerate(plots):
            lines += ([""] if i else []) + [f"![{cap}]({name})", "", f"[{name}]({name}): {cap}."]
        if plot_error:
            lines += ([""] if plots else []) + [f"Plots skipped: {plot_error}"]
            print(f"warning: plots skipped: {plot_error}", file=sys.stderr)

    for g in groups:
        seeds = [r.seed for r in g.finished]
        dup = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
        if dup:
            notes.append(
                f"`{g.label}` has seed(s) {', '.join(map(str, dup))} more than once: the std counts them as "
                "separate runs."
            )
    pending = [r for r in runs if not r.finished]
    if pending:
        lines += ["", "## Unfinished and other runs (not in the tables)", ""]
        labels = {id(r): g.label for g in groups for r in g.runs}
        for r in pending:
            grp = f" (group `{labels[id(r)]}`)" if id(r) in labels else ""
            lines.append(f"- `{_rel(r.path, out)}`{grp}: {r.status}")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]

    lines += ["", "## Runs", ""]
    run_rows = []
    for g in groups:
        for r in g.runs:
            run_rows.append(
                {
                    "group": _md(g.label),
                    "seed": _fmt_value(r.seed),
                    "finished": "yes" if r.finished else "no",
                    "git commit": str(r.git_commit or "-"),
                    "folder": _md(_rel(r.path, out)),
                }
            )
    for r in runs:
        if r.kind == "other":
            run_rows.append(
                {
                    "group": "(other)",
                    "seed": _fmt_value(r.seed),
                    "finished": "-",
                    "git commit": str(r.git_commit or "-"),
                    "folder": _md(_rel(r.path, out)),
                }
            )
    lines.append(format_table(run_rows, ["group", "seed", "finished", "git commit", "folder"]))
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """``sla-report RUN_DIR... [--out DIR]``; returns the exit status (0, or 2 on a bad run folder)."""
    parser = argparse.ArgumentParser(
        prog="sla-report",
        description="One Markdown report (tables over seeds, per-class and few-shot plots) from sla-longtail "
        "and sla-fewshot run folders.",
    )
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="run folders (holding metrics.json), or folders searched recursively for them",
    )
    parser.add_argument("--out", default="report", help="report folder (default: ./report)")
    args = parser.parse_args(argv)
    command = "sla-report " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        path = write_report(args.runs, args.out, command=command)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path.read_text().split("\n## Runs")[0].rstrip())
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
