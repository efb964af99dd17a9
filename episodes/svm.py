"""MetaOptNet-SVM: a differentiable multi-class (Crammer-Singer) SVM head solved as a quadratic
program per episode (Lee, Maji, Ravichandran & Soatto, "Meta-Learning with Differentiable Convex
Optimization", CVPR 2019), through qpth's batched interior-point solver (Amos & Kolter 2017).

The dual, for support features ``x_i`` with labels ``y_i`` and dual variables ``alpha_i^k``
(``S`` x ``ways``), written as qpth's ``min 1/2 z^T P z + q^T z  s.t.  G z <= h, A z = b`` with
``z[i*ways + k] = alpha_i^k``::

    P = kron(X X^T, I_ways) + ridge * I        q = -onehot(y)
    G = I,  h = C * onehot(y)                  (alpha_i^k <= C [k == y_i])
    A = kron(I_S, 1^T_ways),  b = 0            (sum_k alpha_i^k = 0)

and the query logits are ``sum_i alpha_i^k <x_q, x_i>``, scaled by a learned factor. ``ridge`` (1 in
MetaOptNet's code) keeps ``P`` positive definite for the solver. qpth is imported where the head is
used (learn2learn's install brings it; else ``pip install qpth``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .protonet import MetricLearner

__all__ = ["svm_head", "MetaOptSVM"]


def _qp_function(max_iter: int) -> Any:
    try:
        from qpth.qp import QPFunction
    except ImportError as e:
        raise ImportError(f"the svm learner needs qpth (MetaOptNet's QP solver): `pip install qpth` ({e})") from e
    return QPFunction(verbose=-1, maxIter=max_iter)


def svm_head(
    support_f: Tensor,
    support_y: Tensor,
    query_f: Tensor,
    ways: int,
    c: float = 0.1,
    ridge: float = 1.0,
    max_iter: int = 15,
) -> Tensor:
    """Crammer-Singer SVM logits of the queries, ``(S, D), (S,), (Q, D) -> (Q, ways)``.

    Solved in float64 (the interior-point steps are ill-conditioned in float32); differentiable in the
    features through qpth's implicit gradients.

    Args:
        support_f, support_y, query_f: support features and labels (``[0, ways)``), query features.
        ways: number of classes.
        c: the SVM's box constraint ``C`` (MetaOptNet: 0.1).
        ridge: added to the dual's quadratic term for positive definiteness (MetaOptNet: 1).
        max_iter: interior-point iterations (MetaOptNet: 15 in training, 3 at test in some runs).
    """
    if support_f.dim() != 2 or query_f.dim() != 2 or support_y.shape != support_f.shape[:1]:
        raise ValueError(
            f"svm_head: expected (S, D) support features, (S,) labels and (Q, D) query features, got "
            f"{tuple(support_f.shape)}, {tuple(support_y.shape)}, {tuple(query_f.shape)}"
        )
    if not c > 0:
        raise ValueError(f"svm_head: C must be > 0, got {c}")
    s = support_f.shape[0]
    fs, fq = support_f.double(), query_f.double()
    onehot = F.one_hot(support_y, ways).double().reshape(1, -1)  # (1, S*ways)
    kw: dict[str, Any] = {"dtype": fs.dtype, "device": fs.device}
    eye_n = torch.eye(s * ways, **kw)
    p = (torch.kron(fs @ fs.t(), torch.eye(ways, **kw)) + ridge * eye_n).unsqueeze(0)
    a = torch.kron(torch.eye(s, **kw), torch.ones(1, ways, **kw))  # (S, S*ways): sum over k of alpha_i^k
    b = torch.zeros(1, s, **kw)
    z = _qp_function(max_iter)(p, -onehot, eye_n.unsqueeze(0), c * onehot, a.unsqueeze(0), b)
    alpha = z.reshape(s, ways)
    return ((fq @ fs.t()) @ alpha).to(query_f.dtype)


class MetaOptSVM(MetricLearner):
    """``forward(support_x, support_y, query_x, ways=None) -> (Q, ways)``: MetaOptNet-SVM,
    ``scale * svm_head(...)`` with a learned ``scale`` (as MetaOptNet). Same call as
    :class:`episodes.ProtoNet`, so :class:`episodes.SLAEpisode` wraps it unchanged.

    Args:
        encoder: maps images to ``(B, D)`` features.
        c, ridge, max_iter: see :func:`svm_head`.
        init_scale: initial logit scale.
    """

    def __init__(
        self, encoder: nn.Module, c: float = 0.1, ridge: float = 1.0, max_iter: int = 15, init_scale: float = 1.0
    ) -> None:
        super().__init__()
        _qp_function(max_iter)  # fail at construction, not in the first episode, when qpth is missing
        self.encoder = encoder
        self.c, self.ridge, self.max_iter = float(c), float(ridge), int(max_iter)
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))

    def head_from_features(
        self, support_f: Tensor, support_y: Tensor, query_f: Tensor, ways: int | None = None
    ) -> Tensor:
        """The head alone: ``(S, D), (S,), (Q, D) -> (Q, ways)`` logits from encoder features, so that
        ``forward(sx, sy, qx, ways) == head_from_features(encoder(sx), sy, encoder(qx), ways)``
        (:mod:`episodes.evaluate` embeds a test split once and scores every episode through it)."""
        ways = int(support_y.max()) + 1 if ways is None else ways
        return self.scale * svm_head(support_f, support_y, query_f, ways, self.c, self.ridge, self.max_iter)
