"""longtail.recipe and the run record: resolved once, written to OUT/recipe.json, and read by --resume and the
predictor instead of the data folder's current state; image folders normalised with their own statistics; the
warm-up per optimiser step; each config Literal equal to its registry.

Tiny runs on the synthetic 4-class PNG folder (tests/longtail/synthetic.py), seconds each on CPU."""

from __future__ import annotations

import shutil
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot_sla import runs
from fewshot_sla.config import ConfigError
from fewshot_sla.counts import PROFILES
from fewshot_sla.io import files_digest
from fewshot_sla.utils import DataError, read_json
from longtail import load_run
from longtail.benchmark import main, run
from longtail.config import LTConfig
from longtail.data import CIFAR_MEAN, CIFAR_STD, DATASETS, STATS_SOURCES
from longtail.grid import grid_configs
from longtail.losses import LOSSES
from longtail.recipe import FREE_KEYS, load_data, resolve
from longtail.samplers import SAMPLERS
from longtail.schedules import SCHEDULES, WARMUPS
from tests.longtail.synthetic import tiny, write_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """4 classes x (24 train, 6 test) PNGs: dark noise (levels 0-89) under a coloured square, far from CIFAR's
    mean (about 0.48)."""
    return write_folder(tmp_path_factory.mktemp("lt_recipe_folder"), 24, 6, seed=3)


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to, ignore=shutil.ignore_patterns(".*"))
    return to


def _hand_stats(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population std of the pixels of ``files`` on the [0, 1] scale, in float64."""
    x = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float64) for f in files]) / 255.0
    return x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))


def _add_class(root: Path, name: str, side: int, n: int, value: int = 250) -> None:
    """A bright class folder (``side`` x ``side`` images) in both splits (test one shade darker: not a copy)."""
    for shade, split in enumerate(("train", "test")):
        d = root / split / name
        d.mkdir()
        for i in range(n):
            Image.fromarray(np.full((side, side, 3), value - shade, dtype=np.uint8)).save(d / f"{i:04d}.png")


def test_folder_statistics_are_its_own_recorded_and_used_by_the_predictor(folder, tmp_path):
    """The recorded statistics are the training images' own (a hand computation, not CIFAR's); the predictor
    normalises with them, and its scores on fixed images stay the same after class folders and files are added to
    the data folder (it reads the record, never the folder)."""
    data_dir = _copy(folder, tmp_path / "data")
    out = tmp_path / "run"
    # ratio 1: every training image is kept; lr 0.02: scores that are not saturated (else nothing could change them)
    run(tiny(data_dir, out, imbalance_ratio=1.0, epochs=1, lr=0.02, limit_test=8))
    rec = runs.read_record(out, "longtail")["recipe"]
    mean, std = _hand_stats(sorted((data_dir / "train").glob("*/*.png")))
    assert rec["stats"]["mean"] == pytest.approx(mean.tolist(), rel=1e-12, abs=1e-15)
    assert rec["stats"]["std"] == pytest.approx(std.tolist(), rel=1e-12, abs=1e-15)
    assert all(abs(m - c) > 0.1 for m, c in zip(rec["stats"]["mean"], CIFAR_MEAN))
    assert rec["image_size"] == 32 and rec["class_names"] == [f"class{c}" for c in range(4)]

    files = sorted((data_dir / "test").glob("*/*.png"))[:10]
    pred = load_run(out)
    before = pred.predict(files)
    x = pred.load_images(files)
    z = pred.model.predict(((x.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1))
                            / torch.tensor(std).view(1, 3, 1, 1)).float(), pred.main_mode)
    torch.testing.assert_close(before, torch.softmax(z, 1), rtol=1e-5, atol=1e-6)
    assert before.max() < 0.9  # not saturated: the statistics and the image side show in the scores
    cifar = ((x.float() / 255 - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1))
    assert (torch.softmax(pred.model.predict(cifar, pred.main_mode), 1) - before).abs().max() > 1e-3
    pred.image_size = 48  # what the old predictor took from the folder's first class after the change below
    assert (pred.predict(files) - before).abs().max() > 1e-3

    # the folder changes: a class whose name sorts first, with 48x48 images, and more files in a recorded class
    _add_class(data_dir, "AAA_new", 48, 5)
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 255, dtype=np.uint8)).save(data_dir / "train" / "class0" / f"x{i}.png")
    after = load_run(out)
    assert after.stats == pred.stats and after.classes == pred.classes and after.image_size == 32
    assert torch.equal(after.predict(files), before)


def test_norm_stats_cifar_is_the_old_normalisation(folder):
    """--norm-stats cifar: an image folder normalised with CIFAR's statistics, as every run before."""
    cfg = tiny(folder, "x", norm_stats="cifar")
    assert resolve(cfg, load_data(cfg)).stats == (CIFAR_MEAN, CIFAR_STD)


