"""Long-tailed CIFAR data: class counts, LDAM-DRW subsampling, loading, batch augmentation.

The protocol is LDAM-DRW's (Cao et al., NeurIPS 2019, "Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss"): CIFAR-10/100 training sets are subsampled to an
exponential (or step) profile ``n_c = int(n_max * (1/ratio)**(c/(C-1)))`` with a fixed seed; the test
set stays balanced. SLA's long-tail numbers (Lee, Hwang & Shin, ICML 2020, as reported by Chu et al.,
ECCV 2020) use the same subsets.

Counting and indexing (:func:`class_counts`, :func:`longtail_indices`) are pure functions over label
arrays, tested without any data. File loading (:func:`load_longtail`) reads torchvision's CIFAR
pickles (with :func:`fewshot_sla.io.read_cifar`: a restricted unpickler, so a crafted file cannot run
code) or an ImageFolder tree of JPEG/PNG files (decoded once with :func:`fewshot_sla.io.decode_images`
and cached as ``.npz``). :func:`augment_batch` does the standard CIFAR augmentation (4-pixel zero-padded random
crop + horizontal flip + normalisation) on a whole uint8 batch tensor, on whatever device it lives.

Normalisation statistics (:func:`dataset_stats`): CIFAR keeps the fixed per-channel statistics LDAM-DRW uses
(:data:`FIXED_STATS`); an image folder is normalised with its own training images' statistics, measured exactly
by :func:`channel_stats` and recorded in the run (``OUT/recipe.json``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

import numpy as np
import torch
from torch import Tensor

from fewshot_sla.augment import random_crop_flip
from fewshot_sla.counts import PROFILES, class_counts
from fewshot_sla.io import (
    IMAGE_SUFFIXES,
    cached_decode,
    channel_stats,
    class_folders,
    decode_images,
    files_digest,
    image_files,
    read_cifar,
    resolve_cache_dir,
)
from fewshot_sla.io import normalize as _normalize
from fewshot_sla.lifecycle import check_distinct_classes
from fewshot_sla.utils import DataError

__all__ = [
    "PROFILES",
    "DATASETS",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "FIXED_STATS",
    "IMAGE_EXTENSIONS",
    "Stats",
    "channel_stats",
    "dataset_stats",
    "STATS_SOURCES",
    "class_counts",
    "longtail_indices",
    "limit_per_class",
    "LTData",
    "load_longtail",
    "load_cifar_pickles",
    "load_imagefolder",
    "augment_batch",
    "normalize",
]


DATASETS = ("cifar10", "cifar100", "imagefolder")
# Per-channel statistics LDAM-DRW normalises with (cifar_train.py); kept for comparability.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGE_EXTENSIONS = IMAGE_SUFFIXES  # the project's one rule (fewshot_sla.io)

#: ``(mean, std)`` per channel on the [0, 1] scale.
Stats: TypeAlias = tuple[tuple[float, ...], tuple[float, ...]]
#: The data sets normalised with fixed statistics whatever subset trains (CIFAR-100 too: LDAM-DRW's choice).
FIXED_STATS: dict[str, Stats] = {"cifar10": (CIFAR_MEAN, CIFAR_STD), "cifar100": (CIFAR_MEAN, CIFAR_STD)}

# The folder torchvision extracts each data set to under ROOT.
_CIFAR_FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


# --------------------------------------------------------------------------------------------
# Counting and indexing (pure)
# --------------------------------------------------------------------------------------------


def _check_targets(targets: Sequence[int] | np.ndarray | Tensor) -> np.ndarray:
    if isinstance(targets, Tensor):
        targets = targets.detach().cpu().numpy()
    t = np.asarray(targets)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"targets must be a non-empty 1-D array of class indices, got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"targets must hold integer class indices, got dtype {t.dtype}")
    t = t.astype(np.int64)
    if t.min() < 0:
        raise ValueError(f"targets must be >= 0, got a minimum of {int(t.min())}")
    present = np.bincount(t)
    missing = np.flatnonzero(present == 0).tolist()
    if missing:
        raise ValueError(
            f"targets must use every class 0..{len(present) - 1}; class(es) {missing[:10]} have no image. "
            "Remap the labels to consecutive indices first"
        )
    return t


def longtail_indices(
    targets: Sequence[int] | np.ndarray | Tensor,
    imbalance_ratio: float,
    profile: str = "exp",
    seed: int = 0,
) -> np.ndarray:
    """Indices of the long-tailed subset LDAM-DRW's ``IMBALANCECIFAR10/100`` selects.

    Procedure (``imbalance_cifar.py``, reproduced with a local ``np.random.RandomState(seed)`` that
    yields the same Mersenne-Twister stream as its global ``np.random.seed(rand_number)``): counts from
    :func:`class_counts` with ``n_max`` = images per class of the balanced set, then for each class
    ``c`` in increasing order: ``idx = np.where(targets == c)[0]``, shuffle ``idx`` in place, keep
    ``idx[:n_c]``. The result is the concatenation, in that order (class 0 first), so the subset's
    image order is LDAM-DRW's too.

    Args:
        targets: ``(N,)`` integer labels using every class ``0..C-1``.
        imbalance_ratio: ``n_max / n_min``.
        profile: ``"exp"`` or ``"step"``.
        seed: LDAM-DRW's ``rand_number`` (0 in all its published runs).

    Returns:
        ``(sum_c n_c,)`` int64 indices into ``targets``.

    ``n_max`` is the smallest class size (for a balanced set, the size of every class; LDAM-DRW uses
    ``len(data) // C``, identical there), so every class can supply its count.
    """
    t = _check_targets(targets)
    per_class = np.bincount(t)
    counts = class_counts(int(per_class.min()), len(per_class), imbalance_ratio, profile)
    rng = np.random.RandomState(seed)
    chosen = []
    for c, n_c in enumerate(counts):
        idx = np.where(t == c)[0]
        rng.shuffle(idx)
        chosen.append(idx[:n_c])
    return np.concatenate(chosen).astype(np.int64)


def limit_per_class(labels: np.ndarray, limit: int) -> np.ndarray:
    """Indices of about ``limit`` images keeping the class proportions (at least one per class), the first images
    of each class in order (``--limit-train``)."""
    counts = np.bincount(labels)
    keep_n = np.maximum(1, np.round(counts * limit / len(labels)).astype(int))
    return np.sort(np.concatenate([np.where(labels == c)[0][:k] for c, k in enumerate(keep_n)]))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass
class LTData:
    """A long-tailed training set and its balanced test set, as uint8 tensors.

    Attributes:
        train_images: ``(N_train, 3, H, W)`` uint8 (32x32 for CIFAR), already subsampled.
        train_labels: ``(N_train,)`` int64.
        test_images: ``(N_test, 3, H, W)`` uint8, the full balanced test split.
        test_labels: ``(N_test,)`` int64.
        class_names: ``C`` names, index = label.
        counts: per-class training counts after subsampling (``C`` ints).
        files: for an image folder, a digest of each split's file list (``{"train": ..., "test": ...}``; relative
            names and sizes, :func:`fewshot_sla.io.files_digest`); None for CIFAR.
    """

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    class_names: list[str]
    counts: list[int]
    files: dict[str, str] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        return (
            f"LTData({self.num_classes} classes, train {tuple(self.train_images.shape)} "
            f"(counts {self.counts[0]}..{self.counts[-1]}), test {tuple(self.test_images.shape)})"
        )


def load_cifar_pickles(
    dataset: str, root: str | Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Read torchvision's ``cifar-10-batches-py`` / ``cifar-100-python`` pickles under ``root``.

    A view of :func:`fewshot_sla.io.read_cifar` (restricted unpickler, every layout check).

    Returns:
        ``(train_x (50000,3,32,32) uint8, train_y (50000,) int64, test_x, test_y, class_names)``
        (fine labels for CIFAR-100).
    """
    if dataset not in _CIFAR_FOLDER:
        raise ValueError(f"unknown CIFAR dataset {dataset!r}; choose one of {list(_CIFAR_FOLDER)}")
    c = read_cifar(root, "cifar10" if dataset == "cifar10" else "cifar100")
    return c.train_x, c.train_y, c.test_x, c.test_y, c.class_names


