"""How ``sla-report`` tables long-tail runs, and what defines a long-tail method and its data.

The recipe writes into each run's record and ``metrics.json`` (see :mod:`fewshot_sla.runs`):

- ``"identity"``: :func:`fewshot_sla.runs.identity` of the resolved config, leaving out :data:`GROUP_IGNORE`,
  with :func:`data_identity` as its data;
- ``"group"``: :func:`fewshot_sla.runs.group_id` of that identity (also the W&B group);
- ``"kind"``: ``"longtail"``, whose table in ``sla-report`` is :data:`REPORT`, registered here on import
  (:func:`fewshot_sla.report.spec.register_report`; ``sla-report`` imports this module when it meets the kind, so
  a changed heading or legend changes every report without touching a run).

``scripts/upgrade_run_records.py`` adds the same three entries to a ``metrics.json`` written before runs carried
them, filling in :data:`LEGACY_DEFAULTS`. This module imports only :mod:`fewshot_sla.report.spec`.
"""

from __future__ import annotations

from typing import Any

from fewshot_sla.report.spec import ReportSpec, register_report

__all__ = ["REPORT", "GROUP_IGNORE", "IMAGE_FOLDERS", "LEGACY_DEFAULTS", "data_identity"]

#: Config keys that do not define a long-tail method (besides :data:`fewshot_sla.runs.RUN_KEYS`): where the data
#: lies (``data_root``, ``download``), how often the test set is looked at on the way (``eval_every``) and the grid
#: mode's lists (each grid entry is a run with its own ``loss`` and ``transform``), and the test evaluation's batch
#: (``eval_batch``: its speed, not its predictions).
GROUP_IGNORE: frozenset[str] = frozenset(
    {"data_root", "download", "eval_every", "eval_batch", "grid_loss", "grid_transform"}
)

#: ``dataset`` values that are the user's own image folders: their identity is the digest of their file list.
IMAGE_FOLDERS: frozenset[str] = frozenset({"imagefolder"})

#: Config keys added after runs were recorded, with the value that gives the behaviour of a run recorded without
#: them (VS loss's adjustments, SAM off, the warm-up per epoch, CIFAR statistics, no SyncBN).
#: ``scripts/upgrade_run_records.py`` fills them into an old run's identity so that an old and a new run of one
#: method share a group. Add a field here when you add one to ``LTConfig``.
LEGACY_DEFAULTS: dict[str, Any] = {
    "vs_gamma": 0.2, "vs_tau": 1.2, "sam_rho": 0.0,
    "warmup": "epoch",  # before per-step warm-up: the lr was set once per epoch (a 1-epoch warm-up did nothing)
    "norm_stats": "cifar",  # before a folder's own statistics: CIFAR-10's, whatever the folder held
    "sync_bn": False,
    "drop_last": False,  # before --drop-last: an epoch's last partial batch trained
}

_LEGEND = (
    "Test accuracy in %, mean +- sample std (ddof=1) over seeds; the std is n/a with one seed. "
    "SI: SLA+SI (`test/acc`, the plain prediction), AG: SLA+AG, SD: SLA+SD; balanced, many, medium "
    "and few use the best mode the model has (`mode`: distilled > aggregated > single); many > 100, "
    "medium 20-100, few < 20 training images. `-`: the method has no such number; "
    "`(k of n seeds)`: only k runs had a value (null in metrics.json); `n/a`: none had."
)

#: The long-tail table: one row per method, SI/AG/SD and the best mode's balanced and many/medium/few accuracy.
REPORT: ReportSpec = register_report({
    "kind": "longtail",
    "title": "Long-tailed classification",
    "name_keys": ["loss", "drw", "transform", "sd"],
    "context_keys": [
        "dataset", "imbalance_ratio", "profile", "backbone", "epochs", "sampler", "limit_train", "limit_test",
    ],
    "columns": [
        {"name": "SI", "cell": "mean_std", "key": "test/acc"},
        {"name": "AG", "cell": "mean_std", "key": "test/acc_agg"},
        {"name": "SD", "cell": "mean_std", "key": "test/acc_distilled"},
        {"name": "mode", "cell": "distinct", "key": "test/main_mode"},
        {"name": "balanced", "cell": "mean_std", "key": "test/balanced_acc"},
        {"name": "many", "cell": "mean_std", "key": "test/acc_many"},
        {"name": "medium", "cell": "mean_std", "key": "test/acc_medium"},
        {"name": "few", "cell": "mean_std", "key": "test/acc_few"},
    ],
    "legend": _LEGEND,
    "plot": "per_class",
})


def data_identity(dataset: str, files_digest: str | None = None) -> dict[str, Any]:
    """The data half of a long-tail run's identity: never a path.

    Args:
        dataset: the config's ``dataset``.
        files_digest: for an image folder, the digest of its file list (the recipe's); ignored for the named data
            sets, which the config keys (``dataset``, ``imbalance_ratio``, ``subset_seed``, ...) already name.

    Returns:
        ``{}`` for CIFAR-10/100, ``{"files": files_digest}`` for an image folder.

    Raises:
        ValueError: an image folder without its digest (two folders would otherwise share a group).
    """
    if dataset not in IMAGE_FOLDERS:
        return {}
    if not files_digest:
        raise ValueError(
            f"--dataset {dataset}: the data identity of an image folder is the digest of its file list, and none "
            "was given; without it runs on different folders would share a group"
        )
    return {"files": files_digest}
