"""One metrics dict, many sinks: metrics.json and an offline W&B run read back from disk."""

import json
import math
import os
import sys

import pytest

from fewshot_sla.tracking import RunLogger, format_table
from fewshot_sla.utils import read_json


def test_metrics_json_records_config_commit_and_nan(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    log = RunLogger(tmp_path, {"seed": 3, "lr": 0.1}, wandb_mode="offline", quiet=True)
    log.log({"train/loss": 1.5}, step=0)
    log.finish({"test/acc": 0.5, "test/acc_few": math.nan}, extra={"class_counts": [5, 1]})
    m = read_json(tmp_path / "metrics.json")
    assert m["test/acc"] == 0.5 and math.isnan(m["test/acc_few"])
    assert m["config"] == {"seed": 3, "lr": 0.1} and m["class_counts"] == [5, 1]
    assert "git_commit" in m
    assert json.loads((tmp_path / "history.jsonl").read_text().splitlines()[0]) == {"step": 0, "train/loss": 1.5}
    assert log.run is None


def test_disabled_rank_writes_nothing(tmp_path):
    log = RunLogger(tmp_path / "r1", {}, enabled=False)
    log.log({"a": 1.0})
    assert log.finish({"a": 1.0}) is None
    assert not (tmp_path / "r1").exists()


def test_bad_mode():
    with pytest.raises(ValueError, match="unknown W&B mode 'cloud'"):
        RunLogger("x", {}, wandb_mode="cloud")


@pytest.mark.slow
def test_offline_wandb_run_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    log = RunLogger(tmp_path, {"seed": 0}, wandb_mode="offline", quiet=True)
    assert log.run is not None
    log.log({"train/loss": 0.25}, step=1)
    log.log_per_class("test/per_class_acc", [0.5, 0.75, 1.0], ["a", "b", "c"], train_counts=[100, 10, 1], step=2)
    log.log_confusion("test/confusion", [0, 1, 2], [0, 2, 2], ["a", "b", "c"], step=2)
    run_dir = log.wandb_dir
    log.finish({"test/acc": 0.75})
    assert run_dir is not None and run_dir.name.startswith("offline-run-")
    assert list(run_dir.glob("run-*.wandb")), "no W&B transaction log"
    saved = json.loads((run_dir / "files" / "metrics.json").read_text())
    assert saved["test/acc"] == 0.75
    tables = list((run_dir / "files" / "media" / "table").glob("test/per_class_acc*.table.json")) or list(
        (run_dir / "files" / "media" / "table").rglob("*per_class_acc*.table.json")
    )
    assert tables, f"no per-class table in {run_dir}"
    t = json.loads(tables[0].read_text())
    assert t["columns"] == ["class", "name", "accuracy", "train_count"]
    assert [row[2] for row in t["data"]] == [0.5, 0.75, 1.0]
    assert list((run_dir / "files" / "media" / "table").rglob("*confusion*.table.json"))


def test_wandb_failure_never_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")

    class Boom:
        def init(self, *a, **k):
            raise RuntimeError("no server")

    monkeypatch.setitem(sys.modules, "wandb", Boom())
    with pytest.warns(UserWarning, match="W&B init failed.*no server"):
        log = RunLogger(tmp_path, {}, quiet=True)
    log.log({"a": 1.0})
    log.finish({"a": 1.0})
    assert (tmp_path / "metrics.json").exists()


def test_format_table():
    s = format_table([{"method": "SLA+AG", "acc": 0.5}, {"method": "base", "acc": math.nan}])
    assert s.splitlines()[0] == "| method | acc    |"
    assert "| base   | nan    |" in s


def test_import_does_not_pull_wandb_or_learn2learn():
    import subprocess

    code = "import sys, fewshot_sla, fewshot_sla.tracking, fewshot_sla.model; " \
           "print('wandb' in sys.modules, 'learn2learn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}, check=True)
    assert out.stdout.split() == ["False", "False"]
