"""Losses for long-tailed classification, composable with SLA's joint head and with deferred re-weighting.

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
* ``"vs"`` -- vector-scaling loss (Kini et al., NeurIPS 2021): CE of ``Delta_c * z_c + iota_c`` with
  ``Delta_c = (n_c / n_max)^gamma`` and ``iota_c = tau * log pi_c``, ``gamma=0.2``, ``tau=1.2``.

Weights. Every loss has a fixed *base* weight (None, i.e. unweighted, for most; the class-balanced
weights for ``"cb"``; or the user's ``weight=``) and, when built with ``drw_epoch=E``, a deferred
re-weighting schedule (DRW, Cao et al. 2019): from the 0-based epoch ``E`` on, the active weight is
:func:`drw_weights` instead. Like a sampler, the loss is told the epoch with
:meth:`ImbalanceLoss.set_epoch`; the active weight (:attr:`ImbalanceLoss.weight`) is a pure function
of it. Everything a loss holds is derived from its constructor arguments and the epoch, so all its
tensors are non-persistent buffers (they move with ``.to(device)``) and its ``state_dict`` is empty:
identical before and after DRW, so a checkpoint written at any epoch loads strictly into a freshly
built loss; call ``set_epoch`` after loading.

Composition with SLA (Lee, Hwang & Shin, ICML 2020): with ``m > 1`` the loss is built for the
``N*M``-way joint head, whose column ``i*M + j`` (class ``i``, transform ``j``) has the count ``n_i``
of class ``i``: the counts become ``np.repeat(counts, m)`` (every transformed copy of an image of
class ``i`` is one sample of each joint class ``(i, j)``), and ``(N,)`` weights are repeated ``M`` times.

Every loss exposes :attr:`ImbalanceLoss.logit_scale`, the factor it multiplies the logits by before
the softmax (``s`` for LDAM, 1 otherwise), so SLA's self-distillation can distil the same scaled logits.
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

from .schedules import drw_active

__all__ = [
    "LOSSES",
    "ImbalanceLoss",
    "CrossEntropy",
    "FocalLoss",
    "ClassBalancedLoss",
    "LDAMLoss",
    "BalancedSoftmaxLoss",
    "LogitAdjustedLoss",
    "VSLoss",
    "make_loss",
    "cb_weights",
    "drw_weights",
    "ldam_margins",
    "vs_adjustments",
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
    """The weights deferred re-weighting (DRW, Cao et al. 2019) switches to: :func:`cb_weights`, ``beta=0.9999``.

    ``(C,) -> (C,)`` float32 summing to ``C``. A loss built with ``drw_epoch`` computes them from its
    ``N`` class counts and repeats them over SLA's ``M`` transforms (the same as the weights of the
    joint counts ``np.repeat(counts, M)``: the normalisation to ``N*M`` undoes the repetition).
    """
    return cb_weights(counts, beta)


def ldam_margins(counts: Counts, max_m: float = 0.5) -> Tensor:
    """LDAM margins ``Delta_c = max_m * n_c^(-1/4) / max_k n_k^(-1/4)``: ``(C,)`` float32, largest = ``max_m``."""
    n = _counts_array(counts)
    d = n**-0.25
    return torch.tensor(d * (max_m / d.max()), dtype=torch.float32)


def vs_adjustments(counts: Counts, gamma: float = 0.2, tau: float = 1.2) -> tuple[Tensor, Tensor]:
    """VS loss's multiplicative and additive logit adjustments (Kini et al., NeurIPS 2021, Eq. VS).

    ``Delta_c = (n_c / n_max)^gamma`` (1 for the largest class, smaller for rarer ones) and
    ``iota_c = tau * log(pi_c)``, ``pi_c = n_c / sum n``; the loss is ``CE(Delta * z + iota, y)``.

    Args:
        counts: ``(C,)`` training images per class.
        gamma: exponent of the multiplicative adjustment, ``>= 0`` (0: no scaling).
        tau: weight of the additive (logit-adjustment) term (0: none).

    Returns:
        ``(Delta, iota)``, each ``(C,)`` float32.
    """
    if not (math.isfinite(gamma) and gamma >= 0 and math.isfinite(tau)):
        raise ValueError(f"VS loss needs a finite gamma >= 0 and a finite tau, got gamma={gamma}, tau={tau}")
    n = _counts_array(counts)
    delta = (n / n.max()) ** gamma
    iota = tau * np.log(n / n.sum())
    return torch.tensor(delta, dtype=torch.float32), torch.tensor(iota, dtype=torch.float32)


class ImbalanceLoss(nn.Module):
    """Base class: (joint) class counts, a fixed base weight, an optional DRW schedule; checks inputs.

    Args:
        class_counts: ``(N,)`` training images per class.
        m: SLA's number of transformations ``M`` (1 = plain classifier); the loss then expects
            ``N*M`` logit columns and uses the joint counts ``np.repeat(class_counts, m)``.
        weight: optional fixed per-class weights, ``(N,)`` (repeated ``M`` times) or ``(N*M,)``: the
            base weight, active whenever DRW is not.
        drw_epoch: deferred re-weighting (Cao et al., NeurIPS 2019): from this 0-based epoch on (see
            :meth:`set_epoch`) the active weight is :func:`drw_weights` of the class counts (repeated
            ``M`` times) instead of the base weight. None = never (LDAM-DRW uses 160 of 200).
        drw_beta: the ``beta`` of those weights (LDAM-DRW: 0.9999).

    ``forward(logits (B, N*M), targets (B,)) -> scalar``. The state_dict is empty (every tensor is
    derived from the arguments), so it is the same before and after DRW.
    """

    counts: Tensor  # (N*M,) float32 joint counts
    base_weight: Tensor | None  # (N*M,) float32 or None: the weight outside the DRW phase
    drw_weight: Tensor | None  # (N*M,) float32, or None without a DRW schedule

    def __init__(
        self,
        class_counts: Counts,
        m: int = 1,
        *,
        weight: Weight = None,
        drw_epoch: int | None = None,
        drw_beta: float = 0.9999,
    ) -> None:
        super().__init__()
        if isinstance(m, bool) or int(m) != m or m < 1:
            raise ValueError(f"m (SLA transformations per image) must be a positive integer, got {m!r}")
        if drw_epoch is not None and (isinstance(drw_epoch, bool) or int(drw_epoch) != drw_epoch or drw_epoch < 0):
            raise ValueError(
                f"drw_epoch must be a 0-based epoch (an integer >= 0) or None for no DRW, got {drw_epoch!r}"
            )
        base = _counts_array(class_counts)
        self.num_classes = len(base)
        self.m = int(m)
        self.drw_epoch = None if drw_epoch is None else int(drw_epoch)
        self.drw_beta = float(drw_beta)
        self.epoch = 0  # set by set_epoch; deliberately not state: the training loop owns the epoch
        # Non-persistent: all derived from the arguments, so checkpoints never depend on the DRW phase.
        self.register_buffer("counts", torch.tensor(np.repeat(base, self.m), dtype=torch.float32), persistent=False)
        self.register_buffer("base_weight", self._joint_weight(weight), persistent=False)
        drw = drw_weights(base, self.drw_beta)  # validates drw_beta even when DRW is off
        self.register_buffer(
            "drw_weight", None if self.drw_epoch is None else drw.repeat_interleave(self.m), persistent=False
        )

    @property
    def num_joint(self) -> int:
        """Number of logit columns the loss scores: ``N * M``."""
        return self.num_classes * self.m

    @property
    def logit_scale(self) -> float:
        """Factor the loss multiplies the logits by before the softmax (1 here; LDAM's ``s``).

        SLA's self-distillation should distil ``logit_scale * logits`` (``distill_scale``), so a
        cosine-logit head is distilled at the temperature its loss trains it at.
        """
        return 1.0

    @property
    def drw_on(self) -> bool:
        """Whether the DRW weights are active at the current epoch."""
        return drw_active(self.epoch, self.drw_epoch)

    @property
    def weight(self) -> Tensor | None:
        """The active ``(N*M,)`` per-class weight at the current epoch (None = unweighted).

        The DRW weights from ``drw_epoch`` on, else the base weight (CB weights for ``"cb"``).
        """
        return self.drw_weight if self.drw_on else self.base_weight

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss the 0-based epoch about to be trained (as ``sampler.set_epoch``); selects the weight.

        Call it every epoch, and after loading a checkpoint, before the first forward.
        """
        if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
            raise ValueError(f"epoch must be a 0-based integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def set_weight(self, weight: Weight) -> None:
        """Removed: DRW is scheduled by the loss itself now; raises with the replacement."""
        raise AttributeError(
            "ImbalanceLoss.set_weight was removed: build the loss with make_loss(..., drw_epoch=E) and call "
            "loss.set_epoch(epoch) every epoch (DRW weights from epoch E on); a fixed weight goes in weight=..."
        )

    def _joint_weight(self, weight: Weight) -> Tensor | None:
        """``(N,)`` or ``(N*M,)`` weights -> ``(N*M,)`` float32 (None stays None)."""
        if weight is None:
            return None
        w = torch.as_tensor(
            np.asarray(weight.detach().cpu() if isinstance(weight, Tensor) else weight), dtype=torch.float32
        )
        if w.dim() != 1 or len(w) not in (self.num_classes, self.num_joint):
            joint = f" or {self.num_joint} (joint)" if self.m > 1 else ""
            raise ValueError(f"weight must have {self.num_classes}{joint} entries, got shape {tuple(w.shape)}")
        if len(w) == self.num_classes and self.m > 1:
            w = w.repeat_interleave(self.m)
        return w

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Checkpoints written before these buffers became non-persistent hold "counts", "weight" (the
        # weight of the epoch they were saved at) and LDAM's "margins". All are derived now: drop them so
        # such checkpoints still load strictly, but refuse ones built for other class counts.
        old_counts = state_dict.pop(prefix + "counts", None)
        if old_counts is not None and not torch.equal(old_counts.to(self.counts), self.counts):
            error_msgs.append(
                f"{prefix or 'loss'}: checkpoint was saved for class counts {old_counts.tolist()[:8]}... "
                f"but this loss has {self.counts.tolist()[:8]}...; build the loss with the checkpoint's training counts"
            )
        for legacy in ("weight", "margins"):
            state_dict.pop(prefix + legacy, None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

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
        w = self.weight
        return F.cross_entropy(logits, targets, weight=None if w is None else w.to(logits.device, logits.dtype))

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        self._check(logits, targets)
        return self._ce(self.adjust(logits, targets), targets)

    def adjust(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The logits the (weighted) cross-entropy sees; identity here."""
        return logits

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, m={self.m}, base_weight={self.base_weight is not None}, "
            f"drw_epoch={self.drw_epoch}, epoch={self.epoch}"
        )


class CrossEntropy(ImbalanceLoss):
    """Plain (optionally weighted) softmax cross-entropy."""


class FocalLoss(ImbalanceLoss):
    """Focal loss ``mean_b w_{y_b} (1 - p_b)^gamma * (-log p_b)``, ``p_b`` the softmax probability of the target.

    With ``gamma = 0`` and no weight this is cross-entropy. (LDAM-DRW's version computes ``p`` from the
    *weighted* CE, so it differs from this one only when DRW weights are on; the mean over the batch
    is a plain mean in both.) ``gamma=1``: LDAM-DRW's focal baseline (Cao et al. 2019).
    """

    def __init__(
        self,
        class_counts: Counts,
        m: int = 1,
        *,
        weight: Weight = None,
        drw_epoch: int | None = None,
        drw_beta: float = 0.9999,
        gamma: float = 1.0,
    ) -> None:
        super().__init__(class_counts, m, weight=weight, drw_epoch=drw_epoch, drw_beta=drw_beta)
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        self._check(logits, targets)
        nll = F.cross_entropy(logits, targets, reduction="none")
        p = torch.exp(-nll)
        loss = (1.0 - p) ** self.gamma * nll
        w = self.weight
        if w is not None:
            loss = loss * w.to(logits.device, logits.dtype)[targets]
        return loss.mean()


class ClassBalancedLoss(ImbalanceLoss):
    """Class-balanced softmax CE (Cui et al. 2019): base weight :func:`cb_weights` ``(counts, beta)``.

    Those weights are in effect in every epoch; with ``drw_epoch`` the DRW weights take over from that
    epoch (with the default betas both are ``cb_weights(counts, 0.9999)``, so nothing changes). A
    ``weight=`` replaces the CB weights.
    """

    def __init__(
        self,
        class_counts: Counts,
        m: int = 1,
        *,
        weight: Weight = None,
        drw_epoch: int | None = None,
        drw_beta: float = 0.9999,
        beta: float = 0.9999,
    ) -> None:
        n = _counts_array(class_counts)
        # (N,) CB weights of the class counts, repeated M times: the same as those of the joint counts.
        base = cb_weights(n, beta) if weight is None else weight
        super().__init__(n, m, weight=base, drw_epoch=drw_epoch, drw_beta=drw_beta)
        self.beta = float(beta)


class LDAMLoss(ImbalanceLoss):
    """LDAM (Cao et al. 2019): ``CE(s * (z - Delta_y * onehot(y)), y)``, :func:`ldam_margins` of the (joint) counts.

    ``max_m=0.5``, ``s=30`` as in LDAM-DRW; :attr:`logit_scale` is ``s``.
    """

    margins: Tensor  # (N*M,) float32

    def __init__(
        self,
        class_counts: Counts,
        m: int = 1,
        *,
        weight: Weight = None,
        drw_epoch: int | None = None,
        drw_beta: float = 0.9999,
        max_m: float = 0.5,
        s: float = 30.0,
    ) -> None:
        super().__init__(class_counts, m, weight=weight, drw_epoch=drw_epoch, drw_beta=drw_beta)
        if s <= 0 or max_m < 0:
            raise ValueError(f"LDAM needs s > 0 and max_m >= 0, got s={s}, max_m={max_m}")
        self.s, self.max_m = float(s), float(max_m)
        self.register_buffer("margins", ldam_margins(self.counts, self.max_m), persistent=False)

    @property
    def logit_scale(self) -> float:
        """LDAM's ``s``: the CE sees ``s * (cosine logits - margins)``."""
        return self.s

    def adjust(self, logits: Tensor, targets: Tensor) -> Tensor:
        margin = self.margins.to(logits.device, logits.dtype)[targets]  # (B,)
        onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
        return self.s * (logits - margin[:, None] * onehot)


class BalancedSoftmaxLoss(ImbalanceLoss):
    """Balanced Softmax (Ren et al. 2020): ``CE(z + log n, y)``."""

    def adjust(self, logits: Tensor, targets: Tensor) -> Tensor:
        return logits + torch.log(self.counts).to(logits.device, logits.dtype)


class LogitAdjustedLoss(ImbalanceLoss):
    """Logit-adjusted loss (Menon et al. 2021): ``CE(z + tau * log(n / sum n), y)``, ``tau=1``."""

    def __init__(
        self,
        class_counts: Counts,
        m: int = 1,
        *,
        weight: Weight = None,
        drw_epoch: int | None = None,
        drw_beta: float = 0.9999,
        tau: float = 1.0,
    ) -> None:
        super().__init__(class_counts, m, weight=weight, drw_epoch=drw_epoch, drw_beta=drw_beta)
        self.tau = float(tau)

    def adjust(self, logits: Tensor, targets: Tensor) -> Tensor:
        log_prior = torch.log(self.counts / self.counts.sum())
        return logits + self.tau * log_prior.to(logits.device, logits.dtype)


class VSLoss(ImbalanceLoss):
    """Vector-scaling loss (Kini, Paraskevas, Oymak & Thrampoulidis, NeurIPS 2021): ``CE(Delta * z + iota, y)``.

    Adjusted logit of class ``c``: ``Delta_c * z_c + iota_c`` with ``Delta_c = (n_c / n_max)^gamma``
    and ``iota_c = tau * log pi_c``, ``pi_c = n_c / N`` (:func:`vs_adjustments`); ``gamma = 0`` gives
    the logit-adjusted loss, ``tau = 0`` CDT (Ye et al. 2020), both 0 cross-entropy. On SLA's joint
    head the counts are the joint ones (``pi`` then shifts by ``-log M`` for every column, which the
    softmax ignores). Works with DRW and ``weight=`` like the others; :attr:`logit_scale` is 1.

    Defaults ``gamma=0.2``, ``tau=1.2``: the CIFAR-10-LT (imbalance 100) VS command in the authors'
    README (github.com/orparask/VS-Loss, ``--loss_type VS --imb_type exp --imb_factor 0.01 --gamma
    0.2 --tau 1.2``); their ``train.py`` argument defaults are ``gamma=0.3``, ``tau=1.0``.
    """

    scales: Tensor  # (N*M,) float32, Delta
    offsets: Tensor  # (N*M,) float32, iota

    def __init__(
        self,
        class_counts: Counts,
        m: int = 1,
        *,
        weight: Weight = None,
        drw_epoch: int | None = None,
        drw_beta: float = 0.9999,
        gamma: float = 0.2,
        tau: float = 1.2,
    ) -> None:
        super().__init__(class_counts, m, weight=weight, drw_epoch=drw_epoch, drw_beta=drw_beta)
        self.gamma, self.tau = float(gamma), float(tau)
        delta, iota = vs_adjustments(self.counts, self.gamma, self.tau)
        self.register_buffer("scales", delta, persistent=False)
        self.register_buffer("offsets", iota, persistent=False)

    def adjust(self, logits: Tensor, targets: Tensor) -> Tensor:
        return logits * self.scales.to(logits.device, logits.dtype) + self.offsets.to(logits.device, logits.dtype)


LOSSES: dict[str, type[ImbalanceLoss]] = {
    "ce": CrossEntropy,
    "focal": FocalLoss,
    "cb": ClassBalancedLoss,
    "ldam": LDAMLoss,
    "balanced-softmax": BalancedSoftmaxLoss,
    "logit-adjusted": LogitAdjustedLoss,
    "vs": VSLoss,
}


def make_loss(
    name: str, class_counts: Counts, m: int = 1, drw_epoch: int | None = None, **kwargs: Any
) -> ImbalanceLoss:
    """Build loss ``name`` (a key of :data:`LOSSES`) for ``class_counts`` and SLA's ``m`` transforms.

    Args:
        name: a key of :data:`LOSSES`.
        class_counts: ``(N,)`` training images per class.
        m: SLA's ``M`` (the loss then scores ``N*M`` joint columns).
        drw_epoch: 0-based epoch from which deferred re-weighting is on (None = no DRW); drive it with
            ``loss.set_epoch(epoch)`` every epoch.
        **kwargs: ``weight``, ``drw_beta`` (all), ``gamma`` (focal, vs), ``beta`` (cb), ``max_m`` and ``s``
            (ldam), ``tau`` (logit-adjusted, vs).
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {list(LOSSES)}")
    try:
        return LOSSES[name](class_counts, m, drw_epoch=drw_epoch, **kwargs)
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
