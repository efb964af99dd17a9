"""``sla-report RUN_DIR... [--out DIR]``: one Markdown report (tables and plots) from finished runs.

    sla-report runs/c10_ce runs/c10_ldam_sla --out report     # two run folders
    sla-report runs/grid                                      # every run below a grid's folder

Every run of ``sla-longtail`` and ``sla-fewshot`` writes ``RUN_DIR/metrics.json``: the metrics at top level plus
``"config"``, ``"seed"``, ``"git_commit"`` and three entries from its recipe (see :mod:`fewshot_sla.runs`):

- ``"identity"``: ``{"method": {...}, "data": {...}}``, what defines the run's method (the config without the seed,
  paths and bookkeeping) and its data (e.g. the digest of an image folder's file list; never a path);
- ``"group"``: the short name of that identity (:func:`fewshot_sla.runs.group_id`), also the run's W&B group;
- ``"report"``: its package's :class:`ReportSpec` (kind, title, name and context keys, columns, legend, plot).

This module groups the runs by ``group`` (the seeds of one method on one data set, whatever their paths and
re-test flags), labels each group by the identity keys that differ between the groups of its kind, and writes
``OUT/report.md``: one table per kind, one row per group, with the columns the runs' spec declares, and the plot
the spec names (:data:`PLOTS`). It knows no package's config schema. A run whose metrics.json lacks these entries
(one recorded before runs carried them, or another tool's, such as ``sla-demo``'s) is listed, not tabled;
``scripts/upgrade_run_records.py`` adds them to an old run. A run still training is grouped by its run record
(``OUT/recipe.json``).

:func:`per_class_plot` is the project's one per-class plot; ``sla-longtail`` and ``sla-demo`` call it too.
matplotlib is imported only inside the plotting functions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from .runs import RECORD_FILE, canonical
from .tracking import format_table  # the project's one table formatter

__all__ = [
    "CELLS",
    "PLOTS",
    "Column",
    "Group",
    "ReportError",
    "ReportSpec",
    "Run",
    "check_spec",
    "find_run_dirs",
    "fewshot_plot",
    "flat_identity",
    "format_table",
    "group_runs",
    "load_runs",
    "main",
    "mean_std",
    "per_class_plot",
    "report_table",
    "write_report",
]

UPGRADE = "scripts/upgrade_run_records.py"


class _ColumnBase(TypedDict):
    name: str  # the column's heading
    cell: str  # one of CELLS
    key: str  # the metrics.json key the cell summarises over the group's seeds


class Column(_ColumnBase, total=False):
    """One table column of a :class:`ReportSpec`."""

    ci: str  # mean_ci: the key of each run's 95% confidence half-width


class ReportSpec(TypedDict):
    """How ``sla-report`` tables one kind of run; a package declares it (``REPORT`` in its ``reporting.py``) and
    each run carries it in metrics.json as ``"report"``.

    Keys:
        kind: runs of one kind share one table (e.g. ``"fewshot"``).
        title: the table's heading.
        name_keys: ``identity.method`` keys that name the method when a kind has a single group (nothing differs).
        context_keys: ``identity.method`` keys printed above the table when every row shares their value.
        columns: the cells of each row after ``method`` and ``seeds`` (see :data:`CELLS`).
        legend: printed under the table.
        plot: the figure drawn for this kind (a key of :data:`PLOTS`), or None.
    """

    kind: str
    title: str
    name_keys: list[str]
    context_keys: list[str]
    columns: list[Column]
    legend: str
    plot: str | None


class ReportError(ValueError):
    """A run folder or metrics file the report cannot use; the message names it and the fix."""


# -- the spec -------------------------------------------------------------------------------------------
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


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return str(v)


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
    pairs = [(_num(r.metrics.get(key)), _num(r.metrics.get(col["ci"]))) for r in runs]
    pairs = [(a, c) for a, c in pairs if math.isfinite(a)]
    if not pairs:
        return "n/a"
    acc = float(np.mean([a for a, _ in pairs]))
    cis = [c for _, c in pairs if math.isfinite(c)]
    cell = f"{_pct(acc)} +- {_pct(float(np.mean(cis)) if cis else math.nan)}"
    return cell if len(pairs) == len(runs) else f"{cell} ({len(pairs)} of {len(runs)} seeds)"


def _cell_distinct(runs: Sequence[Run], col: Mapping[str, Any]) -> str:
    """The distinct values of ``col["key"]`` over the seeds, joined by ``/`` (e.g. the number of test episodes)."""
    vals = list(dict.fromkeys(_fmt_value(v) for v in (r.metrics.get(col["key"]) for r in runs) if v is not None))
    return "/".join(vals) if vals else "-"


#: The cell kinds a :class:`Column` may name: ``(finished runs of a group, the column) -> cell text``.
CELLS: dict[str, Callable[[Sequence[Run], Mapping[str, Any]], str]] = {
    "mean_std": _cell_mean_std,
    "mean_ci": _cell_mean_ci,
    "distinct": _cell_distinct,
}
_CELL_NEEDS = {"mean_ci": ("ci",)}
#: The plots a spec may name: ``per_class`` (:func:`per_class_plot` of each group's mean ``test/per_class_acc``
#: against ``class_counts``) and ``episodes`` (:func:`fewshot_plot`: ``test/acc`` +- ``test/acc_ci95``).
PLOTS: tuple[str, ...] = ("per_class", "episodes")
_ROW_HEAD = ("method", "seeds")  # the first two cells of every row


def check_spec(spec: Any) -> None:
    """Check a report spec (a package's ``REPORT``, or the ``"report"`` of a metrics.json).

    Raises:
        ReportError: naming what is missing or unknown (e.g. a cell kind this version does not know).
    """
    if not isinstance(spec, dict):
        raise ReportError(f"the report spec is a {type(spec).__name__}, not a mapping")
    for k, typ in (("kind", str), ("title", str), ("name_keys", list), ("context_keys", list), ("columns", list),
                   ("legend", str)):
        if not isinstance(spec.get(k), typ):
            raise ReportError(f"the report spec's {k!r} is missing or not a {typ.__name__}")
    if not spec["kind"]:
        raise ReportError("the report spec's 'kind' is empty")
    if spec.get("plot") is not None and spec["plot"] not in PLOTS:
        raise ReportError(f"the report spec names the plot {spec['plot']!r}, which this version does not draw "
                          f"(it draws {', '.join(PLOTS)})")
    names: list[str] = []
    for i, col in enumerate(spec["columns"]):
        if not isinstance(col, dict) or not all(isinstance(col.get(k), str) for k in ("name", "cell", "key")):
            raise ReportError(f"column {i} of the report spec needs the strings 'name', 'cell' and 'key'")
        if col["cell"] not in CELLS:
            raise ReportError(f"column {col['name']!r} of the report spec has the cell kind {col['cell']!r}, which "
                              f"this version does not know ({', '.join(CELLS)})")
        missing = [k for k in _CELL_NEEDS.get(col["cell"], ()) if not isinstance(col.get(k), str)]
        if missing:
            raise ReportError(f"column {col['name']!r} ({col['cell']}) of the report spec needs {missing}")
        names.append(col["name"])
    clash = sorted({n for n in names if names.count(n) > 1 or n in _ROW_HEAD})
    if clash:
        raise ReportError(f"the report spec's column names {clash} repeat or clash with {list(_ROW_HEAD)}")


def _check_identity(ident: Any) -> None:
    if not (isinstance(ident, dict) and isinstance(ident.get("method"), dict) and isinstance(ident.get("data"), dict)):
        raise ReportError('its "identity" is not {"method": {...}, "data": {...}}')


# -- loading --------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One run folder.

    Attributes:
        path: the run folder.
        metrics: the content of ``metrics.json`` (empty when the run never wrote one).
        config: the resolved config (``metrics["config"]``, else the run record's, else ``config.yaml``).
        identity: what defines its method and data (``metrics["identity"]``, else the run record's), or None.
        group: the name of that identity (``metrics["group"]``), or None.
        spec: the report spec (``metrics["report"]``), or None: then the run is listed, not tabled.
        finished: True when metrics.json holds a number of the spec's columns.
        status: why an unfinished or untabled run is not in the tables (empty for a finished run).
    """

    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]
    identity: dict[str, Any] | None
    group: str | None
    spec: dict[str, Any] | None
    finished: bool
    status: str = ""

    @property
    def kind(self) -> str | None:
        """The spec's kind (e.g. ``"longtail"``), or None for a run that is not tabled."""
        return self.spec["kind"] if self.spec is not None else None

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


