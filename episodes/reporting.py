"""How ``sla-report`` tables few-shot runs, and what defines a few-shot method and its data.

The recipe writes into each run's record and ``metrics.json`` (see :mod:`fewshot_sla.runs`):

- ``"identity"``: :func:`fewshot_sla.runs.identity` of the resolved config, leaving out :data:`GROUP_IGNORE`,
  with :func:`data_identity` as its data;
- ``"group"``: :func:`fewshot_sla.runs.group_id` of that identity (also the W&B group);
- ``"kind"``: ``"fewshot"``, whose table in ``sla-report`` is :data:`REPORT`, registered here on import
  (:func:`fewshot_sla.report.spec.register_report`; ``sla-report`` imports this module when it meets the kind, so
  a changed heading or legend changes every report without touching a run).

``scripts/upgrade_run_records.py`` adds the same three entries to a ``metrics.json`` written before runs carried
them, filling in :data:`LEGACY_DEFAULTS`. This module imports only :mod:`fewshot_sla.report.spec`.
"""

from __future__ import annotations

from typing import Any

from fewshot_sla.report.spec import ReportSpec, register_report

__all__ = ["REPORT", "GROUP_IGNORE", "IMAGE_FOLDERS", "LEGACY_DEFAULTS", "data_identity"]

#: Config keys that do not define a few-shot method (besides :data:`fewshot_sla.runs.RUN_KEYS`): where the data
#: lies (``data_root``, ``download``) and how often a checkpoint is written (``test_only``, a re-test of a seed, is one
#: of the core's RUN_KEYS). The test-time settings (``test_ways``, ``test_shots``, ``test_episodes``, ...) stay:
#: a run re-tested in another episode shape is another row.
GROUP_IGNORE: frozenset[str] = frozenset({"data_root", "download", "checkpoint_every"})

#: ``dataset`` values whose files vary between copies (the user's own image folders; Tiny ImageNet, full or partial):
#: their identity is the digest of the files a run used.
IMAGE_FOLDERS: frozenset[str] = frozenset({"imagefolder", "tiny-imagenet"})

#: Config keys added after runs were recorded, with the value that gives the behaviour of a run recorded without
#: them; ``scripts/upgrade_run_records.py`` fills them into an old run's identity so that an old and a new run of one
#: method share a group: add a field here when you add one to ``FewShotConfig``.
LEGACY_DEFAULTS: dict[str, Any] = {
    # --learner pretrain's settings and --init: no effect on the episodic learners that ran before them
    "pretrain_epochs": 30, "batch_size": 64, "val_every_epochs": 5, "test_head": "ncm", "sd": False, "init": "",
    # before the choice existed: support and query in one encoder call, minus the squared distance
    "distance": "sqeuclidean", "encode": "joint",
}

_LEGEND = (
    "Test accuracy in %. `acc +- 95% CI`: mean over seeds of each run's mean episode accuracy "
    "(`test/acc`: SLA+AG with SLA, plain accuracy for the baseline), +- the mean of the runs' 95% "
    "confidence half-widths (1.96 std / sqrt(episodes)). `acc +- std (seeds)`: the same mean +- the "
    "sample std (ddof=1) of the runs' accuracies, n/a with one seed. SI: SLA+SI, with its mean 95% CI and "
    "with its std over seeds. "
    "`(k of n seeds)`: only k runs had a value (null in metrics.json); `n/a`: none had."
)

#: The few-shot table: one row per method (and test episode shape), the mean accuracy with its two error bars.
REPORT: ReportSpec = register_report({
    "kind": "fewshot",
    "title": "Few-shot classification",
    "name_keys": ["learner", "ways", "shots", "transform"],
    "context_keys": ["dataset", "backbone", "learner", "ways", "shots", "test_ways", "test_shots", "train_episodes"],
    "columns": [
        {"name": "episodes", "cell": "distinct", "key": "test/episodes"},
        {"name": "acc +- 95% CI", "cell": "mean_ci", "key": "test/acc", "ci": "test/acc_ci95"},
        {"name": "acc +- std (seeds)", "cell": "mean_std", "key": "test/acc"},
        {"name": "SI +- 95% CI", "cell": "mean_ci", "key": "test/acc_single", "ci": "test/acc_single_ci95"},
        {"name": "SI +- std (seeds)", "cell": "mean_std", "key": "test/acc_single"},
    ],
    "legend": _LEGEND,
    "plot": "episodes",
})


def data_identity(dataset: str, files_digest: str | None = None) -> dict[str, Any]:
    """The data half of a few-shot run's identity: never a path.

    Args:
        dataset: the config's ``dataset``.
        files_digest: for an image folder, the digest of its file list (the recipe's); ignored for the named data
            sets (Omniglot, mini-ImageNet, CIFAR-FS, FC100), which the config keys already name with their split.

    Returns:
        ``{}`` for a named data set, ``{"files": files_digest}`` for an image folder.

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
