"""Backbones shared by the core, the demo and the benchmarks.

Every backbone maps images to a flat feature vector and exposes ``out_dim``; the heads live in
:mod:`fewshot_sla.model`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MLP", "ResNetCIFAR", "resnet20", "resnet32", "resnet56", "BACKBONES"]


class MLP(nn.Module):
    """A small fully connected backbone for tiny images (the digits demo)."""

    def __init__(self, in_shape: tuple[int, int, int], hidden: int = 256, depth: int = 2) -> None:
        super().__init__()
        c, h, w = in_shape
        layers: list[nn.Module] = [nn.Flatten()]
        d = c * h * w
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            d = hidden
        self.net = nn.Sequential(*layers)
        self.out_dim = hidden

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        # He et al. (2016) option A: a parameter-free shortcut (subsample, zero-pad channels),
        # as in the CIFAR ResNets of the original paper and of LDAM-DRW.
        self.pad = cout - cin
        self.stride = stride

    def shortcut(self, x: Tensor) -> Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """CIFAR ResNet-(6n+2) of He et al. (2016): 16/32/64 channels, global average pooling.

    Args:
        depth: 20, 32, 56 or any ``6n + 2``.
        in_channels: input channels.

    Shapes: ``(B, C, H, W) -> (B, 64)``.
    """

    def __init__(self, depth: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"ResNetCIFAR: depth must be 6n+2 (20, 32, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks: list[nn.Module] = []
        cin = 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(_BasicBlock(cin, cout, 2 if (stage > 0 and i == 0) else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = 64
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def resnet20(in_channels: int = 3) -> ResNetCIFAR:
    return ResNetCIFAR(20, in_channels)


def resnet32(in_channels: int = 3) -> ResNetCIFAR:
    return ResNetCIFAR(32, in_channels)


def resnet56(in_channels: int = 3) -> ResNetCIFAR:
    return ResNetCIFAR(56, in_channels)


#: CIFAR backbones by name.
BACKBONES = {"resnet20": resnet20, "resnet32": resnet32, "resnet56": resnet56}
