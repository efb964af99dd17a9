"""longtail.load_run / sla-longtail-predict: a trained run predicts exactly as it was tested, whatever form the
images come in; clear errors. A tiny run on a synthetic 4-class PNG ImageFolder (seconds on CPU)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot_sla import checkpoint, runs
from fewshot_sla.config import save_config
from fewshot_sla.metrics import accuracy
from fewshot_sla.utils import DataError, read_json
from longtail import load_run
from longtail.benchmark import run
from longtail.cli_predict import main
from longtail.data import CIFAR_MEAN, CIFAR_STD
from longtail.recipe import build_model, build_recipe, load_data
from tests.longtail.synthetic import tiny, write_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """4 classes x (40 train, 8 test) PNGs (tests/longtail/synthetic.py)."""
    return write_folder(tmp_path_factory.mktemp("lt_predict_folder"), 40, 8, seed=1)


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory) -> Path:
    """LDAM-DRW (cosine head, s = 30) with SLA rotations and self-distillation: all three prediction modes."""
    out = tmp_path_factory.mktemp("lt_predict_run")
    run(tiny(folder, out, loss="ldam", drw=True, transform="rotation", sd=True))
    return out


def _test_files(folder: Path) -> list[Path]:
    """The test images in the loader's order (classes sorted, files sorted by name)."""
    return [p for d in sorted((folder / "test").iterdir()) for p in sorted(d.iterdir())]


def _fake_run(folder: Path, root: Path, unit: int = 2, **kw) -> Path:
    """A run folder as sla-longtail writes it (recipe.json, config.yaml, checkpoint.pt), untrained weights."""
    cfg = tiny(root, folder, **kw)
    folder.mkdir(parents=True)
    recipe = build_recipe(cfg, class_names=list("abcd"), counts=[40, 20, 10, 7], stats=(CIFAR_MEAN, CIFAR_STD),
                          image_size=32, files={"train": "f" * 16, "test": "e" * 16})
    torch.manual_seed(0)
    model = build_model(recipe)
    runs.write_record(folder, recipe.record())
    save_config(cfg, folder / "config.yaml")
    checkpoint.save(folder / "checkpoint.pt", {"model": model.state_dict(), "unit": unit})
    return folder


def test_reproduces_the_runs_test_accuracy_in_every_mode(trained):
    pred = load_run(trained)
    m = read_json(trained / "metrics.json")
    assert m["class_names"] == pred.classes == ["class0", "class1", "class2", "class3"]
    assert pred.modes == ("single", "aggregated", "distilled") and pred.main_mode == m["test/main_mode"] == "distilled"
    assert pred.logit_scale("single") == pred.logit_scale("distilled") == 30.0  # LDAM's cosine heads
    data = load_data(pred.cfg, progress=False)
    labels = data.test_labels.numpy()
    for mode, key in (("single", "test/acc"), ("aggregated", "test/acc_agg"), ("distilled", "test/acc_distilled")):
        probs = pred.predict(data.test_images, mode)
        assert probs.shape == (len(labels), 4) and torch.allclose(probs.sum(1), torch.ones(len(labels)))
        assert accuracy(labels, probs.argmax(1).numpy()) == m[key], mode
    assert torch.equal(pred.predict(data.test_images), pred.predict(data.test_images, "distilled"))


def test_paths_pil_and_tensors_give_the_same_scores(trained, folder):
    pred = load_run(trained)
    files = _test_files(folder)
    tensors = load_data(pred.cfg, progress=False).test_images
    by_path = pred.predict(files)
    assert torch.equal(pred.predict([str(p) for p in files]), by_path)
    assert torch.equal(pred.predict([Image.open(p) for p in files]), by_path)
    assert torch.equal(pred.predict(tensors), by_path)
    # one image: a forward pass over a batch of 1 may pick other CPU kernels (oneDNN, AMX) than one over
    # the whole set, so its scores agree to float rounding, not bit for bit
    torch.testing.assert_close(pred.predict(files[3]), by_path[3:4], rtol=1e-4, atol=1e-6)
    # a batch size that leaves one image over: it joins the batch before it, and the scores stay the same
    assert torch.equal(pred.predict(tensors, batch_size=len(tensors) - 1), by_path)
    # another size: resized (PIL bilinear) the same way whatever the form
    big = [Image.open(p).resize((48, 48)) for p in files[:5]]
    big_t = torch.from_numpy(np.stack([np.asarray(im).transpose(2, 0, 1) for im in big]))
    assert torch.equal(pred.predict(big), pred.predict(big_t))
    assert pred.load_images(big_t).shape == (5, 3, 32, 32)


