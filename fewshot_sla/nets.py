"""The one backbone registry: the demo nets, the CIFAR ResNets, Conv4 and ResNet-12.

Every backbone maps ``(B, C, H, W)`` images to a flat feature vector ``(B, D)`` and exposes
``out_dim`` (``D``), so it plugs into :class:`fewshot_sla.SLAClassifier` and the episodic learners
alike; the heads live in :mod:`fewshot_sla.model`. :func:`make_backbone` builds one by name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MLP", "SmallCNN", "ResNetCIFAR", "resnet20", "resnet32", "resnet56", "Conv4", "ResNet12", "BACKBONES",
    "make_backbone",
]


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


class SmallCNN(nn.Module):
    """conv(32)-BN-ReLU-conv(32)-BN-ReLU-pool-conv(64)-BN-ReLU-GAP for 8x8 grey images."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.net = nn.Sequential(
            *block(in_channels, 32),
            *block(32, 32),
            nn.MaxPool2d(2),
            *block(32, 64),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.out_dim = 64

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


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


class _ResBlock(nn.Module):
    """3 x [conv3x3, BN, LeakyReLU(0.1)] (the last activation after the residual sum), a 1x1-conv + BN
    shortcut, then a 2x2 max-pool: ``(B, C_in, H, W) -> (B, C_out, H // 2, W // 2)``."""

    def __init__(self, c_in: int, c_out: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv3 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.pool = nn.MaxPool2d(2)
        self.drop_rate = drop_rate

    def forward(self, x: Tensor) -> Tensor:
        out = F.leaky_relu(self.bn1(self.conv1(x)), 0.1)
        out = F.leaky_relu(self.bn2(self.conv2(out)), 0.1)
        out = F.leaky_relu(self.bn3(self.conv3(out)) + self.shortcut(x), 0.1)
        out = self.pool(out)
        if self.drop_rate > 0:
            # MetaOptNet uses DropBlock here; plain dropout is the simple stand-in.
            out = F.dropout(out, self.drop_rate, self.training)
        return out


class ResNet12(nn.Module):
    """ResNet-12 as in MetaOptNet (Lee, Maji, Ravichandran & Soatto, CVPR 2019).

    Four residual blocks with ``channels`` = 64-160-320-640 output channels; each block is
    3 x [conv3x3, BN, LeakyReLU(0.1)] with a 1x1-conv + BN shortcut, followed by a 2x2 max-pool.
    MetaOptNet flattens the final ``640 x 5 x 5`` map (16,000 features at 84x84); here a global
    average pool follows instead, so ``out_dim = channels[-1]`` (640) for any input size (28, 32, 84,
    ...) and the feature size does not depend on the data set. DropBlock is replaced by plain
    dropout after each block (``drop_rate``, off by default).

    ``(B, in_channels, H, W) -> (B, channels[-1])`` for ``H, W >= 16`` (at 28x28 the last map is 1x1).

    Args:
        in_channels: image channels (1 for Omniglot, 3 for RGB).
        channels: output channels of the four blocks.
        drop_rate: dropout probability after each block (0 = none).
    """

    def __init__(
        self, in_channels: int = 3, channels: tuple[int, ...] = (64, 160, 320, 640), drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"ResNet12 needs 4 block widths, got channels={tuple(channels)}")
        blocks, c = [], in_channels
        for c_out in channels:
            blocks.append(_ResBlock(c, c_out, drop_rate))
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = int(channels[-1])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu", a=0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x).mean(dim=(2, 3))


#: Backbone factories by name: ``BACKBONES[name](in_channels, image_size)``.
BACKBONES: dict[str, Callable[[int, int], nn.Module]] = {
    "small_cnn": lambda c, s: SmallCNN(c),
    "resnet20": lambda c, s: resnet20(c),
    "resnet32": lambda c, s: resnet32(c),
    "resnet56": lambda c, s: resnet56(c),
    "conv4": lambda c, s: Conv4(c, s),
    "resnet12": lambda c, s: ResNet12(c),
}


def make_backbone(name: str, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """A backbone of :data:`BACKBONES` by name, for ``in_channels``-channel images of side ``image_size``
    (only Conv4's ``out_dim`` depends on the size: 64 at 28, 256 at 32, 1600 at 84)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name](in_channels, image_size)
