"""A few-shot run is a sealed record (issue: "A run is a sealed record"): ``--test-only``, ``--resume`` and
``load_run`` read ``OUT/recipe.json``, never the data folder as it is now.

Each test here failed on the code before the record: a re-test after a class folder was added tested on training
classes; the predictor re-measured the statistics from the changed folder; ``--resume`` continued under a changed
learning rate; a split layout repeating a class folder in two splits was accepted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from episodes import load_run
from episodes.config import FewShotConfig
from episodes.data import imagefolder_classes, load_imagefolder
from episodes.train import main, run
from fewshot_sla import runs
from fewshot_sla.config import ConfigError
from fewshot_sla.utils import DataError, read_json

SPLIT = (0.5, 0.25, 0.25)


def _folder(root: Path, names, per_class=3, size=16, seed=0, bright=0) -> None:
    rng = np.random.default_rng(seed)
    for n in names:
        (root / n).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(bright, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / n / f"{i:02d}.png")


def _cfg(data: Path, out: Path, **kw) -> FewShotConfig:
    base = dict(dataset="imagefolder", data_root=str(data), class_split=SPLIT, image_size=16, ways=3, shots=1,
                queries=2, train_episodes=4, val_every=2, val_episodes=2, test_episodes=6, wandb="disabled",
                num_threads=1, checkpoint_every=1, out=str(out))
    return FewShotConfig(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny finished run on a flat folder of 12 classes, and its metrics."""
    tmp = tmp_path_factory.mktemp("record")
    data = tmp / "data"
    _folder(data, [f"k{i:02d}" for i in range(12)])
    cfg = _cfg(data, tmp / "run")
    return cfg, run(cfg)


def test_the_record_holds_the_split_stats_and_digests(trained):
    cfg, m = trained
    rec = runs.read_record(cfg.out, "fewshot")
    want = imagefolder_classes(cfg.data_root, SPLIT)
    assert rec["recipe"]["classes"] == want
    assert sorted(m["test/per_class_acc"]) == want["test"]
    loaded = load_imagefolder(cfg.data_root, 16, class_split=SPLIT, progress=False)
    assert rec["recipe"]["stats"] == {"mean": list(loaded["train"].stats[0]), "std": list(loaded["train"].stats[1])}
    assert rec["recipe"]["class_digests"]["test"] == loaded["test"].class_digests
    assert rec["identity"]["data"] == {"files": rec["recipe"]["files_digest"]} and "data_root" not in str(
        rec["identity"]["method"])
    metrics = read_json(Path(cfg.out) / "metrics.json")
    assert metrics["group"] == rec["group"] == runs.group_id(metrics["identity"])
    assert metrics["kind"] == rec["kind"] == "fewshot" and "report" not in metrics and "report" not in rec


def test_retest_after_a_class_folder_was_added_tests_the_recorded_classes(trained, tmp_path):
    cfg, m = trained
    # a copy of the run and its data, then a class whose name sorts first: a fresh split would move 9 of 18 test
    # classes in the 90-class example; here the flat split of 13 names differs from the recorded one
    import shutil

    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(cfg.data_root, data)
    shutil.copytree(cfg.out, out)
    _folder(data, ["AAA_new_class"], seed=5)
    assert imagefolder_classes(data, SPLIT)["test"] != imagefolder_classes(cfg.data_root, SPLIT)["test"]
    again = run(dataclasses.replace(cfg, data_root=str(data), out=str(out), test_only=True))
    assert sorted(again["test/per_class_acc"]) == sorted(m["test/per_class_acc"])
    assert again["test/acc"] == m["test/acc"]


def test_retest_refuses_changed_files_or_a_missing_class(trained, tmp_path):
    import shutil

    cfg, _ = trained
    rec = runs.read_record(cfg.out, "fewshot")
    test_class = rec["recipe"]["classes"]["test"][0]
    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(cfg.data_root, data)
    shutil.copytree(cfg.out, out)
    retest = dataclasses.replace(cfg, data_root=str(data), out=str(out), test_only=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(data / test_class / "99.png")
    with pytest.raises(DataError, match=f"files of 1 recorded test class folder.*{test_class}"):
        run(retest)
    shutil.rmtree(data / test_class)
    with pytest.raises(DataError, match="folders are gone"):
        run(retest)


def test_predictor_is_unchanged_after_class_folders_are_added(trained, tmp_path):
    import shutil

    cfg, _ = trained
    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(cfg.data_root, data)
    shutil.copytree(cfg.out, out)
    x = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (6, 3, 16, 16), dtype=np.uint8))
    before = load_run(out).predict(x[:4], [0, 0, 1, 1], x[4:])
    # bright new classes: a train split measured again would have other statistics
    _folder(data, ["AAA_bright", "AAB_bright", "AAC_bright"], bright=200, seed=9)
    pred = load_run(out)
    assert pred.stats == tuple(tuple(v) for v in runs.read_record(out)["recipe"]["stats"].values())
    assert torch.equal(pred.predict(x[:4], [0, 0, 1, 1], x[4:]), before)


def test_resume_refuses_a_changed_training_config_and_continues_the_same_one(tmp_path):
    data = tmp_path / "data"
    _folder(data, [f"k{i:02d}" for i in range(12)])
    whole = run(_cfg(data, tmp_path / "whole"))
    half = _cfg(data, tmp_path / "half", stop_after=2)
    assert run(half) == {"episodes_done": 2}
    changed = dataclasses.replace(half, lr=0.05, train_episodes=8, stop_after=0, resume=True)
    with pytest.raises(ConfigError) as e:
        run(changed)
    assert "lr: 0.001 -> 0.05" in str(e.value) and "train_episodes: 4 -> 8" in str(e.value)
    hist = runs.read_record(half.out)["config"]
    assert hist["lr"] == 0.001  # the record is untouched
    # the CLI says it plainly, exit 2
    assert main(["--config", str(Path(half.out) / "config.yaml"), "--lr", "0.05", "--resume"]) == 2
    resumed = run(dataclasses.replace(half, stop_after=0, resume=True, device="cpu"))  # bookkeeping may change
    assert resumed["test/acc"] == whole["test/acc"] and resumed["val/best_acc"] == whole["val/best_acc"]


def test_split_layout_with_a_class_in_two_splits_is_refused(tmp_path):
    _folder(tmp_path / "train", ["a", "b", "shared"])
    _folder(tmp_path / "val", ["c", "d"])
    _folder(tmp_path / "test", ["e", "shared"])
    with pytest.raises(DataError, match=r"class folder\(s\) appear in two splits .*train/shared and .*test/shared"):
        load_imagefolder(tmp_path, 16, progress=False)


def test_a_finished_run_resumed_in_another_test_shape_only_tests(trained, tmp_path):
    import shutil

    cfg, m = trained
    out = tmp_path / "copy"
    shutil.copytree(cfg.out, out)
    again = run(dataclasses.replace(cfg, out=str(out), resume=True, test_queries=1))
    assert again["test/episodes"] == m["test/episodes"] and again["val/best_acc"] == m["val/best_acc"]
    assert again["test/acc"] != m["test/acc"] or again["test/acc_single"] != m["test/acc_single"]


def test_an_unfinished_run_may_not_change_its_validation_shape(tmp_path):
    data = tmp_path / "data"
    _folder(data, [f"k{i:02d}" for i in range(12)])
    half = _cfg(data, tmp_path / "half", stop_after=1)
    run(half)
    with pytest.raises(ConfigError, match="test_queries: 0 -> 1"):
        run(dataclasses.replace(half, stop_after=0, resume=True, test_queries=1))
