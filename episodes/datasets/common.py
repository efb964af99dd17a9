"""What every few-shot data set shares: the in-memory split, its statistics, resizing and class rotations.

A loader returns a :class:`FewShotData` per split: uint8 images ``(N, C, H, W)``, int64 labels ``0..C-1``
(class-major: classes in a fixed sorted order, a class's images together) and the class names. Missing, incomplete
or corrupt files raise :class:`fewshot_sla.utils.DataError` naming the file and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fewshot_sla.io import channel_stats

__all__ = ["SPLITS", "Stats", "FewShotData", "LoadRequest", "image_stats", "rotate_classes", "gather", "SPLITS_DIR"]

SPLITS = ("train", "val", "test")
#: ``(mean, std)`` per channel on the [0, 1] scale.
Stats = tuple[tuple[float, ...], tuple[float, ...]]
#: The class splits this package carries as data.
SPLITS_DIR = Path(__file__).resolve().parent.parent / "splits"


@dataclass(frozen=True)
class LoadRequest:
    """What a loader of :data:`episodes.datasets.LOADERS` is asked for: explicit arguments, not a whole config.

    Attributes:
        root: the folder holding the data set.
        image_size: image side; 0 = the data set's default.
        download: fetch the data set into ``root`` when missing (where the data set can be downloaded).
        progress: tqdm bars while decoding.
        options: the data set's own options (its entry's ``options``: e.g. Omniglot's ``omniglot_split``, an image
            folder's ``channels``, ``class_split``, ``split_seed``).
        shapes: each split's episode shape ``(ways, shots, queries)``: loaders that list files check them before
            decoding anything (a class with too few images, a split with too few classes).
        train_class_factor: how many training classes each class becomes (``class_rotations``: 4).
        classes: a run's recorded class lists per split: loaders that list folders read these instead of listing
            and splitting again.
    """

    root: Path
    image_size: int = 0
    download: bool = False
    progress: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)
    shapes: Mapping[str, tuple[int, int, int]] | None = None
    train_class_factor: int = 1
    classes: Mapping[str, Sequence[str]] | None = None


@dataclass
class FewShotData:
    """One split in memory."""

    images: Tensor  # uint8 (N, C, H, W)
    labels: Tensor  # int64 (N,), 0..C-1 contiguous
    class_names: list[str]  # name of each class, e.g. "images_background/Armenian/character01"
    # (mean, std) to normalise with, when not the data set's fixed DATASET_STATS: an image folder's, measured on its
    # train split and carried by all three splits (val and test are normalised as the network was trained)
    stats: Stats | None = None
    # image folders: a digest of each class's files (names and sizes), in class order; what a run records so that a
    # re-test, a resume or a predictor notices files added, removed or rewritten since training (None elsewhere)
    class_digests: list[str] | None = None
    # human names of the classes where the data set has them (Tiny ImageNet: words.txt), recorded by a run
    class_words: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


#: Exact per-channel mean and std of a uint8 split (:func:`fewshot_sla.io.channel_stats`, the project's one).
image_stats = channel_stats


def rotate_classes(data: FewShotData) -> FewShotData:
    """Every class's images rotated by 90, 180 and 270 degrees as three new classes (Vinyals et al. 2016).

    The result holds four blocks, each class-major as ``data``: the originals (labels ``c``), then the rotations by
    ``k`` = 1, 2, 3 quarter turns, ``torch.rot90(x, k, dims=(-2, -1))`` (counter-clockwise as displayed), as classes
    ``c + k * C`` named ``"<name>/rot90"``, ``"<name>/rot180"``, ``"<name>/rot270"``. So the labels stay class-major
    and contiguous, ``4 C`` classes with the same images per class, and ``data.stats`` is kept (rotating moves pixels,
    it does not change their statistics).

    Note: this is the baseline's augmentation. Combined with SLA's ``rotation`` transform, ``rot90(x)`` of class
    ``c`` is then both joint label ``(c, 90)`` and ``(c + C, 0)``: an episode that samples both classes shows the same
    image under two labels. Pair it with another transform, or compare without it.

    Raises:
        ValueError: the images are not square (a rotation would change their shape); resize them first.
    """
    h, w = data.images.shape[-2:]
    if h != w:
        raise ValueError(
            f"rotate_classes: the images are {h}x{w}; class rotations need square images (pass --image-size to "
            "resize them to squares)"
        )
    c = data.num_classes
    images = torch.cat([torch.rot90(data.images, k, dims=(-2, -1)) for k in range(4)]).contiguous()
    labels = torch.cat([data.labels + k * c for k in range(4)])
    names = list(data.class_names) + [f"{n}/rot{90 * k}" for k in (1, 2, 3) for n in data.class_names]
    return FewShotData(images, labels, names, data.stats)


def gather(images: Tensor, idx: Tensor) -> Tensor:
    """``images[idx]`` for a CPU uint8 tensor, gathered in numpy (much faster than torch's advanced
    indexing for a few hundred rows on CPU; see bench/episodes.py): how an episode is loaded."""
    return torch.from_numpy(images.numpy()[idx.numpy()])


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


# --- arrays --------------------------------------------------------------------------------------------------------

def _resize(x: Tensor, size: int) -> Tensor:
    """uint8 ``(B, C, H, W)`` -> uint8 ``(B, C, size, size)``, bilinear and antialiased; no-op at that size."""
    if x.shape[-2:] == (size, size):
        return x
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8)


def _select_resized(x: np.ndarray, idx: np.ndarray, size: int, channels_last: bool, chunk: int = 2048) -> Tensor:
    """``x[idx]`` as a contiguous uint8 ``(len(idx), C, size, size)`` tensor; ``x`` is ``(N, H, W, C)`` if
    ``channels_last`` else ``(N, C, H, W)``. Chunked, so that no second full-size copy is made."""
    n, c = len(idx), x.shape[3] if channels_last else x.shape[1]
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    for a in range(0, n, chunk):
        part = torch.from_numpy(np.ascontiguousarray(x[idx[a : a + chunk]]))
        out[a : a + chunk] = _resize(part.permute(0, 3, 1, 2) if channels_last else part, size)
    return out


def _class_major(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable order grouping equal labels (ascending), and the sorted labels: file order is kept within a class."""
    order = np.argsort(labels, kind="stable")
    return order, labels[order]


