"""Tiny ImageNet (Stanford CS231n; 200 ImageNet classes, 64x64 colour photographs) as a few-shot data set.

Reads the layout of the real zip, ``ROOT/tiny-imagenet-200/`` or ``ROOT`` itself::

    wnids.txt                                  the 200 WordNet ids, one per line
    words.txt                                  "<wnid>\\t<names>" (the zip lists all of WordNet; only ours are read)
    train/<wnid>/images/<wnid>_<k>.JPEG        500 labelled images per class in the full copy
    val/images/val_<k>.JPEG                    50 labelled images per class ...
    val/val_annotations.txt                    ... labelled here: "<file>\\t<wnid>\\t<box>"  (optional)

The few-shot classes of each split are fixed by this package, ``splits/tiny_imagenet.json``: 128 / 32 / 40 classes,
chosen once by :func:`~episodes.datasets.imagefolder.split_classes` with seed 0 (there is no standard few-shot split
of Tiny ImageNet; 25 of mini-ImageNet's 100 classes are among its 200). Each class holds every labelled image of it:
its ``train/`` images (sorted by their number ``k``), then its ``val/`` images where ``val/`` exists (sorted by name);
a partial copy without ``val/`` (e.g. 128 training images per class) works too. The run records which images it used
(a digest of each class's files in ``recipe.json``), so a full and a partial copy are different data in
``sla-report``, and a re-test on a changed copy is refused.

Colour throughout: greyscale JPEGs (about 2% of ImageNet's, e.g. 471 of the 25,600 of a 128-per-class copy) are
converted to RGB, as torchvision's ImageNet readers do. Images are resized to ``image_size`` (64 native, 84 for the
mini-ImageNet protocols), decoded once and cached in ``ROOT/.fewshot_sla_cache/`` (or ``~/.cache`` where ``ROOT`` is
read-only); the normalisation statistics are measured on the train split and recorded by the run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from fewshot_sla.io import cached_decode, decode_images, files_digest, image_files, resolve_cache_dir
from fewshot_sla.utils import DataError

from .common import SPLITS, SPLITS_DIR, FewShotData, LoadRequest, image_stats

__all__ = ["DEFAULT_SIZE", "SPLIT_FILE", "tiny_imagenet_split", "find_root", "download", "load"]

DEFAULT_SIZE = 64
SPLIT_FILE = SPLITS_DIR / "tiny_imagenet.json"
_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_FIX = f"download and unzip {_URL} (or point --data-root at the folder holding tiny-imagenet-200/)"


def tiny_imagenet_split(split: str) -> dict[str, str]:
    """``{wnid: words}`` of the few-shot classes of ``split`` (``splits/tiny_imagenet.json``), sorted by wnid."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return dict(sorted(json.loads(SPLIT_FILE.read_text())["splits"][split].items()))


def find_root(root: Path) -> Path:
    """``root/tiny-imagenet-200`` or ``root``, whichever holds ``wnids.txt`` and ``train/``."""
    for cand in (root / "tiny-imagenet-200", root):
        if (cand / "wnids.txt").is_file() and (cand / "train").is_dir():
            return cand
    raise DataError(
        f"Tiny ImageNet not found under {str(root)!r}: expected {root}/tiny-imagenet-200/ (or {root}/ itself) with "
        f"wnids.txt and train/<wnid>/images/*.JPEG; {_FIX}"
    )


def _train_number(p: Path) -> tuple[int, str]:
    m = re.search(r"_(\d+)\.[A-Za-z]+$", p.name)
    return (int(m.group(1)) if m else -1, p.name)


