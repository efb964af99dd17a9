"""The run record (fewshot_sla.runs): written strictly, read back checked, resume refusal names the keys."""

from __future__ import annotations

import json

import pytest

from fewshot_sla import runs
from fewshot_sla.config import ConfigError
from fewshot_sla.utils import DataError


def _record(**cfg):
    config = {"out": "r", "seed": 0, "lr": 0.001, "train_episodes": 20, "data_root": "/a", **cfg}
    ident = runs.identity(config, ignore={"data_root"}, data={"dataset": "x", "classes": "abc"})
    return runs.make_record("fewshot", config, {"stats": [[0.5], [0.25]]}, ident)


def test_record_roundtrip_strict_json(tmp_path):
    rec = _record()
    runs.write_record(tmp_path, rec)
    text = (tmp_path / runs.RECORD_FILE).read_text()
    assert json.loads(text) == runs.read_record(tmp_path, kind="fewshot")
    with pytest.raises(DataError, match="not a 'longtail' one"):
        runs.read_record(tmp_path, kind="longtail")


def test_missing_or_foreign_record_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="--test-only reads the run record .* does not exist"):
        runs.read_record(tmp_path, what="--test-only")
    (tmp_path / runs.RECORD_FILE).write_text('{"format": "something else"}')
    with pytest.raises(DataError, match="not a run record of this version"):
        runs.read_record(tmp_path)


def test_identity_leaves_out_paths_and_seed_but_keeps_data():
    a = runs.identity({"seed": 0, "out": "a", "lr": 1.0, "data_root": "/x"}, {"data_root"}, {"files": "d1"})
    b = runs.identity({"seed": 1, "out": "b", "lr": 1.0, "data_root": "/y"}, {"data_root"}, {"files": "d1"})
    c = runs.identity({"seed": 1, "out": "b", "lr": 1.0, "data_root": "/x"}, {"data_root"}, {"files": "d2"})
    assert a == b and runs.group_id(a) == runs.group_id(b)
    assert runs.group_id(a) != runs.group_id(c)  # same path, other images: another group
    assert a == {"method": {"lr": 1.0}, "data": {"files": "d1"}}


def test_check_resume_names_every_changed_training_key():
    rec = _record()
    same = dict(rec["config"], out="r", device="cpu", stop_after=3)  # bookkeeping may change
    runs.check_resume(rec, same, free=())
    changed = dict(rec["config"], lr=0.05, train_episodes=40)
    with pytest.raises(ConfigError) as e:
        runs.check_resume(rec, changed, free=())
    assert "lr: 0.001 -> 0.05" in str(e.value) and "train_episodes: 20 -> 40" in str(e.value)
    runs.check_resume(rec, dict(rec["config"], data_root="/b"), free={"data_root"})
    with pytest.raises(ConfigError, match="data_root"):
        runs.check_resume(rec, dict(rec["config"], data_root="/b"), free=())


def test_config_diff_compares_tuples_as_lists_and_missing_as_none():
    assert runs.config_diff({"m": [1, 2]}, {"m": (1, 2)}) == []
    assert runs.config_diff({"a": 1}, {"a": 1, "b": 2}) == [("b", None, 2)]


def test_a_record_from_an_earlier_version_is_read_with_the_legacy_values(tmp_path):
    rec = _record()
    runs.write_record(tmp_path, rec)
    got = runs.read_record(tmp_path, legacy={"warmup": "epoch", "lr": 9.0})
    assert got["config"]["warmup"] == "epoch" and got["config"]["lr"] == 0.001  # recorded keys win
    assert got["legacy_filled"] == ["warmup"]
    runs.check_resume(got, {**rec["config"], "warmup": "epoch"}, free=())
    with pytest.raises(ConfigError, match='warmup: "epoch" -> "step"'):
        runs.check_resume(got, {**rec["config"], "warmup": "step"}, free=())
