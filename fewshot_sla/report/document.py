"""The report folder: ``report.md`` (what was reported, the tables, the plots, the runs left out, every run) and
the PNG plots its kinds' specs name. ``sla-report`` (:mod:`fewshot_sla.report.cli`) is a shell over
:func:`write_report`."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..tracking import format_table
from .load import Group, Run, fmt_value, group_runs, kinds, load_runs
from .plots import fewshot_plot, mean_per_class, per_class_plot
from .tables import md, report_table

__all__ = ["write_report"]


def _rel(p: Path, start: Path) -> str:
    try:
        return os.path.relpath(p, start)
    except ValueError:  # another drive (Windows)
        return str(p)


def _header(runs: Sequence[Run], groups: Sequence[Group], command: str) -> list[str]:
    """The title, the command and what was grouped, with the config keys the identities leave out (seed aside):
    read from the runs, not a schema."""
    left_out: set[str] = set()
    for r in [r for g in groups for r in g.runs]:
        left_out |= set(r.config) - set((r.identity or {}).get("method", {}))
    left_out.discard("seed")
    n_fin = sum(r.finished for r in runs)
    return [
        "# SLA results report",
        "",
        f"Made by `{command}`",
        "",
        f"{len(runs)} run(s), {n_fin} finished, in {len([g for g in groups if g.finished])} group(s) of finished "
        "runs. A group is the runs whose records name the same `group`: one method on one data set, whatever "
        "the seed, paths, bookkeeping and re-test flags"
        + (f" (the config keys left out of the method here: {', '.join(sorted(left_out))})." if left_out else "."),
    ]


def _per_class_series(groups: Sequence[Group], notes: list[str]) -> dict[tuple[float, ...], dict[str, np.ndarray]]:
    """The mean per-class accuracy of each group whose kind plots ``per_class``, by its set of class counts."""
    by_counts: dict[tuple[float, ...], dict[str, np.ndarray]] = {}
    for g in (g for same in kinds(groups).values() for g in same if g.spec.get("plot") == "per_class"):
        mpc = mean_per_class(g)
        if mpc is None:
            if g.finished:
                notes.append(f"`{g.label}`: no test/per_class_acc or class_counts in metrics.json: not plotted.")
            continue
        acc, counts = mpc
        n = len(g.finished)
        by_counts.setdefault(tuple(np.round(counts, 3)), {})[f"{g.label} ({n} seed{'s' * (n > 1)})"] = acc
    return by_counts


def _plots(groups: Sequence[Group], out: Path, notes: list[str]) -> list[str]:
    """Draw the plots the kinds' specs name; their section of report.md (empty without plots)."""
    plots: list[tuple[str, str]] = []
    errors: list[str] = []
    for i, (counts_key, series) in enumerate(_per_class_series(groups, notes).items()):
        name = "per_class.png" if i == 0 else f"per_class_{i + 1}.png"
        caption = (
            f"Per-class test accuracy (mean over seeds) against training images per class, {len(counts_key)} classes"
        )
        try:
            plots.append((per_class_plot(series, list(counts_key), out / name, title=caption).name, caption))
        except ImportError as e:
            errors.append(str(e))
    episodes = [[g for g in same if g.finished] for same in kinds(groups).values()
                if same[0].spec.get("plot") == "episodes" and any(g.finished for g in same)]
    for i, fs in enumerate(episodes):
        name = "fewshot.png" if i == 0 else f"fewshot_{i + 1}.png"
        caption = "Few-shot test accuracy per group (error bars in the legend)"
        try:
            plots.append((fewshot_plot(fs, out / name, title=caption).name, caption))
        except ImportError as e:
            errors.append(str(e))
    if not (plots or errors):
        return []
    lines = ["", "## Plots", ""]
    for i, (name, cap) in enumerate(plots):
        lines += ([""] if i else []) + [f"![{cap}]({name})", "", f"[{name}]({name}): {cap}."]
    if errors:
        lines += ([""] if plots else []) + [f"Plots skipped: {errors[-1]}"]
        print(f"warning: plots skipped: {errors[-1]}", file=sys.stderr)
    return lines


def _unfinished(runs: Sequence[Run], groups: Sequence[Group], out: Path) -> list[str]:
    """The runs not in the tables, each with its group and why."""
    pending = [r for r in runs if not r.finished]
    if not pending:
        return []
    labels = {id(r): g.label for g in groups for r in g.runs}
    lines = ["", "## Unfinished and other runs (not in the tables)", ""]
    for r in pending:
        grp = f" (group `{labels[id(r)]}`)" if id(r) in labels else ""
        lines.append(f"- `{_rel(r.path, out)}`{grp}: {r.status}")
    return lines


def _run_list(runs: Sequence[Run], groups: Sequence[Group], out: Path) -> list[str]:
    """Every run: its group, seed, state, commit and folder; the untabled ones last."""
    def row(group: str, r: Run, finished: str) -> dict[str, str]:
        return {"group": group, "seed": fmt_value(r.seed), "finished": finished,
                "git commit": str(r.git_commit or "-"), "folder": md(_rel(r.path, out))}

    rows = [row(md(g.label), r, "yes" if r.finished else "no") for g in groups for r in g.runs]
    rows += [row("(not tabled)", r, "-") for r in runs if r.spec is None]
    return ["", "## Runs", "", format_table(rows, ["group", "seed", "finished", "git commit", "folder"])]


def write_report(dirs: str | Path | Sequence[str | Path], out_dir: str | Path, command: str | None = None) -> Path:
    """Write ``out_dir/report.md`` with the tables, the command, the run list and the plots.

    Plots, as each kind's spec names them (:data:`fewshot_sla.report.spec.PLOTS`): ``per_class.png`` (mean per-class
    accuracy over seeds against training class size; one file per distinct set of class counts, ``per_class_2.png``...
    for the others) and ``fewshot.png`` (``episodes``: ``fewshot_2.png``... for a second such kind). Without
    matplotlib the report is written without plots and says so.

    Args:
        dirs: run folders, or folders holding run folders (searched recursively).
        out_dir: the report folder (created).
        command: the command line to print in the report (default: the ``sla-report`` equivalent).

    Returns:
        The path of ``report.md``.

    Raises:
        ReportError: see :func:`fewshot_sla.report.load.load_runs` and :func:`fewshot_sla.report.load.group_runs`
            (two runs of one group with the same seed).
    """
    dirs = [dirs] if isinstance(dirs, (str, Path)) else list(dirs)
    out = Path(out_dir)
    runs = load_runs(dirs)
    groups = group_runs(runs)
    out.mkdir(parents=True, exist_ok=True)
    command = command or "sla-report " + shlex.join([*map(str, dirs), "--out", str(out_dir)])
    table = report_table(runs)
    notes: list[str] = []
    lines = _header(runs, groups, command) + (["", table] if table else []) + _plots(groups, out, notes)
    lines += _unfinished(runs, groups, out)
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += _run_list(runs, groups, out)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
