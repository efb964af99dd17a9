"""scripts/upgrade_run_records.py: old metrics.json files get the identity, group and report the recipes write now,
so sla-report tables them in the groups of new runs; idempotent; image folders and other tools' runs skipped;
the committed records are up to date and give the committed tables."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from episodes import reporting as fs_reporting
from fewshot_sla.report import group_runs, load_runs, report_table
from fewshot_sla.runs import group_id, identity
from longtail import reporting as lt_reporting
from tests.core.test_report import COUNTS, fs_config, fs_metrics, lt_config, lt_metrics, write_run

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("upgrade_run_records", ROOT / "scripts" / "upgrade_run_records.py")
assert _spec is not None and _spec.loader is not None
upgrade_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(upgrade_script)


def old_run(folder: Path, metrics: dict[str, Any], config: dict[str, Any], **kw: Any) -> Path:
    """A metrics.json as written before runs carried identity, group and report."""
    return write_run(folder, metrics, config, blocks=False, **kw)


def read(run: Path) -> dict[str, Any]:
    return json.loads((run / "metrics.json").read_text())


def test_an_old_run_joins_the_group_of_a_new_run_of_its_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    # recorded before vs_gamma, vs_tau, sam_rho, warmup, norm_stats and sync_bn existed: LEGACY_DEFAULTS give its
    # behaviour
    cfg = {k: v for k, v in lt_config(seed=0, data_root="/old/place").items() if k not in lt_reporting.LEGACY_DEFAULTS}
    old = old_run(tmp_path / "old", lt_metrics(0.5), cfg, extra={"class_counts": COUNTS})
    new_cfg = {**lt_config(seed=1), **lt_reporting.LEGACY_DEFAULTS}
    write_run(tmp_path / "new", lt_metrics(0.7), new_cfg, {"class_counts": COUNTS})
    write_run(tmp_path / "sam", lt_metrics(0.6), {**new_cfg, "sam_rho": 0.05}, {"class_counts": COUNTS})
    assert upgrade_script.main([str(tmp_path)]) == 0
    assert "1 upgraded, 2 unchanged, 0 skipped" in capsys.readouterr().out
    m = read(old)
    want = identity({**cfg, **lt_reporting.LEGACY_DEFAULTS}, lt_reporting.GROUP_IGNORE, {})
    assert m["identity"] == want and m["group"] == group_id(want) == read(tmp_path / "new")["group"]
    assert m["report"] == lt_reporting.REPORT
    assert m["upgraded"] == {"by": "scripts/upgrade_run_records.py",
                             "legacy_defaults": lt_reporting.LEGACY_DEFAULTS}
    assert m["test/acc"] == 0.5 and m["config"] == {**cfg, "out": str(old)}  # the run's own record is kept
    got = [(g.label, sorted(r.seed for r in g.runs)) for g in group_runs(load_runs([tmp_path]))]
    assert got == [("sam_rho=0", [0, 1]), ("sam_rho=0.05", [1])]


def test_idempotent_and_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run = old_run(tmp_path / "fs", fs_metrics(0.9, 0.004), fs_config(test_only=True))
    assert upgrade_script.main([str(run), "--dry-run"]) == 0
    assert "1 would upgrade" in capsys.readouterr().out and "identity" not in read(run)
    assert upgrade_script.main([str(run)]) == 0
    first = (run / "metrics.json").read_bytes()
    assert upgrade_script.main([str(run)]) == 0 and upgrade_script.main([str(run), "--force"]) == 0
    assert (run / "metrics.json").read_bytes() == first
    assert capsys.readouterr().out.count("unchanged ") == 2
    m = read(run)  # a re-tested run: test_only is no part of its method
    want = identity({**fs_config(), **fs_reporting.LEGACY_DEFAULTS}, fs_reporting.GROUP_IGNORE, {})
    assert m["identity"] == want and m["report"] == fs_reporting.REPORT


def test_image_folder_runs_are_skipped_unless_their_folder_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run = old_run(tmp_path / "photos", lt_metrics(0.5), lt_config(dataset="imagefolder", data_root="my/photos"),
                  extra={"class_counts": COUNTS})
    before = (run / "metrics.json").read_bytes()
    assert upgrade_script.main([str(run)]) == 1
    out = capsys.readouterr().out
    assert "skipped" in out and "digest of the files it read was not recorded" in out and "--image-folder-id" in out
    assert (run / "metrics.json").read_bytes() == before
    assert upgrade_script.main([str(run), "--image-folder-id", "photos-2024"]) == 0
    m = read(run)
    assert m["identity"]["data"] == {"files": "photos-2024"}
    assert m["upgraded"]["data"] == "given by --image-folder-id, not measured from the folder"
    assert upgrade_script.main([str(run)]) == 0  # upgraded once: its data identity is kept, no id needed again
    assert "1 unchanged" in capsys.readouterr().out
    # a given id may be given again (the digest new runs measure on that folder): the group follows it
    group = m["group"]
    assert upgrade_script.main([str(run), "--image-folder-id", "de6606d18760d271"]) == 0
    m = read(run)
    assert m["identity"]["data"] == {"files": "de6606d18760d271"} and m["group"] != group
    assert m["upgraded"]["data"] == "given by --image-folder-id, not measured from the folder"


def test_a_measured_data_identity_is_never_replaced():
    meta = upgrade_script.upgrade(lt_metrics(0.5) | {"config": lt_config(dataset="imagefolder")}, "measured")
    fresh = {k: v for k, v in meta.items() if k != "upgraded"}  # as a new run writes it: its digest measured
    assert upgrade_script.upgrade(fresh, "another")["identity"]["data"] == {"files": "measured"}


def test_other_runs_are_skipped_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    demo = old_run(tmp_path / "demo", {"test/baseline/single/acc": 0.7}, {"epochs": 3, "methods": ["x"], "seed": 0})
    assert upgrade_script.main([str(demo)]) == 1
    assert "not a sla-longtail or sla-fewshot run" in capsys.readouterr().out
    assert upgrade_script.main([str(tmp_path / "missing")]) == 2


def test_the_committed_records_are_up_to_date():
    # every committed run carries what this version's recipes write; a changed REPORT or LEGACY_DEFAULTS needs
    # `python scripts/upgrade_run_records.py docs/runs` (and the reports regenerated)
    files = sorted((ROOT / "docs" / "runs").rglob("metrics.json"))  # the budget curve nests deeper
    assert files
    for f in files:
        m = json.loads(f.read_text())
        assert {"identity", "group", "report"} <= set(m), f
        assert upgrade_script.upgrade(m) == m, f


@pytest.mark.parametrize("name", ["omniglot_cpu", "omniglot_learners_cpu", "longtail_cpu_protocol",
                                  "omniglot_protonet_variants_cpu"])
def test_the_committed_tables_are_what_the_committed_records_give(name: str):
    runs = ROOT / "docs" / "runs" / name
    committed = (ROOT / "docs" / "runs" / f"{name}_report" / "report.md").read_text()
    table = report_table(load_runs([runs]))
    assert table and table in committed  # title, context, every row and the legend, byte for byte
    assert all(r.finished for r in load_runs([runs]))