def find_run_dirs(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Run folders in or below ``paths``, in the order given (sorted below each path), without duplicates.

    A run folder is one holding ``metrics.json``, ``config.yaml`` or ``recipe.json`` (an unfinished run
    has only the latter two); the search does not descend into a run folder (W&B keeps a copy of metrics.json
    under ``RUN/wandb/``) nor into ``wandb`` or hidden folders.

    Raises:
        ReportError: a path that does not exist, or one with no run folder in or below it.
    """
    if isinstance(paths, (str, Path)):  # one folder given bare: not its characters
        paths = [paths]
    found: list[Path] = []
    seen: set[Path] = set()

    def is_run(d: Path) -> bool:
        return any((d / f).is_file() for f in ("metrics.json", "config.yaml", RECORD_FILE))

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


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
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
        raise ReportError(f"{str(path)!r} holds a {type(data).__name__}, not a JSON object of {what}")
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


_BLOCKS = ("identity", "group", "report")


def _blocks(source: Mapping[str, Any], name: str) -> tuple[dict[str, Any], str, dict[str, Any]] | str:
    """``(identity, group, spec)`` of a metrics.json or run record, or why there are none (a status)."""
    have = [k for k in _BLOCKS if k in source]
    if not have:
        return (
            f"not tabled: its {name} has no identity, group and report entries (a sla-longtail or sla-fewshot run "
            f"recorded before runs carried them, or another tool's run such as sla-demo's); an old run is upgraded "
            f"by {UPGRADE} RUN_DIR"
        )
    if len(have) < len(_BLOCKS):
        lacks = ", ".join(k for k in _BLOCKS if k not in have)
        return (f"not tabled: its {name} has {', '.join(have)} but not {lacks}; the file was edited or cut: "
                f"{UPGRADE} RUN_DIR --force rewrites the entries from its config")
    try:
        _check_identity(source["identity"])
        if not isinstance(source["group"], str) or not source["group"]:
            raise ReportError('its "group" is not a non-empty string')
        check_spec(source["report"])
    except ReportError as e:
        return (f"not tabled: the record in its {name} is not readable by this version ({e}); update fewshot-sla, "
                f"or rewrite it with {UPGRADE} RUN_DIR --force")
    return dict(source["identity"]), source["group"], dict(source["report"])


def _read_record(d: Path) -> dict[str, Any] | None:
    """The run record ``RUN/recipe.json`` as a plain mapping, or None without one (read leniently: only its
    identity, group, report and config are used, to group a run that has not finished)."""
    path = d / RECORD_FILE
    return _read_json_object(path, "a run record") if path.is_file() else None


def _unfinished_status(metrics: Mapping[str, Any], config: Mapping[str, Any], has_metrics: bool) -> str:
    if not has_metrics:
        return "unfinished: no metrics.json yet; continue it with --resume"
    for k, v in metrics.items():  # e.g. epochs_done: N, with the config's epochs as the total
        if k.endswith("_done"):
            unit = k[: -len("_done")]
            total = f" of {_fmt_value(config[unit])}" if unit in config else ""
            return f"unfinished: {_fmt_value(v)}{total} {unit} done; continue it with --resume"
    return "unfinished: metrics.json has none of its table's metrics; continue it with --resume"


def load_runs(dirs: str | Path | Iterable[str | Path]) -> list[Run]:
    """Every run in or below ``dirs`` (see :func:`find_run_dirs`), finished or not, tabled or not.

    A run's identity, group and report spec come from its metrics.json, else (a run still training) from its run
    record ``recipe.json``. Nothing is skipped: a run without them, or without metrics, comes back with
    ``finished=False`` and its ``status`` says why, so the report lists it.

    Raises:
        ReportError: a path that is not (and holds no) run folder, or a metrics.json that is not JSON.
    """
    runs = []
    for d in find_run_dirs(dirs):
        mpath = d / "metrics.json"
        has_metrics = mpath.is_file()
        metrics = _read_json_object(mpath, "metrics") if has_metrics else {}
        record = None if any(k in metrics for k in _BLOCKS) else _read_record(d)  # only when needed
        config = metrics.get("config")
        if not isinstance(config, dict):
            config = record.get("config") if record is not None else None
        if not isinstance(config, dict):
            config = _read_config_yaml(d / "config.yaml") if (d / "config.yaml").is_file() else {}
        if record is not None:
            got = _blocks(record, RECORD_FILE)
        elif has_metrics:
            got = _blocks(metrics, "metrics.json")
        else:
            got = ("unfinished and not tabled: no metrics.json yet, and no run record (recipe.json) to group it by; "
                   "continue it with --resume")
        if isinstance(got, str):
            runs.append(Run(d, metrics, dict(config), None, None, None, False, got))
            continue
        ident, group, spec = got
        # "finished": false: weights of an unfinished run tested with --test-only --allow-unfinished
        finished = (has_metrics and metrics.get("finished") is not False
                    and any(c["key"] in metrics for c in spec["columns"]))
        status = "" if finished else _unfinished_status(metrics, config, has_metrics)
        runs.append(Run(d, metrics, dict(config), ident, group, spec, finished, status))
    return runs


# -- grouping -------------------------------------------------------------------------------------------
def flat_identity(ident: Mapping[str, Any]) -> dict[str, Any]:
    """An identity as one mapping: the method keys by name, then the data keys as ``data.<key>``."""
    return {**ident.get("method", {}), **{f"data.{k}": v for k, v in ident.get("data", {}).items()}}


_DIGEST = re.compile(r"[0-9a-f]{9,}")


def _label_value(key: str, v: Any) -> str:
    if key.startswith("data.") and isinstance(v, str) and _DIGEST.fullmatch(v):
        return v[:8]  # a file-list digest: its head tells the folders apart
    return _fmt_value(v)


@dataclass
class Group:
    """The runs of one method on one data set: the same kind and ``group`` (seeds, paths, re-tests aside).

    Attributes:
        kind: the spec's kind (e.g. ``"longtail"``).
        group: the runs' ``group`` (:func:`fewshot_sla.runs.group_id` of ``identity``).
        identity: ``{"method": {...}, "data": {...}}`` of the first run.
        spec: the report spec of the first run.
        runs: every run of the group, finished or not.
        label: the identity keys that differ between the groups of this kind with their values, e.g.
            ``lr=0.1 transform=rotation`` or ``data.files=3fa2b1c0``.
        label_keys: those keys (flattened, see :func:`flat_identity`).
        values: :func:`flat_identity` of ``identity``.
    """

    kind: str
    group: str
    identity: dict[str, Any]
    spec: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    label: str = ""
    label_keys: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.values = flat_identity(self.identity)

    @property
    def finished(self) -> list[Run]:
        """The finished runs (the seeds whose numbers enter the table)."""
        return [r for r in self.runs if r.finished]


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Group the tabled runs by kind and ``group``, in order of first appearance, and label each group by the
    identity keys whose values differ between the groups of its kind (a missing key counts as a value of its own,
    ``(unset)``), in the order the identities list them. With a single group of a kind, the label names the
    spec's ``name_keys``. Runs without a spec are not grouped."""
    groups: dict[tuple[str, str], Group] = {}
    for r in runs:
        if r.spec is None or r.identity is None or r.group is None:
            continue
        key = (r.spec["kind"], r.group)
        if key not in groups:
            groups[key] = Group(r.spec["kind"], r.group, r.identity, r.spec)
        groups[key].runs.append(r)
    out = list(groups.values())
    for kind in dict.fromkeys(g.kind for g in out):
        same = [g for g in out if g.kind == kind]
        keys = list(dict.fromkeys(k for g in same for k in g.values))  # config order, as the recipes write it
        missing = "\0unset"
        differ = [k for k in keys if len({canonical(g.values.get(k, missing)) for g in same}) > 1]
        if not differ:
            differ = [k for k in same[0].spec["name_keys"] if k in keys]
        for g in same:
            g.label_keys = differ
            g.label = " ".join(f"{k}={_label_value(k, g.values[k]) if k in g.values else '(unset)'}" for k in differ)
            g.label = g.label or kind
    return out


# -- the table ------------------------------------------------------------------------------------------
def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _kind_table(groups: Sequence[Group], spec: Mapping[str, Any]) -> str:
    rows = []
    for g in groups:
        runs = g.finished
        if not runs:
            continue
        row = {"method": _md(g.label), "seeds": str(len(runs))}
        for col in spec["columns"]:
            row[col["name"]] = CELLS[col["cell"]](runs, col)
        rows.append(row)
    return format_table(rows, list(rows[0])) if rows else ""


def _context(groups: Sequence[Group], spec: Mapping[str, Any]) -> str:
    shared = []
    for k in spec["context_keys"]:
        vals = {canonical(g.values.get(k)) for g in groups}
        if len(vals) == 1 and k in groups[0].values and k not in groups[0].label_keys:
            shared.append(f"{k}={_fmt_value(groups[0].values[k])}")
    return " ".join(shared)


def _kinds(groups: Sequence[Group]) -> dict[str, list[Group]]:
    """The groups by kind, kinds in order of first appearance."""
    out: dict[str, list[Group]] = {}
    for g in groups:
        out.setdefault(g.kind, []).append(g)
    return out


def report_table(runs: Sequence[Run]) -> str:
    """Markdown tables of the finished runs, one per kind, one row per group (see :func:`group_runs`).

    Each table follows its kind's spec (that of its first run): a ``##`` heading (the spec's ``title``), the
    context keys every row shares, the rows (``method``, ``seeds``, then the spec's columns: values in % with two
    decimals, mean +- sample std (ddof=1) over seeds, ``n/a`` for the std of one seed) and the spec's legend.
    Returns an empty string when no run is finished.
    """
    parts = []
    for same in _kinds(group_runs(runs)).values():
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
    """Few-shot test accuracy per group (horizontal), with two kinds of error bar, both in the legend: the
    ``episodes`` plot of :data:`PLOTS`.

    Each group's dot is the mean over seeds of ``test/acc``; the black bar is the mean of the runs'
    95% confidence half-widths (``test/acc_ci95``, over test episodes); with two or more seeds an
    orange bar shows the sample std (ddof=1) over seeds, and small circles the single seeds.

    Args:
        groups: groups (from :func:`group_runs`) whose spec names the ``episodes`` plot; groups without
            finished runs are left out.
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


def _left_out(groups: Sequence[Group]) -> list[str]:
    """The config keys the grouped runs' identities leave out (seed aside): read from the runs, not a schema."""
    keys: set[str] = set()
    for g in groups:
        for r in g.runs:
            keys |= set(r.config) - set((r.identity or {}).get("method", {}))
    return sorted(keys - {"seed"})


def write_report(dirs: str | Path | Sequence[str | Path], out_dir: str | Path, command: str | None = None) -> Path:
    """Write ``out_dir/report.md`` with the tables, the command, the run list and the plots.

    Plots, as each kind's spec names them (:data:`PLOTS`): ``per_class.png`` (mean per-class accuracy over seeds
    against training class size; one file per distinct set of class counts, ``per_class_2.png``... for the
    others) and ``fewshot.png`` (``episodes``: ``fewshot_2.png``... for a second such kind). Without matplotlib
    the report is written without plots and says so.

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
    kinds = _kinds(groups)
    out.mkdir(parents=True, exist_ok=True)
    command = command or "sla-report " + shlex.join([*map(str, dirs), "--out", str(out_dir)])
    n_fin = sum(r.finished for r in runs)
    left_out = _left_out(groups)
    lines = [
        "# SLA results report",
        "",
        f"Made by `{command}`",
        "",
        f"{len(runs)} run(s), {n_fin} finished, in {len([g for g in groups if g.finished])} group(s) of finished "
        "runs. A group is the runs whose records name the same `group`: one method on one data set, whatever "
        "the seed, paths, bookkeeping and re-test flags"
        + (f" (the config keys left out of the method here: {', '.join(left_out)})." if left_out else "."),
    ]
    table = report_table(runs)
    if table:
        lines += ["", table]
    notes: list[str] = []
    plot_error: str | None = None

    # per_class: the groups' mean per-class accuracy, one plot per set of class counts.
    by_counts: dict[tuple[float, ...], dict[str, np.ndarray]] = {}
    episodes: list[list[Group]] = []
    for same in kinds.values():
        plot = same[0].spec.get("plot")
        if plot == "episodes" and any(g.finished for g in same):
            episodes.append([g for g in same if g.finished])
        if plot != "per_class":
            continue
        for g in same:
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
    for i, fs in enumerate(episodes):
        name = "fewshot.png" if i == 0 else f"fewshot_{i + 1}.png"
        caption = "Few-shot test accuracy per group (error bars in the legend)"
        try:
            fewshot_plot(fs, out / name, title=caption)
            plots.append((name, caption))
        except ImportError as e:
            plot_error = str(e)
    if plots or plot_error:
        lines += ["", "## Plots", ""]
        for i, (name, cap) in enumerate(plots):
            lines += ([""] if i else []) + [f"![{cap}]({name})", "", f"[{name}]({name}): {cap}."]
        if plot_error:
            lines += ([""] if plots else []) + [f"Plots skipped: {plot_error}"]
            print(f"warning: plots skipped: {plot_error}", file=sys.stderr)

    for kind, same in kinds.items():
        specs = {canonical(r.spec) for g in same for r in g.runs}
        if len(specs) > 1:
            first = same[0].runs[0]
            notes.append(
                f"the `{kind}` runs carry {len(specs)} different report specs; the table follows the first run's "
                f"(`{_rel(first.path, out)}`). `{UPGRADE}` gives older records this version's spec."
            )
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
        if r.spec is None:
            run_rows.append(
                {
                    "group": "(not tabled)",
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
