"""Prototypical networks (Snell et al., NeurIPS 2017) and the Conv4 backbone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["prototypes", "ProtoNet", "Conv4"]


def prototypes(features: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Class means: ``(S, D), (S,) -> (ways, D)`` (one matmul with the one-hot labels)."""
    onehot = F.one_hot(labels, ways).to(features.dtype)  # (S, ways)
    counts = onehot.sum(0).clamp_min(1).unsqueeze(1)
    return onehot.t() @ features / counts


class ProtoNet(nn.Module):
    """``forward(support_x, support_y, query_x) -> (Q, ways)``: negative squared Euclidean distance
    of each query embedding to each class prototype.

    Args:
        encoder: maps images to ``(B, D)`` features.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None) -> Tensor:
        ways = int(support_y.max()) + 1 if ways is None else ways
        f = self.encoder(torch.cat([support_x, query_x]))
        fs, fq = f[: len(support_x)], f[len(support_x) :]
        return -torch.cdist(fq, prototypes(fs, support_y, ways)).pow(2)


class Conv4(nn.Module):
    """4 x [conv3x3-64, BN, ReLU, maxpool2], flattened (Vinyals et al. 2016; Snell et al. 2017).

    ``(B, C, H, W) -> (B, 64 * (H // 16) * (W // 16))``: 64 for 28x28, 256 for 32x32, 1600 for 84x84.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(4):
            layers += [
                nn.Conv2d(c, hidden, 3, padding=1),
                nn.BatchNorm2d(hidden),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c = hidden
        self.net = nn.Sequential(*layers, nn.Flatten())
        side = image_size
        for _ in range(4):
            side //= 2
        self.out_dim = hidden * max(side, 1) ** 2

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
