"""Loaders of mini-ImageNet, CIFAR-FS and FC100 on small files written in exactly the real formats.

No CIFAR-100 or mini-ImageNet images are available offline, so the fixtures write the real layouts:
``cifar-100-python/{train,test,meta}`` (bytes keys, ``data`` uint8 ``(N, 3072)`` as R, G, B planes) with the real
class names and fine-to-coarse labels, ``mini-imagenet-cache-{split}.pkl`` (learn2learn's cache) and
``images/*.jpg`` with Ravi & Larochelle's ``{split}.csv``.
"""

import collections
import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from episodes.data import (
    FC100_SUPERCLASSES,
    cifar_fs_split,
    load_cifar_fs,
    load_fc100,
    load_fewshot,
    load_mini_imagenet,
)
from fewshot_sla.utils import DataError
from tests.core.test_io import evil_pickle

# CIFAR-100's meta file: fine names (alphabetical, as in the file), superclass names, and each fine class's superclass.
FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle "
    "caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant "
    "flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man "
    "maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree "
    "plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train "
    "trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
COARSE = (
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices "
    "household_furniture insects large_carnivores large_man-made_outdoor_things large_natural_outdoor_scenes "
    "large_omnivores_and_herbivores medium_mammals non-insect_invertebrates people reptiles small_mammals trees "
    "vehicles_1 vehicles_2"
).split()
FINE_TO_COARSE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]  # fmt: skip
N_TRAIN, N_TEST = 3, 1  # images per class in the fake CIFAR-100 (the real one: 500 and 100)
PIXEL = (5, 7, (11, 22, 33))  # y, x and the RGB value written into one image


def _write_pickle(obj, path: Path, protocol: int) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    """A fake ``cifar-100-python/``: N_TRAIN + N_TEST images per class, classes interleaved as in the real files."""
    root = tmp_path_factory.mktemp("cifar")
    base = root / "cifar-100-python"
    base.mkdir()
    rng = np.random.default_rng(0)
    out = {}
    for part, per_class in (("train", N_TRAIN), ("test", N_TEST)):
        fine = rng.permutation(np.repeat(np.arange(100), per_class))
        data = rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)
        if part == "train":  # a known pixel in the first image of "apple" (class 0): R, G, B planes, row-major
            y, x, rgb = PIXEL
            data[np.flatnonzero(fine == 0)[0], [c * 1024 + y * 32 + x for c in range(3)]] = rgb
        d = {
            b"filenames": [f"img_{i}.png".encode() for i in range(len(fine))],
            b"batch_label": f"{part}ing batch 1 of 1".encode(),
            b"fine_labels": fine.tolist(),
            b"coarse_labels": [FINE_TO_COARSE[f] for f in fine],
            b"data": data,
        }
        _write_pickle(d, base / part, protocol=2)  # Python 2's cPickle wrote the real files, protocol 2
        out[part] = (data, fine)
    meta = {b"fine_label_names": [n.encode() for n in FINE], b"coarse_label_names": [n.encode() for n in COARSE]}
    _write_pickle(meta, base / "meta", protocol=2)
    return root, out


def _check_layout(d, num_classes: int, per_class: int, size: int) -> None:
    assert d.images.dtype == torch.uint8 and d.images.shape == (num_classes * per_class, 3, size, size)
    assert d.labels.dtype == torch.int64 and d.num_classes == num_classes == len(set(d.class_names))
    assert d.labels.tolist() == np.repeat(np.arange(num_classes), per_class).tolist()  # contiguous, class-major


# --- CIFAR-FS and FC100 ---------------------------------------------------------------------------------------------


