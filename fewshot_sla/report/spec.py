"""Report specs: how ``sla-report`` tables one kind of run, and where it finds the spec of a run's kind.

A run records facts only (its ``kind``, identity, group, config, recipe and metrics; see :mod:`fewshot_sla.runs`).
The presentation of a kind -- its table's title, columns, legend and plot -- is a :class:`ReportSpec` that the
package owning the kind registers on import (:func:`register_report`, e.g. ``REPORT`` in ``episodes/reporting.py``).
:func:`report_spec` looks a kind up, importing the module :data:`KIND_MODULES` names for it the first time, so the
core imports no package and a changed column heading changes every report without rewriting a run.
"""

from __future__ import annotations

import importlib
from typing import Any, TypedDict

__all__ = [
    "CELL_KINDS", "KIND_MODULES", "PLOTS", "ROW_HEAD", "Column", "ReportError", "ReportSpec", "check_spec",
    "register_report", "report_spec",
]


class ReportError(ValueError):
    """A run folder or metrics file the report cannot use; the message names it and the fix."""


class _ColumnBase(TypedDict):
    name: str  # the column's heading
    cell: str  # one of CELL_KINDS
    key: str  # the metrics.json key the cell summarises over the group's seeds


class Column(_ColumnBase, total=False):
    """One table column of a :class:`ReportSpec`."""

    ci: str  # mean_ci: the key of each run's 95% confidence half-width


class ReportSpec(TypedDict):
    """How ``sla-report`` tables one kind of run; the package that writes the kind registers it.

    Keys:
        kind: the ``kind`` its runs record (e.g. ``"fewshot"``); runs of one kind share one table.
        title: the table's heading.
        name_keys: ``identity.method`` keys that name the method when a kind has a single group (nothing differs).
        context_keys: ``identity.method`` keys printed above the table when every row shares their value.
        columns: the cells of each row after ``method`` and ``seeds`` (see :data:`CELL_KINDS`).
        legend: printed under the table.
        plot: the figure drawn for this kind (one of :data:`PLOTS`), or None.
    """

    kind: str
    title: str
    name_keys: list[str]
    context_keys: list[str]
    columns: list[Column]
    legend: str
    plot: str | None


#: The cell kinds a :class:`Column` may name, with the extra column keys each needs
#: (:data:`fewshot_sla.report.tables.CELLS` computes them).
CELL_KINDS: dict[str, tuple[str, ...]] = {"mean_std": (), "mean_ci": ("ci",), "distinct": ()}
#: The plots a spec may name: ``per_class`` (each group's mean ``test/per_class_acc`` against ``class_counts``)
#: and ``episodes`` (``test/acc`` +- ``test/acc_ci95`` per group); see :mod:`fewshot_sla.report.plots`.
PLOTS: tuple[str, ...] = ("per_class", "episodes")
ROW_HEAD = ("method", "seeds")  # the first two cells of every row

#: Where the spec of a kind is registered: the module imported the first time a run of that kind is reported.
#: The packages of this distribution are listed; another package adds its kind here, or registers its spec
#: before the report is written.
KIND_MODULES: dict[str, str] = {"fewshot": "episodes.reporting", "longtail": "longtail.reporting"}
_SPECS: dict[str, ReportSpec] = {}


def check_spec(spec: Any) -> None:
    """Check a report spec.

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
        if col["cell"] not in CELL_KINDS:
            raise ReportError(f"column {col['name']!r} of the report spec has the cell kind {col['cell']!r}, which "
                              f"this version does not know ({', '.join(CELL_KINDS)})")
        missing = [k for k in CELL_KINDS[col["cell"]] if not isinstance(col.get(k), str)]
        if missing:
            raise ReportError(f"column {col['name']!r} ({col['cell']}) of the report spec needs {missing}")
        names.append(col["name"])
    clash = sorted({n for n in names if names.count(n) > 1 or n in ROW_HEAD})
    if clash:
        raise ReportError(f"the report spec's column names {clash} repeat or clash with {list(ROW_HEAD)}")


def register_report(spec: ReportSpec) -> ReportSpec:
    """Make ``spec`` the table of its kind (a later registration of the kind replaces it); returns ``spec``.

    Raises:
        ReportError: an invalid spec (see :func:`check_spec`).
    """
    check_spec(spec)
    _SPECS[spec["kind"]] = spec
    return spec


def report_spec(kind: str) -> ReportSpec:
    """The registered spec of ``kind``, importing its module from :data:`KIND_MODULES` if it is not registered yet.

    Raises:
        ReportError: no spec for the kind; the message names the module it needs.
    """
    if kind not in _SPECS and kind in KIND_MODULES:
        try:
            importlib.import_module(KIND_MODULES[kind])
        except ImportError as e:
            raise ReportError(f"its kind {kind!r} is tabled by {KIND_MODULES[kind]}, which does not import ({e}); "
                              "install fewshot-sla with that package") from None
    if kind not in _SPECS:
        raise ReportError(f"no report spec is registered for its kind {kind!r}; import the package that wrote the "
                          "run (it calls fewshot_sla.report.register_report) before writing the report")
    return _SPECS[kind]
