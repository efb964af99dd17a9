"""Episodic few-shot learners with SLA: N-way K-shot episodes, the SLA episode wrapper, ProtoNet,
R2D2, MetaOptNet-SVM and the gradient-based learners (MAML, first-order MAML, Meta-SGD, ANIL).

Builds on :mod:`fewshot_sla`; see ``sla-fewshot --help`` (``python -m episodes.train``).
``import episodes`` imports neither learn2learn nor wandb, nor torch: each public name's module is imported when the
name is first used.
"""


import fewshot_sla  # noqa: F401  # first, before torch: it sets OMP_WAIT_POLICY (fewshot_sla.threads)
from fewshot_sla.lazy import lazy_names

#: the submodule that defines each public name, imported on first use (torch loads then, not on ``import``)
_SUBMODULES = {
    ".backbones": "BACKBONES ResNet12 make_backbone",
    ".data": (
        "DATASETS FewShotData dataset_stats image_stats imagefolder_classes load_cifar_fs load_fc100"
        " load_fewshot load_imagefolder load_mini_imagenet load_splits rotate_classes split_classes to_float"
    ),
    ".maml": "ALGORITHMS MAMLLearner",
    ".predict": "FewShotPredictor load_run",
    ".protonet": "Conv4 ProtoNet prototypes",
    ".r2d2": "R2D2 ridge_head",
    ".sampler": "EpisodeSampler class_index episode_labels split_episode",
    ".sla_episode": "SLAEpisode",
    ".svm": "MetaOptSVM svm_head",
}
_LAZY = {name: module for module, names in _SUBMODULES.items() for name in names.split()}

__all__ = [
    "DATASETS",
    "FewShotData",
    "load_fewshot",
    "load_mini_imagenet",
    "load_cifar_fs",
    "load_fc100",
    "load_imagefolder",
    "imagefolder_classes",
    "split_classes",
    "load_splits",
    "rotate_classes",
    "image_stats",
    "dataset_stats",
    "to_float",
    "BACKBONES",
    "Conv4",
    "ResNet12",
    "make_backbone",
    "ProtoNet",
    "prototypes",
    "R2D2",
    "ridge_head",
    "MetaOptSVM",
    "svm_head",
    "ALGORITHMS",
    "MAMLLearner",
    "EpisodeSampler",
    "class_index",
    "episode_labels",
    "split_episode",
    "SLAEpisode",
    "FewShotPredictor",
    "load_run",
]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