def test_record_and_metrics_carry_the_recipe_identity_group_and_report(folder, tmp_path):
    out = tmp_path / "run"
    run(tiny(folder, out, epochs=1, limit_test=8, transform="rotation2"))
    rec = runs.read_record(out, "longtail")
    r = rec["recipe"]
    assert set(r) == {"stats", "class_names", "class_counts", "subset_seed", "image_size", "files", "schedule"}
    assert r["class_counts"] == [24, 13, 7, 4] and r["subset_seed"] == 0
    assert r["schedule"] == {"epochs": 1, "warmup": 1, "milestones": [1, 2], "drw_epoch": 0}  # scale_epochs(1)
    assert set(r["files"]) == {"train", "test"} and all(len(d) == 16 for d in r["files"].values())
    assert rec["config"]["lr"] == 0.1 and rec["config"]["warmup"] == "step"
    ident = rec["identity"]
    # the data is both file lists (a changed test set is other data too), never the path
    assert ident["data"] == {"files": files_digest(f"{k}:{v}" for k, v in sorted(r["files"].items()))}
    assert not {"out", "data_root", "seed"} & set(ident["method"]) and ident["method"]["transform"] == "rotation2"
    m = read_json(out / "metrics.json")
    assert m["identity"] == ident and m["group"] == rec["group"] == runs.group_id(ident) and m["kind"] == "longtail"
    assert "report" not in m and "report" not in rec  # facts only: the table is longtail.reporting's code
    # the same method on another copy of the same folder is the same group; another folder is another group
    run(tiny(_copy(folder, tmp_path / "copy"), tmp_path / "run2", epochs=1, limit_test=8, transform="rotation2",
             seed=1))
    assert read_json(tmp_path / "run2" / "metrics.json")["group"] == m["group"]


