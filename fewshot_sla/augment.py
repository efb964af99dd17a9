"""Batch augmentation on uint8 image tensors (the data stays uint8 in memory; a batch is augmented
as one tensor, on its device, with an explicit generator)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["random_crop_flip"]


def _to(t: Tensor, device: torch.device) -> Tensor:
    """``t`` on ``device``; CPU draws go to a GPU through pinned memory without a copy that waits for the GPU (a
    plain ``.to`` from pageable memory synchronises the stream: every step would wait for the previous one)."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def random_crop_flip(x: Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True) -> Tensor:
    """Random crop with zero padding and (optionally) a horizontal flip, per image, on a whole batch.

    Equivalent in distribution to torchvision's ``RandomCrop(H, padding)`` + ``RandomHorizontalFlip()``
    applied image by image: each image gets offsets ``(dy, dx)`` uniform in ``[0, 2*padding]`` and a
    fair flip coin. One zero-pad and one gather (the flip folded into the column index). The draws
    are made in this order from ``generator``: ``dy`` (B,), ``dx`` (B,), then the flip coins (B,).

    Args:
        x: ``(B, C, H, W)`` uint8 (any number of channels, any size).
        generator: a seeded ``torch.Generator`` (its device is where the random draws are made).
        padding: zero padding on each side (4 for CIFAR, 8 for mini-ImageNet in MetaOptNet).
        flip: also flip horizontally with probability 1/2 (leave off for handwriting such as Omniglot).

    Returns:
        ``(B, C, H, W)`` uint8.
    """
    if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
        got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"random_crop_flip: expected a uint8 tensor (B, C, H, W) of raw pixels, got {got}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"random_crop_flip: pass a torch.Generator (seeded), got {type(generator).__name__}")
    if padding < 0:
        raise ValueError(f"random_crop_flip: padding must be >= 0, got {padding}")
    b, c, h, w = x.shape
    gdev = generator.device
    dy = _to(torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=gdev), x.device)
    dx = _to(torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=gdev), x.device)
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    if flip:
        coin = _to(torch.rand(b, generator=generator, device=gdev) < 0.5, x.device)
        cols_w = torch.where(coin[:, None], w - 1 - ar_w, ar_w)
    else:
        cols_w = ar_w.expand(b, w)
    xp = torch.nn.functional.pad(x, (padding, padding, padding, padding))  # zeros, like RandomCrop(fill=0)
    rows = dy[:, None] + ar_h  # (B, H)
    cols = dx[:, None] + cols_w  # (B, W)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
