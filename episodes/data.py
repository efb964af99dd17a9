"""Few-shot data sets held in memory as uint8 tensors; an episode is a gather.

Every loader returns a :class:`FewShotData`: uint8 images ``(N, C, H, W)``, int64 labels ``0..C-1``
(class-major: classes in a fixed sorted order, a class's images together) and the class names.
Missing, incomplete or corrupt files raise :class:`fewshot_sla.utils.DataError` naming the file and
the fix. The class splits are carried by this package as data (``episodes/splits/``).

- **Omniglot** (Lake et al. 2015) from the layout torchvision's downloader extracts,
  ``omniglot-py/images_{background,evaluation}/<Alphabet>/characterNN/*.png``, with the Vinyals et
  al. (2016) class split (1028 / 172 / 423 characters, ``omniglot_vinyals.json``). Images are
  resized to 28x28 (antialiased) and stored with the ink bright (255) on a dark (0) background, the
  inverse of the files.
- **mini-ImageNet** (Vinyals et al. 2016) with Ravi & Larochelle's (2017) split, 64 / 16 / 20
  classes x 600 images, 84x84 RGB, from either of two layouts (the first wins where both exist):
  (a) ``ROOT/mini-imagenet-cache-{train,val,test}.pkl``, learn2learn's cache format: a pickled dict
  with ``image_data`` uint8 ``(N, 84, 84, 3)`` and ``class_dict`` ``{wnid: [indices]}`` (the val
  file may also be named ``mini-imagenet-cache-validation.pkl``, as learn2learn downloads it);
  (b) ``ROOT/images/*.jpg`` with ``ROOT/{train,val,test}.csv`` (``filename,label``); without the
  CSVs, the copy in ``splits/mini_imagenet/`` is used. Classes are sorted by WordNet id.
- **CIFAR-FS** (Bertinetto et al. 2019): the 64 / 16 / 20 CIFAR-100 classes named in
  ``cifar_fs.json``, 600 images each (the class's 500 CIFAR-100 train images, then its 100 test
  images).
- **FC100** (Oreshkin et al. 2018): the 60 / 20 / 20 CIFAR-100 classes of the superclasses in
  :data:`FC100_SUPERCLASSES` (12 / 4 / 4), 600 images each, pooled as for CIFAR-FS.

- **imagefolder**: the user's own images (PNG / JPEG), in one of two layouts: ``DIR/{train,val,test}/<class>/*``
  (the classes of each split), or a flat ``DIR/<class>/*`` whose classes are split by ``class_split``, fractions
  ``(train, val, test)``. The flat split is a pure function of the sorted class folder names, the fractions and
  ``split_seed`` (:func:`split_classes`; every training ``--seed`` sees the same split, and both values are in
  ``config.yaml``; :func:`imagefolder_classes` lists the result). Grey or RGB is detected from the files (mixed
  modes are an error unless ``channels`` says which to convert to); images are resized to ``image_size`` squares
  (default 28 for grey, 84 for RGB, aspect ratio not kept) and used as they are: unlike Omniglot's, grey images
  are NOT inverted. Decoded once and cached in ``DIR/.fewshot_sla_cache/`` (:func:`fewshot_sla.io.cached_decode`).
  The normalisation statistics are measured on the train split (:func:`image_stats`) and carried by every split's
  :attr:`FewShotData.stats`.

``class_rotations`` (:func:`rotate_classes`, Vinyals et al. 2016; Snell et al. 2017) adds the 90, 180 and 270-degree
rotations of every training class as new classes (Omniglot, Vinyals split: 1028 -> 4112), for any data set.

CIFAR-FS and FC100 read the python version of CIFAR-100, ``ROOT/cifar-100-python/{train,test,meta}``
(what ``torchvision.datasets.CIFAR100(ROOT, download=True)`` extracts), at 32x32. Images whose size
differs from ``image_size`` are resized (bilinear, antialiased): JPEGs with PIL, arrays with
``torch.nn.functional.interpolate``. Files are read by :mod:`fewshot_sla.io`: pickles with an unpickler
that builds only containers and numpy arrays (so a bad file cannot run code), CIFAR-100 with
:func:`~fewshot_sla.io.read_cifar`, image files with :func:`~fewshot_sla.io.decode_images`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fewshot_sla.io import (
    cached_decode,
    decode_images,
    describe,
    files_digest,
    normalize,
    read_cached,
    read_cifar,
    resolve_cache_dir,
    safe_load_pickle,
    str_keys,
)
from fewshot_sla.utils import DataError

__all__ = [
    "DATASETS",
    "SPLITS",
    "FewShotData",
    "load_fewshot",
    "load_omniglot",
    "load_mini_imagenet",
    "load_cifar_fs",
    "load_fc100",
    "DATASET_STATS",
    "FC100_SUPERCLASSES",
    "to_float",
    "gather",
    "omniglot_split",
    "OMNIGLOT_SCHEMES",
    "cifar_fs_split",
    "load_splits",
    "load_data",
    "episode_shapes",
    "class_digest",
    "Stats",
    "IMAGE_EXTENSIONS",
    "load_imagefolder",
    "imagefolder_classes",
    "split_classes",
    "image_stats",
    "dataset_stats",
    "rotate_classes",
]

DATASETS = ("omniglot", "mini-imagenet", "cifar-fs", "fc100", "imagefolder")
SPLITS = ("train", "val", "test")
DEFAULT_SIZE = {"omniglot": 28, "mini-imagenet": 84, "cifar-fs": 32, "fc100": 32}
#: ``(mean, std)`` per channel on the [0, 1] scale.
Stats = tuple[tuple[float, ...], tuple[float, ...]]
#: mean and std per channel on the [0, 1] scale (Omniglot: measured on the Vinyals train split at 28x28;
#: CIFAR-FS and FC100: CIFAR-100's train set). imagefolder has none: its train split's are measured
#: (:func:`image_stats`).
DATASET_STATS: dict[str, Stats] = {
    "omniglot": ((0.0817,), (0.2364,)),
    "mini-imagenet": ((0.4730, 0.4490, 0.4033), (0.2774, 0.2683, 0.2819)),
    "cifar-fs": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fc100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
#: FC100's CIFAR-100 superclasses (coarse labels) per split (Oreshkin et al. 2018, supplementary material).
FC100_SUPERCLASSES: dict[str, tuple[int, ...]] = {
    # fish, flowers, food containers, fruit and vegetables, household electrical devices, household furniture,
    # large man-made outdoor things, large natural outdoor scenes, reptiles, trees, vehicles 1, vehicles 2
    "train": (1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19),
    # large carnivores, large omnivores and herbivores, non-insect invertebrates, small mammals
    "val": (8, 11, 13, 16),
    # aquatic mammals, insects, medium mammals, people
    "test": (0, 7, 12, 14),
}
_SPLITS_DIR = Path(__file__).resolve().parent / "splits"
_SPLIT_FILE = _SPLITS_DIR / "omniglot_vinyals.json"
_CIFAR_FS_FILE = _SPLITS_DIR / "cifar_fs.json"
_MINI_IMAGENET_CSVS = _SPLITS_DIR / "mini_imagenet"
_CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
_MINI_IMAGENET_LAYOUTS = (
    "(a) {root}/mini-imagenet-cache-{split}.pkl, learn2learn's cache format (its download: "
    '`python -c "import learn2learn as l2l; [l2l.vision.datasets.MiniImagenet(ROOT, mode=m) for m in '
    "('train', 'validation', 'test')]\"` writes mini-imagenet-cache-{{train,validation,test}}.pkl; both "
    "-val and -validation names are accepted), or (b) {root}/images/*.jpg (Ravi & Larochelle's images, e.g. "
    "made by the mini-imagenet-tools scripts) with {split}.csv (filename,label) beside it or, without it, the "
    "copy this package carries"
)


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

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def to_float(images: Tensor, dataset: str, stats: Stats | None = None) -> Tensor:
    """Normalise a uint8 batch ``(B, C, H, W)`` to float32 on the batch's device.

    Args:
        images: raw pixels.
        dataset: the data set, whose fixed :data:`DATASET_STATS` are used when ``stats`` is None.
        stats: ``(mean, std)`` to use instead (a split's :attr:`FewShotData.stats`; required for ``imagefolder``).
    """
    if stats is None:
        if dataset == "imagefolder":
            raise ValueError(
                "to_float: an image folder has no fixed statistics; pass stats=data.stats (load_splits measures them "
                "on the train split) or episodes.data.image_stats(train.images)"
            )
        if dataset not in DATASET_STATS:
            raise ValueError(f"to_float: unknown dataset {dataset!r}; choose one of {', '.join(DATASET_STATS)}")
        stats = DATASET_STATS[dataset]
    mean, std = stats
    return normalize(images, mean, std)


def image_stats(images: Tensor, chunk: int = 4096) -> Stats:
    """Mean and standard deviation of each channel of a uint8 ``(N, C, H, W)`` set, on the [0, 1] scale.

    Exact (from a histogram of the 256 levels per channel, so no float sums drift) and deterministic: whoever has the
    same train images gets the same numbers. A channel with no variation gets std 1 (normalising it then only
    subtracts the mean), since dividing by 0 would turn it into NaNs.

    Raises:
        ValueError: ``images`` is not a non-empty uint8 ``(N, C, H, W)`` tensor.
    """
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4 or not len(images):
        got = f"{images.dtype} of shape {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"image_stats: expected a non-empty uint8 tensor (N, C, H, W), got {got}")
    x = images.cpu().numpy()
    c = x.shape[1]
    hist = np.zeros((c, 256), dtype=np.int64)
    for a in range(0, len(x), chunk):  # chunked: a channel's slice is copied to be raveled, never the whole set
        for ch in range(c):
            hist[ch] += np.bincount(x[a : a + chunk, ch].ravel(), minlength=256)
    levels = np.arange(256, dtype=np.float64) / 255.0
    p = hist / hist.sum(axis=1, keepdims=True)
    mean = p @ levels
    std = np.sqrt(np.maximum(p @ levels**2 - mean**2, 0.0))
    std = np.where(std < 1e-6, 1.0, std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def dataset_stats(cfg: Any, train: FewShotData) -> Stats:
    """The ``(mean, std)`` a run normalises with: ``train.stats`` when the loader measured them (an image folder),
    else the data set's fixed :data:`DATASET_STATS`, else measured on ``train`` (:func:`image_stats`)."""
    if train.stats is not None:
        return train.stats
    if cfg.dataset in DATASET_STATS:
        return DATASET_STATS[cfg.dataset]
    return image_stats(train.images)


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


OMNIGLOT_SCHEMES = ("vinyals", "background")


def omniglot_split(split: str, scheme: str = "vinyals") -> list[tuple[str, str, int]]:
    """Omniglot's classes of ``split`` as ``(images_part, alphabet, character_number)``, sorted.

    ``scheme="vinyals"``: Vinyals et al. (2016), 1028 / 172 / 423 characters (train mixes background
    and evaluation alphabets). ``scheme="background"``: Lake et al.'s background / evaluation split,
    train = the 792 characters of the 25 background alphabets outside Vinyals' validation alphabets,
    val = those 5 background alphabets (172 characters), test = all 659 characters of the 20
    evaluation alphabets; derived from the same file, so no test class is ever seen in validation.
    """
    if scheme not in OMNIGLOT_SCHEMES:
        raise ValueError(f"unknown Omniglot split scheme {scheme!r}; choose one of {', '.join(OMNIGLOT_SCHEMES)}")
    splits = json.loads(_SPLIT_FILE.read_text())["splits"]
    if scheme == "vinyals":
        parts = [(part, spec) for part, spec in splits[split].items()]
    elif split == "test":
        parts = [("evaluation", spec) for s in SPLITS for part, spec in splits[s].items() if part == "evaluation"]
    else:
        parts = [(part, spec) for part, spec in splits[split].items() if part == "background"]
    return sorted((f"images_{part}", a, n) for part, alphabets in parts for a, ns in alphabets.items() for n in ns)


def _omniglot_root(root: Path) -> Path:
    for cand in (root / "omniglot-py", root):
        if (cand / "images_background").is_dir() or (cand / "images_evaluation").is_dir():
            return cand
    raise DataError(
        f"Omniglot not found under {str(root)!r}: expected {root / 'omniglot-py'}/images_background/ and "
        "images_evaluation/ (the layout torchvision.datasets.Omniglot(root, download=True) extracts); "
        'download it with `python -c "import torchvision; torchvision.datasets.Omniglot(ROOT, background=True, '
        'download=True); torchvision.datasets.Omniglot(ROOT, background=False, download=True)"`'
    )


def gather(images: Tensor, idx: Tensor) -> Tensor:
    """``images[idx]`` for a CPU uint8 tensor, gathered in numpy (much faster than torch's advanced
    indexing for a few hundred rows on CPU; see bench/episodes.py): how an episode is loaded."""
    return torch.from_numpy(images.numpy()[idx.numpy()])


def load_omniglot(
    root: str | Path, split: str = "train", image_size: int = 28, progress: bool = True, scheme: str = "vinyals"
) -> FewShotData:
    """Omniglot's ``split`` (of :func:`omniglot_split`'s ``scheme``) as uint8 ``(N, 1, size, size)``,
    20 images per class."""
    _check_split(split)
    base = _omniglot_root(Path(root).expanduser())
    classes = omniglot_split(split, scheme)
    paths: list[Path] = []
    labels: list[int] = []
    for c, (part, alphabet, n) in enumerate(classes):
        d = base / part / alphabet / f"character{n:02d}"
        files = sorted(d.glob("*.png")) if d.is_dir() else []
        if not files:
            raise DataError(
                f"Omniglot class folder {d} is missing or empty; the data under {base} is incomplete: "
                "re-download or re-extract it"
            )
        paths += files
        labels += [c] * len(files)
    # The files have dark ink on white; stored inverted (ink bright), as the normalisation statistics assume.
    x = decode_images(
        paths,
        "L",
        image_size,
        progress=progress,
        desc=f"omniglot {split}",
        invert=True,
        what="Omniglot image",
        fix="re-extract the data set",
    )
    images = torch.from_numpy(x)
    names = [f"{p}/{a}/character{n:02d}" for p, a, n in classes]
    return FewShotData(images, torch.tensor(labels, dtype=torch.int64), names)


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


# --- mini-ImageNet -------------------------------------------------------------------------------------------------


def _mini_imagenet_pkl(root: Path, split: str) -> Path | None:
    names = [f"mini-imagenet-cache-{split}.pkl"] + (["mini-imagenet-cache-validation.pkl"] if split == "val" else [])
    return next((root / n for n in names if (root / n).is_file()), None)


def _mini_imagenet_from_pkl(path: Path, size: int) -> FewShotData:
    fix = "delete it and download it again (learn2learn's l2l.vision.datasets.MiniImagenet(ROOT, mode=...))"
    obj = safe_load_pickle(path, "mini-ImageNet cache file", fix)
    if not isinstance(obj, dict) or not {"image_data", "class_dict"} <= set(str_keys(obj)):
        found = sorted(map(str, str_keys(obj))) if isinstance(obj, dict) else describe(obj)
        raise DataError(
            f"mini-ImageNet cache file {path} lacks 'image_data' and 'class_dict' (found {found}); it is not a "
            f"learn2learn mini-imagenet-cache pkl or it is damaged: {fix}"
        )
    obj = str_keys(obj)
    x, class_dict = obj["image_data"], obj["class_dict"]
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 4 and x.shape[3] == 3 and len(x)):
        raise DataError(
            f"mini-ImageNet cache file {path}: image_data should be a uint8 array (N, 84, 84, 3), found "
            f"{describe(x)}; the file is damaged: {fix}"
        )
    if not isinstance(class_dict, dict) or not class_dict:
        raise DataError(
            f"mini-ImageNet cache file {path}: class_dict is {describe(class_dict)}, empty or not a dict; {fix}"
        )
    class_dict = str_keys(class_dict)
    wnids = sorted(class_dict)
    try:
        per_class = [np.asarray(class_dict[w], dtype=np.int64).reshape(-1) for w in wnids]
    except (TypeError, ValueError) as e:
        raise DataError(
            f"mini-ImageNet cache file {path}: class_dict holds something other than indices ({e}); {fix}"
        ) from None
    idx = np.concatenate(per_class)
    if len(idx) == 0 or idx.min() < 0 or idx.max() >= len(x):
        raise DataError(
            f"mini-ImageNet cache file {path}: class_dict indexes outside image_data (which has {len(x)} images); {fix}"
        )
    labels = np.repeat(np.arange(len(wnids)), [len(p) for p in per_class])
    return FewShotData(_select_resized(x, idx, size, channels_last=True), torch.from_numpy(labels), list(wnids))


