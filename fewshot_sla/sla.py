"""The SLA math as small pure tensor functions.

Lee, Hwang & Shin, ICML 2020 (arXiv 1910.05872). Layout (see :mod:`fewshot_sla.transforms`):
``x_aug[b*M + j] = T_j(x[b])``, joint label ``y*M + j``, joint logits ``(B*M, N*M)`` with column
``i*M + j`` = (class ``i``, transform ``j``).

* :func:`sla_loss` -- Eq. (5): cross-entropy of the joint ``N*M``-way head over all ``B*M`` copies.
* :func:`single_logits` -- SLA+SI: the identity copy, transform-0 columns: ``z[b*M + 0, i*M + 0]``.
* :func:`aggregate_logits` -- SLA+AG, Eq. (6): ``s[b, i] = mean_j z[b*M + j, i*M + j]`` (the
  logits are averaged, then a softmax gives the aggregated posterior).
* :func:`self_distillation_loss` -- SLA+SD, Eq. (7): an ``N``-way student head trained with
  cross-entropy plus ``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, teacher detached;
  ``scale`` multiplies both logits inside the KL term only (for cosine heads, see below).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .transforms import Transform, get_transform

__all__ = [
    "joint_labels",
    "expand",
    "expand_subset",
    "single_logits",
    "aggregate_logits",
    "joint_to_class_transform",
    "sla_loss",
    "self_distillation_loss",
    "check_labels",
]


def check_labels(y: Tensor, num_classes: int | None = None, what: str = "labels") -> None:
    """Raise a clear error unless ``y`` is a 1-D integer tensor with values in ``[0, num_classes)``."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor of class indices, got {type(y).__name__}")
    if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(
            f"{what}: expected a 1-D integer tensor of class indices, got {y.dtype} of shape {tuple(y.shape)}"
        )
    if y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else "[0, N)"
        raise ValueError(
            f"{what}: class indices must lie in {bound}, got values in [{lo}, {hi}]; "
            "remap the labels to 0..N-1 (and check num_classes)"
        )


def joint_labels(y: Tensor, m: int) -> Tensor:
    """Joint labels of every copy: ``(B,) -> (B*M,)``, ``out[b*M + j] = y[b]*M + j``."""
    check_labels(y)
    j = torch.arange(m, device=y.device, dtype=y.dtype)
    return (y.unsqueeze(1) * m + j).reshape(-1)


def expand(x: Tensor, y: Tensor, transform: str | Transform) -> tuple[Tensor, Tensor]:
    """Expand a batch into all its transformed copies with joint labels.

    Args:
        x: images ``(B, C, H, W)``.
        y: class labels ``(B,)`` in ``[0, N)``.
        transform: a name in :data:`fewshot_sla.TRANSFORMS` or a :class:`Transform`.

    Returns:
        ``x_aug (B*M, C, H, W)`` with ``x_aug[b*M + j] = T_j(x[b])`` and
        ``y_joint (B*M,)`` with ``y_joint[b*M + j] = y[b]*M + j``.
    """
    t = get_transform(transform)
    if y.shape[:1] != x.shape[:1]:
        raise ValueError(f"expand: x has {x.shape[0]} images but y has {y.shape[0]} labels")
    return t(x), joint_labels(y, t.m)


