"""Input transformations for Self-supervised Label Augmentation (SLA).

Lee, Hwang & Shin, "Self-supervised Label Augmentation via Input Transformations", ICML 2020
(arXiv 1910.05872), Section 2: a transformation family ``{T_j}_{j=1..M}`` with ``T_1`` the identity.

The layout used everywhere in this package (written down once, here):

* ``x_aug[b*M + j] = T_j(x[b])`` for a batch ``x`` of shape ``(B, C, H, W)``;
* joint label ``y*M + j`` (class-major);
* joint logits of shape ``(B*M, N*M)``, column ``i*M + j`` = (class ``i``, transform ``j``).

Transform 0 is always the identity.
"""

from __future__ import annotations

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
]


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

    Args:
        perms: channel orders, e.g. ``(1, 2, 0)`` maps output channel ``c`` to input ``perm[c]``.
    """

    def __init__(
        self,
        perms: Sequence[Sequence[int]] = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)),
        name: str = "color_perm",
    ) -> None:
        self.perms = tuple(tuple(int(c) for c in p) for p in perms)
        if not self.perms or self.perms[0] != (0, 1, 2):
            raise ValueError(f"{name}: the first permutation must be the identity (0, 1, 2)")
        self.m = len(self.perms)
        self.name = name

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
        return x if p == (0, 1, 2) else x[:, list(p)]


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


def get_transform(transform: str | Transform) -> Transform:
    """Return a transform object from a name in :data:`TRANSFORMS` or an object."""
    if isinstance(transform, Transform):
        return transform
    if isinstance(transform, str):
        try:
            return TRANSFORMS[transform]
        except KeyError:
            raise ValueError(
                f"unknown transform {transform!r}; known transforms: {', '.join(sorted(TRANSFORMS))}"
            ) from None
    raise TypeError(f"transform must be a name or a Transform, got {type(transform).__name__}")
