"""Few-shot backbones: the ResNet-12 of MetaOptNet and a name -> backbone factory.

Every backbone maps ``(B, C, H, W)`` images to ``(B, D)`` features and has an ``out_dim`` attribute
(``D``), so it plugs into :class:`episodes.ProtoNet`, :class:`episodes.R2D2` and
:class:`episodes.MAMLLearner` alike. Conv4 lives in :mod:`episodes.protonet`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .protonet import Conv4

__all__ = ["ResNet12", "BACKBONES", "make_backbone"]

BACKBONES = ("conv4", "resnet12")


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


def make_backbone(name: str, in_channels: int, image_size: int) -> nn.Module:
    """A backbone by name: ``"conv4"`` (:class:`episodes.Conv4`, flattened, ``out_dim`` depends on
    ``image_size``) or ``"resnet12"`` (:class:`ResNet12`, ``out_dim = 640``)."""
    if name == "conv4":
        return Conv4(in_channels, image_size)
    if name == "resnet12":
        return ResNet12(in_channels)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