def test_cifar_fs_split_data():
    splits = {s: cifar_fs_split(s) for s in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [64, 16, 20]
    assert sorted(sum(splits.values(), [])) == FINE  # disjoint and covering CIFAR-100
    # Bertinetto et al.'s split (r2d2's data/cifar-fs/splits/bertinetto/{val,test}.txt)
    assert splits["val"] == sorted(
        "beaver beetle butterfly camel cattle crab crocodile flatfish lamp maple_tree motorcycle otter sea shark "
        "television tractor".split()
    )
    assert splits["test"] == sorted(
        "baby bed bicycle chimpanzee fox leopard man pickup_truck plain poppy rocket rose snail sweet_pepper table "
        "telephone wardrobe whale woman worm".split()
    )


def test_cifar_fs_loads_pooled_classes(cifar_root):
    root, raw = cifar_root
    per_class = N_TRAIN + N_TEST
    names = []
    for split, n in (("train", 64), ("val", 16), ("test", 20)):
        d = load_cifar_fs(root, split)
        _check_layout(d, n, per_class, 32)
        assert d.class_names == cifar_fs_split(split)
        names += d.class_names
        # a class's images: its train images in file order, then its test images, losslessly
        c = 3 if split == "train" else 1
        f = FINE.index(d.class_names[c])
        expected = np.concatenate([raw[p][0][raw[p][1] == f] for p in ("train", "test")]).reshape(-1, 3, 32, 32)
        assert torch.equal(d.images[c * per_class : (c + 1) * per_class], torch.from_numpy(expected))
    assert sorted(names) == FINE
    apple = load_cifar_fs(root, "train").images[0]  # "apple" is the first train class; its first image
    y, x, rgb = PIXEL
    assert apple[:, y, x].tolist() == list(rgb)  # CHW: R, G, B in channels 0, 1, 2


def test_fc100_splits_by_superclass(cifar_root):
    root, _ = cifar_root
    # Oreshkin et al.'s superclasses, by name (as torchmeta's fc100 assets list them)
    assert {s: sorted(COARSE[i] for i in v) for s, v in FC100_SUPERCLASSES.items()} == {
        "train": sorted(
            "fish flowers food_containers fruit_and_vegetables household_electrical_devices household_furniture "
            "large_man-made_outdoor_things large_natural_outdoor_scenes reptiles trees vehicles_1 vehicles_2".split()
        ),
        "val": ["large_carnivores", "large_omnivores_and_herbivores", "non-insect_invertebrates", "small_mammals"],
        "test": ["aquatic_mammals", "insects", "medium_mammals", "people"],
    }
    names = []
    for split, n in (("train", 60), ("val", 20), ("test", 20)):
        d = load_fc100(root, split)
        _check_layout(d, n, N_TRAIN + N_TEST, 32)
        assert {FINE_TO_COARSE[FINE.index(c)] for c in d.class_names} == set(FC100_SUPERCLASSES[split])
        assert d.class_names == sorted(d.class_names)
        names += d.class_names
    assert sorted(names) == FINE


def test_cifar_resize_and_dispatch(cifar_root):
    root, _ = cifar_root
    d = load_fewshot("fc100", root, "val", image_size=16)
    assert d.images.shape == (20 * (N_TRAIN + N_TEST), 3, 16, 16) and d.images.dtype == torch.uint8
    same = load_fewshot("cifar-fs", root / "cifar-100-python", "test")  # the folder itself also works
    assert torch.equal(same.images, load_cifar_fs(root, "test").images)


def test_cifar_errors(cifar_root, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="cifar-100-python.*download=True"):
        load_cifar_fs(tmp_path, "train")
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    src = cifar_root[0] / "cifar-100-python"
    for f in ("test", "meta"):
        (base / f).write_bytes((src / f).read_bytes())
    (base / "train").write_bytes((src / "train").read_bytes()[:5000])  # truncated
    with pytest.raises(DataError, match=r"cifar-100-python/train .*corrupt or truncated.*download CIFAR-100 again"):
        load_fc100(tmp_path, "test")
    _write_pickle({b"data": np.zeros((4, 3072), np.float32)}, base / "train", 2)
    with pytest.raises(DataError, match=r"train: 'data' should be a uint8 array \(N, 3072\), found a float32"):
        load_fc100(tmp_path, "test")
    _write_pickle({b"data": np.zeros((4, 3072), np.uint8), b"extra": collections.Counter()}, base / "train", 2)
    with pytest.raises(DataError, match="collections.Counter"):  # only containers and arrays are unpickled
        load_fc100(tmp_path, "test")
    # download=True: an offline failure becomes a DataError; present files are not fetched again
    import torchvision

    def offline(*a, **k):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(DataError, match="downloading CIFAR-100 into .* failed \\(no network\\)"):
        load_fewshot("cifar-fs", tmp_path / "empty", "train", download=True)
    assert len(load_fewshot("cifar-fs", cifar_root[0], "val", download=True)) == 16 * (N_TRAIN + N_TEST)


@pytest.mark.parametrize("loader", [load_cifar_fs, load_fc100])
@pytest.mark.parametrize("file", ["train", "test", "meta"])
@pytest.mark.parametrize("nested", [False, True])
def test_cifar_crafted_pickle_is_refused(cifar_root, tmp_path, loader, file, nested):
    """A CIFAR-100 file whose unpickling would run ``touch MARKER`` is refused by name; the command never runs."""
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    for f in ("train", "test", "meta"):
        (base / f).write_bytes((cifar_root[0] / "cifar-100-python" / f).read_bytes())
    marker = tmp_path / "MARKER"
    (base / file).write_bytes(evil_pickle(marker, nested=nested))
    with pytest.raises(
        DataError,
        match=rf"refused to load the CIFAR-100 file .*cifar-100-python/{file}: it refers to a posix.system object, "
        r"which no data file holds.*NOT executed.*download CIFAR-100 again",
    ):
        loader(tmp_path, "train")
    assert not marker.exists()


# --- mini-ImageNet ----------------------------------------------------------------------------------------------------

SPLIT_CSVS = Path(__file__).resolve().parents[2] / "episodes" / "splits" / "mini_imagenet"


def _wnids(split: str) -> list[str]:
    with open(SPLIT_CSVS / f"{split}.csv") as f:
        return sorted({r["label"] for r in csv.DictReader(f)})


@pytest.fixture(scope="module")
def pkl_root(tmp_path_factory):
    """learn2learn's ``mini-imagenet-cache-{split}.pkl`` with the real classes, 2 images each, indices shuffled."""
    root = tmp_path_factory.mktemp("mini_pkl")
    rng = np.random.default_rng(1)
    caches = {}
    for split in ("train", "val", "test"):
        wnids = _wnids(split)
        x = rng.integers(0, 256, (2 * len(wnids), 84, 84, 3), dtype=np.uint8)
        perm = rng.permutation(len(x))
        class_dict = {w: perm[2 * i : 2 * i + 2].tolist() for i, w in enumerate(reversed(wnids))}
        if split == "train":  # a known pixel in the first image of the first class (by wnid)
            y, xx, rgb = PIXEL
            x[class_dict[wnids[0]][0], y, xx] = rgb
        caches[split] = {"image_data": x, "class_dict": class_dict}
        _write_pickle(caches[split], root / f"mini-imagenet-cache-{split}.pkl", protocol=4)
    return root, caches


def test_mini_imagenet_pkl(pkl_root):
    root, caches = pkl_root
    for split, n in (("train", 64), ("val", 16), ("test", 20)):
        d = load_fewshot("mini-imagenet", root, split)
        _check_layout(d, n, 2, 84)
        assert d.class_names == _wnids(split)
        cd = caches[split]["class_dict"]
        for c in (0, n - 1):
            for j in range(2):
                expected = caches[split]["image_data"][cd[d.class_names[c]][j]].transpose(2, 0, 1)
                assert torch.equal(d.images[2 * c + j], torch.from_numpy(np.ascontiguousarray(expected)))
    y, x, rgb = PIXEL
    assert load_mini_imagenet(root, "train").images[0, :, y, x].tolist() == list(rgb)  # CHW
    small = load_fewshot("mini-imagenet", root, "test", image_size=42)
    assert small.images.shape == (40, 3, 42, 42) and small.images.dtype == torch.uint8


def test_mini_imagenet_pkl_preferred_and_validation_name(pkl_root, tmp_path):
    root, _ = pkl_root
    (tmp_path / "images").mkdir()  # the jpg layout too, but without images: the pkl must win
    (tmp_path / "mini-imagenet-cache-validation.pkl").write_bytes((root / "mini-imagenet-cache-val.pkl").read_bytes())
    assert torch.equal(load_mini_imagenet(tmp_path, "val").images, load_mini_imagenet(root, "val").images)


def test_mini_imagenet_pkl_errors(pkl_root, tmp_path):
    good = (pkl_root[0] / "mini-imagenet-cache-test.pkl").read_bytes()
    path = tmp_path / "mini-imagenet-cache-test.pkl"
    for content, msg in (
        (good[: len(good) // 2], "corrupt or truncated"),
        (b"not a pickle at all", "corrupt or truncated"),
        (pickle.dumps({"images": np.zeros((1, 84, 84, 3), np.uint8)}), "lacks 'image_data' and 'class_dict'"),
        (pickle.dumps({"image_data": np.zeros((1, 84, 84, 3)), "class_dict": {"n1": [0]}}), "found a float64 array"),
        (pickle.dumps({"image_data": np.zeros((2, 84, 84), np.uint8), "class_dict": {"n1": [0]}}), "uint8 array"),
        (pickle.dumps({"image_data": np.zeros((1, 8, 8, 3), np.uint8), "class_dict": {"n1": [0, 5]}}), "outside"),
    ):
        path.write_bytes(content)
        with pytest.raises(DataError, match=f"mini-imagenet-cache-test.pkl.*{msg}.*download it again"):
            load_mini_imagenet(tmp_path, "test")


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("nested", [False, True])
def test_mini_imagenet_crafted_pickle_is_refused(tmp_path, protocol, nested):
    marker = tmp_path / "MARKER"
    (tmp_path / "mini-imagenet-cache-val.pkl").write_bytes(evil_pickle(marker, protocol, nested))
    with pytest.raises(
        DataError,
        match=r"refused to load the mini-ImageNet cache file .*mini-imagenet-cache-val.pkl: it refers to a "
        r"posix.system object, which no data file holds.*NOT executed.*download it again",
    ):
        load_fewshot("mini-imagenet", tmp_path, "val")
    assert not marker.exists()


def test_mini_imagenet_missing(tmp_path):
    with pytest.raises(DataError, match=r"mini-imagenet-cache-train\.pkl.*images/\*\.jpg.*train\.csv"):
        load_fewshot("mini-imagenet", tmp_path, "train")
    with pytest.raises(DataError, match=r"cannot be downloaded automatically.*MiniImagenet.*images/\*\.jpg"):
        load_fewshot("mini-imagenet", tmp_path, "val", download=True)


def _jpg_root(root: Path, classes: int = 64) -> tuple[list[str], list[tuple[str, str]]]:
    """``images/*.jpg`` for the first ``classes`` real train classes x 3 images (one 120x100, to be resized) and a
    shuffled ``train.csv``; returns the classes and the CSV's rows."""
    with open(SPLIT_CSVS / "train.csv") as f:
        rows = [(r["filename"], r["label"]) for r in csv.DictReader(f)]
    wnids = _wnids("train")[:classes]
    picked = [r for w in wnids for r in [r for r in rows if r[1] == w][:3]]
    (root / "images").mkdir()
    rng = np.random.default_rng(2)
    for i, (name, _) in enumerate(picked):
        size = (100, 120) if i == 4 else (84, 84)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / "images" / name)
    Image.fromarray(np.full((84, 84, 3), (200, 100, 50), np.uint8)).save(root / "images" / picked[0][0])
    shuffled = [picked[i] for i in rng.permutation(len(picked))]
    with open(root / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([("filename", "label"), *shuffled])
    return wnids, shuffled


def test_mini_imagenet_jpg(tmp_path):
    wnids, rows = _jpg_root(tmp_path)
    d = load_mini_imagenet(tmp_path, "train", progress=False)
    _check_layout(d, 64, 3, 84)
    assert d.class_names == wnids
    in_order = [name for w in wnids for name, label in rows if label == w]  # class-major, the CSV's order within
    for k, name in enumerate(in_order):  # each image is its file as PIL decodes it (JPEG is lossy)
        with Image.open(tmp_path / "images" / name) as im:
            im = im.convert("RGB")
            ref = np.asarray(im.resize((84, 84), Image.Resampling.BILINEAR) if im.size != (84, 84) else im)
        assert torch.equal(d.images[k], torch.from_numpy(ref.transpose(2, 0, 1).copy()))
    # the uniform (200, 100, 50) image: R, G, B in channels 0, 1, 2 (up to JPEG error)
    uniform = [img for img in d.images if (img.float().std(dim=(1, 2)) < 2).all()]
    assert len(uniform) == 1 and (uniform[0].float().mean(dim=(1, 2)) - torch.tensor([200.0, 100, 50])).abs().max() < 4
    assert load_fewshot("mini-imagenet", tmp_path, "train", image_size=32).images.shape == (192, 3, 32, 32)


def test_mini_imagenet_jpg_errors(tmp_path):
    _, picked = _jpg_root(tmp_path)  # the CSV's rows
    (tmp_path / "images" / picked[7][0]).unlink()
    with pytest.raises(DataError, match=rf"{picked[7][0]} is missing: 1 of the 192 images that .*train.csv lists"):
        load_mini_imagenet(tmp_path, "train", progress=False)
    # no val.csv in ROOT: the package's copy (9600 images) is used, and none of them is there
    with pytest.raises(DataError, match=r"n0185567200000003\.jpg is missing: 9600 of the 9600 .*splits/mini_imagenet"):
        load_mini_imagenet(tmp_path, "val", progress=False)
    (tmp_path / "images" / picked[1][0]).write_bytes(b"not a jpeg")
    (tmp_path / "images" / picked[7][0]).write_bytes(b"")
    with pytest.raises(DataError, match="cannot decode mini-ImageNet image"):
        load_mini_imagenet(tmp_path, "train", progress=False)
    (tmp_path / "train.csv").write_text("file,wnid\na.jpg,n1\n")
    with pytest.raises(DataError, match="train.csv: expected a split CSV with the header 'filename,label'"):
        load_mini_imagenet(tmp_path, "train", progress=False)


def test_mini_imagenet_with_own_class_split_is_refused(tmp_path, pkl_root):
    """A user's own 14-class train.csv over mini-ImageNet's images used to be recorded and grouped as the 64 / 16 / 20
    benchmark; it is refused, naming --dataset imagefolder."""
    _jpg_root(tmp_path, classes=14)
    with pytest.raises(DataError) as e:
        load_fewshot("mini-imagenet", tmp_path, "train")
    assert str(e.value) == (
        f"{tmp_path / 'train.csv'} gives the train split 14 classes (0 not in it), but mini-ImageNet's train split is "
        "Ravi & Larochelle's 64 classes (64 / 16 / 20), and runs on --dataset mini-imagenet are recorded and compared "
        "as that benchmark; for your own class split put the images in DIR/{train,val,test}/<class>/ and pass "
        "--dataset imagefolder --data-root DIR"
    )
    cache = pickle.loads((pkl_root[0] / "mini-imagenet-cache-test.pkl").read_bytes())
    cache["class_dict"] = dict(list(cache["class_dict"].items())[:5])  # 5 test classes
    _write_pickle(cache, tmp_path / "mini-imagenet-cache-test.pkl", protocol=4)
    with pytest.raises(DataError, match=r"mini-imagenet-cache-test.pkl gives the test split 5 classes \(0 not in it\), "
                                        r"but mini-ImageNet's test split is Ravi & Larochelle's 20 classes"):
        load_fewshot("mini-imagenet", tmp_path, "test")


def test_packaged_mini_imagenet_csvs():
    counts = {}
    for split in ("train", "val", "test"):
        with open(SPLIT_CSVS / f"{split}.csv") as f:
            rows = list(csv.DictReader(f))
        counts[split] = (len({r["label"] for r in rows}), len(rows))
        assert all(r["filename"].startswith(r["label"]) and r["filename"].endswith(".jpg") for r in rows)
    assert counts == {"train": (64, 38400), "val": (16, 9600), "test": (20, 12000)}
    assert len(set(_wnids("train")) | set(_wnids("val")) | set(_wnids("test"))) == 100


def test_packaged_mini_imagenet_csvs_match_shared_copy(shared_data):
    for split in ("train", "val", "test"):
        ours = (SPLIT_CSVS / f"{split}.csv").read_bytes()
        assert ours == (shared_data / "mini-imagenet-splits" / f"{split}.csv").read_bytes()


def test_unknown_dataset_and_split(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; choose one of omniglot, mini-imagenet"):
        load_fewshot("imagenet", tmp_path, "train")
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        load_fewshot("cifar-fs", tmp_path, "validation")


@pytest.mark.slow
@pytest.mark.realdata
def test_omniglot_is_decoded_once_then_read_from_its_cache(omniglot_root, tmp_path, monkeypatch):
    import episodes.datasets.omniglot as om

    first = om.load_omniglot(omniglot_root, "val", progress=False, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("omniglot-val-*-s28-inv.npz"))) == 1

    def boom(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(om, "decode_images", boom)
    again = om.load_omniglot(omniglot_root, "val", progress=False, cache_dir=tmp_path)
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    assert again.class_names == first.class_names
    with pytest.raises(AssertionError, match="decoded again"):  # another size is another cache
        om.load_omniglot(omniglot_root, "val", image_size=20, progress=False, cache_dir=tmp_path)
