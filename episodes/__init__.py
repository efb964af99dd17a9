"""Episodic few-shot learners with SLA: N-way K-shot episodes, the SLA episode wrapper, ProtoNet,
R2D2, MetaOptNet-SVM and the gradient-based learners (MAML, first-order MAML, Meta-SGD, ANIL).

Builds on :mod:`fewshot_sla`; see ``sla-fewshot --help`` (``python -m episodes.train``).
``import episodes`` imports neither learn2learn nor wandb.
"""

import fewshot_sla  # noqa: F401  # first, before torch: it sets OMP_WAIT_POLICY (fewshot_sla.threads)

from .backbones import BACKBONES, ResNet12, make_backbone
from .data import (
    DATASETS,
    FewShotData,
    dataset_stats,
    image_stats,
    imagefolder_classes,
    load_cifar_fs,
    load_fc100,
    load_fewshot,
    load_imagefolder,
    load_mini_imagenet,
    load_splits,
    rotate_classes,
    split_classes,
    to_float,
)
from .maml import ALGORITHMS, MAMLLearner
from .predict import FewShotPredictor, load_run
from .protonet import Conv4, ProtoNet, prototypes
from .r2d2 import R2D2, ridge_head
from .sampler import EpisodeSampler, class_index, episode_labels, split_episode
from .sla_episode import SLAEpisode
from .svm import MetaOptSVM, svm_head

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
