"""Few-shot backbones: re-exported from the one registry, :mod:`fewshot_sla.nets`.

``BACKBONES`` here names the few-shot backbones (``conv4``, ``resnet12``, and ``torchvision:resnet18`` to start
from a torchvision checkpoint with ``--init``); every name of
:data:`fewshot_sla.nets.BACKBONES` works in :func:`make_backbone`.
"""

from __future__ import annotations

from fewshot_sla.nets import Conv4, ResNet12, make_backbone

__all__ = ["Conv4", "ResNet12", "BACKBONES", "make_backbone"]

BACKBONES = ("conv4", "resnet12", "torchvision:resnet18")
