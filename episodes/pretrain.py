"""Pre-training as a few-shot learner (``--learner pretrain``), with or without SLA.

The strongest simple few-shot baselines are not episodic: train the encoder as an ordinary classifier over all
training classes, then classify each test episode with a simple head on the frozen features (Chen et al., ICLR 2019
"A Closer Look at Few-shot Classification"; Tian et al., ECCV 2020 "Rethinking Few-Shot Image Classification", RFS).
That pre-training is the fully supervised setting of the SLA paper (Lee, Hwang & Shin, ICML 2020, Section 2.2), so
with ``--transform rotation`` the classifier is :class:`fewshot_sla.SLAClassifier`'s joint ``C_train * M``-way head
(and, with ``--sd``, its ``C_train``-way head distilled from the aggregated teacher).

At validation and test time the encoder is frozen and each episode is classified by :class:`PretrainHead` on
L2-normalised features: the nearest class mean by cosine (``--test-head ncm``) or a logistic regression fitted on
the support set (``--test-head logreg``, RFS's head; scikit-learn). With SLA the episode is SLA-expanded as for every
other learner (:class:`episodes.SLAEpisode`: the support copies of class ``i`` under transform ``j`` are joint class
``i*M + j``), so SLA+SI and SLA+AG are reported; the embed-once evaluation applies (the head is a function of the
features).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewshot_sla import SLAClassifier
from fewshot_sla.transforms import Transform

from .protonet import MetricLearner, prototypes
from .task import EpisodeTask

__all__ = ["TEST_HEADS", "PretrainHead", "PretrainTask", "ncm_logits", "logreg_logits"]

#: the heads on frozen features: nearest class mean (cosine) and logistic regression (RFS)
TEST_HEADS = ("ncm", "logreg")
#: cosine logits are scaled by this before a softmax (the predictor's probabilities); argmax is unaffected
NCM_SCALE = 10.0


def ncm_logits(support_f: Tensor, support_y: Tensor, query_f: Tensor, ways: int) -> Tensor:
    """Cosine similarity of each L2-normalised query feature to the mean of its class's L2-normalised support
    features, times :data:`NCM_SCALE`: ``(S, D), (S,), (Q, D) -> (Q, ways)``."""
    protos = F.normalize(prototypes(F.normalize(support_f, dim=-1), support_y, ways), dim=-1)
    return NCM_SCALE * F.normalize(query_f, dim=-1) @ protos.t()


def logreg_logits(support_f: Tensor, support_y: Tensor, query_f: Tensor, ways: int, c: float = 1.0) -> Tensor:
    """Logistic regression (multinomial, L2, ``C = c``, L-BFGS) fitted on the L2-normalised support features, its
    decision function on the L2-normalised queries (RFS's head): ``(S, D), (S,), (Q, D) -> (Q, ways)`` on the
    queries' device. Deterministic (L-BFGS from zero)."""
    from sklearn.linear_model import LogisticRegression

    xs = F.normalize(support_f.float(), dim=-1).cpu().numpy().astype(np.float64)
    xq = F.normalize(query_f.float(), dim=-1).cpu().numpy().astype(np.float64)
    ys = support_y.cpu().numpy()
    clf = LogisticRegression(C=c, max_iter=1000)
    clf.fit(xs, ys)
    out = np.full((len(xq), ways), -np.inf)
    out[:, clf.classes_] = clf.decision_function(xq) if len(clf.classes_) > 2 else _binary(clf, xq)
    return torch.from_numpy(out).to(query_f.device, torch.float32)


def _binary(clf: object, xq: np.ndarray) -> np.ndarray:
    d = clf.decision_function(xq)  # type: ignore[attr-defined]
    return np.stack([-d / 2, d / 2], axis=1)  # the two-class decision as a softmax over two logits


class PretrainHead(MetricLearner):
    """An encoder and a head on its frozen features (:data:`TEST_HEADS`), as an episodic learner:
    ``forward(sx, sy, qx, ways) = head_from_features(encoder(sx), sy, encoder(qx), ways)``.

    Args:
        encoder: maps images to ``(B, D)`` features.
        head: ``"ncm"`` or ``"logreg"``.
    """

    def __init__(self, encoder: nn.Module, head: Literal["ncm", "logreg"] = "ncm") -> None:
        super().__init__()
        if head not in TEST_HEADS:
            raise ValueError(f"unknown test head {head!r}; choose one of {', '.join(TEST_HEADS)}")
        self.encoder = encoder
        self.head = head

    def head_from_features(
        self, support_f: Tensor, support_y: Tensor, query_f: Tensor, ways: int | None = None
    ) -> Tensor:
        ways = int(support_y.max()) + 1 if ways is None else ways
        fn = ncm_logits if self.head == "ncm" else logreg_logits
        return fn(support_f, support_y, query_f, ways)


class PretrainTask(nn.Module):
    """What the engine trains for ``--learner pretrain``: ``forward(x, y)`` is :class:`fewshot_sla.SLAClassifier`'s
    (batches of images and labels over the ``C_train`` training classes), and :attr:`episodes` is the
    :class:`~episodes.task.EpisodeTask` that validates and tests the same encoder on episodes.

    Args:
        encoder: the backbone (shared by both).
        num_classes: ``C_train``.
        transform: SLA's transformation family (``none`` = plain pre-training).
        head: the test head (:data:`TEST_HEADS`).
        distill: SLA+SD: also train the ``C_train``-way head distilled from the aggregated teacher.
        ways, shots, queries: the default episode shape of :attr:`episodes`.
        seed: the classifier's generator seed.
    """

    def __init__(
        self, encoder: nn.Module, num_classes: int, transform: Transform, head: Literal["ncm", "logreg"],
        distill: bool, ways: int, shots: int, queries: int, seed: int = 0,
    ) -> None:
        super().__init__()
        self.classifier = SLAClassifier(encoder, num_classes, transform, distill=distill, seed=seed)
        self.episodes = EpisodeTask(PretrainHead(encoder, head), transform, ways, shots, queries)

    @property
    def m(self) -> int:
        return self.classifier.m

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        return self.classifier(x, y)
