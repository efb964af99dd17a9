"""Training regimes: SLA (with SI / AG / SD inference) and the paper's ablation baselines.

Each regime is an ``nn.Module`` holding a backbone and its heads. ``forward(x, y)`` trains:
it returns a dict with ``loss`` and the tensors metrics need; the loop touches only ``loss``.
``predict(x, mode)`` returns ``(B, N)`` class logits; it always runs in eval mode (BatchNorm with
running statistics, which it leaves untouched) and restores every submodule's previous mode.
``predict_modes(x)`` returns the logits of every mode of ``modes()`` at once, equal to ``predict(x, mode)``
for each, sharing the backbone passes the modes have in common (what a test evaluation calls).

* :class:`SLAClassifier` -- SLA (Lee, Hwang & Shin, ICML 2020): a joint ``N*M``-way head on the
  transformed copies (Eq. 5), optionally an ``N``-way self-distillation head (SLA+SD, Eq. 7),
  optionally a random subset of ``k`` copies per image. With transform ``"none"`` it is the plain
  baseline (``M = 1``, cross-entropy).
* :class:`DataAugmentation` -- "DA": the transforms as plain augmentation, original labels.
* :class:`MultiTask` -- "MT": an ``N``-way class head plus an ``M``-way transform head, losses summed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .sla import (
    aggregate_logits,
    check_labels,
    expand,
    expand_subset,
    self_distillation_loss,
    sla_loss,
)
from .transforms import Transform, get_transform
from .utils import eval_mode

__all__ = ["SLAClassifier", "DataAugmentation", "MultiTask", "PREDICT_MODES", "Criterion", "eval_mode"]

Criterion = Callable[[Tensor, Tensor], Tensor]
HeadFactory = Callable[[int, int], nn.Module]
PREDICT_MODES = ("single", "aggregated", "distilled")
_F = TypeVar("_F", bound=Callable[..., Any])


def _predicts_in_eval(fn: _F) -> _F:
    """Run a ``predict`` method without gradients and in eval mode: a model left in train mode
    would otherwise normalise with batch statistics and overwrite BatchNorm's running stats."""

    @functools.wraps(fn)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad(), eval_mode(self):
            return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _feat_dim(backbone: nn.Module, feat_dim: int | None) -> int:
    if feat_dim is not None:
        return feat_dim
    out = getattr(backbone, "out_dim", None)
    if not isinstance(out, int):
        raise ValueError(
            f"{type(backbone).__name__} has no integer attribute 'out_dim'; pass feat_dim= "
            "(the size of the feature vector the backbone returns)"
        )
    return out


