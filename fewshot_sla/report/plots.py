"""The plots of ``sla-report``: per-class accuracy against class size, and few-shot accuracy per group.

:func:`per_class_plot` is the project's one per-class plot; ``sla-longtail`` and ``sla-demo`` call it too.
matplotlib is imported only inside the plotting functions (a bare ``Figure``: no pyplot, no global state).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .load import Group, as_float
from .spec import ReportError
from .tables import mean_std

__all__ = ["fewshot_plot", "mean_per_class", "per_class_plot"]


def _figure(figsize: tuple[float, float]) -> Any:
    # A bare Figure (no pyplot): no global state, no backend switch in the caller's process.
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plotting needs matplotlib, which is not installed: pip install 'fewshot-sla[plots]'"
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
        y = 100 * np.asarray([as_float(a) for a in acc], dtype=np.float64)[order]
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
    """Few-shot test accuracy per group (horizontal), with two kinds of error bar, both in the legend: the
    ``episodes`` plot of :data:`fewshot_sla.report.spec.PLOTS`.

    Each group's dot is the mean over seeds of ``test/acc``; the black bar is the mean of the runs'
    95% confidence half-widths (``test/acc_ci95``, over test episodes); with two or more seeds an
    orange bar shows the sample std (ddof=1) over seeds, and small circles the single seeds.

    Args:
        groups: groups (from :func:`fewshot_sla.report.load.group_runs`) whose spec names the ``episodes`` plot;
            groups without finished runs are left out.
        path: the PNG to write (its folder is created).
        title: the plot title.

    Returns:
        ``path``.

    Raises:
        ValueError: a group whose spec does not name the ``episodes`` plot, or no group with a finished run.
        ImportError: matplotlib is not installed.
    """
    bad = [g.label for g in groups if g.spec.get("plot") != "episodes"]
    if bad:
        raise ValueError(
            f"fewshot_plot draws the groups whose report spec names the 'episodes' plot; {bad} are not such "
            "groups (per_class_plot draws the per-class ones)"
        )
    groups = [g for g in groups if g.finished]
    if not groups:
        raise ValueError("fewshot_plot: no group has a finished run (test/acc in metrics.json)")
    fig = _figure((8.0, 1.2 + 0.45 * len(groups)))
    ax = fig.add_subplot()
    first = {"ci": True, "std": True, "seed": True}
    for i, g in enumerate(groups):
        y = len(groups) - 1 - i  # first group on top, as in the table
        accs = [as_float(r.metrics.get("test/acc")) for r in g.finished]
        cis = [as_float(r.metrics.get("test/acc_ci95")) for r in g.finished]
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


def mean_per_class(g: Group) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean per-class accuracy over seeds, class counts) of a group, or None without them."""
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
    acc = np.asarray([[as_float(a) for a in r.metrics["test/per_class_acc"]] for r in runs], dtype=np.float64)
    counts = np.asarray([r.class_counts for r in runs], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class NaN in every seed stays NaN
        return np.nanmean(acc, axis=0), counts.mean(axis=0)

