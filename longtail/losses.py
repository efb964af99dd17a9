"""Losses for long-tailed classification, composable with SLA's joint head.

* ``"ce"`` -- cross-entropy.
* ``"focal"`` -- focal loss (Lin et al., ICCV 2017), ``gamma=1`` as in LDAM-DRW's baseline.
* ``"cb"`` -- class-balanced CE (Cui et al., CVPR 2019): weights ``(1-beta)/(1-beta^n_c)`` normalised
  to sum to ``C``, ``beta=0.9999``.
* ``"ldam"`` -- LDAM (Cao et al., NeurIPS 2019): margin ``Delta_c ∝ n_c^(-1/4)`` (max ``max_m=0.5``)
  subtracted from the true-class logit, then CE of ``s * logits`` (``s=30``); use with
  :class:`NormedLinear` (cosine logits in ``[-1, 1]``).
* ``"balanced-softmax"`` -- Balanced Softmax (Ren et al., NeurIPS 2020): CE of ``logits + log n_c``.
* ``"logit-adjusted"`` -- logit-adjusted loss (Menon et al., ICLR 2021): CE of
  ``logits + tau * log pi_c`` with the class prior ``pi_c = n_c / N``, ``tau=1``.

Every loss takes optional per-class weights (``weight=...`` or :meth:`ImbalanceLoss.set_weight`), so
deferred re-weighting (DRW, Cao et al. 2019) switches them to :func:`drw_weights` at a set epoch.

Composition with SLA (Lee, Hwang & Shin, ICML 2020): with ``m > 1`` the loss is built for the
``N*M``-way joint head, whose column ``i*M + j`` (class ``i``, transform ``j``) has the count ``n_i``
of class ``i``: the counts become ``np.repeat(counts, m)`` (every transformed copy of an image of
class ``i`` is one sample of each joint class ``(i, j)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LOSSES",
    "ImbalanceLoss",
    "CrossEntropy",
    "FocalLoss",
    "ClassBalancedLoss",
    "LDAMLoss",
    "BalancedSoftmaxLoss",
    "LogitAdjustedLoss",
    "make_loss",
    "cb_weights",
    "drw_weights",
    "ldam_margins",
    "NormedLinear",
    "head_for",
]


Counts = Sequence[int] | np.ndarray | Tensor
Weight = Tensor | Sequence[float] | np.ndarray | None


def _counts_array(counts: Counts, what: str = "class_counts") -> np.ndarray:
    if isinstance(counts, Tensor):
        counts = counts.detach().cpu().numpy()
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or n.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D list of per-class training counts, got shape {n.shape}")
    bad = np.flatnonzero(~(n > 0)).tolist()
    if bad:
        raise ValueError(
            f"{what}: class(es) {bad[:10]} have {n[bad[0]]:g} training images; every class needs at least one "
            "(drop empty classes or remap the labels)"
        )
    return n


def cb_weights(counts: Counts, beta: float = 0.9999) -> Tensor:
    """Class-balanced weights by effective number (Cui et al. 2019), normalised to sum to ``C``.

    ``w_c = (1 - beta) / (1 - beta^n_c)``, then ``w * C / sum(w)``. ``beta = 0`` gives all ones.

    Args:
        counts: ``(C,)`` training images per class.
        beta: in ``[0, 1)``.

    Returns:
        ``(C,)`` float32.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must lie in [0, 1), got {beta}")
    n = _counts_array(counts)
    w = (1.0 - beta) / (1.0 - np.power(beta, n))
    return torch.tensor(w / w.sum() * len(n), dtype=torch.float32)


def drw_weights(counts: Counts, beta: float = 0.9999) -> Tensor:
    """The weights deferred re-weighting (DRW) switches to: :func:`cb_weights` with ``beta=0.9999``.

    ``(C,) -> (C,)`` float32 summing to ``C``. For SLA's joint head pass ``np.repeat(counts, M)`` or
    hand the ``C`` weights to :meth:`ImbalanceLoss.set_weight`, which repeats them.
    """
    return cb_weights(counts, beta)


def ldam_margins(counts: Counts, max_m: float = 0.5) -> Tensor:
    """LDAM margins ``Delta_c = max_m * n_c^(-1/4) / max_k n_k^(-1/4)``: ``(C,)`` float32, largest = ``max_m``."""
    n = _counts_array(counts)
    d = n**-0.25
    return torch.tensor(d * (max_m / d.max()), dtype=torch.float32)