def _val_images(base: Path) -> dict[str, list[Path]]:
    """``{wnid: [val image, ...]}`` from ``val/val_annotations.txt``; empty without ``val/``."""
    ann = base / "val" / "val_annotations.txt"
    if not (base / "val").is_dir():
        return {}
    if not ann.is_file():
        raise DataError(f"{base / 'val'} exists but has no val_annotations.txt, which labels its images; {_FIX}")
    out: dict[str, list[Path]] = {}
    for line_no, line in enumerate(ann.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise DataError(f"{ann}, line {line_no}: expected '<file>\\t<wnid>\\t...', found {line!r}; {_FIX}")
        out.setdefault(parts[1], []).append(base / "val" / "images" / parts[0])
    return {w: sorted(ps, key=lambda p: p.name) for w, ps in out.items()}


def _class_files(base: Path, wnids: list[str], val: dict[str, list[Path]]) -> dict[str, list[Path]]:
    listed = {w.strip() for w in (base / "wnids.txt").read_text().split() if w.strip()}
    missing = [w for w in wnids if w not in listed]
    if missing:
        raise DataError(
            f"{base / 'wnids.txt'} does not list the class(es) {', '.join(missing[:5])} of this package's Tiny "
            f"ImageNet split ({len(missing)} of them): the copy is not the standard 200-class Tiny ImageNet; {_FIX}"
        )
    out = {}
    for w in wnids:
        d = base / "train" / w / "images"
        files = sorted(image_files(d), key=_train_number) if d.is_dir() else []
        files += [p for p in val.get(w, []) if p.is_file()]
        gone = [p for p in val.get(w, []) if not p.is_file()]
        if gone:
            raise DataError(f"{base / 'val' / 'val_annotations.txt'} lists {gone[0]}, which is missing; {_FIX}")
        out[w] = files
    return out


def download(root: Path) -> None:
    """Fetch and unzip the CS231n zip into ``root`` (248 MB; needs a network), unless a copy is already there."""
    try:
        find_root(root)
        return
    except DataError:
        pass
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(_URL, str(root))
    except Exception as e:  # offline, or a server error
        raise DataError(f"downloading Tiny ImageNet into {root} failed ({e}); {_FIX}") from None


def _words(base: Path) -> dict[str, str]:
    """``{wnid: names}`` from the copy's ``words.txt`` (the zip's lists every WordNet synset); {} without one."""
    path = base / "words.txt"
    if not path.is_file():
        return {}
    pairs = (line.split("\t", 1) for line in path.read_text(errors="replace").splitlines() if "\t" in line)
    return {w.strip(): names.strip() for w, names in pairs}


def load(req: LoadRequest) -> dict[str, FewShotData]:
    """The three splits (:data:`episodes.datasets.LOADERS` entry); each class's images are checked against the
    episode shapes before anything is decoded."""
    base = find_root(req.root)
    size = req.image_size or DEFAULT_SIZE
    val = _val_images(base)
    words = _words(base)
    splits = {s: tiny_imagenet_split(s) for s in SPLITS}
    files = {s: _class_files(base, list(names), val) for s, names in splits.items()}
    for s, (_, shots, queries) in (req.shapes or {}).items():
        need = shots + queries
        short = [(w, len(ps)) for w, ps in files[s].items() if len(ps) < need]
        if short:
            w, n = short[0]
            raise DataError(
                f"Tiny ImageNet class {w} ({splits[s][w]}, {s} split) has {n} images under {base}, but each class of a "
                f"{s} episode needs shots + queries = {need} ({len(short)} such class(es)); the copy is incomplete "
                f"({_FIX}), or lower --shots/--queries (--test-shots/--test-queries for val and test)"
            )
    cdir = resolve_cache_dir(None, base)
    out = {}
    for s in SPLITS:
        per_class = list(files[s].values())
        paths = [p for ps in per_class for p in ps]
        digests = [files_digest(f"{p.parent.parent.name}/{p.name}:{p.stat().st_size}" for p in ps) for ps in per_class]
        key = files_digest(digests)
        cache = cdir / f"tiny-imagenet-{s}-{key}-s{size}.npz" if cdir else None
        x = cached_decode(paths, cache, "RGB", size, decoder=decode_images, progress=req.progress,
                          desc=f"tiny-imagenet {s}", what="Tiny ImageNet image", fix=_FIX)
        labels = np.repeat(np.arange(len(per_class), dtype=np.int64), [len(ps) for ps in per_class])
        out[s] = FewShotData(torch.from_numpy(x), torch.from_numpy(labels), list(files[s]), class_digests=digests,
                             class_words=[words.get(w, splits[s][w]) for w in files[s]])
    stats = image_stats(out["train"].images)
    for d in out.values():
        d.stats = stats
    return out