def _download_cifar(dataset: str, root: Path) -> None:
    import torchvision  # the user asked for a download: torchvision's downloader (md5-checked)

    cls = torchvision.datasets.CIFAR10 if dataset == "cifar10" else torchvision.datasets.CIFAR100
    try:
        cls(str(root), train=True, download=True)
    except Exception as e:
        raise DataError(
            f"downloading {dataset} into {root} failed ({type(e).__name__}: {e}); without internet, copy "
            f"torchvision's {_CIFAR_FOLDER[dataset]}/ folder into {root}"
        ) from None


def _list_split(split_dir: Path) -> tuple[list[str], list[list[Path]], str]:
    """Sorted class folders, their sorted image files (the project's one lister, :func:`fewshot_sla.io.class_folders`
    and :func:`~fewshot_sla.io.image_files`), and a digest of (class, name, size) for the cache key."""
    folders = class_folders(split_dir)
    classes = [f.name for f in folders]
    files = [image_files(f) for f in folders]
    lines = [f"{c}/{p.name}:{p.stat().st_size}" for c, fs in zip(classes, files) for p in fs]
    return classes, files, files_digest(lines)


def _load_split_images(
    split_dir: Path, files: list[list[Path]], key: str, cache_dir: Path | None, progress: bool, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    labels = np.concatenate([np.full(len(fs), c, dtype=np.int64) for c, fs in enumerate(files)])
    x = cached_decode(
        [p for fs in files for p in fs],
        cache_dir / f"{split_dir.name}-{key}.npz" if cache_dir is not None else None,
        "RGB",
        decoder=decode_images,  # this module's name, so that a test can patch it here
        progress=progress,
        desc=f"decode {split_dir.name}",
        workers=workers,
        fix="replace or delete it",
    )
    return x, labels


def load_imagefolder(
    root: str | Path,
    cache_dir: str | Path | None | Literal[False] = None,
    progress: bool = True,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Read ``root/{train,test}/<class>/*.{jpg,jpeg,png}`` (torchvision ImageFolder convention).

    Classes are the sorted folder names, files are sorted by name (for a CIFAR JPEG copy named
    ``NNNN.jpg`` that is CIFAR's within-class order, so LDAM-DRW's subsets come out the same). Decoded
    arrays are cached per split as ``<cache_dir>/<split>-<hash of file names and sizes>.npz``.

    Args:
        root: folder holding ``train/`` and ``test/``.
        cache_dir: where to cache; None = ``root/.fewshot_sla_cache/`` if writable; False = no cache.
        progress: show a tqdm bar while decoding.
        workers: decoding threads (default ``min(8, cpu count)``).

    Returns:
        ``(train_x (N,3,H,W) uint8, train_y (N,) int64, test_x, test_y, class_names)``.
    """
    train_x, train_y, test_x, test_y, names, _ = _read_imagefolder(root, cache_dir, progress, workers)
    return train_x, train_y, test_x, test_y, names


def _read_imagefolder(
    root: str | Path,
    cache_dir: str | Path | None | Literal[False] = None,
    progress: bool = True,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], dict[str, str]]:
    """:func:`load_imagefolder`, and the digest of each split's file list (``{"train": ..., "test": ...}``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder root {root} does not exist; pass the folder holding train/ and test/")
    missing = [s for s in ("train", "test") if not (root / s).is_dir()]
    if missing:
        raise DataError(
            f"{root} is not an ImageFolder layout: expected {root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg "
            f"(or .png), missing folder(s) {missing}"
        )
    cdir = resolve_cache_dir(cache_dir, root)
    workers = workers or min(8, os.cpu_count() or 1)
    out: list = []
    names: dict[str, list[str]] = {}
    digests: dict[str, str] = {}
    listing = {split: _list_split(root / split) for split in ("train", "test")}
    check_distinct_classes((root / split / c, fs) for split, (cs, fss, _) in listing.items() for c, fs in zip(cs, fss))
    for split in ("train", "test"):
        classes, files, key = listing[split]
        digests[split] = key
        if not classes:
            raise DataError(f"{root / split} has no class folders; expected {root / split}/<class>/*.jpg")
        if len(classes) < 2:  # one class: every prediction right, per-class metrics undefined
            raise DataError(
                f"{root / split} has 1 class folder ({classes[0]!r}) but a classifier needs at least 2 classes; add "
                f"a folder per class under {root}/train/ and {root}/test/"
            )
        empty = [c for c, fs in zip(classes, files) if not fs]
        if empty:
            raise DataError(
                f"class folder(s) {empty[:5]} under {root / split} hold no {'/'.join(IMAGE_EXTENSIONS)} images"
            )
        names[split] = classes
        out.extend(_load_split_images(root / split, files, key, cdir, progress, workers))
    if names["train"] != names["test"]:
        only_train = sorted(set(names["train"]) - set(names["test"]))
        only_test = sorted(set(names["test"]) - set(names["train"]))
        raise DataError(
            f"train and test class folders under {root} differ (only in train: {only_train[:5]}, only in test: "
            f"{only_test[:5]}); both splits need the same class folders"
        )
    if out[0].shape[1:] != out[2].shape[1:]:
        raise DataError(f"train images are {out[0].shape[1:]} but test images are {out[2].shape[1:]} under {root}")
    return out[0], out[1], out[2], out[3], names["train"], digests


def load_longtail(
    dataset: str,
    root: str | Path,
    imbalance_ratio: float = 100.0,
    profile: str = "exp",
    seed: int = 0,
    download: bool = False,
    cache_dir: str | Path | None | Literal[False] = None,
    progress: bool = True,
) -> LTData:
    """Load a long-tailed training set (LDAM-DRW protocol) and the balanced test set.

    Args:
        dataset: ``"cifar10"`` / ``"cifar100"`` (torchvision's pickles in ``root/cifar-10-batches-py``
            or ``root/cifar-100-python``) or ``"imagefolder"`` (``root/{train,test}/<class>/*.jpg``).
        root: the data folder.
        imbalance_ratio: ``n_max / n_min`` (100 and 10 in the papers; 1 keeps every image).
        profile: ``"exp"`` or ``"step"``.
        seed: subsampling seed (LDAM-DRW's ``rand_number``; 0 reproduces its subsets).
        download: cifar only: fetch with torchvision's downloader when missing.
        cache_dir: imagefolder only: decoded-array cache (None = ``root/.fewshot_sla_cache`` if
            writable, False = off).
        progress: show a progress bar while decoding images.

    Returns:
        :class:`LTData` with uint8 ``(N, 3, H, W)`` images and int64 labels.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {list(DATASETS)}")
    root = Path(root).expanduser()
    files: dict[str, str] | None = None
    if dataset == "imagefolder":
        train_x, train_y, test_x, test_y, names, files = _read_imagefolder(root, cache_dir=cache_dir,
                                                                          progress=progress)
    else:
        if not (root / _CIFAR_FOLDER[dataset]).is_dir() and (root / "train").is_dir() and (root / "test").is_dir():
            raise DataError(
                f"{root} holds train/ and test/ folders, an image-folder tree, not {dataset}'s python pickles "
                f"({_CIFAR_FOLDER[dataset]}/); for images in {root}/{{train,test}}/<class>/ pass --dataset imagefolder"
            )
        if download and not (root / _CIFAR_FOLDER[dataset]).is_dir():
            root.mkdir(parents=True, exist_ok=True)
            _download_cifar(dataset, root)
        if not root.is_dir():
            raise DataError(
                f"data root {root} does not exist; pass the folder containing {_CIFAR_FOLDER[dataset]}/ "
                "or use download=True"
            )
        train_x, train_y, test_x, test_y, names = load_cifar_pickles(dataset, root)
    if len(np.unique(train_y)) != len(names):
        raise DataError(f"{root}: the training split uses {len(np.unique(train_y))} of {len(names)} classes")
    idx = longtail_indices(train_y, imbalance_ratio, profile, seed)
    sub_y = train_y[idx]
    return LTData(
        train_images=torch.from_numpy(np.ascontiguousarray(train_x[idx])),
        train_labels=torch.from_numpy(sub_y),
        test_images=torch.from_numpy(np.ascontiguousarray(test_x)),
        test_labels=torch.from_numpy(test_y.astype(np.int64)),
        class_names=list(names),
        counts=np.bincount(sub_y, minlength=len(names)).tolist(),
        files=files,
    )


# --------------------------------------------------------------------------------------------
# Normalisation statistics
# --------------------------------------------------------------------------------------------


def dataset_stats(dataset: str, train_images: Tensor) -> Stats:
    """The data's own statistics: :data:`FIXED_STATS` for CIFAR, else :func:`channel_stats` of the training images
    a run trains on (the long-tailed subset)."""
    if dataset in FIXED_STATS:
        return FIXED_STATS[dataset]
    return channel_stats(train_images)


#: Where a run's normalisation statistics come from (``--norm-stats``): ``(dataset, train_images) -> (mean, std)``.
#: ``"data"``: :func:`dataset_stats`; ``"cifar"``: CIFAR's whatever the data (every run before image folders were
#: normalised with their own).
STATS_SOURCES: dict[str, Callable[[str, Tensor], Stats]] = {
    "data": dataset_stats,
    "cifar": lambda dataset, train_images: (CIFAR_MEAN, CIFAR_STD),
}


# --------------------------------------------------------------------------------------------
# Batch augmentation
# --------------------------------------------------------------------------------------------


def _check_uint8_batch(x: Tensor, what: str) -> None:
    if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
        got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{what}: expected a uint8 tensor (B, 3, H, W) of raw pixels, got {got}")


def normalize(x: Tensor, stats: Stats = (CIFAR_MEAN, CIFAR_STD)) -> Tensor:
    """``(B, 3, H, W)`` uint8 -> float32 ``(x/255 - mean) / std`` (test-time transform), by default with the
    CIFAR statistics; a run's own are its recipe's (``longtail.recipe.Recipe.stats``)."""
    return _normalize(x, *stats)


def augment_batch(x: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    """CIFAR training augmentation on a whole batch: random crop with zero padding, flip, normalise.

    Equivalent in distribution to torchvision's ``RandomCrop(H, padding=4)`` +
    ``RandomHorizontalFlip()`` + ``ToTensor()`` + ``Normalize(CIFAR_MEAN, CIFAR_STD)`` per image:
    each image gets its own offsets ``(dy, dx)`` uniform in ``[0, 2*padding]`` and a fair flip coin.
    The crop and flip are :func:`fewshot_sla.augment.random_crop_flip` (one zero-pad and one gather),
    so it runs on the batch's device.

    Args:
        x: ``(B, 3, H, W)`` uint8.
        generator: a seeded ``torch.Generator`` (its device is where the random draws are made).
        padding: zero padding on each side (4 for CIFAR).

    Returns:
        ``(B, 3, H, W)`` float32, normalised.
    """
    _check_uint8_batch(x, "augment_batch")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"augment_batch: pass a torch.Generator (seeded), got {type(generator).__name__}")
    return normalize(random_crop_flip(x, generator, padding))
