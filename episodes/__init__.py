"""Episodic few-shot learners with SLA: N-way K-shot episodes, the SLA episode wrapper, ProtoNet.

Builds on :mod:`fewshot_sla`; see ``sla-fewshot --help`` (``python -m episodes.train``).
``import episodes`` imports neither learn2learn nor wandb.
"""

from .data import DATASETS, FewShotData, load_fewshot, to_float
from .protonet import Conv4, ProtoNet, prototypes
from .sampler import EpisodeSampler, class_index, episode_labels, split_episode
from .sla_episode import SLAEpisode

__all__ = [
    "DATASETS",
    "FewShotData",
    "load_fewshot",
    "to_float",
    "Conv4",
    "ProtoNet",
    "prototypes",
    "EpisodeSampler",
    "class_index",
    "episode_labels",
    "split_episode",
    "SLAEpisode",
]
