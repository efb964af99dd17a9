"""Classification metrics: one dict of plain floats/lists that every sink logs the same way."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "accuracy",
    "per_class_accuracy",
    "balanced_accuracy",
    "confusion_matrix",
    "shot_group_accuracy",
    "mean_ci95",
    "classification_report",
]


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def accuracy(y_true, y_pred) -> float:
    """Fraction of correct predictions (labels, not logits)."""
    t, p = _np(y_true), _np(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"accuracy: y_true {t.shape} and y_pred {p.shape} differ in shape")
    return float((t == p).mean()) if t.size else math.nan


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``(N, N)`` counts, row = true class, column = predicted class; labels outside ``[0, N)`` are not counted."""
    t, p = _np(y_true).astype(np.int64).ravel(), _np(y_pred).astype(np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"confusion_matrix: y_true {t.shape} and y_pred {p.shape} differ in shape")
    keep = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    return np.bincount(t[keep] * num_classes + p[keep], minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def per_class_accuracy(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``(N,)`` recall of each class; NaN for a class absent from ``y_true``."""
    cm = confusion_matrix(y_true, y_pred, num_classes).astype(np.float64)
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (scikit-learn's definition, without
    scikit-learn); NaN for empty input."""
    t, p = _np(y_true).ravel(), _np(y_pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f"balanced_accuracy: y_true {t.shape} and y_pred {p.shape} differ in shape")
    if not t.size:
        return math.nan
    return float(np.mean([(p[t == c] == c).mean() for c in np.unique(t)]))


def shot_group_accuracy(
    per_class_acc: Sequence[float] | np.ndarray,
    train_counts: Sequence[int] | np.ndarray,
    many: int = 100,
    few: int = 20,
) -> dict[str, float]:
    """Mean per-class accuracy of the many- (> ``many``), medium- (``few``..``many``) and
    few-shot (< ``few``) classes by training count (Liu et al. 2019's split). An empty group is NaN.

    Returns:
        ``{"many": .., "medium": .., "few": ..}``.
    """
    acc, n = np.asarray(per_class_acc, dtype=np.float64), np.asarray(train_counts)
    if acc.shape != n.shape:
        raise ValueError(f"shot_group_accuracy: {acc.shape[0]} per-class accuracies but {n.shape[0]} class counts")
    groups = {"many": n > many, "medium": (n >= few) & (n <= many), "few": n < few}
    return {
        k: float(np.nanmean(acc[m])) if m.any() and not np.isnan(acc[m]).all() else math.nan for k, m in groups.items()
    }


def mean_ci95(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and 95% confidence half-width ``1.96 * std / sqrt(n)`` (population std, as in the
    few-shot literature); ``(nan, nan)`` for no values, half-width 0 for one."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(1.96 * v.std() / math.sqrt(v.size))


def classification_report(
    y_true,
    y_pred,
    num_classes: int,
    train_counts: Sequence[int] | None = None,
    prefix: str = "",
) -> dict[str, object]:
    """Accuracy, balanced accuracy, per-class accuracy (list) and, given training counts, the
    many/medium/few-shot accuracies, keyed ``{prefix}acc`` etc."""
    pca = per_class_accuracy(y_true, y_pred, num_classes)
    out: dict[str, object] = {
        f"{prefix}acc": accuracy(y_true, y_pred),
        f"{prefix}balanced_acc": balanced_accuracy(y_true, y_pred),
        f"{prefix}per_class_acc": [float(a) for a in pca],
    }
    if train_counts is not None:
        for k, v in shot_group_accuracy(pca, train_counts).items():
            out[f"{prefix}acc_{k}"] = v
    return out
