"""Episodic few-shot learners with SLA: N-way K-shot episodes, the SLA episode wrapper, ProtoNet,
R2D2, MetaOptNet-SVM and the learn2learn learners (MAML, first-order MAML, Meta-SGD, ANIL).

Builds on :mod:`fewshot_sla`; see ``sla-fewshot --help`` (``python -m episodes.train``).
``import episodes`` imports neither learn2learn nor wandb.
"""

from .backbones import BACKBONES, ResNet12, make_backbone
from .data import DATASETS, FewShotData, load_cifar_fs, load_fc100, load_fewshot, load_mini_imagenet, to_float
from .maml import ALGORITHMS, Learn2LearnMissing, MAMLLearner
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
    "Learn2LearnMissing",
    "EpisodeSampler",
    "class_index",
    "episode_labels",
    "split_episode",
    "SLAEpisode",
]
