"""``--dataset imagefolder`` (the user's own images, two layouts) and ``--class-rotations``.

The folders are written here with PIL (exact pixel values are checked against what was written); the real-data tests
lay real Omniglot characters out as an image folder, and check Vinyals' 4112 rotated training classes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import episodes.datasets.imagefolder as ed
from episodes.config import FewShotConfig
from episodes.data import (
    DATASET_STATS,
    FewShotData,
    dataset_stats,
    image_stats,
    imagefolder_classes,
    load_fewshot,
    load_imagefolder,
    load_splits,
    rotate_classes,
    split_classes,
    to_float,
)
from fewshot_sla.io import CACHE_FOLDER, decode_images
from fewshot_sla.utils import DataError


def _write(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def _make_classes(root: Path, names, per_class=3, size=(10, 10), grey=False, seed=0, ext=".png") -> dict:
    """Random images in ``root/<name>/NN.png``; returns {(name, i): array as written}."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        for i in reversed(range(per_class)):  # written out of order: the loader sorts by name
            shape = (size[1], size[0]) if grey else (size[1], size[0], 3)
            a = rng.integers(0, 256, shape, dtype=np.uint8)
            _write(root / name / f"{i:02d}{ext}", a)
            out[(name, i)] = a
    return out


def _split_layout(root: Path, per_class=3, grey=False, size=(10, 10)) -> dict:
    arrays = {}
    splits = {"train": ["t_b", "t_a", "t_c"], "val": ["v_a", "v_b"], "test": ["x_a", "x_b", "x_c"]}
    for seed, (s, names) in enumerate(splits.items()):  # other pixels per split: a copied class is refused
        arrays.update({(s, *k): v for k, v in _make_classes(root / s, names, per_class, size, grey, seed).items()})
    return arrays


def _cfg(root: Path, **kw) -> FewShotConfig:
    base = dict(dataset="imagefolder", data_root=str(root), ways=2, shots=1, queries=1)
    base.update(kw)
    return FewShotConfig(**base)


# --- layouts, modes, sizes -----------------------------------------------------------------------------------------


def test_split_layout_rgb_exact(tmp_path):
    arrays = _split_layout(tmp_path, per_class=3, size=(12, 12))
    d = load_imagefolder(tmp_path, image_size=12, progress=False)
    assert d["train"].class_names == ["t_a", "t_b", "t_c"] and d["val"].class_names == ["v_a", "v_b"]
    assert d["test"].class_names == ["x_a", "x_b", "x_c"]
    assert d["train"].images.shape == (9, 3, 12, 12) and d["train"].images.dtype == torch.uint8
    assert d["train"].labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # class-major, sorted classes
    # file order within a class: by name; pixels exactly as written (12x12 is not resized)
    assert torch.equal(d["train"].images[4], torch.from_numpy(arrays[("train", "t_b", 1)]).permute(2, 0, 1))
    assert torch.equal(d["test"].images[8], torch.from_numpy(arrays[("test", "x_c", 2)]).permute(2, 0, 1))
    # every split carries the train split's statistics
    stats = image_stats(d["train"].images)
    assert all(d[s].stats == stats for s in ("train", "val", "test"))
    assert len(stats[0]) == 3 and all(0 < m < 1 for m in stats[0]) and all(0 < v < 1 for v in stats[1])
    # load_fewshot gives the same split
    assert torch.equal(load_fewshot("imagefolder", tmp_path, "val", 12).images, d["val"].images)


def test_rgb_default_size_is_84_and_resize(tmp_path):
    _split_layout(tmp_path, size=(20, 14))  # not square: squashed to a square
    d = load_imagefolder(tmp_path, progress=False)
    assert d["train"].images.shape == (9, 3, 84, 84)
    d = load_imagefolder(tmp_path, image_size=16, progress=False, cache_dir=False)
    assert d["val"].images.shape == (6, 3, 16, 16)
    one = tmp_path / "train" / "t_a" / "00.png"
    assert torch.equal(d["train"].images[0], torch.from_numpy(decode_images([one], "RGB", 16, progress=False)[0]))


