"""``--dataset tiny-imagenet``: the real zip's layout, full (train/ + val/) and partial (train/ only) copies,
greyscale JPEGs converted to RGB, the fixed 128 / 32 / 40 class split, clear errors for a foreign or short copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from episodes.datasets import load_data
from episodes.datasets.tiny_imagenet import SPLIT_FILE, tiny_imagenet_split
from fewshot_sla.utils import DataError

SHAPES = {s: (5, 1, 1) for s in ("train", "val", "test")}


def _wnids() -> list[str]:
    return sorted(w for s in ("train", "val", "test") for w in tiny_imagenet_split(s))


def _write_copy(root: Path, train_per_class: int = 2, val_per_class: int = 0, grey: str | None = None) -> Path:
    """A Tiny ImageNet copy in the zip's layout, 8x8 JPEGs of a flat colour that encodes (class, image)."""
    base = root / "tiny-imagenet-200"
    wnids = _wnids()
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\tthing {i}\n" for i, w in enumerate(wnids)))
    for c, w in enumerate(wnids):
        d = base / "train" / w / "images"
        d.mkdir(parents=True)
        for k in range(train_per_class):
            mode = "L" if grey == w and k == 0 else "RGB"
            colour = (c % 256) if mode == "L" else (c % 256, 10 * k, 200)
            Image.new(mode, (8, 8), colour).save(d / f"{w}_{k}.JPEG", quality=100)  # type: ignore[arg-type]
    if val_per_class:
        (base / "val" / "images").mkdir(parents=True)
        lines = []
        for c, w in enumerate(wnids):
            for k in range(val_per_class):
                name = f"val_{c * val_per_class + k}.JPEG"
                Image.new("RGB", (8, 8), (c % 256, 250, 0)).save(base / "val" / "images" / name, quality=100)
                lines.append(f"{name}\t{w}\t0\t0\t7\t7")
        (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def test_the_split_file_is_128_32_40_disjoint_classes():
    got = {s: tiny_imagenet_split(s) for s in ("train", "val", "test")}
    assert [len(v) for v in got.values()] == [128, 32, 40]
    assert len(set().union(*got.values())) == 200
    assert json.loads(SPLIT_FILE.read_text())["seed"] == 0


def test_partial_copy_with_a_greyscale_jpeg(tmp_path):
    grey = tiny_imagenet_split("train")
    first = next(iter(grey))
    _write_copy(tmp_path, train_per_class=2, grey=first)
    d = load_data("tiny-imagenet", tmp_path, image_size=8, shapes=SHAPES, progress=False)
    assert [d[s].images.shape for s in ("train", "val", "test")] == [(256, 3, 8, 8), (64, 3, 8, 8), (80, 3, 8, 8)]
    assert d["train"].class_names == sorted(grey) and d["train"].class_words[0].startswith("thing")
    x = d["train"].images[0].int()  # the grey JPEG, as three equal channels
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    c = _wnids().index(first)
    assert abs(int(x[0, 4, 4]) - c % 256) <= 2
    assert d["train"].stats is not None and d["val"].stats == d["train"].stats


def test_full_copy_appends_the_val_images_and_records_other_files(tmp_path):
    _write_copy(tmp_path / "full", train_per_class=2, val_per_class=1)
    _write_copy(tmp_path / "part", train_per_class=2)
    full = load_data("tiny-imagenet", tmp_path / "full", image_size=8, shapes=SHAPES, progress=False)
    part = load_data("tiny-imagenet", tmp_path / "part" / "tiny-imagenet-200", image_size=8, shapes=SHAPES,
                     progress=False)
    assert len(full["test"]) == 3 * 40 and len(part["test"]) == 2 * 40
    assert int(full["test"].images[2, 1, 4, 4]) > 240  # a class's val image comes after its train images
    assert full["test"].class_digests != part["test"].class_digests  # a run tells the two copies apart


def test_foreign_or_short_copies_are_clear_errors(tmp_path):
    base = _write_copy(tmp_path / "a", train_per_class=2)
    wnids = _wnids()
    (base / "wnids.txt").write_text("\n".join(wnids[1:]) + "\n")
    with pytest.raises(DataError, match=f"does not list the class.*{wnids[0]}.*not the standard 200-class"):
        load_data("tiny-imagenet", tmp_path / "a", image_size=8, progress=False)
    _write_copy(tmp_path / "b", train_per_class=2)
    with pytest.raises(DataError, match=r"has 2 images .* needs shots \+ queries = 6"):
        load_data("tiny-imagenet", tmp_path / "b", image_size=8, shapes={"train": (5, 1, 5)}, progress=False)
    with pytest.raises(DataError, match="Tiny ImageNet not found under"):
        load_data("tiny-imagenet", tmp_path / "nowhere", progress=False)


@pytest.mark.slow
@pytest.mark.realdata
def test_real_tiny_imagenet_photographs(tiny_imagenet_root):
    d = load_data("tiny-imagenet", tiny_imagenet_root, shapes=SHAPES, progress=False)
    assert [d[s].images.shape for s in ("train", "val", "test")] == [
        (128 * 128, 3, 64, 64), (32 * 128, 3, 64, 64), (40 * 128, 3, 64, 64)]
    base = tiny_imagenet_root / "tiny-imagenet-200" / "train"
    grey = [p for p in sorted(base.glob(f"{d['train'].class_names[0]}/images/*.JPEG"))
            if Image.open(p).mode == "L"]
    files = sorted(base.glob(f"{d['train'].class_names[0]}/images/*.JPEG"),
                   key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if grey:  # greyscale photographs come back as three equal channels
        i = files.index(grey[0])
        x = d["train"].images[i]
        assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    first = np.asarray(Image.open(files[0]).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(d["train"].images[0].numpy(), first)  # native 64 px: the decoded bytes themselves
    means = d["train"].stats[0]
    assert 0.4 < means[0] < 0.55 and means[2] < means[0]  # ImageNet-like photographs
