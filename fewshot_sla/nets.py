"""The one backbone registry: the demo nets, the CIFAR ResNets, Conv4 and ResNet-12.

Every backbone maps ``(B, C, H, W)`` images to a flat feature vector ``(B, D)`` and exposes
``out_dim`` (``D``), so it plugs into :class:`fewshot_sla.SLAClassifier` and the episodic learners
alike; the heads live in :mod:`fewshot_sla.model`. :func:`make_backbone` builds one by name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MLP", "SmallCNN", "ResNetCIFAR", "resnet20", "resnet32", "resnet56", "Conv4", "ResNet12", "BACKBONES",
    "make_backbone", "torchvision_resnet", "load_weights",
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


def torchvision_resnet(name: str, in_channels: int = 3) -> nn.Module:
    """A torchvision ResNet (``resnet18``, ``resnet34``, ``resnet50``) as a backbone: its classifier ``fc`` replaced
    by the identity, ``out_dim`` its width (512 or 2048). The parameter names are torchvision's, so a torchvision
    state dict (e.g. ImageNet weights a user downloaded once) loads with :func:`load_weights` (``fc.*`` ignored).
    Randomly initialised here: nothing is downloaded. ``in_channels`` other than 3 replaces ``conv1``."""
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    width = int(net.fc.in_features)
    net.fc = nn.Identity()
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.out_dim = width
    return net


def load_weights(module: nn.Module, path: str | Path, what: str = "encoder") -> dict[str, Any]:
    """Load a local state-dict file into ``module`` (``--init FILE``): every tensor ``module`` has must be in the
    file with the same shape; keys the file has and the module lacks (a classifier's ``fc.*``, say) are ignored and
    reported. Read with ``weights_only=True`` (a file cannot run code); a dict under ``"state_dict"`` or ``"model"``
    and a common prefix (``module.``, ``encoder.``, ...) are accepted.

    Returns:
        ``{"file", "sha1", "loaded": n, "ignored": [keys]}``.

    Raises:
        DataError: no such file, not a state dict, or keys / shapes that do not fit (the message names them).
    """
    import hashlib

    import torch

    from .utils import DataError

    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"--init {str(p)!r}: no such file; give a local state-dict file "
                        "(torch.save(model.state_dict(), FILE))")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"--init {p}: not a weights-only torch file ({type(e).__name__}: {str(e)[:200]}); save the "
                        "weights with torch.save(model.state_dict(), FILE)") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"--init {p}: the file holds no state dict of tensors; save model.state_dict() into it")
    own = module.state_dict()
    prefix = _common_prefix(list(own), list(obj))
    missing = [k for k in own if prefix + k not in obj]
    wrong = [k for k in own if prefix + k in obj and tuple(obj[prefix + k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of the {what}'s {len(own)} tensors are not in it (e.g. {missing[:3]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} have another shape (e.g. {k}: {tuple(obj[prefix + k].shape)} in the file, "
                         f"{tuple(own[k].shape)} here)")
        raise DataError(f"--init {p} does not fit the {what}: {'; '.join(parts)}; give weights of the same "
                        "architecture (--backbone) and input channels")
    module.load_state_dict({k: obj[prefix + k] for k in own}, strict=True)
    ignored = sorted(k for k in obj if not (k.startswith(prefix) and k[len(prefix):] in own))
    return {"file": str(p), "sha1": hashlib.sha1(p.read_bytes()).hexdigest(), "loaded": len(own), "ignored": ignored}


def _common_prefix(own: list[str], theirs: list[str]) -> str:
    """The prefix ``P`` (possibly empty) with ``P + k`` in ``theirs`` for the most keys ``k`` of ``own``."""
    have = set(theirs)
    candidates = {""} | {t[: len(t) - len(k)] for k in own[:1] for t in theirs if t.endswith(k)}
    return max(sorted(candidates), key=lambda pre: sum(pre + k in have for k in own))


#: Backbone factories by name: ``BACKBONES[name](in_channels, image_size)``.
BACKBONES: dict[str, Callable[[int, int], nn.Module]] = {
    "small_cnn": lambda c, s: SmallCNN(c),
    "resnet20": lambda c, s: resnet20(c),
    "resnet32": lambda c, s: resnet32(c),
    "resnet56": lambda c, s: resnet56(c),
    "conv4": lambda c, s: Conv4(c, s),
    "resnet12": lambda c, s: ResNet12(c),
    "torchvision:resnet18": lambda c, s: torchvision_resnet("resnet18", c),
}


def make_backbone(name: str, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """A backbone of :data:`BACKBONES` by name, for ``in_channels``-channel images of side ``image_size``
    (only Conv4's ``out_dim`` depends on the size: 64 at 28, 256 at 32, 1600 at 84)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name](in_channels, image_size)
