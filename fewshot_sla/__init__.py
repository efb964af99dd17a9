"""fewshot-sla: Self-supervised Label Augmentation (Lee, Hwang & Shin, ICML 2020, arXiv 1910.05872).

Layout used throughout: ``x_aug[b*M + j] = T_j(x[b])``; joint label ``y*M + j``; joint logits
``(B*M, N*M)`` with column ``i*M + j`` = (class ``i``, transform ``j``). Transform 0 is the identity.

``import fewshot_sla`` imports neither wandb nor learn2learn, nor torch: each public name's module is imported when
the name is first used (so the commands' ``--help`` answers at once). Imported before torch, it sets
``OMP_WAIT_POLICY=PASSIVE`` where the user has not set it (:mod:`fewshot_sla.threads`).
"""

import importlib
import importlib.util
from typing import Any

from . import threads  # noqa: F401  # first: sets OMP_WAIT_POLICY before torch loads OpenMP, which reads it once

#: the submodule that defines each public name, imported on first use (torch loads then, not on ``import``)
_SUBMODULES = {
    ".model": "PREDICT_MODES DataAugmentation MultiTask SLAClassifier",
    ".sla": (
        "aggregate_logits check_labels expand expand_subset joint_labels joint_to_class_transform"
        " self_distillation_loss single_logits sla_loss"
    ),
    ".transforms": "TRANSFORMS ColorPermutation Identity Product Rotation Transform get_transform",
    ".utils": "eval_mode",
}
_LAZY = {name: module for module, names in _SUBMODULES.items() for name in names.split()}

__version__ = "0.1.0"

__all__ = [
    "TRANSFORMS",
    "Transform",
    "Identity",
    "Rotation",
    "ColorPermutation",
    "Product",
    "get_transform",
    "expand",
    "expand_subset",
    "joint_labels",
    "joint_to_class_transform",
    "single_logits",
    "aggregate_logits",
    "sla_loss",
    "self_distillation_loss",
    "check_labels",
    "SLAClassifier",
    "DataAugmentation",
    "MultiTask",
    "PREDICT_MODES",
    "eval_mode",
]


def __getattr__(name: str) -> Any:
    """Import a public name's submodule on first use (PEP 562), so that ``import`` and ``--help`` stay quick."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later uses find it without this hook
        return value
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a submodule, as when it was imported eagerly
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
