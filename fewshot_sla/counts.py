"""Long-tailed class counts: a pure function, shared by the long-tail package and the demo."""

from __future__ import annotations

import numpy as np

__all__ = ["PROFILES", "class_counts"]

PROFILES = ("exp", "step")


def class_counts(n_max: int, num_classes: int, imbalance_ratio: float, profile: str = "exp") -> list[int]:
    """Per-class training counts of a long-tailed subset.

    ``exp``: ``n_c = int(n_max * (1/ratio)**(c/(C-1)))`` (computed as LDAM-DRW does, with the
    imbalance *factor* ``1/ratio``, so the integers match its ``get_img_num_per_cls`` bit for bit).
    ``step``: the first ``C//2`` classes keep ``n_max``, the others get ``int(n_max/ratio)``.
    CIFAR-10, ratio 100: ``[5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]`` (12,406 images).

    Args:
        n_max: images of the largest (first) class.
        num_classes: ``C``.
        imbalance_ratio: ``n_max / n_min`` (>= 1; 1 is balanced).
        profile: ``"exp"`` or ``"step"``.

    Returns:
        ``C`` non-increasing positive integers.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown imbalance profile {profile!r}; choose one of {list(PROFILES)}")
    if int(n_max) != n_max or n_max < 1:
        raise ValueError(f"n_max must be a positive integer, got {n_max!r}")
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    ratio = float(imbalance_ratio)
    if not np.isfinite(ratio) or ratio < 1.0:
        raise ValueError(
            f"imbalance_ratio must be >= 1 (n_max / n_min; 100 means the rarest class has 1/100 of the "
            f"largest), got {imbalance_ratio!r}"
        )
    factor = 1.0 / ratio  # LDAM-DRW's imb_factor (0.01 for ratio 100)
    n_max, num_classes = int(n_max), int(num_classes)
    if profile == "exp":
        if num_classes == 1:
            counts = [n_max]
        else:
            counts = [int(n_max * factor ** (c / (num_classes - 1.0))) for c in range(num_classes)]
    else:
        half = num_classes // 2
        counts = [n_max] * half + [int(n_max * factor)] * (num_classes - half)
    empty = [c for c, n in enumerate(counts) if n < 1]
    if empty:
        raise ValueError(
            f"imbalance_ratio={ratio:g} with n_max={n_max} and profile {profile!r} leaves class(es) {empty} "
            f"with 0 images; use a ratio <= {n_max} (or more images per class)"
        )
    return counts
