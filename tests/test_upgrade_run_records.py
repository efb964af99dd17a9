"""scripts/upgrade_run_records.py: old metrics.json files get the kind, identity and group the recipes write now,
so sla-report tables them in the groups of new runs; copied report specs are dropped; idempotent; image folders and
other tools' runs skipped; every committed record loads and gives the committed tables."""

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
    """A metrics.json as written before runs carried kind, identity and group."""
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
    assert "1 upgraded, 4 unchanged, 0 skipped" in capsys.readouterr().out  # the new runs' records: 2 unchanged
    m = read(old)
    want = identity({**cfg, **lt_reporting.LEGACY_DEFAULTS}, lt_reporting.GROUP_IGNORE, {})
    assert m["identity"] == want and m["group"] == group_id(want) == read(tmp_path / "new")["group"]
    assert m["kind"] == "longtail" and "report" not in m
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
    assert m["identity"] == want and m["kind"] == "fewshot" and "report" not in m


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


def test_a_copied_report_spec_is_dropped_and_the_kind_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    # a run of an earlier version: its metrics.json and its record carry the kind's whole spec, metrics.json no kind
    config = {**lt_config(), **lt_reporting.LEGACY_DEFAULTS}  # a method of this version: its identity stays
    run = write_run(tmp_path / "run", lt_metrics(0.5), config, {"class_counts": COUNTS})
    metrics, record = read(run), json.loads((run / "recipe.json").read_text())
    stale = {**lt_reporting.REPORT, "title": "An old title"}
    old_metrics = {k: v for k, v in metrics.items() if k != "kind"} | {"report": stale, "upgraded": {"by": "x"}}
    (run / "metrics.json").write_text(json.dumps(old_metrics))
    (run / "recipe.json").write_text(json.dumps({**record, "report": stale}))
    before = report_table(load_runs([run]))
    assert "## Long-tailed classification" in before and "old title" not in before  # the spec is the package's
    assert upgrade_script.main([str(run)]) == 0
    assert "2 upgraded, 0 unchanged, 0 skipped" in capsys.readouterr().out
    assert list(read(run)) == [*metrics, "upgraded"]  # the kind where the spec was
    assert read(run) == {**metrics, "upgraded": {"by": "x"}}
    assert json.loads((run / "recipe.json").read_text()) == record
    assert report_table(load_runs([run])) == before


def test_every_committed_record_is_facts_that_load_and_report():
    # records keep facts (kind, identity, group, config, recipe, metrics): a changed table heading or legend changes
    # no record, only the reports regenerated from them
    runs = load_runs([ROOT / "docs" / "runs"])
    files = sorted((ROOT / "docs" / "runs").rglob("metrics.json")) + sorted((ROOT / "docs" / "runs").rglob(
        "recipe.json"))
    assert len(runs) >= 137 and len(files) >= 203
    for f in files:
        m = json.loads(f.read_text())
        assert "report" not in m and isinstance(m["kind"], str) and {"identity", "group"} <= set(m), f
        if f.name == "metrics.json":
            assert upgrade_script.upgrade(m) == m, f  # identities as this version's recipes write them
    assert all(r.spec is not None and r.finished for r in runs), [r.status for r in runs if not r.finished]
    for folder in sorted(p for p in (ROOT / "docs" / "runs").iterdir() if p.is_dir() and "_report" not in p.name):
        assert report_table(load_runs([folder])).startswith("## "), folder


#: The sla-report commands of docs/results.md: run folders (globs as the shell expands them) -> report folder.
REPORTS = [
    ("omniglot_cpu", "omniglot_cpu_report"),
    ("omniglot_learners_cpu", "omniglot_learners_cpu_report"),
    ("omniglot_protonet_variants_cpu", "omniglot_protonet_variants_cpu_report"),
    ("longtail_cpu_protocol", "longtail_cpu_protocol_report"),
    ("tiny_imagenet_cpu/protonet_*", "tiny_imagenet_cpu_report/protonet"),
    ("tiny_imagenet_cpu/pretrain_*", "tiny_imagenet_cpu_report/pretrain"),
    ("tiny_imagenet_cpu/r2d2_* tiny_imagenet_cpu/svm_* tiny_imagenet_cpu/fomaml_*", "tiny_imagenet_cpu_report/others"),
]


@pytest.mark.parametrize("runs, report", REPORTS)
def test_the_committed_tables_are_what_the_committed_records_give(runs: str, report: str):
    dirs = [d for pattern in runs.split() for d in sorted((ROOT / "docs" / "runs").glob(pattern))]
    committed = (ROOT / "docs" / "runs" / report / "report.md").read_text()
    given = " ".join(str(d.relative_to(ROOT)) for d in dirs)
    assert f"Made by `sla-report {given} --out docs/runs/{report}`" in committed  # the same run folders
    table = report_table(load_runs(dirs))
    assert table and table in committed  # title, context, every row and the legend, byte for byte
    assert all(r.finished for r in load_runs(dirs))
