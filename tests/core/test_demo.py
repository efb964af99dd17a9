"""The demo's pipeline at a tiny size: table rows, metrics.json, plot, offline W&B run."""

import math

import pytest

from fewshot_sla.demo import DemoConfig, longtail_digits, run
from fewshot_sla.utils import read_json


def test_longtail_digits_counts():
    data = longtail_digits(DemoConfig())
    assert data["counts"] == [124, 96, 74, 57, 44, 34, 26, 20, 16, 12]
    assert len(data["y_train"]) == sum(data["counts"])
    assert data["x_test"].shape == (500, 1, 8, 8)
    assert data["y_test"].bincount().tolist() == [50] * 10


@pytest.mark.slow
def test_demo_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = DemoConfig(out=str(tmp_path), epochs=1, methods=("baseline", "sla_sd", "sla_subset", "mt"), num_threads=1)
    res = run(cfg)
    names = [r["method"] for r in res["rows"]]
    assert names == ["Baseline", "SLA+SD (SI of its joint head)", "SLA+SD (AG of its joint head)", "SLA+SD",
                     "SLA k=2 +SI", "SLA k=2 +AG", "MT"]
    m = read_json(tmp_path / "metrics.json")
    assert m["config"]["epochs"] == 1 and m["seed"] == 0 and m["class_counts"][0] == 124
    assert 0.0 <= m["test/sla_sd/distilled/acc"] <= 1.0
    assert not math.isnan(m["test/baseline/single/acc_few"])  # digits-LT has few-shot classes (16, 12)
    assert (tmp_path / "per_class_acc.png").stat().st_size > 10_000
    assert (tmp_path / "results.md").read_text().count("\n") >= 8
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
