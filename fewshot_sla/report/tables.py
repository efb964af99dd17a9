"""The Markdown tables of ``sla-report``: one table per kind, one row per group, cells over the group's seeds."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..runs import canonical
from ..tracking import format_table  # the project's one table formatter
from .load import Group, Run, as_float, fmt_value, group_runs, kinds
from .spec import ReportSpec

__all__ = ["CELLS", "md", "mean_std", "report_table"]


def mean_std(values: Iterable[float | None]) -> tuple[float, float, int]:
    """Mean and sample standard deviation (ddof=1) of the finite values.

    NaN and None (a null in metrics.json) are left out and counted: the third value is how many
    values entered. The std is NaN with fewer than two values, the mean NaN with none.
    """
    v = np.asarray([as_float(x) for x in values], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size)


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}"


def _cell_mean_std(runs: Sequence[Run], col: Mapping[str, Any]) -> str:
    """Mean +- sample std over the seeds of ``col["key"]``, in %."""
    key = col["key"]
    if not any(key in r.metrics for r in runs):
        return "-"  # the method has no such number (e.g. SD without --sd)
    mean, std, n = mean_std(r.metrics.get(key) for r in runs)
    if n == 0:
        return "n/a"
    cell = f"{_pct(mean)} +- {_pct(std)}"
    return cell if n == len(runs) else f"{cell} ({n} of {len(runs)} seeds)"


def _cell_mean_ci(runs: Sequence[Run], col: Mapping[str, Any]) -> str:
    """Mean over seeds of ``col["key"]`` +- the mean of the runs' 95% confidence half-widths ``col["ci"]``, in %."""
    key = col["key"]
    if not any(key in r.metrics for r in runs):
        return "-"
    pairs = [(as_float(r.metrics.get(key)), as_float(r.metrics.get(col["ci"]))) for r in runs]
    pairs = [(a, c) for a, c in pairs if math.isfinite(a)]
    if not pairs:
        return "n/a"
    acc = float(np.mean([a for a, _ in pairs]))
    cis = [c for _, c in pairs if math.isfinite(c)]
    cell = f"{_pct(acc)} +- {_pct(float(np.mean(cis)) if cis else math.nan)}"
    return cell if len(pairs) == len(runs) else f"{cell} ({len(pairs)} of {len(runs)} seeds)"


def _cell_distinct(runs: Sequence[Run], col: Mapping[str, Any]) -> str:
    """The distinct values of ``col["key"]`` over the seeds, joined by ``/`` (e.g. the number of test episodes)."""
    vals = list(dict.fromkeys(fmt_value(v) for v in (r.metrics.get(col["key"]) for r in runs) if v is not None))
    return "/".join(vals) if vals else "-"


#: The cells of :data:`fewshot_sla.report.spec.CELL_KINDS`: ``(finished runs of a group, the column) -> cell text``.
CELLS: dict[str, Callable[[Sequence[Run], Mapping[str, Any]], str]] = {
    "mean_std": _cell_mean_std,
    "mean_ci": _cell_mean_ci,
    "distinct": _cell_distinct,
}


def md(text: str) -> str:
    """``text`` safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def _kind_table(groups: Sequence[Group], spec: ReportSpec) -> str:
    rows = []
    for g in groups:
        runs = g.finished
        if not runs:
            continue
        row = {"method": md(g.label), "seeds": str(len(runs))}
        for col in spec["columns"]:
            row[col["name"]] = CELLS[col["cell"]](runs, col)
        rows.append(row)
    return format_table(rows, list(rows[0])) if rows else ""


def _context(groups: Sequence[Group], spec: ReportSpec) -> str:
    shared = []
    for k in spec["context_keys"]:
        vals = {canonical(g.values.get(k)) for g in groups}
        if len(vals) == 1 and k in groups[0].values and k not in groups[0].label_keys:
            shared.append(f"{k}={fmt_value(groups[0].values[k])}")
    return " ".join(shared)


def report_table(runs: Sequence[Run]) -> str:
    """Markdown tables of the finished runs, one per kind, one row per group (see :func:`group_runs`).

    Each table follows its kind's spec: a ``##`` heading (the spec's ``title``), the context keys every row shares,
    the rows (``method``, ``seeds``, then the spec's columns: values in % with two decimals, mean +- sample std
    (ddof=1) over seeds, ``n/a`` for the std of one seed) and the spec's legend. Returns an empty string when no
    run is finished.

    Raises:
        ReportError: two runs of one group with the same seed (see :func:`group_runs`).
    """
    parts = []
    for same in kinds(group_runs(runs)).values():
        spec = same[0].spec
        table = _kind_table(same, spec)
        if not table:
            continue
        ctx = _context([g for g in same if g.finished], spec)
        parts.append(
            f"## {spec['title']}\n\n"
            + (f"Shared by every row: `{ctx}`\n\n" if ctx else "")
            + table
            + (f"\n\n{spec['legend']}" if spec["legend"] else "")
        )
    return "\n\n".join(parts)
