"""Input transformations for Self-supervised Label Augmentation (SLA).

Lee, Hwang & Shin, "Self-supervised Label Augmentation via Input Transformations", ICML 2020
(arXiv 1910.05872), Section 2: a transformation family ``{T_j}_{j=1..M}`` with ``T_1`` the identity.

The layout used everywhere in this package (written down once, here):

* ``x_aug[b*M + j] = T_j(x[b])`` for a batch ``x`` of shape ``(B, C, H, W)``;
* joint label ``y*M + j`` (class-major);
* joint logits of shape ``(B*M, N*M)``, column ``i*M + j`` = (class ``i``, transform ``j``).

Transform 0 is always the identity.

Colour permutations of normalised images
----------------------------------------
Data pipelines usually normalise per channel, ``xn = (x - mean) / std``, before the batch reaches
:func:`fewshot_sla.expand`. Permuting the channels of ``xn`` then moves each channel's offset and
scale with it (on CIFAR up to about 0.22 std), so the network can read off which permutation was
applied from first-order image statistics instead of learning colour semantics. Give the colour
permutation the normalisation statistics and it permutes the *raw* channels instead:
``T_j(xn) = (x[perm] - mean) / std = (xn[perm] * std[perm] + mean[perm] - mean) / std``::

    t = get_transform("color_perm", stats=(CIFAR_MEAN, CIFAR_STD))      # a registered name
    t = ColorPermutation(mean=CIFAR_MEAN, std=CIFAR_STD)                  # built directly
    t = TRANSFORMS["rotation_color_perm"].with_stats(CIFAR_MEAN, CIFAR_STD)  # any Transform
    x_aug, y_joint = expand(xn, y, t)

:meth:`Transform.with_stats` returns a new transform (registered ones are never modified) and
is a no-op for families that treat every channel alike (identity, rotations); a :class:`Product`
passes the statistics to both factors. Without statistics a colour permutation permutes the
channels of its input as they are, which is right for un-normalised input (e.g. ``[0, 1]``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "Transform",
    "Identity",
    "Rotation",
    "ColorPermutation",
    "Product",
    "TRANSFORMS",
    "get_transform",
    "Stats",
]

#: Per-channel normalisation statistics ``(mean, std)``, each one value per channel.
Stats = tuple[Sequence[float], Sequence[float]]


def _check_stats(
    mean: Sequence[float], std: Sequence[float], what: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Validate ``(mean, std)`` and return them as tuples of floats."""
    try:
        m = tuple(float(v) for v in mean)
        s = tuple(float(v) for v in std)
    except TypeError:
        raise TypeError(
            f"{what}: mean and std must be sequences of per-channel floats, e.g. "
            f"mean=(0.4914, 0.4822, 0.4465), got {type(mean).__name__} and {type(std).__name__}"
        ) from None
    if len(m) != len(s) or not m:
        raise ValueError(f"{what}: mean and std need one value per channel each, got {len(m)} and {len(s)}")
    if not all(v > 0 for v in s):
        raise ValueError(f"{what}: every std must be > 0, got std={s}")
    return m, s


def _check_batch(x: Tensor, what: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor batch of shape (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{what}: expected a batch of shape (B, C, H, W), got shape {tuple(x.shape)}; "
            "add a batch dimension with x.unsqueeze(0) for a single image"
        )


class Transform:
    """A family of ``m`` input transformations applied to a whole batch.

    Subclasses implement :meth:`apply` (one transform ``j`` on a batch); :meth:`__call__` returns
    every transformed copy in the package's layout ``x_aug[b*M + j] = T_j(x[b])``.
    """

    name: str = "transform"
    m: int = 1

    def check(self, x: Tensor) -> None:
        """Raise a clear error when ``x`` cannot be transformed."""
        _check_batch(x, self.name)

    def apply(self, x: Tensor, j: int) -> Tensor:
        """Return ``T_j(x)`` for a batch ``x`` of shape ``(B, C, H, W)``."""
        raise NotImplementedError

    def select(self, x: Tensor, j: Sequence[int]) -> Tensor:
        """Transform ``x[b]`` by ``T_{j[b]}`` (one transform per image).

        Args:
            x: ``(B, C, H, W)``.
            j: ``B`` transform indices.

        Returns:
            ``(B, C, H, W)``.
        """
        self.check(x)
        jt = torch.as_tensor(j, device=x.device)
        out = torch.empty_like(x)
        for t in range(self.m):
            mask = jt == t
            if bool(mask.any()):
                out[mask] = self.apply(x[mask], t)
        return out

    def with_stats(self, mean: Sequence[float], std: Sequence[float]) -> Transform:
        """Return this family for input normalised per channel as ``(x - mean) / std``.

        Families that treat every channel alike (identity, rotations) do not depend on the
        normalisation and return ``self``; :class:`ColorPermutation` and :class:`Product` return a
        new object (``self`` is never modified). A custom transform that mixes channels should
        override this.

        Args:
            mean: per-channel mean ``(C,)`` that was subtracted.
            std: per-channel std ``(C,)`` that was divided by.
        """
        _check_stats(mean, std, self.name)
        return self

    def __call__(self, x: Tensor) -> Tensor:
        """Return all ``M`` copies: ``(B, C, H, W) -> (B*M, C, H, W)``, ``out[b*M + j] = T_j(x[b])``."""
        self.check(x)
        if self.m == 1:
            return x
        copies = torch.stack([self.apply(x, j) for j in range(self.m)], dim=1)
        return copies.reshape(x.shape[0] * self.m, *copies.shape[2:])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, m={self.m})"


