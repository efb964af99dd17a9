"""Prototypical networks (Snell et al., NeurIPS 2017); Conv4 lives in :mod:`fewshot_sla.nets`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewshot_sla.nets import Conv4

__all__ = ["prototypes", "MetricLearner", "ProtoNet", "Conv4"]


def prototypes(features: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Class means: ``(S, D), (S,) -> (ways, D)`` (one matmul with the one-hot labels)."""
    onehot = F.one_hot(labels, ways).to(features.dtype)  # (S, ways)
    counts = onehot.sum(0).clamp_min(1).unsqueeze(1)
    return onehot.t() @ features / counts


class MetricLearner(nn.Module):
    """Base of the learners that are an encoder followed by a head on features (ProtoNet, R2D2,
    MetaOptNet-SVM): ``forward(sx, sy, qx, ways) = head_from_features(encoder(sx), sy, encoder(qx), ways)``,
    with support and query embedded in one pass."""

    encoder: nn.Module

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None) -> Tensor:
        f = self.encoder(torch.cat([support_x, query_x]))
        return self.head_from_features(f[: len(support_x)], support_y, f[len(support_x) :], ways)

    def head_from_features(
        self, support_f: Tensor, support_y: Tensor, query_f: Tensor, ways: int | None = None
    ) -> Tensor:
        """The head alone: ``(S, D), (S,), (Q, D) -> (Q, ways)`` logits from encoder features, so that
        ``forward(sx, sy, qx, ways) == head_from_features(encoder(sx), sy, encoder(qx), ways)``
        (:mod:`episodes.evaluate` embeds a test split once and scores every episode through it)."""
        raise NotImplementedError


class ProtoNet(MetricLearner):
    """``forward(support_x, support_y, query_x) -> (Q, ways)``: negative squared Euclidean distance
    of each query embedding to each class prototype.

    Args:
        encoder: maps images to ``(B, D)`` features.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def head_from_features(
        self, support_f: Tensor, support_y: Tensor, query_f: Tensor, ways: int | None = None
    ) -> Tensor:
        """The head alone: ``(S, D), (S,), (Q, D) -> (Q, ways)`` logits from encoder features, so that
        ``forward(sx, sy, qx, ways) == head_from_features(encoder(sx), sy, encoder(qx), ways)``
        (:mod:`episodes.evaluate` embeds a test split once and scores every episode through it)."""
        ways = int(support_y.max()) + 1 if ways is None else ways
        return -torch.cdist(query_f, prototypes(support_f, support_y, ways)).pow(2)
