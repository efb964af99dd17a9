"""fewshot_sla.io: the restricted unpickler (crafted files refused, never run), the CIFAR reader, the threaded image
decoder (grey / RGB, PNG / JPEG, resize, inversion, bad files), normalize, and weights-only checkpoints.

``evil_pickle`` is also used by tests/episodes/test_data.py (tests/longtail/test_data.py has its own, as this file
imports its CIFAR writer): both check that every loader reading pickles refuses such a file.
"""

from __future__ import annotations

import collections
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot_sla.io import (
    CifarArrays,
    decode_images,
    describe,
    load_checkpoint,
    normalize,
    read_cifar,
    safe_load_pickle,
    save_checkpoint,
    str_keys,
)
from fewshot_sla.utils import DataError
from tests.longtail.test_data import _fake_cifar  # writes torchvision's CIFAR pickles in the real format

# --------------------------------------------------------------------------------------------------------------------
# Crafted pickles
# --------------------------------------------------------------------------------------------------------------------


class _Reduce:
    """Pickles as ``func(*args)``: what a crafted data file does to run code when it is unpickled."""

    def __init__(self, func, args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def evil_pickle(marker: Path, protocol: int = 2, nested: bool = False) -> bytes:
    """A pickle whose loading would run ``os.system("touch MARKER")``; ``nested``: hidden in a CIFAR-like dict."""
    evil = _Reduce(os.system, (f"touch {marker}",))
    obj = {"data": np.zeros((2, 3072), np.uint8), "labels": evil} if nested else evil
    return pickle.dumps(obj, protocol=protocol)


def _payloads(marker: Path) -> dict[str, _Reduce]:
    return {
        "posix.system": _Reduce(os.system, (f"touch {marker}",)),
        "builtins.eval": _Reduce(eval, (f"__import__('os').system('touch {marker}')",)),
        "subprocess.Popen": _Reduce(subprocess.Popen, (["touch", str(marker)],)),
        "builtins.exec": _Reduce(exec, (f"open({str(marker)!r}, 'w')",)),
    }


FIX = "delete it and download it again"


# --------------------------------------------------------------------------------------------------------------------
# safe_load_pickle
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_safe_load_pickle_round_trips_data(tmp_path, protocol):
    obj = {
        "u8": np.arange(3072, dtype=np.uint8).reshape(1, 3072),
        "f64": np.linspace(0, 1, 7),
        "i64": np.array([[1, -2], [3, 4]], dtype=np.int64),
        "scalar": np.float32(1.5),
        "labels": [1, 2, 3],
        "names": ("a", "b"),
        b"bytes_key": b"\x00\xff",
        "set": {1, 2},
        "frozen": frozenset({"x"}),
        "buf": bytearray(b"ab"),
        "ordered": collections.OrderedDict(a=1),
        "none": None,
        "nested": {"deep": [np.ones(2, np.float32), {"k": 1.25}]},
    }
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    got = safe_load_pickle(path, "test file", FIX)
    assert got.keys() == obj.keys()
    for k, v in obj.items():
        if isinstance(v, np.ndarray):
            assert got[k].dtype == v.dtype and np.array_equal(got[k], v)
        elif k != "nested":
            assert got[k] == v and type(got[k]) is type(v)
    assert np.array_equal(got["nested"]["deep"][0], np.ones(2, np.float32)) and got["nested"]["deep"][1] == {"k": 1.25}
    assert str_keys(got)["bytes_key"] == b"\x00\xff"


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("global_name", ["posix.system", "builtins.eval", "subprocess.Popen", "builtins.exec"])
def test_safe_load_pickle_refuses_code(tmp_path, global_name, nested, protocol):
    marker = tmp_path / "MARKER"
    payload = _payloads(marker)[global_name]
    path = tmp_path / "crafted.pkl"
    path.write_bytes(pickle.dumps({"data": [1], "labels": payload} if nested else payload, protocol=protocol))
    with pytest.raises(DataError) as err:
        safe_load_pickle(path, "CIFAR-10 file", FIX)
    msg = str(err.value)
    assert str(path) in msg and f"refers to a {global_name} object, which no data file holds" in msg
    assert "NOT executed" in msg and "refused" in msg and msg.endswith(FIX)
    assert not marker.exists()


def test_safe_load_pickle_refuses_other_objects(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"c": collections.Counter("ab")}))
    with pytest.raises(DataError, match=r"refers to a collections.Counter object"):
        safe_load_pickle(path, "data file", FIX)
    # a global that cannot even be imported is refused the same way (never imported)
    path.write_bytes(b"\x80\x02cno_such_module\nboom\nq\x00.")
    with pytest.raises(DataError, match=r"refers to a no_such_module.boom object.*NOT executed"):
        safe_load_pickle(path, "data file", FIX)


