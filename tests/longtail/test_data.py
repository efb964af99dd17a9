"""longtail.data: counts and LDAM-DRW indices (pure, no data), loaders on small files written in the
real formats, batch augmentation vs a per-image loop, and the real CIFAR-10 JPEG copy (realdata)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fewshot_sla.utils import DataError
from longtail.data import (
    CIFAR_MEAN,
    CIFAR_STD,
    LTData,
    augment_batch,
    class_counts,
    load_cifar_pickles,
    load_longtail,
    longtail_indices,
    normalize,
)

# ---------------------------------------------------------------------------------------------
# class_counts
# ---------------------------------------------------------------------------------------------


def _ldam_counts(img_max, cls_num, imb_factor, imb_type="exp"):
    """LDAM-DRW's get_img_num_per_cls, transcribed as a plain loop (the oracle)."""
    out = []
    if imb_type == "exp":
        for i in range(cls_num):
            out.append(int(img_max * (imb_factor ** (i / (cls_num - 1.0)))))
    else:
        out = [int(img_max)] * (cls_num // 2) + [int(img_max * imb_factor)] * (cls_num // 2)
    return out


def test_cifar10_counts_ratio_100():
    c = class_counts(5000, 10, 100)
    assert c == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(c) == 12406


@pytest.mark.parametrize(
    "n_max, n_cls, ratio, total",
    # Published dataset sizes of the LDAM-DRW subsets (CIFAR-10-LT / CIFAR-100-LT).
    [
        (5000, 10, 100, 12406),
        (5000, 10, 50, 13996),
        (5000, 10, 10, 20431),
        (500, 100, 100, 10847),
        (500, 100, 50, 12608),
        (500, 100, 10, 19573),
    ],
)
def test_counts_match_ldam_and_published_sizes(n_max, n_cls, ratio, total):
    c = class_counts(n_max, n_cls, ratio)
    assert c == _ldam_counts(n_max, n_cls, 1.0 / ratio)
    assert sum(c) == total
    assert c[0] == n_max and c[-1] == n_max // ratio
    assert all(a >= b for a, b in zip(c, c[1:]))


def test_step_profile_and_balanced():
    assert class_counts(5000, 10, 100, "step") == [5000] * 5 + [50] * 5
    assert class_counts(5000, 10, 100, "step") == _ldam_counts(5000, 10, 0.01, "step")
    assert class_counts(500, 100, 10, "step") == [500] * 50 + [50] * 50
    assert class_counts(7, 3, 1) == [7, 7, 7]
    assert class_counts(7, 1, 5) == [7]


def test_counts_errors():
    with pytest.raises(ValueError, match="imbalance_ratio must be >= 1"):
        class_counts(5000, 10, 0.01)
    with pytest.raises(ValueError, match=r"leaves class\(es\) \[8, 9\] with 0 images; use a ratio <= 50"):
        class_counts(50, 10, 100)
    with pytest.raises(ValueError, match=r"unknown imbalance profile 'linear'; choose one of \['exp', 'step'\]"):
        class_counts(5000, 10, 100, "linear")
    with pytest.raises(ValueError, match="with 0 images"):
        class_counts(10, 4, 20, "step")


# ---------------------------------------------------------------------------------------------
# longtail_indices vs LDAM-DRW's procedure
# ---------------------------------------------------------------------------------------------


def _ldam_gen_imbalanced(targets, img_num_per_cls, rand_number):
    """LDAM-DRW's IMBALANCECIFAR10.__init__ + gen_imbalanced_data, transcribed with the global seed."""
    state = np.random.get_state()
    try:
        np.random.seed(rand_number)
        targets_np = np.array(targets, dtype=np.int64)
        chosen = []
        for the_class, the_img_num in zip(np.unique(targets_np), img_num_per_cls):
            idx = np.where(targets_np == the_class)[0]
            np.random.shuffle(idx)
            chosen.append(idx[:the_img_num])
        return np.concatenate(chosen)
    finally:
        np.random.set_state(state)


def _cifar_like_targets(n_cls, per_class, seed=123):
    return np.random.RandomState(seed).permutation(np.repeat(np.arange(n_cls), per_class))


@pytest.mark.parametrize(
    "n_cls, per_class, ratio, seed", [(10, 5000, 100, 0), (10, 5000, 10, 0), (100, 500, 100, 0), (10, 5000, 100, 3)]
)
def test_indices_equal_ldam_drw(n_cls, per_class, ratio, seed):
    t = _cifar_like_targets(n_cls, per_class)
    ref = _ldam_gen_imbalanced(t, _ldam_counts(len(t) // n_cls, n_cls, 1.0 / ratio), seed)
    before = np.random.get_state()[1].copy()
    idx = longtail_indices(t, ratio, seed=seed)
    assert np.array_equal(np.random.get_state()[1], before), "must not touch the global NumPy RNG"
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref)
    assert np.bincount(t[idx]).tolist() == class_counts(per_class, n_cls, ratio)
    assert len(np.unique(idx)) == len(idx)


def test_indices_step_and_torch_input():
    t = _cifar_like_targets(4, 30)
    ref = _ldam_gen_imbalanced(t, _ldam_counts(30, 4, 0.1, "step"), 0)
    np.testing.assert_array_equal(longtail_indices(torch.from_numpy(t), 10, "step"), ref)
    assert not np.array_equal(longtail_indices(t, 10, seed=1), longtail_indices(t, 10, seed=0))


def test_indices_errors():
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] have no image"):
        longtail_indices(np.array([0, 0, 2, 2]), 1)
    with pytest.raises(ValueError, match="integer class indices"):
        longtail_indices(np.array([0.0, 1.0]), 1)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        longtail_indices(np.zeros((2, 2), dtype=int), 1)


# ---------------------------------------------------------------------------------------------
# Loaders on small files in the real formats
# ---------------------------------------------------------------------------------------------


def _write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _fake_cifar(root, dataset="cifar10", per_class=20, n_test=4, seed=0):
    """Tiny torchvision-format CIFAR: returns (train_x (N,3,32,32), train_y, test_x, test_y, names)."""
    rng = np.random.RandomState(seed)
    n_cls = 10 if dataset == "cifar10" else 100
    names = [f"class{c:03d}" for c in range(n_cls)]
    ty = rng.permutation(np.repeat(np.arange(n_cls), per_class))
    tx = rng.randint(0, 256, (len(ty), 3, 32, 32)).astype(np.uint8)
    vy = np.repeat(np.arange(n_cls), n_test)
    vx = rng.randint(0, 256, (len(vy), 3, 32, 32)).astype(np.uint8)
    if dataset == "cifar10":
        base = root / "cifar-10-batches-py"
        base.mkdir(parents=True)
        for i, part in enumerate(np.array_split(np.arange(len(ty)), 5)):
            _write_pickle(
                base / f"data_batch_{i + 1}",
                {"data": tx[part].reshape(len(part), -1), "labels": ty[part].tolist(), "batch_label": "x"},
            )
        _write_pickle(base / "test_batch", {"data": vx.reshape(len(vx), -1), "labels": vy.tolist()})
        _write_pickle(base / "batches.meta", {"label_names": names, "num_cases_per_batch": 10000})
    else:
        base = root / "cifar-100-python"
        base.mkdir(parents=True)
        _write_pickle(
            base / "train",
            {"data": tx.reshape(len(tx), -1), "fine_labels": ty.tolist(), "coarse_labels": (ty // 5).tolist()},
        )
        _write_pickle(
            base / "test",
            {"data": vx.reshape(len(vx), -1), "fine_labels": vy.tolist(), "coarse_labels": (vy // 5).tolist()},
        )
        _write_pickle(base / "meta", {"fine_label_names": names, "coarse_label_names": names[:20]})
    return tx, ty, vx, vy, names


@pytest.mark.parametrize("dataset, ratio", [("cifar10", 10), ("cifar100", 4)])
def test_load_cifar_pickles(tmp_path, dataset, ratio):
    tx, ty, vx, vy, names = _fake_cifar(tmp_path, dataset)
    d = load_longtail(dataset, tmp_path, imbalance_ratio=ratio, seed=0)
    assert isinstance(d, LTData) and d.num_classes == len(names) and d.class_names == names
    idx = longtail_indices(ty, ratio, seed=0)
    assert d.train_images.dtype == torch.uint8 and d.train_labels.dtype == torch.int64
    assert torch.equal(d.train_images, torch.from_numpy(tx[idx]))
    assert torch.equal(d.train_labels, torch.from_numpy(ty[idx]))
    assert torch.equal(d.test_images, torch.from_numpy(vx)) and torch.equal(d.test_labels, torch.from_numpy(vy))
    assert d.counts == class_counts(20, len(names), ratio)


def test_cifar_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_longtail("cifar10", tmp_path / "nope")
    with pytest.raises(DataError, match=r"not a cifar10 layout: expected .*cifar-10-batches-py/\{data_batch_1"):
        load_longtail("cifar10", tmp_path)
    _fake_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x02}q\x00(X")  # truncated
    with pytest.raises(DataError, match="CIFAR-10 file .*data_batch_3 .*corrupt or truncated.*download CIFAR-10 again"):
        load_longtail("cifar10", tmp_path)
    with pytest.raises(
        ValueError, match=r"unknown dataset 'svhn'; choose one of \['cifar10', 'cifar100', 'imagefolder'\]"
    ):
        load_longtail("svhn", tmp_path)
    with pytest.raises(ValueError, match=r"unknown CIFAR dataset 'svhn'"):
        load_cifar_pickles("svhn", tmp_path)


class _Evil:
    """Unpickling it would run ``touch MARKER``: a crafted CIFAR file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "dataset, file",
    [
        ("cifar10", "data_batch_1"),
        ("cifar10", "data_batch_4"),
        ("cifar10", "test_batch"),
        ("cifar10", "batches.meta"),
        ("cifar100", "train"),
        ("cifar100", "test"),
        ("cifar100", "meta"),
    ],
)
@pytest.mark.parametrize("loader", ["load_cifar_pickles", "load_longtail"])
@pytest.mark.parametrize("nested", [False, True])
def test_crafted_cifar_pickle_is_refused(tmp_path, dataset, file, loader, nested):
    """A pickle whose loading would run a shell command is refused by name, and the command never runs."""
    _fake_cifar(tmp_path, dataset)
    folder = "cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python"
    marker = tmp_path / "MARKER"
    evil = _Evil(marker)
    _write_pickle(tmp_path / folder / file, {"data": np.zeros((1, 3072), np.uint8), "labels": evil} if nested else evil)
    with pytest.raises(
        DataError,
        match=rf"refused to load the CIFAR-1\d+ file .*{folder}/{file}: it refers to a posix.system object, which no "
        r"data file holds.*NOT executed",
    ):
        if loader == "load_cifar_pickles":
            load_cifar_pickles(dataset, tmp_path)
        else:
            load_longtail(dataset, tmp_path, imbalance_ratio=2)
    assert not marker.exists()


def _fake_imagefolder(root, classes=("b_cat", "a_dog", "c_emu"), per_class=6, n_test=2, ext=".png", size=8):
    from PIL import Image

    rng = np.random.RandomState(0)
    arrays = {}
    for split, n in (("train", per_class), ("test", n_test)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in reversed(range(n)):  # written out of order: the loader must sort by name
                a = rng.randint(0, 256, (size, size, 3)).astype(np.uint8)
                Image.fromarray(a).save(root / split / c / f"{i:04d}{ext}")
                arrays[(split, c, i)] = a
    return arrays


def test_imagefolder_png_exact_and_cache(tmp_path, monkeypatch):
    arrays = _fake_imagefolder(tmp_path / "data")
    cache = tmp_path / "cache"
    d = load_longtail("imagefolder", tmp_path / "data", imbalance_ratio=3, cache_dir=cache, progress=False)
    assert d.class_names == ["a_dog", "b_cat", "c_emu"]  # sorted, as ImageFolder
    assert d.counts == [6, 3, 2]
    # Same selection as LDAM-DRW over the file order (class-major, files sorted by name).
    idx = longtail_indices(np.repeat(np.arange(3), 6), 3)
    for k, i in enumerate(idx):
        c, n = divmod(int(i), 6)
        expect = torch.from_numpy(arrays[("train", d.class_names[c], n)]).permute(2, 0, 1)
        assert torch.equal(d.train_images[k], expect)
        assert int(d.train_labels[k]) == c
    assert torch.equal(d.test_images[3], torch.from_numpy(arrays[("test", "b_cat", 1)]).permute(2, 0, 1))
    assert d.test_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert len(list(cache.glob("*.npz"))) == 2

    import longtail.data as ld

    def boom(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(ld, "decode_images", boom)
    d2 = load_longtail("imagefolder", tmp_path / "data", imbalance_ratio=3, cache_dir=cache, progress=False)
    assert torch.equal(d2.train_images, d.train_images) and torch.equal(d2.test_images, d.test_images)


def test_imagefolder_default_cache_and_jpeg(tmp_path):
    _fake_imagefolder(tmp_path, ext=".jpg", size=32)
    d = load_longtail("imagefolder", tmp_path, imbalance_ratio=1, progress=False)
    assert d.train_images.shape == (18, 3, 32, 32) and d.test_images.shape == (6, 3, 32, 32)
    assert len(list((tmp_path / ".fewshot_sla_cache").glob("*.npz"))) == 2
    d0 = load_longtail("imagefolder", tmp_path, imbalance_ratio=1, progress=False, cache_dir=False)
    assert torch.equal(d0.train_images, d.train_images)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_longtail("imagefolder", tmp_path / "nope")
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(
        DataError, match=r"not an ImageFolder layout: expected .*train/<class>/\*.jpg.*missing folder\(s\) \['test'\]"
    ):
        load_longtail("imagefolder", tmp_path)
    root = tmp_path / "x"
    _fake_imagefolder(root, classes=("cat", "dog"))
    (root / "test" / "dog").rename(root / "test" / "emu")
    with pytest.raises(
        DataError, match=r"train and test class folders .* differ \(only in train: \['dog'\], only in test: \['emu'\]\)"
    ):
        load_longtail("imagefolder", root, cache_dir=False, progress=False)
    (root / "test" / "emu").rename(root / "test" / "dog")
    (root / "train" / "cat" / "0002.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot decode image .*0002.png"):
        load_longtail("imagefolder", root, cache_dir=False, progress=False)
    from PIL import Image

    Image.fromarray(np.zeros((9, 9, 3), dtype=np.uint8)).save(root / "train" / "cat" / "0002.png")
    with pytest.raises(DataError, match=r"images of different sizes: .* is \(8, 8\) but .*0002.png is \(9, 9\)"):
        load_longtail("imagefolder", root, cache_dir=False, progress=False)


def test_imagefolder_with_one_class_is_refused(tmp_path):
    """One class used to train and report 100% accuracy (with sklearn warnings and nan where null is promised)."""
    _fake_imagefolder(tmp_path, classes=("cat",))
    with pytest.raises(DataError) as e:
        load_longtail("imagefolder", tmp_path, cache_dir=False, progress=False)
    assert str(e.value) == (
        f"{tmp_path / 'train'} has 1 class folder ('cat') but a classifier needs at least 2 classes; add a folder "
        f"per class under {tmp_path}/train/ and {tmp_path}/test/"
    )


@pytest.mark.parametrize("dataset, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_cifar_on_an_imagefolder_tree_names_imagefolder(tmp_path, dataset, folder):
    _fake_imagefolder(tmp_path, classes=("cat", "dog"))
    with pytest.raises(DataError) as e:
        load_longtail(dataset, tmp_path, download=True)  # not even a download: the folder is the user's images
    assert str(e.value) == (
        f"{tmp_path} holds train/ and test/ folders, an image-folder tree, not {dataset}'s python pickles "
        f"({folder}/); for images in {tmp_path}/{{train,test}}/<class>/ pass --dataset imagefolder"
    )


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------


def _reference_augment(x, seed, pad=4):
    """Per-image loop with the same draws: pad, slice the crop, flip, ToTensor, Normalize."""
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    flip = torch.rand(b, generator=g) < 0.5
    mean = torch.tensor(CIFAR_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(3, 1, 1)
    out = []
    for i in range(b):
        img = F.pad(x[i].float() / 255.0, (pad, pad, pad, pad))  # zero fill, as RandomCrop(padding=4)
        img = img[:, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        if flip[i]:
            img = img.flip(-1)
        out.append((img - mean) / std)
    return torch.stack(out), dy, dx, flip


def test_augment_matches_loop_and_is_deterministic():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = augment_batch(x, torch.Generator().manual_seed(7))
    ref, dy, dx, flip = _reference_augment(x, 7)
    assert out.shape == (64, 3, 32, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    assert torch.equal(out, augment_batch(x, torch.Generator().manual_seed(7)))
    assert not torch.equal(out, augment_batch(x, torch.Generator().manual_seed(8)))
    # The draws vary: both flips, several offsets, and an unpadded centre crop stays exact.
    assert flip.any() and (~flip).any() and len(set(dy.tolist())) > 3
    centre = ((dy == 4) & (dx == 4) & ~flip).nonzero()
    for i in centre.flatten().tolist():
        torch.testing.assert_close(out[i], normalize(x[i : i + 1])[0])


def test_augment_non_square_and_padding_values():
    x = torch.full((5, 3, 8, 12), 255, dtype=torch.uint8)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    ref, *_ = _reference_augment(x, 0)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    zero = ((0 - torch.tensor(CIFAR_MEAN)) / torch.tensor(CIFAR_STD)).view(1, 3, 1, 1)
    padded = torch.isclose(out, zero.expand_as(out), atol=1e-5)
    assert padded.any()  # the zero padding shows up as (0 - mean) / std


def test_normalize_values_and_errors():
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2).contiguous()
    y = normalize(x)
    for c, v in enumerate((0, 128, 255)):
        assert torch.allclose(y[:, c], torch.tensor((v / 255 - CIFAR_MEAN[c]) / CIFAR_STD[c]))
    with pytest.raises(ValueError, match=r"expected a uint8 tensor \(B, 3, H, W\).*torch.float32"):
        augment_batch(x.float(), torch.Generator())
    with pytest.raises(ValueError, match="uint8 tensor"):
        normalize(x[0])
    with pytest.raises(TypeError, match="torch.Generator"):
        augment_batch(x, 0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.slow
def test_real_cifar10_jpeg_longtail(cifar10_imagefolder):
    d = load_longtail("imagefolder", cifar10_imagefolder, imbalance_ratio=100, progress=False)
    assert d.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert d.counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert d.train_images.shape == (12406, 3, 32, 32) and len(d.train_labels) == 12406
    assert torch.bincount(d.train_labels).tolist() == d.counts
    assert d.test_images.shape == (10000, 3, 32, 32)
    assert torch.bincount(d.test_labels).tolist() == [1000] * 10
    # The subset is LDAM-DRW's: class-major, within-class order = the files' (CIFAR's) order.
    ref = _ldam_gen_imbalanced(np.repeat(np.arange(10), 5000), class_counts(5000, 10, 100), 0)
    assert torch.equal(d.train_labels, torch.from_numpy(np.repeat(np.arange(10), 5000)[ref]))
    from torchvision.io import ImageReadMode, decode_image, read_file

    for k in (0, 4999, 5000, 12405):  # the k-th image is file NNNN.jpg with NNNN = LDAM-DRW's index in its class
        c, n = divmod(int(ref[k]), 5000)
        path = cifar10_imagefolder / "train" / d.class_names[c] / f"{n:04d}.jpg"
        assert torch.equal(d.train_images[k], decode_image(read_file(str(path)), mode=ImageReadMode.RGB))
    assert 60 < d.train_images.float().mean() < 200  # real pixels, not zeros


def test_channel_stats_are_exact_and_cifar_keeps_its_own():
    from longtail.data import CIFAR_MEAN, CIFAR_STD, channel_stats, dataset_stats

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (37, 3, 5, 7), dtype=torch.uint8, generator=g)
    x[:, 2] = 77  # a constant channel: std 1 (normalising then only subtracts the mean), not a division by 0
    mean, std = channel_stats(x, chunk=5)  # chunks that do not divide the set
    ref = x.double() / 255
    assert mean == pytest.approx(ref.mean(dim=(0, 2, 3)).tolist(), rel=1e-12)
    assert std[:2] == pytest.approx(ref[:, :2].std(dim=(0, 2, 3), unbiased=False).tolist(), rel=1e-12)
    assert std[2] == 1.0 and mean[2] == pytest.approx(77 / 255, rel=1e-12)
    assert channel_stats(x) == channel_stats(x.flip(0))  # the order of the images does not matter, bit for bit
    assert dataset_stats("cifar10", x) == dataset_stats("cifar100", x) == (CIFAR_MEAN, CIFAR_STD)
    assert dataset_stats("imagefolder", x) == (mean, std)
    with pytest.raises(ValueError, match="channel_stats: expected a non-empty uint8 tensor"):
        channel_stats(x.float())