class SLAClassifier(nn.Module):
    """A backbone with SLA's joint ``N*M``-way head (and optionally the ``N``-way SD head).

    Args:
        backbone: maps ``(B, C, H, W)`` to features ``(B, D)``.
        num_classes: ``N``.
        transform: a name in :data:`fewshot_sla.TRANSFORMS` or a :class:`Transform`; ``"none"``
            gives the plain baseline.
        distill: add the self-distillation head (SLA+SD).
        feat_dim: ``D``; read from ``backbone.out_dim`` when omitted.
        criterion: loss of the joint head ``(logits (B*M, N*M), joint labels) -> scalar``;
            cross-entropy (:func:`sla_loss`) by default.
        sd_criterion: the supervised term of the SD loss on the ``N``-way head; cross-entropy
            by default.
        temperature: SD temperature ``T``.
        distill_scale: ``s``, multiplies the teacher (aggregated joint) and student logits in the SD
            KL term only (:func:`self_distillation_loss`'s ``scale``); ``sd_criterion`` still gets
            the raw logits. Use the cosine scale (30 for LDAM) with ``NormedLinear`` heads, whose
            logits lie in ``[-1, 1]``: unscaled, the teacher is nearly uniform and distillation
            contributes almost no gradient.
        subset_k: train on ``k`` random copies per image (identity always kept) instead of all ``M``.
        head: factory ``(in_features, out_features) -> module`` for the heads (``nn.Linear``).
        seed: seed of :attr:`generator`, the local generator that draws the random subsets (save
            and restore its state with a checkpoint for an exact resume).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        transform: str | Transform = "rotation",
        distill: bool = False,
        feat_dim: int | None = None,
        criterion: Criterion | None = None,
        sd_criterion: Criterion | None = None,
        temperature: float = 1.0,
        subset_k: int | None = None,
        head: HeadFactory = nn.Linear,
        seed: int = 0,
        distill_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"SLAClassifier: num_classes must be >= 1, got {num_classes}")
        if not temperature > 0:
            raise ValueError(f"SLAClassifier: temperature must be > 0, got {temperature}")
        if not distill_scale > 0:
            raise ValueError(f"SLAClassifier: distill_scale must be > 0, got {distill_scale}")
        self.transform = get_transform(transform)
        self.m = self.transform.m
        if subset_k is not None and not 1 <= subset_k <= self.m:
            raise ValueError(f"SLAClassifier: subset_k must be in [1, M={self.m}], got {subset_k}")
        if subset_k is not None and distill and subset_k < self.m:
            raise ValueError(
                "SLAClassifier: self-distillation needs the aggregated teacher over all M copies; "
                "use subset_k=None (or M) with distill=True"
            )
        self.num_classes = num_classes
        self.backbone = backbone
        d = _feat_dim(backbone, feat_dim)
        self.joint_head = head(d, num_classes * self.m)
        self.sd_head = head(d, num_classes) if distill else None
        self.criterion = criterion or sla_loss
        self.sd_criterion = sd_criterion
        self.temperature = float(temperature)
        self.distill_scale = float(distill_scale)
        self.subset_k = subset_k
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def distill(self) -> bool:
        return self.sd_head is not None

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """One training step's forward pass.

        Returns:
            ``loss``; ``joint_logits (B*M, N*M)``, ``y_joint (B*M,)``; with all ``M`` copies also
            ``logits`` = aggregated ``(B, N)`` and, with SD, ``distilled_logits (B, N)``.
        """
        check_labels(y, self.num_classes, what=f"{type(self).__name__} labels")
        if self.subset_k is not None and self.subset_k < self.m:
            x_aug, y_joint, _ = expand_subset(x, y, self.transform, self.subset_k, self.generator)
            z = self.joint_head(self.backbone(x_aug))
            return {"loss": self.criterion(z, y_joint), "joint_logits": z, "y_joint": y_joint}
        x_aug, y_joint = expand(x, y, self.transform)
        feats = self.backbone(x_aug)
        z = self.joint_head(feats)
        loss = self.criterion(z, y_joint)
        out = {"joint_logits": z, "y_joint": y_joint, "logits": aggregate_logits(z.detach(), self.m)}
        if self.sd_head is not None:
            teacher = aggregate_logits(z, self.m)
            student = self.sd_head(feats[:: self.m])  # the identity copies
            sd = self_distillation_loss(
                student, teacher, y, self.temperature, self.sd_criterion, scale=self.distill_scale
            )
            loss = loss + sd
            out["sd_loss"] = sd.detach()
            out["distilled_logits"] = student
        out["loss"] = loss
        return out

    @_predicts_in_eval
    def predict(self, x: Tensor, mode: str = "aggregated") -> Tensor:
        """Class logits ``(B, N)``, computed in eval mode (the previous modes are restored).

        Args:
            x: ``(B, C, H, W)``.
            mode: ``"single"`` (SLA+SI: identity copy, transform-0 columns), ``"aggregated"``
                (SLA+AG: logits averaged over the ``M`` copies) or ``"distilled"`` (SLA+SD head).
        """
        if mode == "single":
            z = self.joint_head(self.backbone(x))
            return z.view(x.shape[0], self.num_classes, self.m)[:, :, 0]
        if mode == "aggregated":
            z = self.joint_head(self.backbone(self.transform(x)))
            return aggregate_logits(z, self.m)
        if mode == "distilled":
            if self.sd_head is None:
                raise ValueError("predict(mode='distilled') needs a model built with distill=True")
            return self.sd_head(self.backbone(x))
        raise ValueError(f"unknown predict mode {mode!r}; choose one of {', '.join(PREDICT_MODES)}")

    @_predicts_in_eval
    def predict_modes(self, x: Tensor) -> dict[str, Tensor]:
        """The class logits ``(B, N)`` of every mode in :meth:`modes`, in eval mode: equal to
        ``predict(x, mode)`` for each mode (the same operations on the same inputs), in ``1 + M`` image
        passes of the backbone instead of ``1 + M + 1``: SLA+SI and SLA+SD read one ``backbone(x)``.

        The aggregated mode keeps its own pass over the ``M`` copies; its identity copy is not reused for
        SLA+SI, since a convolution over a batch of another size may take another kernel and round
        differently (see :func:`fewshot_sla.utils.inference_batches`), so the single logits would no longer
        be ``predict(x, "single")``'s.

        Args:
            x: ``(B, C, H, W)``.

        Returns:
            ``{mode: (B, N)}`` in the order of :meth:`modes`.
        """
        feats = self.backbone(x)
        out = {"single": self.joint_head(feats).view(x.shape[0], self.num_classes, self.m)[:, :, 0]}
        if self.m > 1:
            out["aggregated"] = aggregate_logits(self.joint_head(self.backbone(self.transform(x))), self.m)
        if self.sd_head is not None:
            out["distilled"] = self.sd_head(feats)
        return {mode: out[mode] for mode in self.modes()}

    def modes(self) -> tuple[str, ...]:
        """The prediction modes this model supports."""
        if self.m == 1:
            return ("single",) + (("distilled",) if self.distill else ())
        return ("single", "aggregated") + (("distilled",) if self.distill else ())


class DataAugmentation(nn.Module):
    """Ablation "DA": every transformed copy keeps its original label (an ``N``-way head).

    Shapes: ``forward(x (B, C, H, W), y (B,))`` trains on ``(B*M, C, H, W)`` with labels ``y``
    repeated per copy; ``predict`` uses the untransformed image.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        transform: str | Transform = "rotation",
        feat_dim: int | None = None,
        criterion: Criterion | None = None,
        head: HeadFactory = nn.Linear,
    ) -> None:
        super().__init__()
        self.transform = get_transform(transform)
        self.m = self.transform.m
        self.num_classes = num_classes
        self.backbone = backbone
        self.head = head(_feat_dim(backbone, feat_dim), num_classes)
        self.criterion = criterion or F.cross_entropy

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        check_labels(y, self.num_classes, what="DataAugmentation labels")
        logits = self.head(self.backbone(self.transform(x)))
        y_rep = y.repeat_interleave(self.m)
        return {"loss": self.criterion(logits, y_rep), "logits": logits[:: self.m].detach()}

    @_predicts_in_eval
    def predict(self, x: Tensor, mode: str = "single") -> Tensor:
        """Class logits ``(B, N)`` of the untransformed ``x (B, C, H, W)``, in eval mode."""
        if mode != "single":
            raise ValueError(f"DataAugmentation supports predict(mode='single') only, got {mode!r}")
        return self.head(self.backbone(x))

    @_predicts_in_eval
    def predict_modes(self, x: Tensor) -> dict[str, Tensor]:
        """``{"single": predict(x)}``, the one mode (the interface of :meth:`SLAClassifier.predict_modes`)."""
        return {"single": self.head(self.backbone(x))}

    def modes(self) -> tuple[str, ...]:
        return ("single",)


