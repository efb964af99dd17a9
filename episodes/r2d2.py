"""R2D2: a differentiable closed-form ridge regression head (Bertinetto, Henriques, Torr & Vedaldi,
"Meta-learning with differentiable closed-form solvers", ICLR 2019).

Per episode, ridge regression from the support features to one-hot labels is solved in closed form
in its dual (Woodbury) form, ``W = X^T (X X^T + lam I)^{-1} Y``: an ``S x S`` system, cheap because a
few-shot support set has far fewer images ``S`` than feature dimensions ``D``. The solve is
differentiable, so the encoder and the base learner's hyper-parameters (``lam``, a scale ``alpha``
and a bias ``beta``) are meta-learned through it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .protonet import MetricLearner

__all__ = ["ridge_head", "R2D2"]


def ridge_head(support_f: Tensor, support_y: Tensor, query_f: Tensor, ways: int, lam: float | Tensor) -> Tensor:
    """Closed-form ridge regression logits of the queries.

    ``W = X^T (X X^T + lam I)^{-1} Y`` (equal to the primal ``(X^T X + lam I)^{-1} X^T Y``) with
    ``X`` the support features and ``Y`` their one-hot labels; the logits are ``query_f @ W``,
    computed as ``(Xq X^T) (X X^T + lam I)^{-1} Y`` so only an ``S x S`` system is solved.

    Args:
        support_f: ``(..., S, D)`` support features (leading batch dimensions allowed).
        support_y: ``(..., S)`` support labels in ``[0, ways)``.
        query_f: ``(..., Q, D)`` query features.
        ways: number of classes ``N``.
        lam: ridge penalty ``> 0`` (a float or a scalar tensor, differentiable).

    Returns:
        ``(..., Q, ways)`` logits.
    """
    if support_f.shape[:-1] != support_y.shape:
        raise ValueError(
            f"ridge_head: support features {tuple(support_f.shape)} and labels {tuple(support_y.shape)} disagree"
        )
    y = F.one_hot(support_y, ways).to(support_f.dtype)  # (..., S, N)
    s = support_f.shape[-2]
    eye = torch.eye(s, dtype=support_f.dtype, device=support_f.device)
    gram = support_f @ support_f.transpose(-1, -2) + lam * eye  # (..., S, S)
    return (query_f @ support_f.transpose(-1, -2)) @ torch.linalg.solve(gram, y)  # (..., Q, N)


class R2D2(MetricLearner):
    """``forward(support_x, support_y, query_x, ways=None) -> (Q, ways)``: the R2D2 learner
    (Bertinetto et al., ICLR 2019), ``logits = alpha * Xq W + beta`` with ``W`` from :func:`ridge_head`.

    ``lam`` and ``alpha`` are learned in log space (they stay positive), ``beta`` directly, as in the
    paper where all three base-learner hyper-parameters are meta-learned. Same call signature as
    :class:`episodes.ProtoNet`, so :class:`episodes.SLAEpisode` wraps it unchanged
    (``ways = sla.ways_joint(N)``).

    Args:
        encoder: maps images to ``(B, D)`` features.
        init_lambda: initial ridge penalty ``lam``.
        init_scale: initial ``alpha``.
        init_bias: initial ``beta``.
        learn_lambda: meta-learn ``lam`` (else it stays fixed).
    """

    def __init__(
        self,
        encoder: nn.Module,
        init_lambda: float = 1.0,
        init_scale: float = 1.0,
        init_bias: float = 0.0,
        learn_lambda: bool = True,
    ) -> None:
        super().__init__()
        if not (init_lambda > 0 and init_scale > 0):
            raise ValueError(f"R2D2: init_lambda and init_scale must be > 0, got {init_lambda}, {init_scale}")
        self.encoder = encoder
        self.log_lambda = nn.Parameter(torch.tensor(math.log(init_lambda)), requires_grad=learn_lambda)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.beta = nn.Parameter(torch.tensor(float(init_bias)))

    @property
    def lam(self) -> Tensor:
        return self.log_lambda.exp()

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.exp()

    def head_from_features(
        self, support_f: Tensor, support_y: Tensor, query_f: Tensor, ways: int | None = None
    ) -> Tensor:
        """The head alone: ``(S, D), (S,), (Q, D) -> (Q, ways)`` logits from encoder features, so that
        ``forward(sx, sy, qx, ways) == head_from_features(encoder(sx), sy, encoder(qx), ways)``
        (:mod:`episodes.evaluate` embeds a test split once and scores every episode through it)."""
        ways = int(support_y.max()) + 1 if ways is None else ways
        return self.alpha * ridge_head(support_f, support_y, query_f, ways, self.lam) + self.beta