def test_safe_load_pickle_corrupt_and_missing(tmp_path):
    good = pickle.dumps({"data": np.zeros((4, 3072), np.uint8)}, protocol=2)
    path = tmp_path / "batch"
    for content in (good[: len(good) // 2], b"", b"not a pickle at all"):
        path.write_bytes(content)
        with pytest.raises(DataError, match=rf"cannot read the CIFAR-10 file {path} \(.*\): it is corrupt or trunc"):
            safe_load_pickle(path, "CIFAR-10 file", FIX)
    with pytest.raises(DataError, match=rf"the CIFAR-10 file {tmp_path / 'nope'} does not exist; {FIX}"):
        safe_load_pickle(tmp_path / "nope", "CIFAR-10 file", FIX)


def test_describe():
    assert describe(np.zeros((4, 3072), np.uint8)) == "a uint8 array of shape (4, 3072)"
    assert describe([1]) == "a list" and describe(None) == "a NoneType"


# --------------------------------------------------------------------------------------------------------------------
# read_cifar
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_read_cifar(tmp_path, dataset):
    tx, ty, vx, vy, names = _fake_cifar(tmp_path, dataset, per_class=3, n_test=1)
    c = read_cifar(tmp_path, dataset)
    assert isinstance(c, CifarArrays)
    assert c.train_x.dtype == np.uint8 and c.train_x.shape == (len(ty), 3, 32, 32)
    assert np.array_equal(c.train_x, tx) and np.array_equal(c.test_x, vx)
    assert c.train_y.dtype == np.int64 and np.array_equal(c.train_y, ty) and np.array_equal(c.test_y, vy)
    assert c.class_names == names
    if dataset == "cifar100":
        assert np.array_equal(c.train_coarse, ty // 5) and np.array_equal(c.test_coarse, vy // 5)
        assert c.coarse_names == names[:20]
    else:
        assert c.train_coarse is None and c.test_coarse is None and c.coarse_names is None
    folder = "cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python"
    same = read_cifar(tmp_path / folder, dataset)  # the folder itself also works
    assert np.array_equal(same.train_x, c.train_x) and same.class_names == c.class_names


def _rewrite(path: Path, edit) -> None:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    edit(d)
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


def test_read_cifar_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown CIFAR dataset 'svhn'; choose one of \['cifar10', 'cifar100'\]"):
        read_cifar(tmp_path, "svhn")  # type: ignore[arg-type]
    with pytest.raises(
        DataError,
        match=r"is not a cifar100 layout: expected .*cifar-100-python/\{train, test, meta\}.*missing \['train', "
        r"'test', 'meta'\].*CIFAR100\(ROOT, download=True\)",
    ):
        read_cifar(tmp_path, "cifar100")
    _fake_cifar(tmp_path, "cifar100", per_class=2, n_test=1)
    base = tmp_path / "cifar-100-python"
    good = {f: (base / f).read_bytes() for f in ("train", "test", "meta")}
    fix = "download CIFAR-100 again"
    cases = [
        ("train", lambda d: d.update(data=d["data"].astype(np.float32)), r"'data' should be a uint8 array \(N, 3072\), "
         "found a float32 array"),
        ("train", lambda d: d.pop("data"), "'data' should be a uint8 array .* found no such entry"),
        ("test", lambda d: d.update(data=d["data"][:, :100]), r"found a uint8 array of shape \(100, 100\)"),
        ("train", lambda d: d["fine_labels"].__setitem__(0, 100), r"'fine_labels' should be 200 labels in 0\.\.99"),
        ("train", lambda d: d["coarse_labels"].pop(), r"'coarse_labels' should be 200 labels in 0\.\.19"),
        ("test", lambda d: d.pop("fine_labels"), "'fine_labels' should be 100 labels .* found no such entry"),
        ("meta", lambda d: d["fine_label_names"].pop(), r"has no list of 100 'fine_label_names' \(found a list of "
         "99"),
        ("meta", lambda d: d.pop("coarse_label_names"), "has no list of 20 'coarse_label_names'"),
    ]  # fmt: skip
    for name, edit, msg in cases:
        _rewrite(base / name, edit)
        with pytest.raises(DataError, match=f"CIFAR-100 file .*cifar-100-python/{name}.*{msg}.*{fix}"):
            read_cifar(tmp_path, "cifar100")
        (base / name).write_bytes(good[name])
    (base / "train").write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(DataError, match="cifar-100-python/train should hold a dict, found a list"):
        read_cifar(tmp_path, "cifar100")
    (base / "train").write_bytes(good["train"][:1000])
    with pytest.raises(DataError, match="cifar-100-python/train .*corrupt or truncated.*download CIFAR-100 again"):
        read_cifar(tmp_path, "cifar100")


@pytest.mark.parametrize("dataset, file", [("cifar10", "data_batch_2"), ("cifar10", "batches.meta"),
                                           ("cifar100", "test"), ("cifar100", "meta")])  # fmt: skip
@pytest.mark.parametrize("nested", [False, True])
def test_read_cifar_refuses_crafted_file(tmp_path, dataset, file, nested):
    _fake_cifar(tmp_path, dataset, per_class=2, n_test=1)
    folder = "cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python"
    marker = tmp_path / "MARKER"
    (tmp_path / folder / file).write_bytes(evil_pickle(marker, nested=nested))
    with pytest.raises(DataError, match=rf"refused to load the CIFAR-1\d+ file .*{folder}/{file}: it refers to a "
                       r"posix.system object, which no data file holds.*NOT executed"):  # fmt: skip
        read_cifar(tmp_path, dataset)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------------------------
# decode_images
# --------------------------------------------------------------------------------------------------------------------


def _write(path: Path, a: np.ndarray, **kw) -> Path:
    Image.fromarray(a).save(path, **kw)
    return path


def _pil(path: Path, mode: str, size: int | None = None) -> np.ndarray:
    """The oracle: PIL's conversion and (LANCZOS for grey, BILINEAR for RGB) resize, as (C, H, W)."""
    with Image.open(path) as im:
        im = im.convert(mode)
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.LANCZOS if mode == "L" else Image.Resampling.BILINEAR)
    a = np.asarray(im)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def test_decode_grey_png_exact_resize_and_invert(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (12, 12), dtype=np.uint8) for _ in range(9)]
    paths = [_write(tmp_path / f"{i}.png", a) for i, a in enumerate(arrays)]
    x = decode_images(paths, "L", progress=False)
    assert x.dtype == np.uint8 and x.shape == (9, 1, 12, 12)
    assert np.array_equal(x[:, 0], np.stack(arrays))
    assert np.array_equal(decode_images(paths, "L", size=12, progress=False), x)  # already that size: untouched
    inv = decode_images(paths, "L", progress=False, invert=True)
    assert np.array_equal(inv, 255 - x)
    small = decode_images(paths, "L", size=5, progress=False, invert=True, workers=3, chunk=2)
    assert small.shape == (9, 1, 5, 5)
    assert np.array_equal(small, 255 - np.stack([_pil(p, "L", 5) for p in paths]))
    # an RGB file read as grey: PIL's luma conversion
    rgb = _write(tmp_path / "rgb.png", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    assert np.array_equal(decode_images([rgb], "L", progress=False)[0], _pil(rgb, "L"))


def test_decode_omniglot_style_1bit_png(tmp_path):
    """Omniglot's files: 1-bit PNGs, ink False (black) on True (white); inverted, the ink is 255."""
    glyph = np.ones((105, 105), dtype=bool)
    glyph[40:60, 50:55] = False
    path = _write(tmp_path / "0001_01.png", glyph)
    x = decode_images([path], "L", progress=False, invert=True)
    assert x.shape == (1, 1, 105, 105) and set(np.unique(x).tolist()) == {0, 255}
    assert np.array_equal(x[0, 0] == 255, ~glyph)
    x28 = decode_images([path], "L", size=28, progress=False, invert=True)
    assert x28.shape == (1, 1, 28, 28) and np.array_equal(x28[0], 255 - _pil(path, "L", 28))
    assert 0 < x28.max() and x28[0, 0, 0, 0] == 0  # antialiased ink, dark background


def test_decode_rgb_png_jpeg_and_resize(tmp_path):
    from torchvision.io import ImageReadMode, decode_image, read_file

    rng = np.random.default_rng(1)
    pngs = [_write(tmp_path / f"{i}.png", rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)) for i in range(5)]
    x = decode_images(pngs, "RGB", progress=False)
    assert x.shape == (5, 3, 10, 14)  # non-square kept
    assert np.array_equal(x, np.stack([np.asarray(Image.open(p)).transpose(2, 0, 1) for p in pngs]))  # lossless
    smooth = np.kron(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    jpgs = [_write(tmp_path / f"{i}.jpg", np.roll(smooth, i, axis=1), quality=95) for i in range(7)]
    jpgs.append(_write(tmp_path / "grey.jpeg", smooth[..., 0]))  # a grey JPEG, returned as RGB
    x = decode_images(jpgs, "RGB", progress=False, workers=2, chunk=3)
    assert x.shape == (8, 3, 32, 32)
    # no resize: torchvision's decoder (batched), as the long-tail loader always decoded
    ref = [decode_image(read_file(str(p)), mode=ImageReadMode.RGB).numpy() for p in jpgs]
    assert np.array_equal(x, np.stack(ref))
    centres = (slice(None), slice(4, None, 8), slice(4, None, 8))  # inside the 8x8 blocks: little JPEG loss
    assert np.abs(x[0][centres].astype(int) - smooth.transpose(2, 0, 1)[centres]).max() < 8  # R, G, B in order
    assert np.array_equal(x[7, 0], x[7, 1]) and np.array_equal(x[7, 1], x[7, 2])
    # with a size: PIL decodes and resizes (bilinear, antialiased), as the mini-ImageNet loader always did
    for size in (32, 20, 50):
        y = decode_images(jpgs + pngs, "RGB", size=size, progress=False)
        assert y.shape == (13, 3, size, size)
        assert np.array_equal(y, np.stack([_pil(p, "RGB", size) for p in jpgs + pngs]))


def test_decode_keeps_order_over_chunks_and_threads(tmp_path):
    paths = [_write(tmp_path / f"{i:03d}.png", np.full((4, 4, 3), i, np.uint8)) for i in range(50)]
    for workers, chunk in ((1, 512), (4, 3), (8, 1)):
        x = decode_images(paths[::-1], "RGB", progress=False, workers=workers, chunk=chunk)
        assert x[:, 0, 0, 0].tolist() == list(range(49, -1, -1))
    assert decode_images([], "L", size=7).shape == (0, 1, 7, 7)


def test_decode_errors(tmp_path):
    good = [_write(tmp_path / f"{i}.png", np.zeros((8, 8, 3), np.uint8)) for i in range(4)]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path in (bad, empty, tmp_path / "missing.png"):
        for mode, size in (("RGB", None), ("RGB", 8), ("L", None), ("L", 4)):
            with pytest.raises(DataError, match=rf"cannot decode Omniglot image {path} \(.*\); re-extract it$"):
                decode_images([*good, path], mode, size, progress=False, what="Omniglot image", fix="re-extract it")
    with pytest.raises(DataError, match=rf"cannot decode image {bad} .*replace or delete the file"):
        decode_images([bad, bad], progress=False)  # an all-JPEG chunk: the batched call fails, the file is named
    big = _write(tmp_path / "big.png", np.zeros((9, 8, 3), np.uint8))
    with pytest.raises(DataError, match=rf"images of different sizes: {good[0]} is \(8, 8\) but {big} is \(9, 8\)"):
        decode_images([*good, big], "RGB", progress=False, chunk=2)
    with pytest.raises(DataError, match="images of different sizes"):
        decode_images([*good, big], "L", progress=False)
    assert decode_images([*good, big], "RGB", size=6, progress=False).shape == (5, 3, 6, 6)  # a size: resized
    with pytest.raises(ValueError, match=r"mode must be one of \['RGB', 'L'\], got 'CMYK'"):
        decode_images(good, "CMYK", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size must be a positive integer"):
        decode_images(good, "RGB", size=0)
    with pytest.raises(ValueError, match="no image paths given"):
        decode_images([], "RGB")


# --------------------------------------------------------------------------------------------------------------------
# normalize
# --------------------------------------------------------------------------------------------------------------------


def test_normalize_matches_hand_computation():
    x = torch.tensor([[[[0, 51]], [[102, 255]]]], dtype=torch.uint8)  # (1, 2, 1, 2)
    mean, std = (0.5, 0.25), (0.5, 0.125)
    y = normalize(x, mean, std)
    expected = torch.tensor([[[[(0 / 255 - 0.5) / 0.5, (51 / 255 - 0.5) / 0.5]],
                              [[(102 / 255 - 0.25) / 0.125, (255 / 255 - 0.25) / 0.125]]]])  # fmt: skip
    assert y.dtype == torch.float32 and y.shape == x.shape and y.device == x.device
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-6)
    assert torch.equal(normalize(x.expand(3, -1, 4, -1), mean, std)[2, :, 3], y[0, :, 0])
    grey = normalize(torch.full((2, 1, 3, 3), 255, dtype=torch.uint8), [0.0817], [0.2364])
    torch.testing.assert_close(grey, torch.full((2, 1, 3, 3), (1 - 0.0817) / 0.2364), rtol=0, atol=1e-6)


def test_normalize_errors():
    x = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"expected a uint8 tensor \(B, 3, H, W\) .*got torch.float32"):
        normalize(x.float(), (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match=r"expected a uint8 tensor \(B, 1, H, W\) .*shape \(2, 3, 4, 4\)"):
        normalize(x, (0.5,), (0.5,))
    with pytest.raises(ValueError, match=r"shape \(3, 4, 4\)"):
        normalize(x[0], (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="std 2"):
        normalize(x, (0.5,) * 3, (0.5,) * 2)
    with pytest.raises(ValueError, match="got ndarray"):
        normalize(x.numpy(), (0.5,) * 3, (0.5,) * 3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------------


def _training_state() -> dict:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opts = [torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), torch.optim.Adam(model.parameters())]
    for opt in opts:
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
    kind, keys, pos, has_gauss, cached = np.random.RandomState(3).get_state()
    return {
        "model": model.state_dict(),
        "sgd": opts[0].state_dict(),
        "adam": opts[1].state_dict(),
        "torch_rng": torch.get_rng_state(),
        "np_rng": [kind, keys.tolist(), pos, has_gauss, cached],  # numpy-free: lists and Python numbers
        "epoch": 7,
        "best": 0.8125,
        "name": "run",
        "none": None,
        "history": [[1, 0.5], [2, 0.25]],
        "flags": (True, False),
    }


def test_checkpoint_round_trip(tmp_path):
    state = _training_state()
    path = tmp_path / "sub" / "last.pt"
    save_checkpoint(state, path)
    save_checkpoint(state, path)  # overwrites in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary file left behind
    got = load_checkpoint(path, map_location="cpu")
    assert got.keys() == state.keys()
    for k in ("epoch", "best", "name", "none", "history", "flags", "np_rng"):
        assert got[k] == state[k]
    assert torch.equal(got["torch_rng"], state["torch_rng"]) and got["torch_rng"].dtype == torch.uint8
    for k, v in state["model"].items():
        assert torch.equal(got["model"][k], v)
    for opt in ("sgd", "adam"):
        assert got[opt]["param_groups"] == state[opt]["param_groups"]
        for i, s in state[opt]["state"].items():
            assert all(torch.equal(got[opt]["state"][i][n], t) for n, t in s.items())
    # the states restore: same draws as before saving
    model = torch.nn.Linear(3, 2)
    model.load_state_dict(got["model"])
    torch.optim.Adam(model.parameters()).load_state_dict(got["adam"])
    torch.set_rng_state(got["torch_rng"])
    a = torch.rand(3)
    torch.set_rng_state(state["torch_rng"])
    assert torch.equal(a, torch.rand(3))
    kind, keys, pos, has_gauss, cached = got["np_rng"]
    rs = np.random.RandomState()
    rs.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    assert np.array_equal(rs.rand(4), np.random.RandomState(3).rand(4))
    assert load_checkpoint(path, map_location=torch.device("cpu"))["epoch"] == 7


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_load_checkpoint_refuses_code(tmp_path, how):
    marker = tmp_path / "MARKER"
    path = tmp_path / "crafted.pt"
    obj = {"model": {}, "epoch": _Reduce(os.system, (f"touch {marker}",))}
    if how == "torch.save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(DataError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert f"refused to load checkpoint {path}" in msg and "NOT executed" in msg
    if how == "torch.save":
        assert "refers to a posix.system object" in msg
    assert not marker.exists()


def test_load_checkpoint_errors(tmp_path):
    path = tmp_path / "ck.pt"
    torch.save({"x": np.zeros(3)}, path)  # numpy arrays are not allowed: convert them to lists or tensors
    with pytest.raises(DataError, match=r"refused to load checkpoint .*ck.pt: it refers to a numpy.*_reconstruct"):
        load_checkpoint(path)
    save_checkpoint({"w": torch.ones(1000)}, path)
    data = path.read_bytes()
    for content in (data[: len(data) // 2], b"", b"hello world"):
        path.write_bytes(content)
        with pytest.raises(DataError, match=rf"cannot read checkpoint {path} .*corrupt or truncated"):
            load_checkpoint(path)
    with pytest.raises(DataError, match=rf"checkpoint {tmp_path / 'none.pt'} does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    torch.save([1, 2], path)
    with pytest.raises(DataError, match="holds a list, not a dict"):
        load_checkpoint(path)


def test_the_data_line_says_whether_a_load_decoded_into_the_cache_or_read_from_it(tmp_path):
    from fewshot_sla.io import CACHE_FOLDER, cache_contents, cache_note

    assert cache_contents(tmp_path / "absent") == set() and cache_note(tmp_path, set()) == ""
    before = cache_contents(tmp_path)
    (tmp_path / CACHE_FOLDER).mkdir()
    (tmp_path / CACHE_FOLDER / "fewshot-train-abc-c3-s32.npz").write_bytes(b"x")
    assert cache_note(tmp_path, before) == f"decoded, cached in {tmp_path / CACHE_FOLDER}"
    again = cache_contents(tmp_path)
    assert again == {"fewshot-train-abc-c3-s32.npz"}
    assert cache_note(tmp_path, again) == f"read from the cache in {tmp_path / CACHE_FOLDER}"
