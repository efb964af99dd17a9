"""``OUT/summary.md`` (:mod:`fewshot_sla.summary`): written by both CLIs after a run, after a re-test and after an
``--allow-unfinished`` re-test, holding the exact figures of metrics.json."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from fewshot_sla.summary import summary_text
from fewshot_sla.utils import read_json
from tests.test_run_lifecycle import PKGS


@pytest.fixture(params=PKGS, ids=lambda p: p.name)
def pkg(request):
    return request.param


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def _headline(name: str, m: dict) -> list[str]:
    """The result lines summary.md must hold, built from metrics.json."""
    if name == "fewshot":  # the tiny few-shot run uses rotation: SLA+SI and SLA+AG with their CIs
        over = f"(95% CI over {m['test/episodes']} test episodes)"
        return [f"SLA+SI (single inference): {_pct(m['test/acc_single'])} ± {_pct(m['test/acc_single_ci95'])} {over}",
                f"SLA+AG (aggregated inference): {_pct(m['test/acc_agg'])} ± {_pct(m['test/acc_agg_ci95'])} {over}"]
    assert m["test/main_mode"] == "single"  # the tiny long-tail run has no transform
    return [f"accuracy (single prediction, the headline mode): {_pct(m['test/acc'])}",
            f"single prediction by class group: balanced {_pct(m['test/balanced_acc'])}"]


def test_summary_after_a_run_a_retest_and_an_unfinished_retest(pkg, tmp_path):
    data = pkg.data(tmp_path / "data")
    cfg = pkg.cfg(data, tmp_path / "run")
    pkg.run(cfg)
    path = Path(cfg.out) / "summary.md"
    text = path.read_text()
    for line in _headline(pkg.name, read_json(Path(cfg.out) / "metrics.json")):
        assert line in text
    assert "finished: yes" in text and "unfinished" not in text
    assert f"- seed: `{cfg.seed}`" in text and f"data root: `{cfg.data_root}`" in text
    assert "`metrics.json`" in text and "`recipe.json`" in text and "`checkpoint.pt`" in text and "wandb/" in text

    path.unlink()  # --test-only writes it again
    pkg.run(dataclasses.replace(cfg, test_only=True))
    for line in _headline(pkg.name, read_json(Path(cfg.out) / "metrics.json")):
        assert line in path.read_text()

    half = pkg.cfg(data, tmp_path / "half", stop_after=pkg.half)
    pkg.run(half)
    assert not (Path(half.out) / "summary.md").exists()  # a stopped run has no test
    pkg.run(dataclasses.replace(half, stop_after=0, test_only=True, allow_unfinished=True))
    text = (Path(half.out) / "summary.md").read_text()
    assert "**no, unfinished**" in text and f"after {pkg.half} {pkg.unit}s" in text and "finished: yes" not in text


def _record(transform: str) -> dict:
    return {"kind": "fewshot", "config": {"transform": transform}, "identity": {"data": {"files": "abc"}},
            "package_version": "0.1.0", "git_commit": "c0ffee", "group": "cfg-1"}


FEW = {"test/acc": 0.5, "test/acc_ci95": 0.0125, "test/acc_single": 0.4, "test/acc_single_ci95": 0.02,
       "test/acc_agg": 0.5, "test/acc_agg_ci95": 0.0125, "test/episodes": 600}


def test_a_baseline_has_one_row_and_sla_two(tmp_path):
    base = summary_text(tmp_path, _record("none"), FEW, {}, {})
    assert "- baseline: 50.00% ± 1.25% (95% CI over 600 test episodes)" in base and "SLA+" not in base
    sla = summary_text(tmp_path, _record("rotation"), FEW, {}, {})
    assert "- SLA+SI (single inference): 40.00% ± 2.00% (95% CI over 600 test episodes)" in sla
    assert "- SLA+AG (aggregated inference): 50.00% ± 1.25% (95% CI over 600 test episodes)" in sla
    assert "- baseline:" not in sla and "digest: files `abc`" in sla and "git commit `c0ffee`" in sla
    assert "tested by" not in sla  # the record's provenance is the test's
    retested = summary_text(tmp_path, _record("rotation"), {**FEW, "package_version": "0.2.0", "git_commit": "d"}, {},
                            {})
    assert "tested by fewshot-sla 0.2.0, git commit `d`" in retested


def test_a_long_tail_summary_names_its_mode_and_the_empty_groups(tmp_path):
    m = {"test/acc": 0.3, "test/acc_agg": 0.35, "test/acc_distilled": 0.375, "test/main_mode": "distilled",
         "test/balanced_acc": 0.25, "test/acc_many": 0.5, "test/acc_medium": math.nan, "test/acc_few": None,
         "finished": False, "epochs_done": 7}
    text = summary_text(tmp_path, {"kind": "longtail"}, m, {}, {})
    assert "- accuracy (distilled prediction, the headline mode): 37.50%" in text
    assert "- accuracy (single prediction): 30.00%" in text and "- accuracy (aggregated prediction): 35.00%" in text
    assert "distilled prediction by class group: balanced 25.00%, many 50.00%, medium n/a, few n/a" in text
    assert "**no, unfinished** -- tested with `--allow-unfinished` after 7 epochs" in text


def test_overwrite_deletes_the_summary_of_the_run_it_replaces(pkg, tmp_path):
    data = pkg.data(tmp_path / "data")
    cfg = pkg.cfg(data, tmp_path / "run")
    pkg.run(cfg)
    pkg.run(dataclasses.replace(cfg, overwrite=True, stop_after=pkg.half))  # stopped: no test, so no summary of its own
    assert not (Path(cfg.out) / "summary.md").exists()
