"""episodes.load_run / sla-fewshot-predict: a trained run predicts as it was tested, whatever form the images come in.

The real-data tests train one tiny Omniglot run (module fixture) and rebuild its test episodes; the error tests use
run folders written here with untrained weights (no data needed).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from episodes import EpisodeSampler, load_run
from episodes.cli_predict import main
from episodes.config import FewShotConfig
from episodes.data import DATASET_STATS, dataset_stats, gather, load_fewshot, load_splits, to_float
from episodes.recipe import Recipe, make_task, shapes_of
from episodes.train import run
from fewshot_sla import checkpoint, get_transform, runs
from fewshot_sla.io import decode_images
from fewshot_sla.utils import DataError


@pytest.fixture(scope="module")
def trained(omniglot_root, tmp_path_factory) -> Path:
    """A tiny protonet + rotation run on real Omniglot (2 steps, 3 test episodes of 5-way 1-shot, 2 queries)."""
    out = tmp_path_factory.mktemp("fewshot_run")
    run(FewShotConfig(data_root=str(omniglot_root), train_episodes=2, val_every=2, val_episodes=2, test_episodes=3,
                      queries=2, wandb="disabled", num_threads=1, out=str(out)))
    return out


def _characters(omniglot_root: Path, n: int) -> list[Path]:
    """``n`` character folders of the evaluation alphabets (20 PNGs each)."""
    base = omniglot_root / "omniglot-py" / "images_evaluation"
    return sorted(base.glob("*/character*"))[:n]


def _fake_run(folder: Path, files: tuple[str, ...] = ("recipe.json", "best.pt"), **kw) -> Path:
    """A run folder as sla-fewshot writes it, with untrained weights (Omniglot-shaped: 1x28x28)."""
    cfg = FewShotConfig(out=str(folder), wandb="disabled", **kw)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    stats = DATASET_STATS["omniglot"]
    task = make_task(cfg, get_transform(cfg.transform, stats=stats), (1, 28, 28))
    if "recipe.json" in files:
        recipe = Recipe(cfg, get_transform(cfg.transform, stats=stats), stats,
                        {s: ("a", "b") for s in ("train", "val", "test")}, None, (1, 28, 28), shapes_of(cfg), 10)
        runs.write_record(folder, recipe.record())
    for name in ("best.pt", "checkpoint.pt"):
        if name in files:
            checkpoint.save(folder / name, {"model": task.state_dict(), "unit": 1, "best": {"value": None}})
    return folder


# --- the trained run ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.realdata
def test_reproduces_the_runs_test_episodes(trained):
    """The run's test episodes, rebuilt as episodes/train.py::evaluate draws them, scored through predict on uint8
    tensors: the per-episode accuracies (SLA+AG and SLA+SI) are exactly those of OUT/test_episodes.csv."""
    pred = load_run(trained)
    cfg = pred.cfg
    assert pred.weights.name == "best.pt" and (pred.channels, pred.image_size) == (1, 28)
    test = load_fewshot(cfg.dataset, cfg.data_root, "test", cfg.image_size or None, omniglot_scheme=cfg.omniglot_split)
    ways, shots, queries = shapes_of(cfg)["test"]
    sampler = EpisodeSampler(test.labels, ways, shots, queries, cfg.test_episodes, seed=cfg.seed + 20_000)
    with open(trained / "test_episodes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == cfg.test_episodes == 3
    qy = torch.arange(ways).repeat_interleave(queries)
    for e, idx in enumerate(sampler):
        x = gather(test.images, idx)
        sx, qx = x[: ways * shots], x[ways * shots :]
        sy = torch.arange(ways).repeat_interleave(shots)
        for mode, column in (("aggregated", "acc_agg"), ("single", "acc_single")):
            probs = pred.predict(sx, sy, qx, mode=mode)
            assert probs.shape == (ways * queries, ways) and pred.classes == list(range(ways))
            assert torch.allclose(probs.sum(1), torch.ones(len(probs)))
            acc = (probs.argmax(1) == qy).float().mean().item()
            assert acc == float(rows[e][column]), (e, mode)
            # and the scores are the softmax of the task's own episodic logits
            ref = pred.task.predict(to_float(x, cfg.dataset), ways, shots, queries)[mode]
            assert torch.allclose(probs, torch.softmax(ref, 1), atol=1e-6)


@pytest.mark.slow
@pytest.mark.realdata
def test_paths_pil_and_tensors_give_the_same_scores(trained, omniglot_root):
    pred = load_run(trained)
    chars = _characters(omniglot_root, 3)
    s_paths = [p for c in chars for p in sorted(c.glob("*.png"))[:2]]
    labels = [c.name + "/" + c.parent.name for c in chars for _ in range(2)]  # strings
    q_paths = [p for c in chars for p in sorted(c.glob("*.png"))[2:4]]
    by_path = pred.predict(s_paths, labels, q_paths)
    assert by_path.shape == (6, 3) and pred.classes == sorted(set(labels))
    # PIL images as opened from the files (dark ink, 105x105): converted, resized and inverted as the files are
    pil = [Image.open(p) for p in s_paths], [Image.open(p) for p in q_paths]
    assert torch.equal(pred.predict(pil[0], labels, pil[1]), by_path)
    mixed = [str(p) for p in s_paths[:3]] + pil[0][3:]
    assert torch.equal(pred.predict(mixed, labels, q_paths), by_path)
    # uint8 tensors in the data set's convention (as load_fewshot returns them: 28x28, ink bright)
    sx = torch.from_numpy(decode_images(s_paths, "L", 28, progress=False, invert=True))
    qx = torch.from_numpy(decode_images(q_paths, "L", 28, progress=False, invert=True))
    assert torch.equal(pred.predict(sx, labels, qx), by_path)
    # full-size tensors (ink bright) are resized with the files' filter: the same up to the rounding of pixels
    sx_big = torch.from_numpy(decode_images(s_paths, "L", None, progress=False, invert=True))
    qx_big = torch.from_numpy(decode_images(q_paths, "L", None, progress=False, invert=True))
    assert sx_big.shape[-1] == 105
    big = pred.predict(sx_big, labels, qx_big)
    assert torch.allclose(big, by_path, atol=2e-2) and torch.equal(big.argmax(1), by_path.argmax(1))
    # labels may be any hashables: ints in another order give the same columns, permuted (up to the last bits:
    # the prototypes sit in another order in the distance product, whose CPU kernel may sum in another order)
    ints = [{"a": 7, "b": 3, "c": 5}["abc"[i // 2]] for i in range(6)]  # classes 7, 3, 5 -> columns 3, 5, 7
    by_int = pred.predict(s_paths, ints, q_paths)
    assert pred.classes == [3, 5, 7] and torch.allclose(by_int, by_path[:, [1, 2, 0]], rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.realdata
def test_uneven_shots_and_any_support_order(trained, omniglot_root):
    pred = load_run(trained)
    chars = _characters(omniglot_root, 3)
    shots = (1, 2, 4)
    s_paths = [p for c, k in zip(chars, shots) for p in sorted(c.glob("*.png"))[:k]]
    labels = [c.name for c, k in zip(chars, shots) for _ in range(k)]
    q_paths = [p for c in chars for p in sorted(c.glob("*.png"))[5:8]]
    probs = pred.predict(s_paths, labels, q_paths)
    assert probs.shape == (9, 3) and torch.allclose(probs.sum(1), torch.ones(9))
    perm = np.random.default_rng(0).permutation(len(s_paths))
    shuffled = pred.predict([s_paths[i] for i in perm], [labels[i] for i in perm], q_paths)
    assert torch.allclose(shuffled, probs, atol=1e-5)
    assert pred.predict(s_paths, labels, q_paths, mode="single").shape == (9, 3)


@pytest.mark.slow
@pytest.mark.realdata
def test_cli_end_to_end_on_omniglot_folders(trained, omniglot_root, tmp_path, capsys):
    chars = _characters(omniglot_root, 5)
    support, query, flat = tmp_path / "support", tmp_path / "query", tmp_path / "flat"
    (support / "c0").parent.mkdir()
    (support / "c0").symlink_to(chars[0], target_is_directory=True)  # a character folder as a class folder
    for i, c in enumerate(chars[1:], start=1):  # the other classes: 1 to 3 shots
        pngs = sorted(c.glob("*.png"))
        (support / f"c{i}").mkdir()
        for p in pngs[: 1 + i % 3]:
            (support / f"c{i}" / p.name).symlink_to(p)
        (query / f"c{i}").mkdir(parents=True)
        for p in pngs[10:12]:
            (query / f"c{i}" / p.name).symlink_to(p)
    loose = sorted(chars[0].glob("*.png"))[:2]
    for p in loose:  # unlabelled queries beside the class folders
        (query / p.name).symlink_to(p)
    out = tmp_path / "pred.csv"
    assert main(["--run", str(trained), "--support", str(support), "--query", str(query), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "predicted_class", "softmax"] and len(rows) == 1 + 2 + 4 * 2
    assert "| softmax" in printed and "uncalibrated" in printed and "not the probability" in printed
    files = [r[0] for r in rows[1:]]
    assert files[:2] == [p.name for p in loose] and files[2] == f"c1/{sorted(chars[1].glob('*.png'))[10].name}"
    assert {r[1] for r in rows[1:]} <= {f"c{i}" for i in range(5)}
    assert all(0.2 <= float(r[2]) <= 1.0 for r in rows[1:])  # the top softmax entry of 5 classes
    # the same numbers as the API on the same files
    pred = load_run(trained)
    s_files = sorted(p for d in sorted(support.iterdir()) for p in d.iterdir())
    s_labels = [p.parent.name for p in s_files]
    probs = pred.predict(s_files, s_labels, [query / f for f in files])
    assert [r[1] for r in rows[1:]] == [pred.classes[i] for i in probs.argmax(1).tolist()]
    assert [float(r[2]) for r in rows[1:]] == pytest.approx(probs.max(1).values.tolist(), abs=1e-6)
    hits = sum(r[0].split("/")[0] == r[1] for r in rows[1:] if "/" in r[0])
    assert f"accuracy: {100 * hits / 8:.2f}% ({hits}/8 query images in class folders)" in printed
    assert "support: 5 classes x 1-20 shots; query: 10 images" in printed
    # a flat query folder: no accuracy; --mode single
    flat.mkdir()
    for p in sorted(chars[1].glob("*.png"))[15:18]:
        (flat / p.name).symlink_to(p)
    out2 = tmp_path / "sub" / "flat.csv"
    assert main(["--run", str(trained), "--support", str(support), "--query", str(flat), "--out", str(out2),
                 "--mode", "single"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" not in printed and "mode single" in printed
    assert len(out2.read_text().splitlines()) == 4


@pytest.mark.slow
def test_image_folder_run_with_measured_statistics(tmp_path):
    """An RGB image-folder run (statistics measured on its train split, colour permutations that depend on them,
    files resized 20 -> 16): the predictor reads the files as the loader did and reproduces the test episodes."""
    rng = np.random.default_rng(0)
    for k in range(12):
        (tmp_path / "data" / f"k{k:02d}").mkdir(parents=True)
        for i in range(4):
            a = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            a[:, :, k % 3] //= 4  # classes differ in colour balance: statistics far from 0.5
            Image.fromarray(a).save(tmp_path / "data" / f"k{k:02d}" / f"{i}.png")
    cfg = FewShotConfig(dataset="imagefolder", data_root=str(tmp_path / "data"), class_split=(0.5, 0.25, 0.25),
                        image_size=16, ways=3, shots=1, queries=2, transform="color_perm3", train_episodes=2,
                        val_every=2, val_episodes=2, test_episodes=3, wandb="disabled", num_threads=1,
                        out=str(tmp_path / "out"))
    run(cfg)
    pred = load_run(tmp_path / "out")
    splits = load_splits(cfg)
    assert (pred.channels, pred.image_size) == (3, 16) and pred.stats == dataset_stats(cfg, splits["train"])
    test = splits["test"]
    files = [p for name in test.class_names for p in sorted((tmp_path / "data" / name).glob("*.png"))]
    assert torch.equal(pred.load_images(files), test.images)  # RGB, resized, not inverted: the loader's pixels
    ways, shots, queries = shapes_of(cfg)["test"]
    sampler = EpisodeSampler(test.labels, ways, shots, queries, cfg.test_episodes, seed=cfg.seed + 20_000)
    with open(tmp_path / "out" / "test_episodes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    qy = torch.arange(ways).repeat_interleave(queries)
    for e, idx in enumerate(sampler):
        x = gather(test.images, idx)
        probs = pred.predict(x[: ways * shots], torch.arange(ways).repeat_interleave(shots), x[ways * shots :])
        assert (probs.argmax(1) == qy).float().mean().item() == float(rows[e]["acc_agg"])
        ref = pred.task.predict(to_float(x, cfg.dataset, test.stats), ways, shots, queries)["aggregated"]
        assert torch.allclose(probs, torch.softmax(ref, 1), atol=1e-6)


# --- errors (no data needed) -------------------------------------------------------------------------------------


def test_run_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="recipe.json, which does not exist"):
        load_run(tmp_path / "empty")
    with pytest.raises(DataError, match="neither best.pt nor checkpoint.pt"):
        load_run(_fake_run(tmp_path / "no_weights", files=("recipe.json",)))
    with pytest.warns(UserWarning, match="no best.pt"):
        pred = load_run(_fake_run(tmp_path / "latest", files=("recipe.json", "checkpoint.pt")))
    assert pred.weights.name == "checkpoint.pt"
    lt = _fake_run(tmp_path / "longtail_run")
    (lt / "recipe.json").write_text((lt / "recipe.json").read_text().replace('"kind": "fewshot"', '"kind": "longtail"'))
    with pytest.raises(DataError, match="records a 'longtail' run, not a 'fewshot' one"):
        load_run(lt)
    other = _fake_run(tmp_path / "mixed", learner="r2d2")
    (other / "recipe.json").write_text((other / "recipe.json").read_text().replace('"r2d2"', '"protonet"'))
    with pytest.raises(DataError, match="does not fit the task"):
        load_run(other)


def test_predict_input_errors(tmp_path):
    pred = load_run(_fake_run(tmp_path / "run"))
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    probs = pred.predict(x, ["a", "a", "b", "b"], x[:3])
    assert probs.shape == (3, 2) and pred.classes == ["a", "b"]
    with pytest.raises(ValueError, match="unknown mode 'distilled'"):
        pred.predict(x, [0, 0, 1, 1], x, mode="distilled")
    with pytest.raises(ValueError, match="4 support images but 3 support labels"):
        pred.predict(x, [0, 0, 1], x)
    with pytest.raises(ValueError, match="at least 2"):
        pred.predict(x, [0, 0, 0, 0], x)
    with pytest.raises(TypeError, match="mutually comparable"):
        pred.predict(x, [0, "a", 0, "a"], x)
    with pytest.raises(ValueError, match="1-channel images but the tensor has 3"):
        pred.predict(x.expand(-1, 3, -1, -1), [0, 0, 1, 1], x)
    with pytest.raises(ValueError, match=r"uint8 pixels \(B, C, H, W\)"):
        pred.predict(x.float(), [0, 0, 1, 1], x)
    with pytest.raises(ValueError, match="query: no images"):
        pred.predict(x, [0, 0, 1, 1], [])
    with pytest.raises(TypeError, match="item 0 is a int"):
        pred.predict([1, 2], [0, 1], x)
    with pytest.raises(DataError, match="cannot decode image"):
        pred.predict([tmp_path / "missing.png", tmp_path / "missing.png"], [0, 1], x)


def test_grey_run_warns_once_on_colour_images(tmp_path):
    """A grey (Omniglot) run given RGB photos used to convert them silently."""
    import warnings

    pred = load_run(_fake_run(tmp_path / "run"))
    rng = np.random.default_rng(0)
    grey = [Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)) for _ in range(4)]
    photos = [Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)) for _ in range(3)]
    photos[2].save(tmp_path / "photo.jpg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pred.predict(grey, [0, 0, 1, 1], grey[:2])  # grey: no warning
        assert caught == []
        pred.predict(grey, [0, 0, 1, 1], [photos[0], photos[1], tmp_path / "photo.jpg", grey[0]])
        pred.predict(photos, [0, 1, 1], photos)  # once per predictor, not once per call or per image
    assert [str(w.message) for w in caught] == [
        "3 of the 4 query images are colour, but this run was trained on grey omniglot images (1x28x28): they are "
        "converted to grey, and images unlike the training ones may be classified poorly (this warning is shown once)"
    ]


def test_maml_needs_the_runs_ways(tmp_path):
    pred = load_run(_fake_run(tmp_path / "maml", learner="fomaml", ways=3))
    x = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    assert pred.predict(x, [0, 0, 1, 1, 2, 2], x[:2]).shape == (2, 3)
    assert pred.predict(x, [0, 1, 1, 1, 2, 2], x[:2]).shape == (2, 3)  # uneven shots are fine, the ways are not
    with pytest.raises(ValueError, match="fixed 3-way head"):
        pred.predict(x, [0, 0, 1, 1, 1, 1], x[:2])


def test_cli_errors(tmp_path, capsys):
    run_dir = _fake_run(tmp_path / "run")
    support, query = tmp_path / "support", tmp_path / "query"
    support.mkdir()
    query.mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(query / "q.png")
    args = ["--support", str(support), "--query", str(query), "--out", str(tmp_path / "p.csv")]
    assert main(["--run", str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert "error: support folder" in err and "holds no class folders with images" in err and "Traceback" not in err
    (support / "a").mkdir()
    (support / "b").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(support / "a" / "0.png")
    assert main(["--run", str(run_dir), *args]) == 2
    assert "support class folder(s) b" in capsys.readouterr().err
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(support / "b" / "0.png")
    assert main(["--run", str(tmp_path / "missing_run"), *args]) == 2
    assert "error: run folder" in capsys.readouterr().err
    (tmp_path / "no_best").mkdir()
    (tmp_path / "no_best" / "recipe.json").write_text((run_dir / "recipe.json").read_text())
    assert main(["--run", str(tmp_path / "no_best"), *args]) == 2
    assert "neither best.pt nor checkpoint.pt" in capsys.readouterr().err
    assert main(["--run", str(run_dir), "--support", str(support), "--query", str(tmp_path / "nope")]) == 2
    assert "query folder" in capsys.readouterr().err
    assert main(["--run", str(run_dir), *args]) == 0
    assert (tmp_path / "p.csv").read_text().splitlines()[1].startswith("q.png,")
