"""sla-longtail end to end on the real CIFAR-10 (JPEG copy), tiny: keys, plot, resume, grid, DDP, errors."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fewshot_sla.utils import read_json
from longtail.benchmark import LTConfig, limit_per_class, main, run

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"test/acc", "test/balanced_acc", "test/acc_many", "test/acc_medium", "test/acc_few", "test/per_class_acc"}


def tiny(root, out, **kw) -> LTConfig:
    base = dict(
        dataset="imagefolder",
        data_root=str(root),
        limit_train=200,
        limit_test=100,
        epochs=1,
        batch_size=50,
        backbone="resnet20",
        out=str(out),
        wandb="disabled",
        num_threads=1,
    )
    base.update(kw)
    return LTConfig(**base)


def test_limit_per_class_keeps_proportions():
    labels = np.repeat(np.arange(3), [100, 10, 1])
    keep = limit_per_class(labels, 20)
    assert np.bincount(labels[keep]).tolist() == [18, 2, 1]


@pytest.mark.slow
@pytest.mark.realdata
def test_sla_sd_ldam_drw_end_to_end(cifar10_imagefolder, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = tiny(cifar10_imagefolder, tmp_path, transform="rotation", sd=True, loss="ldam", drw=True, wandb="offline")
    met = run(cfg)
    m = read_json(tmp_path / "metrics.json")
    assert KEYS | {"test/acc_agg", "test/acc_distilled"} <= set(m)
    assert len(m["test/per_class_acc"]) == 10 and m["test/main_mode"] == "distilled"
    assert abs(sum(m["class_counts"]) - 200) <= 5 and m["class_counts"][0] > m["class_counts"][-1]
    assert m["config"]["loss"] == "ldam" and m["seed"] == 0 and "git_commit" in m
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["transform"] == "rotation"
    assert (tmp_path / "per_class_acc.png").stat().st_size > 5_000
    assert list(tmp_path.glob("wandb/offline-run-*/files/media/table/**/*per_class_acc*.table.json"))
    assert met["test/acc"] == m["test/acc"]


@pytest.mark.slow
@pytest.mark.realdata
def test_resume_matches_uninterrupted(cifar10_imagefolder, tmp_path):
    straight = run(tiny(cifar10_imagefolder, tmp_path / "a", epochs=2, loss="ce", drw=True))
    part = run(tiny(cifar10_imagefolder, tmp_path / "b", epochs=2, loss="ce", drw=True, stop_after=1))
    assert "test/acc" not in part and part["epochs_done"] == 1
    resumed = run(tiny(cifar10_imagefolder, tmp_path / "b", epochs=2, loss="ce", drw=True, resume=True))
    for k in KEYS:
        a, b = straight[k], resumed[k]
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), k
    ha = read_json(tmp_path / "a" / "metrics.json")["history"]
    hb = read_json(tmp_path / "b" / "metrics.json")["history"]
    assert ha == hb


@pytest.mark.slow
@pytest.mark.realdata
def test_grid_table(cifar10_imagefolder, tmp_path, capsys):
    rc = main(
        [
            "--dataset",
            "imagefolder",
            "--data-root",
            str(cifar10_imagefolder),
            "--limit-train",
            "120",
            "--limit-test",
            "50",
            "--epochs",
            "1",
            "--batch-size",
            "40",
            "--backbone",
            "resnet20",
            "--wandb",
            "disabled",
            "--num-threads",
            "1",
            "--out",
            str(tmp_path),
            "--grid-loss",
            "ce",
            "balanced-softmax",
            "--grid-transform",
            "none",
            "rotation2",
        ]
    )
    assert rc == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["loss"], r["transform"]) for r in rows] == [
        ("ce", "none"),
        ("ce", "rotation2"),
        ("balanced-softmax", "none"),
        ("balanced-softmax", "rotation2"),
    ]
    assert math.isnan(rows[0]["AG"]) and 0 <= rows[1]["AG"] <= 1
    assert "| loss" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--loss", "hinge"], "unknown loss 'hinge'; choose one of ce, focal"),
        (["--sampler", "random"], "unknown sampler 'random'"),
        (["--imbalance-ratio", "0.5"], "--imbalance-ratio must be >= 1"),
        (["--transform", "flip"], "unknown transform 'flip'"),
        (["--sd"], "--sd distils the aggregated SLA teacher"),
    ],
)
def test_bad_input_is_a_clear_error(argv, msg, tmp_path, capsys):
    assert main(argv + ["--out", str(tmp_path), "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and "Traceback" not in err


def test_missing_data_root(tmp_path, capsys):
    rc = main(
        [
            "--dataset",
            "cifar10",
            "--data-root",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "o"),
            "--wandb",
            "disabled",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "nope" in err


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.dist
def test_two_process_gloo(cifar10_imagefolder, tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        "-m",
        "longtail.benchmark",
        "--dataset",
        "imagefolder",
        "--data-root",
        str(cifar10_imagefolder),
        "--limit-train",
        "200",
        "--limit-test",
        "100",
        "--epochs",
        "2",
        "--batch-size",
        "25",
        "--backbone",
        "resnet20",
        "--device",
        "cpu",
        "--num-threads",
        "1",
        "--out",
        str(tmp_path),
        "--transform",
        "rotation2",
        "--wandb",
        "disabled",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    m = read_json(tmp_path / "metrics.json")
    assert KEYS | {"test/acc_agg"} <= set(m)
    assert m["world_size"] == 2
    assert 0.0 <= m["test/acc"] <= 1.0 and len(m["history"]) == 2
    assert m["history"][1]["train/loss"] < m["history"][0]["train/loss"] * 1.5