class Identity(Transform):
    """``M = 1``: no transformation (the plain baseline)."""

    name = "none"
    m = 1

    def apply(self, x: Tensor, j: int) -> Tensor:
        return x


class Rotation(Transform):
    """Rotations by ``k * 90`` degrees counter-clockwise, ``T_j = rot90(x, ks[j], dims=(-2, -1))``.

    Args:
        ks: quarter turns of each transform; ``ks[0]`` must be 0 (the identity).
    """

    def __init__(self, ks: Sequence[int] = (0, 1, 2, 3), name: str = "rotation") -> None:
        if len(ks) == 0 or ks[0] != 0:
            raise ValueError(f"{name}: the first transform must be the identity (k=0), got ks={list(ks)}")
        self.ks = tuple(int(k) for k in ks)
        self.m = len(self.ks)
        self.name = name

    def check(self, x: Tensor) -> None:
        super().check(x)
        h, w = x.shape[-2:]
        if h != w and any(k % 2 for k in self.ks):
            raise ValueError(
                f"{self.name}: 90-degree rotations need square images, got {h}x{w}; "
                "resize or centre-crop the images to a square first, or use transform 'rotation2' "
                "(0 and 180 degrees), which keeps the shape"
            )

    def apply(self, x: Tensor, j: int) -> Tensor:
        k = self.ks[j]
        return x if k == 0 else torch.rot90(x, k, dims=(-2, -1))