def test_resume_refuses_a_changed_config_and_continues_the_same_one(folder, tmp_path, capsys):
    kw = dict(epochs=2, limit_test=8, transform="rotation2")
    straight = run(tiny(folder, tmp_path / "a", **kw))
    assert run(tiny(folder, tmp_path / "b", stop_after=1, **kw)) == {"epochs_done": 1}
    with pytest.raises(ConfigError, match=r"--resume: .*another config \(lr: 0\.1 -> 0\.05\)"):
        run(tiny(folder, tmp_path / "b", resume=True, lr=0.05, **kw))
    argv = ["--dataset", "imagefolder", "--data-root", str(folder), "--imbalance-ratio", "6", "--epochs", "2",
            "--batch-size", "16", "--backbone", "resnet20", "--wandb", "disabled", "--num-threads", "1",
            "--limit-test", "8", "--transform", "rotation2", "--out", str(tmp_path / "b"), "--resume"]
    capsys.readouterr()
    assert main(argv + ["--lr", "0.05", "--warmup", "epoch"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the data lines
    assert last.startswith("error: --resume") and "lr: 0.1 -> 0.05" in last and 'warmup: "step" -> "epoch"' in last
    assert "Traceback" not in err
    # bookkeeping may change (device, stop_after, wandb, the test batch: 3 + 3 + 2 images, not one batch of 8);
    # the run continues exactly, with the same test predictions and the same group
    resumed = run(tiny(folder, tmp_path / "b", resume=True, device="cpu", eval_batch=3, **kw))
    assert resumed == straight
    ma, mb = (read_json(tmp_path / r / "metrics.json") for r in ("a", "b"))
    assert ma["history"] == mb["history"] and ma["group"] == mb["group"] and ma["identity"] == mb["identity"]


def test_resume_refuses_a_data_folder_that_no_longer_matches(folder, tmp_path):
    data_dir = _copy(folder, tmp_path / "data")
    out = tmp_path / "run"
    kw = dict(epochs=2, limit_test=8)
    run(tiny(data_dir, out, stop_after=1, **kw))
    extra = data_dir / "train" / "class1" / "9999.png"
    shutil.copy(data_dir / "train" / "class1" / "0000.png", extra)
    with pytest.raises(DataError, match=r"no longer matches the run's record .*the files of train/"):
        run(tiny(data_dir, out, resume=True, **kw))
    extra.unlink()
    _add_class(data_dir, "AAA_new", 32, 30)
    with pytest.raises(DataError, match=r"the class list \(4 recorded, 5 now; missing \[\], added \['AAA_new'\]"):
        run(tiny(data_dir, out, resume=True, **kw))
    shutil.rmtree(data_dir / "train" / "AAA_new")
    shutil.rmtree(data_dir / "test" / "AAA_new")
    moved = data_dir.rename(tmp_path / "moved")  # the same data elsewhere: data_root is free
    assert run(tiny(moved, out, resume=True, **kw))["epochs_done"] == 2
    (out / "recipe.json").unlink()  # a checkpoint without a record: a run of an older version
    with pytest.raises(DataError, match="--resume reads the run record .*recipe.json, which does not exist"):
        run(tiny(moved, out, resume=True, **kw))


def _literal(name: str) -> list[str]:
    return list(typing.get_args(typing.get_type_hints(LTConfig)[name]))


@pytest.mark.parametrize("field,registry", [("loss", LOSSES), ("sampler", SAMPLERS), ("schedule", SCHEDULES),
                                            ("warmup", WARMUPS), ("dataset", DATASETS), ("profile", PROFILES),
                                            ("norm_stats", STATS_SOURCES)])
def test_config_literals_equal_their_registries(field, registry):
    assert _literal(field) == list(registry)


def test_free_keys_are_config_fields():
    assert set(FREE_KEYS) <= set(LTConfig.__dataclass_fields__)


@pytest.mark.parametrize("warmup", ["step", "epoch"])
def test_the_warmup_in_effect(folder, tmp_path, monkeypatch, warmup):
    """The lr each optimiser step trains with, cosine schedule over 2 epochs (warm-up 1 epoch, scale_epochs(2)):
    per step, a linear ramp over epoch 0's 3 steps, then the cosine per step; per epoch (runs before per-step
    warm-up), epoch 0 already at the full lr, i.e. no warm-up at all."""
    seen: list[float] = []
    orig = torch.optim.SGD.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    cfg = tiny(folder, tmp_path, epochs=2, limit_test=8, warmup=warmup, schedule="cosine")
    run(cfg)
    recipe = resolve(cfg, load_data(cfg))
    assert recipe.schedule.warmup == 1 and len(seen) == 6  # 48 images in batches of 16: 3 steps per epoch
    assert seen == [recipe.lr(e, b, 3) for e in range(2) for b in range(3)]
    if warmup == "step":  # 0.1 * 1/3, 2/3, 3/3, then 0.1 * (1 + cos(pi * k / 3)) / 2 for k = 0, 1, 2
        assert seen == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.1, 0.075, 0.025])
    else:  # per epoch: the warm-up's one epoch is epoch 0 at 0.1 * 1/1; then the cosine at t = 0
        assert seen == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    history = read_json(tmp_path / "metrics.json")["history"]
    assert [r["lr"] for r in history] == [seen[0], seen[3]]  # a row's lr: its epoch's first step's


def test_grid_configs_are_checked_like_flags(tmp_path):
    cfg = LTConfig(out=str(tmp_path), sd=True, grid_loss=("ce", "ldam"), grid_transform=("none", "rotation"))
    subs = grid_configs(cfg)
    assert [(c.loss, c.transform, c.sd, Path(c.out).name) for c in subs] == [
        ("ce", "none", False, "ce_none"), ("ce", "rotation", True, "ce_rotation"),
        ("ldam", "none", False, "ldam_none"), ("ldam", "rotation", True, "ldam_rotation")]
    assert all(c.grid_loss == () and c.grid_transform == () for c in subs)
    with pytest.raises(ConfigError, match="'hinge' is not one of"):
        grid_configs(LTConfig(grid_loss=("hinge",)))
