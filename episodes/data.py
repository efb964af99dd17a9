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

CIFAR-FS and FC100 read the python version of CIFAR-100, ``ROOT/cifar-100-python/{train,test,meta}``
(what ``torchvision.datasets.CIFAR100(ROOT, download=True)`` extracts), at 32x32. Images whose size
differs from ``image_size`` are resized (bilinear, antialiased): JPEGs with PIL, arrays with
``torch.nn.functional.interpolate``. Files are read by :mod:`fewshot_sla.io`: pickles with an unpickler
that builds only containers and numpy arrays (so a bad file cannot run code), CIFAR-100 with
:func:`~fewshot_sla.io.read_cifar`, image files with :func:`~fewshot_sla.io.decode_images`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fewshot_sla.io import decode_images, describe, normalize, read_cifar, safe_load_pickle, str_keys
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
]

DATASETS = ("omniglot", "mini-imagenet", "cifar-fs", "fc100")
SPLITS = ("train", "val", "test")
DEFAULT_SIZE = {"omniglot": 28, "mini-imagenet": 84, "cifar-fs": 32, "fc100": 32}
#: mean and std per channel on the [0, 1] scale (Omniglot: measured on the Vinyals train split at 28x28;
#: CIFAR-FS and FC100: CIFAR-100's train set).
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
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

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def to_float(images: Tensor, dataset: str) -> Tensor:
    """Normalise a uint8 batch ``(B, C, H, W)`` to float32 with the data set's mean and std (:data:`DATASET_STATS`),
    on the batch's device."""
    if dataset not in DATASET_STATS:
        raise ValueError(f"to_float: unknown dataset {dataset!r}; choose one of {', '.join(DATASET_STATS)}")
    mean, std = DATASET_STATS[dataset]
    return normalize(images, mean, std)


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


def load_fewshot(
    dataset: str,
    root: str | Path,
    split: str,
    image_size: int | None = None,
    download: bool = False,
    omniglot_scheme: str = "vinyals",
) -> FewShotData:
    """Load split ``split`` of ``dataset`` into memory (see the module docstring).

    Args:
        dataset: one of :data:`DATASETS`.
        root: the folder holding the data set (its layout: the module docstring).
        split: ``train``, ``val`` or ``test``.
        image_size: image side; ``None`` = the data set's default (28, 84, 32, 32).
        download: fetch Omniglot or CIFAR-100 into ``root`` if missing. mini-ImageNet cannot be fetched
            automatically: if it is missing, the error says where to get it.
        omniglot_scheme: ``"vinyals"`` or ``"background"`` (see :func:`omniglot_split`).

    Returns:
        uint8 images ``(N, C, size, size)``, int64 labels ``0..C-1`` and the class names.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    _check_split(split)
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


def load_splits(cfg: Any) -> dict[str, FewShotData]:
    """The train, val and test splits a :class:`episodes.config.FewShotConfig` asks for (``cfg.dataset``,
    ``cfg.data_root``, ``cfg.image_size``, ``cfg.download`` for the train split, ``cfg.omniglot_split``)."""
    return {
        s: load_fewshot(cfg.dataset, cfg.data_root, s, cfg.image_size or None, cfg.download and s == "train",
                        omniglot_scheme=cfg.omniglot_split)
        for s in SPLITS
    }