class ColorPermutation(Transform):
    """Permutations of the RGB channels; ``perms[0]`` must be ``(0, 1, 2)``.

    Without statistics, ``T_j(x) = x[:, perm]``. With ``mean`` and ``std`` (the per-channel
    normalisation the input went through, ``xn = (x - mean) / std``), ``T_j(xn)`` equals the
    normalised permuted raw image ``(x[:, perm] - mean) / std``, so a permuted channel keeps the
    statistics of the channel it lands in and does not reveal the permutation.

    Args:
        perms: channel orders, e.g. ``(1, 2, 0)`` maps output channel ``c`` to input ``perm[c]``.
        name: the family's name.
        mean: per-channel mean ``(3,)`` subtracted by the normalisation, or None.
        std: per-channel std ``(3,)`` divided by in the normalisation, or None (both or neither).
    """

    def __init__(
        self,
        perms: Sequence[Sequence[int]] = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)),
        name: str = "color_perm",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        self.perms = tuple(tuple(int(c) for c in p) for p in perms)
        if not self.perms or self.perms[0] != (0, 1, 2):
            raise ValueError(f"{name}: the first permutation must be the identity (0, 1, 2)")
        if any(sorted(p) != [0, 1, 2] for p in self.perms):
            raise ValueError(f"{name}: every permutation must reorder the channels (0, 1, 2), got {list(self.perms)}")
        self.m = len(self.perms)
        self.name = name
        self.mean: tuple[float, ...] | None = None
        self.std: tuple[float, ...] | None = None
        if (mean is None) != (std is None):
            raise ValueError(f"{name}: pass both mean and std (the normalisation statistics) or neither")
        if mean is not None and std is not None:
            self.mean, self.std = _check_stats(mean, std, name)
            if len(self.mean) != 3:
                raise ValueError(
                    f"{name}: mean and std need 3 values (RGB), got {len(self.mean)}; colour permutations "
                    "need 3-channel images: use transform 'rotation' for grey-scale data such as Omniglot"
                )

    @property
    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The normalisation statistics ``(mean, std)`` this family corrects for, or None."""
        return None if self.mean is None or self.std is None else (self.mean, self.std)

    def with_stats(self, mean: Sequence[float], std: Sequence[float]) -> ColorPermutation:
        """A copy of this family for input normalised as ``(x - mean) / std`` (see the class doc);
        statistics this family already had are replaced."""
        return ColorPermutation(self.perms, name=self.name, mean=mean, std=std)

    def check(self, x: Tensor) -> None:
        super().check(x)
        if x.shape[1] != 3:
            raise ValueError(
                f"{self.name}: colour permutations need 3-channel (RGB) images, got {x.shape[1]} "
                f"channel(s) in a batch of shape {tuple(x.shape)}; use transform 'rotation' for "
                "grey-scale data such as Omniglot"
            )

    def apply(self, x: Tensor, j: int) -> Tensor:
        p = self.perms[j]
        if p == (0, 1, 2):
            return x
        xp = x[:, list(p)]
        if self.mean is None or self.std is None:
            return xp
        # Undo the normalisation of the source channel and redo it with the target channel's
        # statistics, folded into one per-channel affine map: xp * std[p]/std + (mean[p]-mean)/std.
        mean = torch.tensor(self.mean, dtype=torch.float64)
        std = torch.tensor(self.std, dtype=torch.float64)
        scale = (std[list(p)] / std).to(x.dtype).to(x.device).view(1, 3, 1, 1)
        shift = ((mean[list(p)] - mean) / std).to(x.dtype).to(x.device).view(1, 3, 1, 1)
        return xp * scale + shift

    def __repr__(self) -> str:
        extra = f", mean={self.mean}, std={self.std}" if self.mean is not None else ""
        return f"{type(self).__name__}(name={self.name!r}, m={self.m}{extra})"


class Product(Transform):
    """The product of two families, ``outer``-major: ``j = outer_j * inner.m + inner_j``.

    ``Product(Rotation(), ColorPermutation())`` is the paper's 24-way rotation x colour family,
    with ``j = 6*r + c``.
    """

    def __init__(self, outer: Transform, inner: Transform, name: str | None = None) -> None:
        self.outer, self.inner = outer, inner
        self.m = outer.m * inner.m
        self.name = name or f"{outer.name}_{inner.name}"

    def check(self, x: Tensor) -> None:
        self.outer.check(x)
        self.inner.check(x)

    def apply(self, x: Tensor, j: int) -> Tensor:
        r, c = divmod(j, self.inner.m)
        return self.outer.apply(self.inner.apply(x, c), r)

    def with_stats(self, mean: Sequence[float], std: Sequence[float]) -> Transform:
        """The product of both factors' :meth:`Transform.with_stats` (same name, same order)."""
        outer, inner = self.outer.with_stats(mean, std), self.inner.with_stats(mean, std)
        if outer is self.outer and inner is self.inner:
            return self
        new = copy.copy(self)  # keeps the name and any subclass attributes
        new.outer, new.inner = outer, inner
        return new


def _registry() -> dict[str, Transform]:
    return {
        "none": Identity(),
        "rotation": Rotation((0, 1, 2, 3), name="rotation"),
        "rotation2": Rotation((0, 2), name="rotation2"),
        "color_perm": ColorPermutation(name="color_perm"),
        "color_perm3": ColorPermutation(((0, 1, 2), (1, 2, 0), (2, 0, 1)), name="color_perm3"),
        "rotation_color_perm": Product(Rotation((0, 1, 2, 3)), ColorPermutation(), name="rotation_color_perm"),
    }


#: The named transformation families. Plain dict: add your own ``Transform`` to extend it.
TRANSFORMS: dict[str, Transform] = _registry()


def get_transform(transform: str | Transform, stats: Stats | None = None) -> Transform:
    """Return a transform object from a name in :data:`TRANSFORMS` or an object.

    Args:
        transform: a registered name or a :class:`Transform` (returned unchanged without ``stats``).
        stats: ``(mean, std)`` per channel when the images the transform will see were normalised
            as ``(x - mean) / std``; applied with :meth:`Transform.with_stats` (a new object, the
            registry is not modified). Only colour permutations depend on it.
    """
    if isinstance(transform, Transform):
        t = transform
    elif isinstance(transform, str):
        try:
            t = TRANSFORMS[transform]
        except KeyError:
            raise ValueError(
                f"unknown transform {transform!r}; known transforms: {', '.join(sorted(TRANSFORMS))}"
            ) from None
    else:
        raise TypeError(f"transform must be a name or a Transform, got {type(transform).__name__}")
    if stats is None:
        return t
    try:
        mean, std = stats
    except (TypeError, ValueError):
        raise ValueError(
            "get_transform: stats must be a pair (mean, std) of per-channel sequences, e.g. "
            "((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))"
        ) from None
    return t.with_stats(mean, std)