def test_classes_counts_and_statistics_come_from_the_record(trained, tmp_path):
    """metrics.json without class names or counts (a run that has not finished writes none): the record has them."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("wandb"))
    m = read_json(copy / "metrics.json")
    for k in ("class_counts", "class_names"):
        del m[k]
    (copy / "metrics.json").write_text(json.dumps(m))
    pred, ref = load_run(copy), load_run(trained)
    rec = runs.read_record(trained, "longtail")["recipe"]
    assert pred.classes == ref.classes == rec["class_names"] and pred.counts == ref.counts == rec["class_counts"]
    assert pred.stats == (tuple(rec["stats"]["mean"]), tuple(rec["stats"]["std"])) != (CIFAR_MEAN, CIFAR_STD)
    x = load_data(ref.cfg, progress=False).test_images
    assert torch.equal(pred.predict(x), ref.predict(x))


def test_a_run_of_an_older_version_loads_with_the_cifar_statistics(trained, folder, tmp_path):
    """No recipe.json (runs before run records): config.yaml and metrics.json, and the CIFAR statistics every
    older version normalised with, said in a warning."""
    copy = tmp_path / "old"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("wandb"))
    (copy / "recipe.json").unlink()
    with pytest.warns(UserWarning, match="no recipe.json.*CIFAR statistics"):
        old = load_run(copy)
    assert old.stats == (CIFAR_MEAN, CIFAR_STD) and old.classes == load_run(trained).classes
    assert old.image_size == 32 and old.main_mode == "distilled"


def test_cli_end_to_end(trained, folder, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    assert main(["--run", str(trained), str(folder / "test"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    files = _test_files(folder)
    assert rows[0] == ["file", "predicted_class", "softmax"] and [r[0] for r in rows[1:]] == [str(p) for p in files]
    assert "| softmax" in printed and "uncalibrated" in printed and "not the probability" in printed
    probs = load_run(trained).predict(files)
    assert [r[1] for r in rows[1:]] == [f"class{i}" for i in probs.argmax(1).tolist()]
    assert [float(r[2]) for r in rows[1:]] == pytest.approx(probs.max(1).values.tolist(), abs=1e-6)
    # images in folders named after the classes: the accuracy, the run's own test accuracy of its main mode
    acc = read_json(trained / "metrics.json")["test/acc_distilled"]
    assert f"accuracy: {100 * acc:.2f}% ({round(acc * 32)}/32 images" in printed and "mode distilled" in printed
    one = tmp_path / "one.csv"
    assert main(["--run", str(trained), str(files[0]), "--out", str(one), "--mode", "single"]) == 0
    assert len(one.read_text().splitlines()) == 2 and "mode single" in capsys.readouterr().out


def test_errors(folder, tmp_path, capsys):
    plain = _fake_run(tmp_path / "plain", folder)  # no SLA, no SD: mode single only
    pred = load_run(plain)
    assert pred.modes == ("single",) and pred.main_mode == "single" and pred.classes == list("abcd")
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(ValueError, match="mode 'distilled' is not available.*needs a run trained with --sd"):
        pred.predict(x, "distilled")
    with pytest.raises(ValueError, match="uint8 RGB pixels"):
        pred.predict(x[:, :1])
    argv = ["--run", str(plain), str(folder / "test"), "--mode", "distilled", "--out", str(tmp_path / "a.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: mode 'distilled' is not available" in err and "Traceback" not in err
    with pytest.warns(UserWarning, match="epoch 1 of 2"):
        load_run(_fake_run(tmp_path / "unfinished", folder, unit=1))
    (tmp_path / "grid" / "ce_none").mkdir(parents=True)
    (tmp_path / "grid" / "ce_none" / "config.yaml").write_text("loss: ce\n")
    with pytest.raises(DataError, match="neither recipe.json nor config.yaml.*grid runs ce_none"):
        load_run(tmp_path / "grid")
    (plain / "checkpoint.pt").unlink()
    with pytest.raises(DataError, match="no checkpoint.pt"):
        load_run(plain)
    fs = tmp_path / "fewshot"
    fs.mkdir()
    (fs / "config.yaml").write_text("learner: protonet\nways: 5\n")
    with pytest.raises(DataError, match="not a sla-longtail config.*sla-fewshot-predict"):
        load_run(fs)
    for argv in (["--run", str(tmp_path / "nowhere"), str(folder / "test")],
                 ["--run", str(plain), str(tmp_path / "missing.png")]):
        assert main(argv + ["--out", str(tmp_path / "b.csv")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