def _read_split_csv(path: Path) -> list[tuple[str, str]]:
    """Rows ``(filename, wnid)`` of a Ravi & Larochelle split CSV (header ``filename,label``)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read the mini-ImageNet split file {path} ({e}); restore it") from None
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        got = ",".join(rows[0]) if rows else "an empty file"
        raise DataError(f"{path}: expected a split CSV with the header 'filename,label', found {got!r}")
    out = []
    for line, r in enumerate(rows[1:], start=2):
        if not r:
            continue
        if len(r) != 2 or not r[0].strip() or not r[1].strip():
            raise DataError(f"{path}, line {line}: expected 'filename,label', found {','.join(r)!r}")
        out.append((r[0].strip(), r[1].strip()))
    if not out:
        raise DataError(f"{path} lists no images")
    return out


def _mini_imagenet_from_jpg(root: Path, split: str, size: int, progress: bool) -> FewShotData:
    csv_path = root / f"{split}.csv"
    if not csv_path.is_file():
        csv_path = _MINI_IMAGENET_CSVS / f"{split}.csv"
    rows = _read_split_csv(csv_path)
    wnids = sorted({w for _, w in rows})
    order, labels = _class_major(np.searchsorted(wnids, [w for _, w in rows]))
    image_dir = root / "images"
    paths = [image_dir / rows[i][0] for i in order]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"mini-ImageNet image {missing[0]} is missing: {len(missing)} of the {len(paths)} images that {csv_path} "
            f"lists for the {split} split are not in {image_dir}; copy all of them there (or use the "
            f"mini-imagenet-cache-{split}.pkl layout instead)"
        )
    out = decode_images(
        paths,
        "RGB",
        size,
        progress=progress,
        desc=f"mini-imagenet {split}",
        what="mini-ImageNet image",
        fix="replace the file",
    )
    return FewShotData(torch.from_numpy(out), torch.from_numpy(labels), wnids)


def _mini_imagenet_found(root: Path, split: str) -> bool:
    return _mini_imagenet_pkl(root, split) is not None or (root / "images").is_dir()


def load_mini_imagenet(
    root: str | Path, split: str = "train", image_size: int = 84, progress: bool = True
) -> FewShotData:
    """mini-ImageNet's Ravi & Larochelle split ``split`` as uint8 ``(N, 3, size, size)`` (64 / 16 / 20 classes x 600).

    Reads ``ROOT/mini-imagenet-cache-{split}.pkl`` if present, else ``ROOT/images/*.jpg`` listed by
    ``ROOT/{split}.csv`` (or the package's copy of it); see the module docstring. Classes are sorted by WordNet id.
    """
    _check_split(split)
    base = Path(root).expanduser()
    pkl = _mini_imagenet_pkl(base, split)
    if pkl is not None:
        return _mini_imagenet_from_pkl(pkl, image_size)
    if (base / "images").is_dir():
        return _mini_imagenet_from_jpg(base, split, image_size, progress)
    raise DataError(
        f"mini-ImageNet ({split} split) not found under {str(base)!r}; expected one of two layouts: "
        + _MINI_IMAGENET_LAYOUTS.format(root=base, split=split)
    )


# --- CIFAR-FS and FC100 (CIFAR-100) --------------------------------------------------------------------------------


def cifar_fs_split(split: str) -> list[str]:
    """The CIFAR-100 fine class names of CIFAR-FS's split ``split`` (Bertinetto et al. 2019), sorted."""
    _check_split(split)
    return list(json.loads(_CIFAR_FS_FILE.read_text())[split])


@dataclass
class _Cifar100:
    """CIFAR-100's train and test images pooled (as CIFAR-FS and FC100 use them)."""

    images: np.ndarray  # uint8 (60000, 3, 32, 32): the train images, then the test images
    fine: np.ndarray  # int64 (60000,)
    coarse: np.ndarray  # int64 (60000,)
    fine_names: list[str]
    coarse_names: list[str]


def _read_cifar100(root: Path) -> _Cifar100:
    c = read_cifar(root, "cifar100")  # root or root/cifar-100-python; every check, and a DataError naming the fix
    assert c.train_coarse is not None and c.test_coarse is not None and c.coarse_names is not None  # cifar100
    return _Cifar100(
        np.concatenate([c.train_x, c.test_x]),
        np.concatenate([c.train_y, c.test_y]),
        np.concatenate([c.train_coarse, c.test_coarse]),
        c.class_names,
        c.coarse_names,
    )


def _cifar100_classes(data: _Cifar100, classes: list[int], size: int) -> FewShotData:
    """The images of CIFAR-100 fine classes ``classes`` (ascending), class-major, train images before test."""
    remap = np.full(100, -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    sel = np.flatnonzero(remap[data.fine] >= 0)
    order, labels = _class_major(remap[data.fine[sel]])
    names = [data.fine_names[c] for c in classes]
    images = _select_resized(data.images, sel[order], size, channels_last=False)
    return FewShotData(images, torch.from_numpy(labels), names)


def load_cifar_fs(root: str | Path, split: str = "train", image_size: int = 32) -> FewShotData:
    """CIFAR-FS split ``split`` (Bertinetto et al. 2019) as uint8 ``(N, 3, size, size)``: 64 / 16 / 20 classes x 600.

    Classes in CIFAR-100's order (alphabetical); each class's 500 CIFAR-100 train images, then its 100 test images.
    """
    _check_split(split)
    data = _read_cifar100(Path(root).expanduser())
    wanted = cifar_fs_split(split)
    unknown = [n for n in wanted if n not in data.fine_names]
    if unknown:
        raise DataError(
            f"CIFAR-100's meta file under {root} does not name the CIFAR-FS classes {', '.join(unknown)}; it is not "
            f"CIFAR-100's: download CIFAR-100 again ({_CIFAR100_URL})"
        )
    return _cifar100_classes(data, sorted(data.fine_names.index(n) for n in wanted), image_size)


def load_fc100(root: str | Path, split: str = "train", image_size: int = 32) -> FewShotData:
    """FC100 split ``split`` (Oreshkin et al. 2018) as uint8 ``(N, 3, size, size)``: 60 / 20 / 20 classes x 600.

    The CIFAR-100 fine classes of the superclasses :data:`FC100_SUPERCLASSES` ``[split]``, in CIFAR-100's order;
    each class's 500 train images, then its 100 test images.
    """
    _check_split(split)
    data = _read_cifar100(Path(root).expanduser())
    coarse_of = np.full(100, -1, dtype=np.int64)
    coarse_of[data.fine] = data.coarse
    if (coarse_of[data.fine] != data.coarse).any() or (coarse_of < 0).any():
        raise DataError(
            f"CIFAR-100 under {root}: the fine labels do not map to one superclass each, or some of the 100 classes "
            f"have no image; the files are damaged: download CIFAR-100 again ({_CIFAR100_URL})"
        )
    classes = [c for c in range(100) if coarse_of[c] in FC100_SUPERCLASSES[split]]
    return _cifar100_classes(data, classes, image_size)


def _download_cifar100(root: Path) -> None:
    if all((root / "cifar-100-python" / f).is_file() for f in ("train", "test", "meta")):
        return
    import torchvision

    try:
        torchvision.datasets.CIFAR100(str(root), train=True, download=True)
    except Exception as e:  # offline, or a server error
        raise DataError(
            f"downloading CIFAR-100 into {root} failed ({e}); download {_CIFAR100_URL} elsewhere and extract it into "
            f"{root} (giving {root / 'cifar-100-python'}/{{train,test,meta}})"
        ) from None


# --- image folders -------------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
#: PIL modes counted as grey; every other mode (RGB, RGBA, CMYK, palette "P", ...) counts as colour.
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_DEFAULT_IMAGEFOLDER_SIZE = {"L": 28, "RGB": 84}
_IMAGEFOLDER_LAYOUTS = (
    "DIR/train/<class>/*.png, DIR/val/<class>/*.png and DIR/test/<class>/*.png (.png, .jpg or .jpeg), or a flat "
    "DIR/<class>/*.png split by classes with --class-split TRAIN VAL TEST"
)


@dataclass
class _ImageClass:
    """One class folder of an image folder."""

    name: str  # the folder's name
    folder: Path
    files: list[Path]  # its images, sorted by name


def split_classes(names: Sequence[str], fractions: Sequence[float], seed: int = 0) -> dict[str, list[str]]:
    """Split class names into train / val / test by fractions of the classes: a pure function of its arguments.

    The names are sorted, permuted with ``np.random.default_rng(seed)``, and cut into consecutive runs of
    ``round(fraction * C)`` classes (largest remainders get the classes rounding leaves over, ties to the earlier
    split); each split's classes are then sorted again. The split does not depend on the training seed, so every
    ``--seed`` of a comparison sees the same classes.

    Args:
        names: the class names (any order; duplicates are an error).
        fractions: ``(train, val, test)``, each > 0, summing to 1.
        seed: the split's seed (``--split-seed``).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, sorted names, each split non-empty.

    Raises:
        ValueError: not three fractions, a negative one, a sum other than 1, or a split left with no class.
    """
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(
            f"--class-split {' '.join(map(str, fractions))}: give three fractions TRAIN VAL TEST of the classes, each "
            "> 0 and summing to 1 (e.g. --class-split 0.6 0.2 0.2)"
        )
    ordered = sorted(names)
    if len(set(ordered)) != len(ordered):
        raise ValueError("split_classes: duplicate class names")
    n = len(ordered)
    raw = np.round(np.asarray(fr) * n, 9)  # 0.7 * 10 is 7.000000000000001: round so that floor() is exact
    counts = np.floor(raw).astype(np.int64)
    for i in sorted(range(3), key=lambda i: -(raw[i] - counts[i]))[: n - int(counts.sum())]:
        counts[i] += 1  # the largest remainders get the classes rounding down left over (stable: ties to train)
    if (counts == 0).any():
        empty = [s for s, k in zip(SPLITS, counts) if k == 0]
        raise ValueError(
            f"--class-split {' '.join(map(str, fractions))} of {n} classes gives the {' and '.join(empty)} split(s) "
            f"no class (train/val/test: {'/'.join(map(str, counts))} classes); give each split a larger fraction or "
            "add class folders (each split needs at least one class, as many as its episodes' ways)"
        )
    perm = np.random.default_rng(seed).permutation(n)
    shuffled = [ordered[i] for i in perm]
    ends = np.cumsum(counts)
    return {s: sorted(shuffled[a:b]) for s, a, b in zip(SPLITS, (0, *ends[:-1]), ends)}


def _subfolders(d: Path) -> list[Path]:
    """Sorted non-hidden folders of ``d`` (symbolic links to folders count; ``.fewshot_sla_cache`` does not)."""
    return sorted((Path(e.path) for e in os.scandir(d) if e.is_dir() and not e.name.startswith(".")), key=str)


def _image_class(folder: Path) -> _ImageClass:
    files = sorted(
        Path(e.path)
        for e in os.scandir(folder)
        if e.is_file() and not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise DataError(
            f"class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}, directly inside it); add its "
            "images or remove the folder"
        )
    return _ImageClass(folder.name, folder, files)


def class_digest(c: _ImageClass) -> str:
    """A digest of one class folder's files (names and sizes, in order): it changes when a file is added, removed,
    renamed or rewritten with another size."""
    return files_digest(f"{p.name}:{p.stat().st_size}" for p in c.files)


def _recorded_classes(
    root: Path, classes: Mapping[str, Sequence[str]], split_layout: bool
) -> dict[str, list[_ImageClass]]:
    """The class folders a run recorded, split by split; folders added since are ignored, a missing one is an error."""
    out: dict[str, list[_ImageClass]] = {}
    for s in SPLITS:
        folders = [(root / s / n) if split_layout else (root / n) for n in classes[s]]
        missing = [f for f in folders if not f.is_dir()]
        if missing:
            raise DataError(
                f"the run recorded {len(classes[s])} {s} classes of image folder {root}, but {len(missing)} of their "
                f"folders are gone (e.g. {missing[0]}); restore them (the run's classes are in its recipe.json), or "
                "train a new run on the folder as it is now"
            )
        out[s] = [_image_class(f) for f in folders]
    return out


def _list_imagefolder(
    root: Path, class_split: Sequence[float] = (), split_seed: int = 0,
    classes: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[_ImageClass]]:
    """The classes of each split of an image folder, with every layout check (see :func:`load_imagefolder`);
    ``classes`` (a run's recorded class lists) replaces the listing and the split."""
    if not root.is_dir():
        raise DataError(
            f"image folder {str(root)!r} does not exist or is not a folder; expected {_IMAGEFOLDER_LAYOUTS}"
        )
    folders = _subfolders(root)
    split_dirs = [f for f in folders if f.name in SPLITS]
    others = [f for f in folders if f.name not in SPLITS]
    if split_dirs and others:
        raise DataError(
            f"image folder {root} mixes both layouts: split folders {[f.name for f in split_dirs]} and other folders "
            f"{[f.name for f in others[:5]]}{' ...' if len(others) > 5 else ''}; keep either {root}/{{train,val,test}}"
            f"/<class>/ or a flat {root}/<class>/ (with --class-split), and move the other folders out"
        )
    if split_dirs:
        missing = [s for s in SPLITS if not (root / s).is_dir()]
        if missing:
            raise DataError(
                f"image folder {root} has {[f.name for f in split_dirs]} but no {'/ '.join(missing)}/ folder: the "
                f"split layout needs {root}/train/, val/ and test/, each with <class>/ folders of images (or use a "
                "flat <class>/ layout with --class-split)"
            )
        if class_split:
            raise ValueError(
                f"--class-split applies to a flat image folder, but {root} has train/, val/ and test/ folders, which "
                "already split the classes; drop --class-split"
            )
        if classes is not None:
            return _recorded_classes(root, classes, split_layout=True)
        out = {}
        for s in SPLITS:
            found = _subfolders(root / s)
            if not found:
                raise DataError(
                    f"the {s} split of image folder {root} is empty: {root / s} has no class folders; put "
                    f"{root / s}/<class>/*.png (or .jpg) there"
                )
            out[s] = [_image_class(f) for f in found]
        _check_disjoint(root, {s: [c.name for c in cs] for s, cs in out.items()})
        return out
    if classes is not None:
        return _recorded_classes(root, classes, split_layout=False)
    if not others:
        raise DataError(f"image folder {root} holds no class folders; expected {_IMAGEFOLDER_LAYOUTS}")
    if not class_split:
        raise ValueError(
            f"image folder {root} is a flat layout (<class>/ folders, no train/ val/ test/): pass --class-split TRAIN "
            "VAL TEST, the fractions of the classes each split gets (e.g. --class-split 0.6 0.2 0.2)"
        )
    by_name = {f.name: _image_class(f) for f in others}
    split = split_classes(list(by_name), class_split, split_seed)
    return {s: [by_name[n] for n in names] for s, names in split.items()}


def _check_disjoint(root: Path, names: Mapping[str, Sequence[str]]) -> None:
    """A class folder name in two splits of the split layout is an error: its images would be tested on classes the
    network was trained on (few-shot test classes must be new)."""
    seen: dict[str, str] = {}
    clashes: list[str] = []
    for s in SPLITS:
        for n in names[s]:
            if n in seen:
                clashes.append(f"{root / seen[n] / n} and {root / s / n}")
            else:
                seen[n] = s
    if clashes:
        raise DataError(
            f"image folder {root}: {len(clashes)} class folder(s) appear in two splits ({'; '.join(clashes[:3])}"
            f"{' ...' if len(clashes) > 3 else ''}); few-shot splits need disjoint classes: keep each class folder in "
            "one of train/, val/ and test/ (rename a folder if two different classes share a name)"
        )


def imagefolder_classes(
    root: str | Path, class_split: Sequence[float] = (), split_seed: int = 0
) -> dict[str, list[str]]:
    """The class folder names of each split of an image folder, as :func:`load_imagefolder` assigns them (for a flat
    layout: :func:`split_classes` of the folder names), without decoding any image."""
    listing = _list_imagefolder(Path(root).expanduser(), class_split, split_seed)
    return {s: [c.name for c in cs] for s, cs in listing.items()}


def _file_modes(paths: list[Path]) -> list[str]:
    """Each file's PIL mode, from its header (no pixel is decoded)."""
    from PIL import Image

    modes = []
    for p in paths:
        try:
            with Image.open(p) as im:
                modes.append(im.mode)
        except Exception as e:  # not an image, truncated header, missing file, ...
            raise DataError(f"cannot decode image {p} ({type(e).__name__}: {e}); replace or delete the file") from None
    return modes


def _detect_mode(root: Path, paths: list[Path], workers: int, progress: bool) -> Literal["RGB", "L"]:
    """``"L"`` when every file is grey, ``"RGB"`` when every file is colour; mixed modes are an error."""
    from tqdm import tqdm

    step = max(1, min(512, -(-len(paths) // workers)))
    chunks = [paths[i : i + step] for i in range(0, len(paths), step)]
    modes: list[str] = []
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
        total=len(paths), desc="image modes", unit="img", disable=not progress, leave=False, mininterval=0.5
    ) as bar:
        for got in pool.map(_file_modes, chunks):
            modes += got
            bar.update(len(got))
    grey = [i for i, m in enumerate(modes) if m in _GREY_MODES]
    if not grey:
        return "RGB"
    if len(grey) == len(paths):
        return "L"
    g, c = grey[0], next(i for i, m in enumerate(modes) if m not in _GREY_MODES)
    raise DataError(
        f"image folder {root} mixes grey and colour images: {len(grey)} grey (e.g. {paths[g]}, mode {modes[g]}) and "
        f"{len(paths) - len(grey)} colour (e.g. {paths[c]}, mode {modes[c]}); pass --channels 3 to convert all of them "
        "to RGB or --channels 1 to convert all of them to grey"
    )


def load_imagefolder(
    root: str | Path,
    image_size: int = 0,
    channels: int = 0,
    class_split: Sequence[float] = (),
    split_seed: int = 0,
    min_images: Mapping[str, int] | None = None,
    min_classes: Mapping[str, int] | None = None,
    progress: bool = True,
    cache_dir: str | Path | None | Literal[False] = None,
    workers: int | None = None,
    classes: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, FewShotData]:
    """The train, val and test splits of a folder of the user's images (see the module docstring for the layouts).

    Classes are the sorted class folder names of each split, files are sorted by name; only ``.png``, ``.jpg`` and
    ``.jpeg`` files directly inside a class folder are read, hidden files and folders are ignored. Images are used as
    they are (grey ones are not inverted, unlike Omniglot's), converted to the mode (grey or RGB) and resized to
    ``image_size`` squares (:func:`fewshot_sla.io.decode_images`: LANCZOS for grey, BILINEAR for RGB, antialiased;
    the aspect ratio is not kept). The decoded arrays are cached per split as
    ``<cache_dir>/fewshot-<split>-<digest of the split's file names and sizes>-c<channels>-s<image_size>.npz``
    (the requested channels and size; 0 = detected / default), so a second load decodes nothing.

    Args:
        root: the image folder.
        image_size: image side; 0 = 28 for grey images, 84 for RGB ones.
        channels: 1 (grey) or 3 (RGB), converting every file; 0 = detected: grey if every file is grey (PIL modes
            1, L, LA, I, I;16, F), RGB if none is, an error if they are mixed.
        class_split: flat layout only, required there: the ``(train, val, test)`` fractions of the classes.
        split_seed: flat layout: the seed of :func:`split_classes`.
        min_images: images each class of a split needs (``shots + queries`` of its episodes); a class folder with
            fewer is an error naming it, raised before anything is decoded.
        min_classes: class folders each split needs (its episodes' ways), checked before anything is decoded too.
        progress: show tqdm bars while scanning and decoding.
        cache_dir: where to cache; None = ``root/.fewshot_sla_cache/`` if writable; False = no cache.
        workers: decoding threads (default ``min(8, cpu count)``).
        classes: a run's recorded class folder names per split (its ``recipe.json``): these folders are read instead
            of listing the folder and splitting it again, so class folders added since do not move the split; one
            that is gone is an error.

    Returns:
        ``{"train", "val", "test"}`` :class:`FewShotData`: uint8 ``(N, C, size, size)``, class-major labels, the class
        folder names, and ``stats`` = :func:`image_stats` of the train split on all three.

    Raises:
        DataError: a missing folder, no class folders, both layouts at once, a missing or empty split, a class folder
            without images or with fewer than ``min_images``, a split with fewer than ``min_classes``, mixed grey and
            colour files without ``channels``, or an unreadable file; each message names the folder or file and the fix.
        ValueError: bad ``channels`` / ``image_size``, a flat layout without ``class_split`` (or a split layout with
            one), or fractions that do not split the classes.
    """
    if channels not in (0, 1, 3):
        raise ValueError(f"--channels must be 1 (grey) or 3 (RGB), or 0 to detect them from the files; got {channels}")
    if int(image_size) != image_size or image_size < 0:
        raise ValueError(f"--image-size must be a positive integer (0 = the default); got {image_size}")
    base = Path(root).expanduser()
    listing = _list_imagefolder(base, class_split, split_seed, classes)
    for s, found in listing.items():
        ways = (min_classes or {}).get(s, 0)
        if len(found) < ways:
            hint = ", or give it a larger --class-split fraction" if class_split else ""
            if s == "train":
                hint += " (--class-rotations makes 4 training classes of each folder)"
            raise DataError(
                f"the {s} split of image folder {base} has {len(found)} class folders, but its episodes need {ways} "
                f"classes; lower --ways (--test-ways for val and test episodes) or add class folders to that "
                f"split{hint}"
            )
        need = (min_images or {}).get(s, 0)
        short = [c for c in found if len(c.files) < need]
        if short:
            more = f" (and {len(short) - 1} more class folders of the {s} split)" if len(short) > 1 else ""
            raise DataError(
                f"class folder {short[0].folder} has {len(short[0].files)} images, but each class of a {s} episode "
                f"needs shots + queries = {need}{more}; add images, lower --shots/--queries (--test-shots/"
                "--test-queries for val and test episodes) or remove the folder"
            )
    cdir = resolve_cache_dir(cache_dir, base)
    paths = {s: [p for c in cs for p in c.files] for s, cs in listing.items()}
    # The key names every split's files (and the split they are in), so that the three caches always agree.
    digest = files_digest(f"{s}/{c.name}/{p.name}:{p.stat().st_size}" for s, cs in listing.items() for c in cs
                          for p in c.files)
    caches = {s: cdir / f"fewshot-{s}-{digest}-c{channels}-s{image_size}.npz" if cdir else None for s in SPLITS}
    arrays = {s: read_cached(caches[s], len(paths[s]), channels or None, image_size or None) for s in SPLITS}
    shapes = {a.shape[1:] for a in arrays.values() if a is not None}
    n_workers = workers or min(8, os.cpu_count() or 1)
    if any(a is None for a in arrays.values()) or len(shapes) != 1:
        # Detect only on a cache miss: reading every header again would cost each run seconds on a large folder.
        mode: Literal["RGB", "L"]
        if channels:
            mode = "L" if channels == 1 else "RGB"
        else:
            mode = _detect_mode(base, [p for s in SPLITS for p in paths[s]], n_workers, progress)
        size = image_size or _DEFAULT_IMAGEFOLDER_SIZE[mode]
        arrays = {
            s: cached_decode(
                paths[s],
                caches[s],
                mode,
                size,
                decoder=decode_images,  # this module's name, so that a test can patch it here
                progress=progress,
                desc=f"imagefolder {s}",
                workers=n_workers,
                what="image",
                fix="replace or delete the file",
            )
            for s in SPLITS
        }
    out = {}
    for s, cs in listing.items():
        labels = np.repeat(np.arange(len(cs), dtype=np.int64), [len(c.files) for c in cs])
        out[s] = FewShotData(torch.from_numpy(arrays[s]), torch.from_numpy(labels), [c.name for c in cs],
                             class_digests=[class_digest(c) for c in cs])
    stats = image_stats(out["train"].images)
    return {s: dataclasses.replace(d, stats=stats) for s, d in out.items()}


def load_fewshot(
    dataset: str,
    root: str | Path,
    split: str,
    image_size: int | None = None,
    download: bool = False,
    omniglot_scheme: str = "vinyals",
    channels: int = 0,
    class_split: Sequence[float] = (),
    split_seed: int = 0,
) -> FewShotData:
    """Load split ``split`` of ``dataset`` into memory (see the module docstring).

    Args:
        dataset: one of :data:`DATASETS`.
        root: the folder holding the data set (its layout: the module docstring).
        split: ``train``, ``val`` or ``test``.
        image_size: image side; ``None`` = the data set's default (28, 84, 32, 32; imagefolder: 28 grey, 84 RGB).
        download: fetch Omniglot or CIFAR-100 into ``root`` if missing. mini-ImageNet cannot be fetched
            automatically: if it is missing, the error says where to get it.
        omniglot_scheme: ``"vinyals"`` or ``"background"`` (see :func:`omniglot_split`).
        channels: imagefolder only: 1 or 3, 0 = detected (see :func:`load_imagefolder`).
        class_split: imagefolder only, flat layout: the ``(train, val, test)`` fractions of the classes.
        split_seed: imagefolder only, flat layout: the seed of the class split.

    Returns:
        uint8 images ``(N, C, size, size)``, int64 labels ``0..C-1`` and the class names (imagefolder: and the
        train split's ``stats``).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    _check_split(split)
    if dataset == "imagefolder":
        # all three splits: the channel detection and the statistics look at every split's files (cached after once)
        return load_imagefolder(root, image_size or 0, channels, class_split, split_seed)[split]
    size = image_size or DEFAULT_SIZE[dataset]
    if dataset == "omniglot":
        if download:
            import torchvision

            for bg in (True, False):
                try:
                    torchvision.datasets.Omniglot(str(root), background=bg, download=True)
                except Exception as e:  # offline, or a server error
                    raise DataError(
                        f"downloading Omniglot into {root} failed ({e}); download it elsewhere and "
                        "copy omniglot-py/ there"
                    ) from None
        return load_omniglot(root, split, size, scheme=omniglot_scheme)
    base = Path(root).expanduser()
    if dataset == "mini-imagenet":
        if download and not _mini_imagenet_found(base, split):
            raise DataError(
                f"mini-ImageNet cannot be downloaded automatically (it has no stable public link); put it under "
                f"{str(base)!r} in one of two layouts: " + _MINI_IMAGENET_LAYOUTS.format(root=base, split=split)
            )
        return load_mini_imagenet(base, split, size)
    if download:
        _download_cifar100(base)
    return (load_cifar_fs if dataset == "cifar-fs" else load_fc100)(base, split, size)


def episode_shapes(
    ways: int, shots: int, queries: int, test_ways: int = 0, test_shots: int = 0, test_queries: int = 0
) -> dict[str, tuple[int, int, int]]:
    """(ways, shots, queries) of each split's episodes: val and test take the ``test_*`` values, 0 = the training
    ones. The one place this rule is written."""
    test = (test_ways or ways, test_shots or shots, test_queries or queries)
    return {"train": (ways, shots, queries), "val": test, "test": test}


def load_data(
    dataset: str,
    root: str | Path,
    *,
    image_size: int = 0,
    download: bool = False,
    omniglot_split: str = "vinyals",
    channels: int = 0,
    class_split: Sequence[float] = (),
    split_seed: int = 0,
    shapes: Mapping[str, tuple[int, int, int]] | None = None,
    class_rotations: bool = False,
    classes: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, FewShotData]:
    """The train, val and test splits of ``dataset`` as they are on disk (without ``class_rotations``, which the
    caller applies with :func:`rotate_classes`; the flag only lowers the ways an image folder's train split needs).

    Args:
        dataset, root, image_size, download, omniglot_split: as :func:`load_fewshot` (``download``: the train split).
        channels, class_split, split_seed: image folders only (see :func:`load_imagefolder`).
        shapes: each split's episode shape (:func:`episode_shapes`): an image folder is checked against them before
            anything is decoded (a class folder with fewer images than ``shots + queries``, a split with fewer
            class folders than ways: errors naming them).
        class_rotations: whether the train split will be rotated (its ways need a quarter of the folders).
        classes: image folders: a run's recorded class lists (see :func:`load_imagefolder`).
    """
    folder = dataset == "imagefolder"
    if not folder and (class_split or channels):
        flag = "--class-split" if class_split else "--channels"
        raise ValueError(
            f"{flag} applies only to --dataset imagefolder; {dataset} has fixed splits and channels (drop {flag})"
        )
    if folder and download:
        raise ValueError("--download does not apply to --dataset imagefolder (the images are yours); drop --download")
    if folder:
        shapes = shapes or {}
        need = {s: shots + queries for s, (_, shots, queries) in shapes.items()}
        ways = {s: w for s, (w, _, _) in shapes.items()}
        if class_rotations and "train" in ways:
            ways["train"] = -(-ways["train"] // 4)  # each folder becomes 4 training classes
        return load_imagefolder(root, image_size, channels, class_split, split_seed, min_images=need,
                                min_classes=ways, classes=classes)
    return {
        s: load_fewshot(dataset, root, s, image_size or None, download and s == "train", omniglot_scheme=omniglot_split)
        for s in SPLITS
    }


def load_splits(cfg: Any) -> dict[str, FewShotData]:
    """The train, val and test splits a :class:`episodes.config.FewShotConfig` asks for, with ``cfg.class_rotations``
    applied to the train split (:func:`rotate_classes`; val and test are unchanged): :func:`load_data` with the
    config's fields. A run reads its splits through :mod:`episodes.recipe`, which records them."""
    shapes = episode_shapes(cfg.ways, cfg.shots, cfg.queries, cfg.test_ways, cfg.test_shots, cfg.test_queries)
    splits = load_data(cfg.dataset, cfg.data_root, image_size=cfg.image_size, download=cfg.download,
                       omniglot_split=cfg.omniglot_split, channels=cfg.channels, class_split=cfg.class_split,
                       split_seed=cfg.split_seed, shapes=shapes, class_rotations=cfg.class_rotations)
    if cfg.class_rotations:
        splits["train"] = rotate_classes(splits["train"])
    return splits