def test_flat_grey_detected_28px_not_inverted(tmp_path):
    names = [f"c{i:02d}" for i in range(10)]
    arrays = _make_classes(tmp_path, names, per_class=2, size=(28, 28), grey=True)
    d = load_imagefolder(tmp_path, class_split=(0.6, 0.2, 0.2), progress=False)
    assert [d[s].num_classes for s in ("train", "val", "test")] == [6, 2, 2]
    assert sorted(d["train"].class_names + d["val"].class_names + d["test"].class_names) == names
    assert d["train"].images.shape == (12, 1, 28, 28)  # grey -> 1 channel, default 28 px
    name = d["test"].class_names[1]
    # used as they are: no inversion (unlike Omniglot's loader)
    assert torch.equal(d["test"].images[3, 0], torch.from_numpy(arrays[(name, 1)]))
    assert len(d["train"].stats[0]) == 1


def test_channels_override(tmp_path):
    grey = tmp_path / "grey"
    arrays = _make_classes(grey, ["a", "b", "c"], per_class=2, grey=True)
    d = load_imagefolder(grey, image_size=10, channels=3, class_split=(1 / 3, 1 / 3, 1 / 3), progress=False)
    assert d["train"].images.shape == (2, 3, 10, 10)
    x = d["train"].images[1]
    assert all(torch.equal(x[c], torch.from_numpy(arrays[(d["train"].class_names[0], 1)])) for c in range(3))
    rgb = tmp_path / "rgb"
    _make_classes(rgb, ["a", "b", "c"], per_class=2)
    d = load_imagefolder(rgb, image_size=10, channels=1, class_split=(1 / 3, 1 / 3, 1 / 3), progress=False)
    assert d["val"].images.shape == (2, 1, 10, 10)
    d = load_imagefolder(rgb, channels=1, class_split=(1 / 3, 1 / 3, 1 / 3), progress=False)
    assert d["val"].images.shape == (2, 1, 28, 28)  # the grey default size
    with pytest.raises(ValueError, match="--channels must be 1 \\(grey\\) or 3 \\(RGB\\)"):
        load_imagefolder(rgb, channels=2, class_split=(1 / 3, 1 / 3, 1 / 3))


def test_mixed_modes_are_an_error_unless_channels(tmp_path):
    _make_classes(tmp_path, ["a", "b"], per_class=2)  # RGB
    _make_classes(tmp_path, ["c"], per_class=2, grey=True)
    with pytest.raises(
        DataError,
        match=r"mixes grey and colour images: 2 grey \(e\.g\. .*c[/\\]00\.png, mode L\) and 4 colour \(e\.g\. "
        r".*[ab][/\\]00\.png, mode RGB\); pass --channels 3 .* or --channels 1",
    ):
        load_imagefolder(tmp_path, class_split=(1 / 3, 1 / 3, 1 / 3), progress=False, cache_dir=False)
    d = load_imagefolder(tmp_path, channels=3, class_split=(1 / 3, 1 / 3, 1 / 3), progress=False, cache_dir=False)
    assert {d[s].images.shape[1] for s in ("train", "val", "test")} == {3}


def test_jpeg_and_ignored_files(tmp_path):
    _make_classes(tmp_path, ["a", "b", "c"], per_class=2, ext=".jpg")
    (tmp_path / "a" / "notes.txt").write_text("not an image")  # other files are ignored
    (tmp_path / "a" / ".hidden.png").write_bytes(b"ignored")
    (tmp_path / "README.md").write_text("ignored")
    d = load_imagefolder(tmp_path, image_size=10, class_split=(1 / 3, 1 / 3, 1 / 3), progress=False)
    assert [len(d[s]) for s in ("train", "val", "test")] == [2, 2, 2]


