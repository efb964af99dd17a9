"""Prototypical networks (Snell et al., NeurIPS 2017); Conv4 lives in :mod:`fewshot_sla.nets`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewshot_sla.nets import Conv4

__all__ = ["prototypes", "MetricLearner", "ProtoNet", "Conv4", "ENCODINGS", "DISTANCES"]


def prototypes(features: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Class means: ``(S, D), (S,) -> (ways, D)`` (one matmul with the one-hot labels)."""
    onehot = F.one_hot(labels, ways).to(features.dtype)  # (S, ways)
    counts = onehot.sum(0).clamp_min(1).unsqueeze(1)
    return onehot.t() @ features / counts


#: how a metric learner runs the encoder over an episode: ``joint`` = support and query in one call (in training
#: mode BatchNorm then normalises both with the statistics of their union), ``separate`` = two calls (each set with
#: its own statistics, as easyfsl's and MetaOptNet's code do). In eval mode (BatchNorm on running statistics) both
#: give the same features, and the learner makes one call (so evaluation is the same for both).
ENCODINGS = ("joint", "separate")


class MetricLearner(nn.Module):
    """Base of the learners that are an encoder followed by a head on features (ProtoNet, R2D2,
    MetaOptNet-SVM): ``forward(sx, sy, qx, ways) = head_from_features(encoder(sx), sy, encoder(qx), ways)``,
    with support and query embedded in one pass (``encode = "joint"``) or in two (``"separate"``, see
    :data:`ENCODINGS`)."""

    encoder: nn.Module
    encode: str = "joint"

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None) -> Tensor:
        if self.encode == "separate" and self.training:  # in eval mode the two are the same features: one call
            return self.head_from_features(self.encoder(support_x), support_y, self.encoder(query_x), ways)
        f = self.encoder(torch.cat([support_x, query_x]))
        return self.head_from_features(f[: len(support_x)], support_y, f[len(support_x) :], ways)

    def head_from_features(
        self, support_f: Tensor, support_y: Tensor, query_f: Tensor, ways: int | None = None
    ) -> Tensor:
        """The head alone: ``(S, D), (S,), (Q, D) -> (Q, ways)`` logits from encoder features, so that
        ``forward(sx, sy, qx, ways) == head_from_features(encoder(sx), sy, encoder(qx), ways)``
        (:mod:`episodes.evaluate` embeds a test split once and scores every episode through it)."""
        raise NotImplementedError


#: ProtoNet's logits: minus the squared Euclidean distance (Snell et al. 2017, eq. 2 with a Bregman divergence) or
#: minus the Euclidean distance (easyfsl's PrototypicalNetworks)
DISTANCES = ("sqeuclidean", "euclidean")


class ProtoNet(MetricLearner):
    """``forward(support_x, support_y, query_x) -> (Q, ways)``: negative (squared) Euclidean distance
    of each query embedding to each class prototype.

    Args:
        encoder: maps images to ``(B, D)`` features.
        distance: ``"sqeuclidean"`` (Snell et al.) or ``"euclidean"`` (:data:`DISTANCES`).
        encode: ``"joint"`` or ``"separate"`` (:data:`ENCODINGS`).
    """

    def __init__(self, encoder: nn.Module, distance: str = "sqeuclidean", encode: str = "joint") -> None:
        super().__init__()
        if distance not in DISTANCES or encode not in ENCODINGS:
            raise ValueError(f"ProtoNet: distance must be one of {DISTANCES} and encode one of {ENCODINGS}; got "
                             f"{distance!r}, {encode!r}")
        self.encoder = encoder
        self.distance, self.encode = distance, encode

    def head_from_features(
        self, support_f: Tensor, support_y: Tensor, query_f: Tensor, ways: int | None = None
    ) -> Tensor:
        """The head alone: ``(S, D), (S,), (Q, D) -> (Q, ways)`` logits from encoder features, so that
        ``forward(sx, sy, qx, ways) == head_from_features(encoder(sx), sy, encoder(qx), ways)``
        (:mod:`episodes.evaluate` embeds a test split once and scores every episode through it)."""
        ways = int(support_y.max()) + 1 if ways is None else ways
        d = torch.cdist(query_f, prototypes(support_f, support_y, ways))
        return -(d.pow(2) if self.distance == "sqeuclidean" else d)
