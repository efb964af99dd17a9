"""A small synthetic ImageFolder for the long-tail tests (seconds on CPU), and a tiny run config on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from longtail.config import LTConfig

COLOURS = [(255, 40, 40), (40, 255, 40), (40, 40, 255), (255, 255, 40)]


def write_folder(root: Path, n_train: int, n_test: int, seed: int) -> Path:
    """``root/{train,test}/class{0..3}/NNNN.png``: 4 classes of 32x32 PNGs, each a class-coloured square at a
    class-specific place on noise; ``n_train`` / ``n_test`` images per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, colour in enumerate(COLOURS):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 90, (32, 32, 3), dtype=np.uint8)
                y0, x0 = (c // 2) * 14 + rng.integers(0, 4), (c % 2) * 14 + rng.integers(0, 4)
                img[y0 : y0 + 12, x0 : x0 + 12] = colour
                Image.fromarray(img).save(d / f"{i:04d}.png")
    return root


def tiny(root, out, **kw) -> LTConfig:
    """A 2-epoch ResNet-20 run on :func:`write_folder`'s data (imbalance 6), fields overridden by ``kw``."""
    base = dict(dataset="imagefolder", data_root=str(root), imbalance_ratio=6.0, epochs=2, batch_size=16,
                backbone="resnet20", out=str(out), wandb="disabled", num_threads=1)
    base.update(kw)
    return LTConfig(**base)