class MultiTask(nn.Module):
    """Ablation "MT": a shared backbone with an ``N``-way class head and an ``M``-way transform
    head; loss ``CE(u(T_j x), y) + CE(v(T_j x), j)`` averaged over all ``B*M`` copies.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        transform: str | Transform = "rotation",
        feat_dim: int | None = None,
        criterion: Criterion | None = None,
        head: HeadFactory = nn.Linear,
    ) -> None:
        super().__init__()
        self.transform = get_transform(transform)
        self.m = self.transform.m
        self.num_classes = num_classes
        self.backbone = backbone
        d = _feat_dim(backbone, feat_dim)
        self.class_head = head(d, num_classes)
        self.transform_head = head(d, self.m)
        self.criterion = criterion or F.cross_entropy

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        check_labels(y, self.num_classes, what="MultiTask labels")
        feats = self.backbone(self.transform(x))
        u, v = self.class_head(feats), self.transform_head(feats)
        j = torch.arange(self.m, device=x.device).repeat(x.shape[0])
        cls_loss = self.criterion(u, y.repeat_interleave(self.m))
        tf_loss = F.cross_entropy(v, j)
        return {
            "loss": cls_loss + tf_loss,
            "class_loss": cls_loss.detach(),
            "transform_loss": tf_loss.detach(),
            "logits": u[:: self.m].detach(),
        }

    @_predicts_in_eval
    def predict(self, x: Tensor, mode: str = "single") -> Tensor:
        """Class logits ``(B, N)`` of the untransformed ``x (B, C, H, W)``, in eval mode."""
        if mode != "single":
            raise ValueError(f"MultiTask supports predict(mode='single') only, got {mode!r}")
        return self.class_head(self.backbone(x))

    @_predicts_in_eval
    def predict_modes(self, x: Tensor) -> dict[str, Tensor]:
        """``{"single": predict(x)}``, the one mode (the interface of :meth:`SLAClassifier.predict_modes`)."""
        return {"single": self.class_head(self.backbone(x))}

    def modes(self) -> tuple[str, ...]:
        return ("single",)