class ImbalanceLoss(nn.Module):
    """Base class: stores the (joint) class counts and optional per-class weights; checks inputs.

    Args:
        class_counts: ``(N,)`` training images per class.
        m: SLA's number of transformations ``M`` (1 = plain classifier); the loss then expects
            ``N*M`` logit columns and uses the joint counts ``np.repeat(class_counts, m)``.
        weight: optional per-class weights, ``(N,)`` (repeated ``M`` times) or ``(N*M,)``.

    ``forward(logits (B, N*M), targets (B,)) -> scalar``.
    """

    counts: Tensor  # (N*M,) float32 joint counts (a buffer: moves with .to(device))
    weight: Tensor | None

    def __init__(
        self,
        class_counts: Counts,
        m: int = 1,
        weight: Weight = None,
    ) -> None:
        super().__init__()
        if int(m) != m or m < 1:
            raise ValueError(f"m (SLA transformations per image) must be a positive integer, got {m!r}")
        base = _counts_array(class_counts)
        self.num_classes = len(base)
        self.m = int(m)
        self.register_buffer("counts", torch.tensor(np.repeat(base, self.m), dtype=torch.float32))
        self.register_buffer("weight", None)
        self.set_weight(weight)

    @property
    def num_joint(self) -> int:
        return self.num_classes * self.m

    def set_weight(self, weight: Weight) -> None:
        """Set (or clear with None) per-class weights: ``(N,)`` (repeated over the ``M`` transforms) or ``(N*M,)``."""
        if weight is None:
            self.weight = None
            return
        w = torch.as_tensor(
            np.asarray(weight.detach().cpu() if isinstance(weight, Tensor) else weight), dtype=torch.float32
        )
        if w.dim() != 1 or len(w) not in (self.num_classes, self.num_joint):
            joint = f" or {self.num_joint} (joint)" if self.m > 1 else ""
            raise ValueError(f"weight must have {self.num_classes}{joint} entries, got shape {tuple(w.shape)}")
        if len(w) == self.num_classes and self.m > 1:
            w = w.repeat_interleave(self.m)
        self.weight = w.to(self.counts.device)

    def _check(self, logits: Tensor, targets: Tensor) -> None:
        if logits.dim() != 2:
            raise ValueError(f"logits must be (B, classes), got shape {tuple(logits.shape)}")
        if logits.shape[1] != self.num_joint:
            built = f"{self.num_classes} classes" + (
                f" (x M={self.m} = {self.num_joint} joint classes)" if self.m > 1 else ""
            )
            raise ValueError(
                f"loss built for {built} but logits have {logits.shape[1]} columns; build it with the training "
                "counts of the head it scores (and m=M for SLA's joint head)"
            )
        if targets.dim() != 1 or targets.shape[0] != logits.shape[0] or targets.dtype.is_floating_point:
            raise ValueError(
                f"targets must be (B,) integer class indices for logits {tuple(logits.shape)}, "
                f"got {targets.dtype} of shape {tuple(targets.shape)}"
            )
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= self.num_joint):
            raise ValueError(
                f"targets must lie in [0, {self.num_joint}), got values in [{int(targets.min())}, {int(targets.max())}]"
            )

    def _ce(self, logits: Tensor, targets: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.to(logits.device, logits.dtype)
        return F.cross_entropy(logits, targets, weight=w)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        self._check(logits, targets)
        return self._ce(self.adjust(logits, targets), targets)

    def adjust(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The logits the (weighted) cross-entropy sees; identity here."""
        return logits

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, m={self.m}, weighted={self.weight is not None}"


class CrossEntropy(ImbalanceLoss):
    """Plain (optionally weighted) softmax cross-entropy."""


class FocalLoss(ImbalanceLoss):
    """Focal loss ``mean_b w_{y_b} (1 - p_b)^gamma * (-log p_b)``, ``p_b`` the softmax probability of the target.

    With ``gamma = 0`` and no weight this is cross-entropy. (LDAM-DRW's version computes ``p`` from the
    *weighted* CE, so it differs from this one only when DRW weights are on; the mean over the batch
    is a plain mean in both.)
    """

    def __init__(self, class_counts: Counts, m: int = 1, weight: Weight = None, gamma: float = 1.0) -> None:
        super().__init__(class_counts, m, weight)
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        self._check(logits, targets)
        nll = F.cross_entropy(logits, targets, reduction="none")
        p = torch.exp(-nll)
        loss = (1.0 - p) ** self.gamma * nll
        if self.weight is not None:
            loss = loss * self.weight.to(logits.device, logits.dtype)[targets]
        return loss.mean()


class ClassBalancedLoss(ImbalanceLoss):
    """Class-balanced softmax CE: weights :func:`cb_weights` of the (joint) counts; ``set_weight`` replaces them."""

    def __init__(self, class_counts: Counts, m: int = 1, weight: Weight = None, beta: float = 0.9999) -> None:
        super().__init__(class_counts, m, None)
        self.beta = float(beta)
        self.set_weight(cb_weights(self.counts, self.beta) if weight is None else weight)


class LDAMLoss(ImbalanceLoss):
    """LDAM: ``CE(s * (z - Delta_y * onehot(y)), y)`` with :func:`ldam_margins` of the (joint) counts."""

    def __init__(
        self, class_counts: Counts, m: int = 1, weight: Weight = None, max_m: float = 0.5, s: float = 30.0
    ) -> None:
        super().__init__(class_counts, m, weight)
        if s <= 0 or max_m < 0:
            raise ValueError(f"LDAM needs s > 0 and max_m >= 0, got s={s}, max_m={max_m}")
        self.s, self.max_m = float(s), float(max_m)
        self.margins: Tensor
        self.register_buffer("margins", ldam_margins(self.counts, self.max_m))

    def adjust(self, logits: Tensor, targets: Tensor) -> Tensor:
        margin = self.margins.to(logits.device, logits.dtype)[targets]  # (B,)
        onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
        return self.s * (logits - margin[:, None] * onehot)


class BalancedSoftmaxLoss(ImbalanceLoss):
    """Balanced Softmax: ``CE(z + log n, y)``."""

    def adjust(self, logits: Tensor, targets: Tensor) -> Tensor:
        return logits + torch.log(self.counts).to(logits.device, logits.dtype)


class LogitAdjustedLoss(ImbalanceLoss):
    """Logit-adjusted loss: ``CE(z + tau * log(n / sum n), y)``."""

    def __init__(self, class_counts: Counts, m: int = 1, weight: Weight = None, tau: float = 1.0) -> None:
        super().__init__(class_counts, m, weight)
        self.tau = float(tau)

    def adjust(self, logits: Tensor, targets: Tensor) -> Tensor:
        log_prior = torch.log(self.counts / self.counts.sum())
        return logits + self.tau * log_prior.to(logits.device, logits.dtype)


LOSSES: dict[str, type[ImbalanceLoss]] = {
    "ce": CrossEntropy,
    "focal": FocalLoss,
    "cb": ClassBalancedLoss,
    "ldam": LDAMLoss,
    "balanced-softmax": BalancedSoftmaxLoss,
    "logit-adjusted": LogitAdjustedLoss,
}


def make_loss(name: str, class_counts: Counts, m: int = 1, **kwargs: Any) -> ImbalanceLoss:
    """Build loss ``name`` (a key of :data:`LOSSES`) for ``class_counts`` and SLA's ``m`` transforms.

    Keyword arguments go to the loss: ``weight`` (all), ``gamma`` (focal), ``beta`` (cb), ``max_m`` and
    ``s`` (ldam), ``tau`` (logit-adjusted).
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {list(LOSSES)}")
    try:
        return LOSSES[name](class_counts, m, **kwargs)
    except TypeError as e:
        raise ValueError(f"bad keyword argument for loss {name!r}: {e}") from None


class NormedLinear(nn.Module):
    """Cosine classifier ``z = normalize(x) @ normalize(W)^T`` (``(B, in) -> (B, out)``, values in ``[-1, 1]``).

    The head LDAM is trained with (Cao et al. 2019); its scale comes from the loss (``s=30``).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def head_for(loss_name: str) -> Callable[[int, int], nn.Module]:
    """Head factory ``(in, out) -> module`` for a loss: :class:`NormedLinear` for ``"ldam"``, else ``nn.Linear``."""
    if loss_name not in LOSSES:
        raise ValueError(f"unknown loss {loss_name!r}; choose one of {list(LOSSES)}")
    return NormedLinear if loss_name == "ldam" else nn.Linear
