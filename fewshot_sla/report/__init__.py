"""``sla-report``'s library: one Markdown report (tables over seeds and plots) from finished runs.

Every run of ``sla-longtail`` and ``sla-fewshot`` records facts: ``RUN_DIR/metrics.json`` holds its metrics,
``"config"``, ``"seed"``, ``"git_commit"``, its ``"kind"``, ``"identity"`` and ``"group"`` (see
:mod:`fewshot_sla.runs`). The report groups the runs by ``group`` (the seeds of one method on one data set, whatever
their paths and re-test flags; two runs of a group with one seed are refused), labels each group by the identity
keys that differ between the groups of its kind, and writes ``OUT/report.md``: one table per kind, one row per
group, with the columns and plot of the kind's :class:`ReportSpec`, which the package owning the kind registers
(:func:`register_report`). It knows no package's config schema. A run whose metrics.json lacks these entries (one
recorded before runs carried them, or another tool's, such as ``sla-demo``'s) is listed, not tabled;
``scripts/upgrade_run_records.py`` adds them to an old run. A run still training is grouped by its run record
(``OUT/recipe.json``).

Modules: :mod:`~fewshot_sla.report.spec` (the spec types and the registry), :mod:`~fewshot_sla.report.load`
(reading and grouping runs), :mod:`~fewshot_sla.report.tables`, :mod:`~fewshot_sla.report.plots` (matplotlib is
imported only inside the plotting functions), :mod:`~fewshot_sla.report.document` (``report.md``) and
:mod:`~fewshot_sla.report.cli` (``sla-report``'s ``main``, which this package does not import).
"""

from ..lazy import lazy_names

#: the submodule that defines each public name, imported on first use (``sla-report --help`` loads none of them)
_SUBMODULES = {
    "..tracking": "format_table",  # the project's one table formatter
    ".document": "write_report",
    ".load": "Group Run find_run_dirs flat_identity group_runs load_runs",
    ".plots": "fewshot_plot per_class_plot",
    ".spec": "CELL_KINDS KIND_MODULES PLOTS Column ReportError ReportSpec check_spec register_report report_spec",
    ".tables": "CELLS mean_std report_table",
}
_LAZY = {name: module for module, names in _SUBMODULES.items() for name in names.split()}

__all__ = [
    "CELLS",
    "CELL_KINDS",
    "KIND_MODULES",
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
    "mean_std",
    "per_class_plot",
    "register_report",
    "report_spec",
    "report_table",
    "write_report",
]



__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
