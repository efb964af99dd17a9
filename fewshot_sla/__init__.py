"""fewshot-sla: Self-supervised Label Augmentation (Lee, Hwang & Shin, ICML 2020, arXiv 1910.05872).

Layout used throughout: ``x_aug[b*M + j] = T_j(x[b])``; joint label ``y*M + j``; joint logits
``(B*M, N*M)`` with column ``i*M + j`` = (class ``i``, transform ``j``). Transform 0 is the identity.

``import fewshot_sla`` imports neither wandb nor learn2learn, nor torch: each public name's module is imported when
the name is first used (so the commands' ``--help`` answers at once). Imported before torch, it sets
``OMP_WAIT_POLICY=PASSIVE`` where the user has not set it (:mod:`fewshot_sla.threads`).
"""


from . import threads  # noqa: F401  # first: sets OMP_WAIT_POLICY before torch loads OpenMP, which reads it once
from .lazy import lazy_names

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


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