# --- the class split -----------------------------------------------------------------------------------------------


def test_class_split_is_deterministic_and_depends_on_split_seed(tmp_path):
    names = [f"k{i:02d}" for i in range(20)]
    a = split_classes(names, (0.6, 0.2, 0.2), seed=0)
    assert a == split_classes(list(reversed(names)), (0.6, 0.2, 0.2), seed=0)  # a function of the sorted names
    assert [len(a[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    assert sorted(a["train"] + a["val"] + a["test"]) == names and all(a[s] == sorted(a[s]) for s in a)
    b = split_classes(names, (0.6, 0.2, 0.2), seed=1)
    assert b != a and [len(b[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    # largest remainders: 7 classes at 0.5/0.25/0.25 -> 3.5/1.75/1.75 -> 3/2/2 (rounded down 3/1/1, +1 +1)
    assert [len(v) for v in split_classes(names[:7], (0.5, 0.25, 0.25)).values()] == [3, 2, 2]
    # the loader uses it, and so does load_splits with split_seed; the training seed plays no part
    _make_classes(tmp_path, names, per_class=2)
    assert imagefolder_classes(tmp_path, (0.6, 0.2, 0.2), 1) == b
    s0 = load_splits(_cfg(tmp_path, class_split=(0.6, 0.2, 0.2), seed=5, image_size=8))
    s1 = load_splits(_cfg(tmp_path, class_split=(0.6, 0.2, 0.2), split_seed=1, image_size=8))
    assert {k: v.class_names for k, v in s0.items()} == a and {k: v.class_names for k, v in s1.items()} == b


def test_class_split_errors(tmp_path):
    names = [f"k{i}" for i in range(5)]
    with pytest.raises(ValueError, match=r"--class-split 0\.6 0\.2 0\.3: give three fractions .* summing to 1"):
        split_classes(names, (0.6, 0.2, 0.3))
    with pytest.raises(ValueError, match="give three fractions"):
        split_classes(names, (0.5, 0.5))
    with pytest.raises(ValueError, match="give three fractions"):
        split_classes(names, (1.2, -0.1, -0.1))
    with pytest.raises(
        ValueError, match=r"of 5 classes gives the val split\(s\) no class \(train/val/test: 4/0/1 classes\)"
    ):
        split_classes(names, (0.8, 0.05, 0.15))


# --- errors --------------------------------------------------------------------------------------------------------


def test_layout_errors(tmp_path):
    with pytest.raises(DataError, match=r"image folder '.*nope' does not exist .*expected DIR/train/<class>"):
        load_imagefolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"image folder .*empty holds no class folders; expected DIR/train/<class>"):
        load_imagefolder(tmp_path / "empty")
    flat = tmp_path / "flat"
    _make_classes(flat, ["a", "b", "c"], per_class=2)
    with pytest.raises(ValueError, match=r"is a flat layout .*: pass --class-split TRAIN VAL TEST"):
        load_imagefolder(flat)
    (flat / "a" / "00.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot decode image .*a[/\\]00\.png"):  # named while detecting the mode
        load_imagefolder(flat, class_split=(1 / 3, 1 / 3, 1 / 3), progress=False)
    with pytest.raises(DataError, match=r"cannot decode image .*a[/\\]00\.png"):  # and while decoding
        load_imagefolder(flat, channels=3, class_split=(1 / 3, 1 / 3, 1 / 3), progress=False)
    (flat / "a" / "00.png").unlink()
    (flat / "a" / "01.png").unlink()
    with pytest.raises(DataError, match=r"class folder .*flat[/\\]a holds no images \(\.png, \.jpg, \.jpeg"):
        load_imagefolder(flat, class_split=(1 / 3, 1 / 3, 1 / 3))

    split = tmp_path / "split"
    _split_layout(split)
    with pytest.raises(ValueError, match=r"--class-split applies to a flat image folder, .* drop --class-split"):
        load_imagefolder(split, class_split=(0.6, 0.2, 0.2))
    _make_classes(split, ["stray"], per_class=1)
    with pytest.raises(DataError, match=r"mixes both layouts: split folders \['test', 'train', 'val'\] and other "
                                        r"folders \['stray'\]"):
        load_imagefolder(split)
    (split / "stray" / "00.png").unlink()
    (split / "stray").rmdir()
    for f in (split / "val").glob("*/*.png"):
        f.unlink()
    for f in list((split / "val").iterdir()):
        f.rmdir()
    with pytest.raises(DataError, match=r"the val split of image folder .* is empty: .*val has no class folders"):
        load_imagefolder(split)
    (split / "val").rmdir()
    with pytest.raises(DataError, match=r"has \['test', 'train'\] but no val/ folder"):
        load_imagefolder(split)


def test_too_few_images_or_classes_name_the_folder(tmp_path):
    _split_layout(tmp_path, per_class=3)
    (tmp_path / "test" / "x_b" / "02.png").unlink()
    # test episodes: 1 shot + 2 queries = 3 images per class; x_b has 2
    with pytest.raises(DataError, match=r"class folder .*test[/\\]x_b has 2 images, but each class of a test episode "
                                        r"needs shots \+ queries = 3; add images, lower --shots/--queries"):
        load_splits(_cfg(tmp_path, queries=1, test_queries=2))
    # nothing was decoded before the check
    assert not list((tmp_path / CACHE_FOLDER).glob("*.npz"))
    with pytest.raises(DataError, match=r"class folder .*train[/\\]t_a has 3 images, but each class of a train "
                                        r"episode needs shots \+ queries = 4 \(and 2 more class folders"):
        load_splits(_cfg(tmp_path, queries=3, test_queries=1))
    with pytest.raises(DataError, match=r"the val split of image folder .* has 2 class folders, but its episodes "
                                        r"need 3 classes; lower --ways \(--test-ways for val and test episodes\)"):
        load_splits(_cfg(tmp_path, ways=3, test_ways=3, image_size=8))
    with pytest.raises(DataError, match=r"the train split .* has 3 class folders, but its episodes need 4 classes; "
                                        r".* \(--class-rotations makes 4 training classes of each folder\)"):
        load_splits(_cfg(tmp_path, ways=4, test_ways=2, image_size=8))
    assert not list((tmp_path / CACHE_FOLDER).glob("*.npz"))  # checked before decoding
    with pytest.raises(DataError, match=r"the train split .* has 3 class folders, but its episodes need 4 classes"):
        load_splits(_cfg(tmp_path, ways=13, test_ways=2, image_size=8, class_rotations=True))
    assert load_splits(_cfg(tmp_path, ways=4, test_ways=2, image_size=8, class_rotations=True))["train"].num_classes \
        == 12


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="--class-split applies only to --dataset imagefolder"):
        load_splits(FewShotConfig(dataset="omniglot", data_root=str(tmp_path), class_split=(0.6, 0.2, 0.2)))
    with pytest.raises(ValueError, match="--channels applies only to --dataset imagefolder"):
        load_splits(FewShotConfig(dataset="cifar-fs", data_root=str(tmp_path), channels=3))
    with pytest.raises(ValueError, match="--download does not apply to --dataset imagefolder"):
        load_splits(_cfg(tmp_path, download=True))
    with pytest.raises(ValueError, match="imagefolder has no fixed statistics; pass stats="):
        to_float(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "imagefolder")


# --- cache ---------------------------------------------------------------------------------------------------------


def test_second_load_uses_the_cache(tmp_path, monkeypatch):
    _split_layout(tmp_path, grey=True)
    d = load_imagefolder(tmp_path, progress=False)
    assert len(list((tmp_path / CACHE_FOLDER).glob("fewshot-*-c0-s0.npz"))) == 3

    def boom(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(ed, "decode_images", boom)
    monkeypatch.setattr(ed, "_detect_mode", boom)  # a hit reads no image header either
    d2 = load_imagefolder(tmp_path, progress=False)
    for s in ("train", "val", "test"):
        assert torch.equal(d2[s].images, d[s].images) and torch.equal(d2[s].labels, d[s].labels)
        assert d2[s].class_names == d[s].class_names and d2[s].stats == d[s].stats
    # other settings, or other files, are other keys: they decode (here: fail)
    with pytest.raises(AssertionError, match="decoded again"):
        load_imagefolder(tmp_path, image_size=14, progress=False)
    _make_classes(tmp_path / "train", ["t_d"], per_class=3, grey=True, seed=7)
    with pytest.raises(AssertionError, match="decoded again"):
        load_imagefolder(tmp_path, progress=False)
    monkeypatch.undo()
    cache = tmp_path / "elsewhere"
    d3 = load_imagefolder(tmp_path, progress=False, cache_dir=cache)
    assert d3["train"].num_classes == 4 and len(list(cache.glob("*.npz"))) == 3


# --- stats ---------------------------------------------------------------------------------------------------------


def test_image_stats_and_dataset_stats(tmp_path):
    x = torch.tensor([0, 255, 255, 0], dtype=torch.uint8).view(1, 1, 2, 2).repeat(3, 2, 1, 1)
    x[:, 1] = 51  # a constant channel: std 1, so normalising it does not divide by 0
    mean, std = image_stats(x)
    assert mean == pytest.approx((0.5, 0.2)) and std == pytest.approx((0.5, 1.0))
    big = torch.randint(0, 256, (50, 3, 5, 5), dtype=torch.uint8)
    f = big.double() / 255
    m, s = image_stats(big, chunk=7)
    assert m == pytest.approx(f.mean((0, 2, 3)).tolist())
    assert s == pytest.approx(f.std((0, 2, 3), unbiased=False).tolist())
    with pytest.raises(ValueError, match="expected a non-empty uint8 tensor"):
        image_stats(torch.zeros(0, 1, 2, 2, dtype=torch.uint8))
    d = FewShotData(big, torch.zeros(50, dtype=torch.int64), ["a"])
    assert dataset_stats(FewShotConfig(dataset="cifar-fs"), d) == DATASET_STATS["cifar-fs"]
    assert dataset_stats(FewShotConfig(dataset="imagefolder"), d) == (m, s)
    d.stats = ((0.1, 0.2, 0.3), (1.0, 1.0, 1.0))
    assert dataset_stats(FewShotConfig(dataset="imagefolder"), d) == d.stats
    y = to_float(big[:2], "imagefolder", d.stats)
    assert torch.allclose(y[:, 1], big[:2, 1].float() / 255 - 0.2)


# --- class rotations -----------------------------------------------------------------------------------------------


def test_rotate_classes():
    imgs = torch.randint(0, 256, (6, 1, 5, 5), dtype=torch.uint8)
    data = FewShotData(imgs, torch.tensor([0, 0, 1, 1, 2, 2]), ["a", "b", "c"], ((0.3,), (0.2,)))
    r = rotate_classes(data)
    assert r.num_classes == 12 and len(r) == 24 and r.stats == data.stats
    assert r.class_names[:4] == ["a", "b", "c", "a/rot90"] and r.class_names[-1] == "c/rot270"
    assert r.labels.tolist() == [c for c in range(12) for _ in range(2)]  # class-major, 2 images per class
    assert (torch.bincount(r.labels) == 2).all()
    for k in range(4):
        block = r.images[6 * k : 6 * (k + 1)]
        assert torch.equal(block, torch.rot90(imgs, k, dims=(2, 3)))
        assert torch.equal(r.labels[6 * k : 6 * (k + 1)], data.labels + 3 * k)
    assert torch.equal(r.images[r.labels == 4][1], torch.rot90(imgs[3], 1, dims=(1, 2)))  # "b/rot90"
    assert torch.equal(data.images, imgs) and data.num_classes == 3  # the input is untouched
    with pytest.raises(ValueError, match=r"the images are 5x4; class rotations need square images"):
        rotate_classes(FewShotData(imgs[..., :4], data.labels, data.class_names))


def test_class_rotations_in_load_splits(tmp_path):
    _split_layout(tmp_path, per_class=2)
    plain = load_splits(_cfg(tmp_path, image_size=8))
    rot = load_splits(_cfg(tmp_path, image_size=8, class_rotations=True))
    assert rot["train"].num_classes == 12 and len(rot["train"]) == 4 * len(plain["train"])
    assert torch.equal(rot["train"].images[: len(plain["train"])], plain["train"].images)
    for s in ("val", "test"):  # unchanged
        assert torch.equal(rot[s].images, plain[s].images) and rot[s].class_names == plain[s].class_names
    assert rot["train"].stats == plain["train"].stats


# --- end to end ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_run_on_an_image_folder(tmp_path):
    import yaml

    from episodes.train import run

    _make_classes(tmp_path / "data", [f"k{i:02d}" for i in range(12)], per_class=3, size=(16, 16))
    out = tmp_path / "out"
    m = run(FewShotConfig(dataset="imagefolder", data_root=str(tmp_path / "data"), class_split=(0.5, 0.25, 0.25),
                          image_size=16, ways=3, shots=1, queries=2, train_episodes=2, val_every=2, val_episodes=2,
                          test_episodes=2, wandb="disabled", num_threads=1, out=str(out)))
    assert 0.0 <= m["test/acc"] <= 1.0 and math.isfinite(m["test/acc"])
    assert len(m["test/per_class_acc"]) == 3
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["class_split"] == [0.5, 0.25, 0.25] and cfg["split_seed"] == 0 and cfg["dataset"] == "imagefolder"
    # the test classes named in the metrics are the split's
    assert sorted(m["test/per_class_acc"]) == imagefolder_classes(tmp_path / "data", (0.5, 0.25, 0.25))["test"]
    json.dumps(m)  # plain values


# --- real Omniglot -------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.realdata
def test_real_omniglot_as_a_flat_image_folder(omniglot_root, tmp_path):
    base = omniglot_root / "omniglot-py" / "images_background"
    chars = sorted(base.glob("*/character*"))[:: 7][:30]
    assert len(chars) == 30
    root = tmp_path / "omni"
    root.mkdir()
    for c in chars:
        (root / f"{c.parent.name}_{c.name}").symlink_to(c, target_is_directory=True)
    d = load_imagefolder(root, class_split=(0.6, 0.2, 0.2), progress=False)
    assert [d[s].num_classes for s in ("train", "val", "test")] == [18, 6, 6]
    assert d["train"].images.shape == (18 * 20, 1, 28, 28)  # grey detected, 28 px by default
    # not inverted: the files' white background stays bright (Omniglot's own loader stores the ink bright instead)
    assert d["train"].stats[0][0] > 0.8
    name = d["val"].class_names[0]
    files = sorted((root / name).glob("*.png"))
    assert torch.equal(d["val"].images[:20], torch.from_numpy(decode_images(files, "L", 28, progress=False)))


@pytest.mark.slow
@pytest.mark.realdata
def test_real_omniglot_vinyals_rotations_give_4112_classes(omniglot_root):
    train = load_fewshot("omniglot", omniglot_root, "train")
    r = rotate_classes(train)
    assert train.num_classes == 1028 and r.num_classes == 4112 and len(r) == 4112 * 20
    assert (torch.bincount(r.labels) == 20).all()
    assert torch.equal(r.images[r.labels == 1028 + 5], torch.rot90(train.images[train.labels == 5], 1, dims=(2, 3)))
