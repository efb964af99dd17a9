"""mini-ImageNet (Vinyals et al. 2016) with Ravi & Larochelle's (2017) split, 64 / 16 / 20 classes x 600 images,
84x84 RGB, from either of two layouts (the first wins where both exist):

(a) ``ROOT/mini-imagenet-cache-{train,val,test}.pkl``, learn2learn's cache format: a pickled dict with
    ``image_data`` uint8 ``(N, 84, 84, 3)`` and ``class_dict`` ``{wnid: [indices]}`` (the val file may also be
    named ``mini-imagenet-cache-validation.pkl``, as learn2learn downloads it), read with an unpickler that builds
    only containers and numpy arrays;
(b) ``ROOT/images/*.jpg`` with ``ROOT/{train,val,test}.csv`` (``filename,label``); without the CSVs, the copy in
    ``splits/mini_imagenet/`` is used.

Classes are sorted by WordNet id. A split whose classes are not Ravi & Larochelle's (a user's own CSVs, say 14 / 6 / 5
classes) is refused: runs on ``--dataset mini-imagenet`` are recorded and compared as that benchmark. Your own class
split of these images is an image folder (``DIR/{train,val,test}/<class>/*.jpg``, ``--dataset imagefolder``), which a
run records with its class lists and file digests.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fewshot_sla.io import decode_images, describe, safe_load_pickle, str_keys
from fewshot_sla.utils import DataError

from .common import SPLITS, SPLITS_DIR, FewShotData, LoadRequest, Stats, _check_split, _class_major, _select_resized

__all__ = ["STATS", "DEFAULT_SIZE", "LAYOUTS", "load_mini_imagenet", "load_split", "download"]

_MINI_IMAGENET_CSVS = SPLITS_DIR / "mini_imagenet"
STATS: Stats = ((0.4730, 0.4490, 0.4033), (0.2774, 0.2683, 0.2819))
DEFAULT_SIZE = 84
LAYOUTS = (
    "(a) {root}/mini-imagenet-cache-{split}.pkl, learn2learn's cache format (its download: "
    '`python -c "import learn2learn as l2l; [l2l.vision.datasets.MiniImagenet(ROOT, mode=m) for m in '
    "('train', 'validation', 'test')]\"` writes mini-imagenet-cache-{{train,validation,test}}.pkl; both "
    "-val and -validation names are accepted), or (b) {root}/images/*.jpg (Ravi & Larochelle's images, e.g. "
    "made by the mini-imagenet-tools scripts) with {split}.csv (filename,label) beside it or, without it, the "
    "copy this package carries"
)


def _mini_imagenet_pkl(root: Path, split: str) -> Path | None:
    names = [f"mini-imagenet-cache-{split}.pkl"] + (["mini-imagenet-cache-validation.pkl"] if split == "val" else [])
    return next((root / n for n in names if (root / n).is_file()), None)


def _mini_imagenet_from_pkl(path: Path, split: str, size: int) -> FewShotData:
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
    _check_standard_classes(wnids, split, path)
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


@lru_cache(maxsize=3)
def _standard_wnids(split: str) -> tuple[str, ...]:
    """Ravi & Larochelle's classes of ``split`` (the copy of their CSV this package carries), sorted."""
    return tuple(sorted({w for _, w in _read_split_csv(_MINI_IMAGENET_CSVS / f"{split}.csv")}))


def _check_standard_classes(wnids: list[str], split: str, source: Path) -> None:
    """Refuse a split whose classes are not the benchmark's: it would be recorded and grouped as mini-ImageNet."""
    standard = _standard_wnids(split)
    if list(wnids) == list(standard):
        return
    other = len(set(wnids) - set(standard))
    raise DataError(
        f"{source} gives the {split} split {len(wnids)} classes ({other} not in it), but mini-ImageNet's {split} split "
        f"is Ravi & Larochelle's {len(standard)} classes (64 / 16 / 20), and runs on --dataset mini-imagenet are "
        f"recorded and compared as that benchmark; for your own class split put the images in "
        f"DIR/{{train,val,test}}/<class>/ and pass --dataset imagefolder --data-root DIR"
    )


def _mini_imagenet_from_jpg(root: Path, split: str, size: int, progress: bool) -> FewShotData:
    csv_path = root / f"{split}.csv"
    if not csv_path.is_file():
        csv_path = _MINI_IMAGENET_CSVS / f"{split}.csv"
    rows = _read_split_csv(csv_path)
    wnids = sorted({w for _, w in rows})
    _check_standard_classes(wnids, split, csv_path)
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
        return _mini_imagenet_from_pkl(pkl, split, image_size)
    if (base / "images").is_dir():
        return _mini_imagenet_from_jpg(base, split, image_size, progress)
    raise DataError(
        f"mini-ImageNet ({split} split) not found under {str(base)!r}; expected one of two layouts: "
        + LAYOUTS.format(root=base, split=split)
    )


def download(root: Path) -> None:
    """mini-ImageNet has no stable public link: nothing is fetched; a missing copy is an error saying where to get
    it."""
    if not all(_mini_imagenet_found(root, s) for s in SPLITS):
        raise DataError(
            f"mini-ImageNet cannot be downloaded automatically (it has no stable public link); put it under "
            f"{str(root)!r} in one of two layouts: " + LAYOUTS.format(root=root, split="train")
        )


def load_split(req: LoadRequest, split: str) -> FewShotData:
    """One split (:data:`episodes.datasets.LOADERS` entry). mini-ImageNet cannot be downloaded: a missing copy is an
    error saying where to get it."""
    return load_mini_imagenet(req.root, split, req.image_size or DEFAULT_SIZE, req.progress)