def expand_subset(
    x: Tensor,
    y: Tensor,
    transform: str | Transform,
    k: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Random-subset SLA: ``k`` of the ``M`` copies per image, the identity always kept.

    Each image gets the identity plus ``k - 1`` distinct non-identity transforms drawn uniformly,
    so a training step costs about ``k/M`` of full SLA while every joint label still appears.

    Args:
        x: ``(B, C, H, W)``; y: ``(B,)``; k: copies per image, ``1 <= k <= M``.
        generator: a local random generator (for reproducibility).

    Returns:
        ``x_sub (B*k, C, H, W)``, ``y_joint (B*k,)`` and ``j (B*k,)``, the transform of each copy;
        copy ``b*k + 0`` is the identity of image ``b``.
    """
    t = get_transform(transform)
    if not 1 <= k <= t.m:
        raise ValueError(f"expand_subset: k must be in [1, M={t.m}] for transform {t.name!r}, got k={k}")
    check_labels(y, what="expand_subset labels")
    b = x.shape[0]
    rest = torch.rand(b, t.m - 1, generator=generator).argsort(dim=1)[:, : k - 1] + 1
    j = torch.cat([torch.zeros(b, 1, dtype=torch.long), rest], dim=1).reshape(-1).to(x.device)
    xs = t.select(x.repeat_interleave(k, dim=0), j.tolist())
    return xs, y.repeat_interleave(k) * t.m + j, j


def _check_joint(joint_logits: Tensor, m: int, what: str) -> tuple[int, int]:
    if not isinstance(joint_logits, Tensor) or joint_logits.dim() != 2:
        shape = tuple(joint_logits.shape) if isinstance(joint_logits, Tensor) else type(joint_logits).__name__
        raise ValueError(f"{what}: expected joint logits of shape (B*M, N*M), got {shape}")
    if m < 1:
        raise ValueError(f"{what}: M must be >= 1, got {m}")
    rows, cols = joint_logits.shape
    if rows % m or cols % m:
        raise ValueError(
            f"{what}: joint logits of shape {tuple(joint_logits.shape)} do not match M={m}: both "
            f"dimensions must be multiples of M (B*M rows, N*M columns); pass the M of the transform "
            "that expanded the batch"
        )
    return rows // m, cols // m


def single_logits(joint_logits: Tensor, m: int) -> Tensor:
    """SLA+SI: the identity copy's transform-0 logits.

    Args:
        joint_logits: ``(B*M, N*M)``.
        m: number of transforms ``M``.

    Returns:
        ``(B, N)``, ``out[b, i] = joint_logits[b*M + 0, i*M + 0]``.
    """
    b, n = _check_joint(joint_logits, m, "single_logits")
    return joint_logits.view(b, m, n, m)[:, 0, :, 0]


def aggregate_logits(joint_logits: Tensor, m: int) -> Tensor:
    """SLA+AG (Eq. 6): average over transforms of the logit of the matching joint class.

    Args:
        joint_logits: ``(B*M, N*M)``.
        m: number of transforms ``M``.

    Returns:
        ``(B, N)``, ``s[b, i] = (1/M) sum_j joint_logits[b*M + j, i*M + j]``; ``softmax(s)`` is
        the aggregated posterior (logits are averaged, not probabilities).
    """
    b, n = _check_joint(joint_logits, m, "aggregate_logits")
    return joint_logits.view(b, m, n, m).diagonal(dim1=1, dim2=3).mean(-1)


def joint_to_class_transform(y_joint: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """Split joint labels ``y*M + j`` back into ``(y, j)``."""
    return torch.div(y_joint, m, rounding_mode="floor"), y_joint % m


def sla_loss(joint_logits: Tensor, y_joint: Tensor, weight: Tensor | None = None) -> Tensor:
    """SLA loss (Eq. 5): cross-entropy of the joint head, mean over all copies.

    Args:
        joint_logits: ``(B*M, N*M)``.
        y_joint: ``(B*M,)`` joint labels ``y*M + j``.
        weight: optional ``(N*M,)`` class weights (as :func:`torch.nn.functional.cross_entropy`).

    Returns:
        Scalar. With ``M = 1`` this is plain cross-entropy.
    """
    if joint_logits.dim() != 2 or joint_logits.shape[0] != y_joint.shape[0]:
        raise ValueError(
            f"sla_loss: expected joint logits (B*M, N*M) and joint labels (B*M,), got "
            f"{tuple(joint_logits.shape)} and {tuple(y_joint.shape)}"
        )
    check_labels(y_joint, joint_logits.shape[1], what="sla_loss joint labels")
    return F.cross_entropy(joint_logits, y_joint, weight=weight)


def self_distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    temperature: float = 1.0,
    criterion: Callable[[Tensor, Tensor], Tensor] | None = None,
    scale: float = 1.0,
) -> Tensor:
    """SLA+SD (Eq. 7): ``CE(student, y) + T^2 * KL(softmax(s*teacher/T) || softmax(s*student/T))``.

    The teacher (the aggregated SLA logits) is detached: gradients reach only the student.
    ``criterion`` replaces the cross-entropy term (e.g. an imbalance loss on the ``N``-way head);
    it always gets the unscaled student logits.

    ``scale`` (``s``) matters for cosine heads (``NormedLinear``, as LDAM uses): their logits lie in
    ``[-1, 1]`` and LDAM multiplies them by ``s = 30`` only inside its own cross-entropy. Distilled
    unscaled, the teacher's softmax is nearly uniform and the KL gradient is hundreds of times
    smaller than the CE gradient; pass the same ``s`` here so the KL term sees the logits at the
    scale the classifier is trained at.

    Args:
        student_logits: ``(B, N)`` from the ``N``-way head on the identity copy.
        teacher_logits: ``(B, N)`` aggregated logits (:func:`aggregate_logits`).
        targets: ``(B,)`` class labels.
        temperature: ``T > 0``.
        criterion: ``(student_logits (B, N), targets (B,)) -> scalar``; cross-entropy by default.
        scale: ``s > 0``, multiplies both logits in the KL term only.

    Returns:
        Scalar, both terms averaged over the batch.
    """
    if not temperature > 0:
        raise ValueError(f"self_distillation_loss: temperature must be > 0, got {temperature}")
    if not scale > 0:
        raise ValueError(f"self_distillation_loss: scale must be > 0, got {scale}")
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            "self_distillation_loss: student and teacher logits must both be (B, N), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    check_labels(targets, student_logits.shape[1], what="self_distillation_loss targets")
    t = float(temperature)
    ce = F.cross_entropy(student_logits, targets) if criterion is None else criterion(student_logits, targets)
    k = float(scale) / t  # scale and temperature enter the KL term only through their ratio
    kl = F.kl_div(
        F.log_softmax(student_logits * k, dim=1),
        F.log_softmax(teacher_logits.detach() * k, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return ce + t * t * kl
