"""The user's own images as a few-shot data set (``--dataset imagefolder``), in one of two layouts:
``DIR/{train,val,test}/<class>/*`` (the classes of each split; a class folder in two splits is an error), or a flat
``DIR/<class>/*`` whose classes are split by ``class_split``, fractions ``(train, val, test)``.

The flat split is a pure function of the sorted class folder names, the fractions and ``split_seed``
(:func:`split_classes`; every training ``--seed`` sees the same split); a run records the resulting class lists
(``recipe.json``), and a re-test reads those (``classes=``) instead of splitting the folder again. Grey or RGB is
detected from the files (mixed modes are an error unless ``channels`` says which to convert to); images are resized
to ``image_size`` squares (default 28 for grey, 84 for RGB, aspect ratio not kept) and used as they are: unlike
Omniglot's, grey images are NOT inverted. Decoded once and cached in ``DIR/.fewshot_sla_cache/``
(:func:`fewshot_sla.io.cached_decode`). The normalisation statistics are measured on the train split
(:func:`~episodes.datasets.common.image_stats`) and carried by every split's :attr:`FewShotData.stats`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from fewshot_sla.io import (
    IMAGE_SUFFIXES,
    cached_decode,
    class_folders,
    decode_images,
    files_digest,
    image_files,
    read_cached,
    resolve_cache_dir,
)
from fewshot_sla.lifecycle import check_distinct_classes
from fewshot_sla.progress import progress_bar
from fewshot_sla.utils import DataError

from .common import SPLITS, FewShotData, LoadRequest, image_stats

__all__ = ["IMAGE_EXTENSIONS", "split_classes", "imagefolder_classes", "class_digest", "load_imagefolder", "load"]

IMAGE_EXTENSIONS = IMAGE_SUFFIXES
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


def _image_class(folder: Path) -> _ImageClass:
    files = image_files(folder)
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
    folders = class_folders(root)
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
            found = class_folders(root / s)
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
    step = max(1, min(512, -(-len(paths) // workers)))
    chunks = [paths[i : i + step] for i in range(0, len(paths), step)]
    modes: list[str] = []
    with ThreadPoolExecutor(max_workers=workers) as pool, progress_bar(
        total=len(paths), desc="image modes", unit="img", enabled=progress, leave=False
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
    check_distinct_classes((c.folder, c.files) for cs in listing.values() for c in cs)
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


def load(req: LoadRequest) -> dict[str, FewShotData]:
    """The three splits (:data:`episodes.datasets.LOADERS` entry): ``req.options`` may hold ``channels``,
    ``class_split`` and ``split_seed``; the episode shapes are checked before anything is decoded."""
    shapes = req.shapes or {}
    need = {s: shots + queries for s, (_, shots, queries) in shapes.items()}
    ways = {s: w for s, (w, _, _) in shapes.items()}
    if "train" in ways:
        ways["train"] = -(-ways["train"] // req.train_class_factor)  # e.g. each folder becomes 4 rotated classes
    o = req.options
    return load_imagefolder(req.root, req.image_size, o.get("channels", 0), o.get("class_split", ()),
                            o.get("split_seed", 0), min_images=need, min_classes=ways, progress=req.progress,
                            classes=req.classes)
