"""sla-report on synthetic run folders: grouping by the recorded identity, exact means and stds, CIs, unfinished
and untabled runs, plots; the core report knows no package schema."""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from episodes import reporting as fs_reporting
from fewshot_sla import report as report_module
from fewshot_sla.report import (
    CELL_KINDS,
    CELLS,
    ReportError,
    check_spec,
    fewshot_plot,
    group_runs,
    load_runs,
    mean_std,
    per_class_plot,
    register_report,
    report_spec,
    report_table,
    write_report,
)
from fewshot_sla.report.cli import main
from fewshot_sla.runs import group_id, identity, make_record, write_record
from longtail import reporting as lt_reporting

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COUNTS = [500, 300, 150, 80, 40, 20, 10, 5]  # many: 3, medium: 3, few: 2


def lt_config(**kw: Any) -> dict[str, Any]:
    cfg = {
        "dataset": "cifar10",
        "data_root": "data",
        "imbalance_ratio": 100.0,
        "profile": "exp",
        "loss": "ce",
        "sampler": "instance",
        "drw": False,
        "transform": "none",
        "sd": False,
        "epochs": 200,
        "backbone": "resnet32",
        "seed": 0,
        "out": "runs/x",
        "wandb": "offline",
        "resume": False,
        "device": "auto",
        "num_threads": 0,
        "stop_after": 0,
        "grid_loss": [],
        "grid_transform": [],
    }
    return {**cfg, **kw}


def fs_config(**kw: Any) -> dict[str, Any]:
    cfg = {
        "dataset": "omniglot",
        "data_root": "data",
        "backbone": "conv4",
        "learner": "protonet",
        "ways": 5,
        "shots": 1,
        "test_ways": 0,
        "test_shots": 0,
        "transform": "rotation",
        "test_episodes": 600,
        "lr_milestones": [],
        "seed": 0,
        "out": "runs/y",
        "wandb": "offline",
        "device": "auto",
    }
    return {**cfg, **kw}


def record_blocks(config: dict[str, Any], files: str | None = None) -> dict[str, Any]:
    """identity, group and kind as the recipes write them into metrics.json (and the run record)."""
    mod = lt_reporting if "imbalance_ratio" in config else fs_reporting
    ident = identity(config, mod.GROUP_IGNORE, mod.data_identity(config["dataset"], files))
    return {"identity": ident, "group": group_id(ident), "kind": mod.REPORT["kind"]}


def write_run(
    folder: Path,
    metrics: dict[str, Any],
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
    with_metrics: bool = True,
    blocks: bool = True,
    files: str | None = None,
) -> Path:
    """A run folder as the recipes write it: strict JSON (NaN -> null) with the identity, group and kind
    entries (``blocks=False``: an old run's metrics.json, without them), config.yaml and (``blocks``) recipe.json."""
    folder.mkdir(parents=True)
    config = {**config, "out": str(folder)}
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rec = record_blocks(config, files) if blocks else {}
    if blocks:
        write_record(folder, make_record(rec["kind"], config, {}, rec["identity"]))
    if with_metrics:
        m = {**metrics, "config": config, "seed": config["seed"], "git_commit": "abc1234", **(extra or {}), **rec}
        m = json.loads(json.dumps(m), parse_constant=lambda _: None)  # NaN -> null
        text = json.dumps(m, indent=2, allow_nan=False)
        (folder / "metrics.json").write_text(text.replace("NaN", "null"))
    return folder


def lt_metrics(
    si: float,
    agg: float | None = None,
    sd: float | None = None,
    few: float | None = 0.2,
    per_class: list[float] | None = None,
) -> dict[str, Any]:
    m: dict[str, Any] = {"epochs_done": 200, "test/acc": si}
    if agg is not None:
        m["test/acc_agg"] = agg
    if sd is not None:
        m["test/acc_distilled"] = sd
    m["test/main_mode"] = "distilled" if sd is not None else "aggregated" if agg is not None else "single"
    m["test/balanced_acc"] = si
    m["test/acc_many"], m["test/acc_medium"], m["test/acc_few"] = 0.9, 0.6, few
    m["test/per_class_acc"] = per_class or [0.95, 0.9, 0.85, 0.7, 0.6, 0.5, 0.3, None]
    return m


def fs_metrics(acc: float, ci: float, single: float = 0.5, single_ci: float = 0.01) -> dict[str, Any]:
    return {
        "test/acc": acc,
        "test/acc_ci95": ci,
        "test/acc_single": single,
        "test/acc_single_ci95": single_ci,
        "test/acc_agg": acc,
        "test/acc_agg_ci95": ci,
        "val/best_acc": 0.9,
        "test/episodes": 600,
        "test/per_class_acc": {"a": 0.9, "b": None},
    }


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    """Long tail: CE baseline (seeds 0-2, SI 0.80/0.82/0.84), LDAM-DRW+SLA+SD (seeds 0-1, few null in
    one), one unfinished; few-shot: ProtoNet+SLA (2 seeds), baseline (1 seed); and a demo run."""
    root = tmp_path / "runs"
    for seed, si in zip((0, 1, 2), (0.80, 0.82, 0.84)):
        write_run(
            root / "lt" / f"ce_s{seed}",
            lt_metrics(si),
            lt_config(seed=seed, device=["cpu", "cuda", "auto"][seed]),
            {"class_counts": COUNTS},
        )
    sla = dict(loss="ldam", drw=True, transform="rotation", sd=True)
    write_run(
        root / "lt" / "ldam_s0",
        lt_metrics(0.70, 0.74, 0.75, few=0.40),
        lt_config(seed=0, **sla),
        {"class_counts": COUNTS},
    )
    write_run(
        root / "lt" / "ldam_s1",
        lt_metrics(0.72, 0.78, 0.79, few=None),
        lt_config(seed=1, **sla),
        {"class_counts": COUNTS},
    )
    write_run(root / "lt" / "ldam_s2", {"epochs_done": 3}, lt_config(seed=2, **sla))  # stopped early
    write_run(root / "lt" / "ldam_s3", {}, lt_config(seed=3, **sla), with_metrics=False)  # training: recipe.json only
    write_run(root / "fs" / "sla_s0", fs_metrics(0.90, 0.004), fs_config(seed=0))
    write_run(root / "fs" / "sla_s1", fs_metrics(0.94, 0.006, 0.53), fs_config(seed=1))
    write_run(root / "fs" / "base_s0", fs_metrics(0.85, 0.005, 0.85, 0.005), fs_config(transform="none"))
    write_run(
        root / "demo",
        {"test/baseline/single/acc": 0.7},
        {"epochs": 30, "methods": ["baseline"], "seed": 0},
        {"class_counts": COUNTS},
        blocks=False,
    )
    return root


def rows_of(table: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell (the method label)."""
    out = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| method"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            out[cells[0]] = cells
    return out


def test_mean_std_sample_std_and_nan():
    assert mean_std([0.80, 0.82, 0.84]) == pytest.approx((0.82, 0.02, 3))
    mean, std, n = mean_std([0.5, None, float("nan")])
    assert (mean, n) == (0.5, 1) and math.isnan(std)  # one value: no sample std
    assert all(math.isnan(v) for v in mean_std([None])[:2]) and mean_std([None])[2] == 0


def test_load_runs_recurses_and_lists_unfinished(runs_root: Path):
    runs = load_runs([runs_root])
    names = [r.path.name for r in runs]
    assert names == [
        "demo",
        "base_s0",
        "sla_s0",
        "sla_s1",
        "ce_s0",
        "ce_s1",
        "ce_s2",
        "ldam_s0",
        "ldam_s1",
        "ldam_s2",
        "ldam_s3",
    ]
    by = {r.path.name: r for r in runs}
    assert by["demo"].kind is None and not by["demo"].finished and "not tabled" in by["demo"].status
    assert "scripts/upgrade_run_records.py" in by["demo"].status
    assert not by["ldam_s2"].finished and "3 of 200 epochs" in by["ldam_s2"].status
    assert not by["ldam_s3"].finished and "no metrics.json" in by["ldam_s3"].status
    assert by["ldam_s3"].group == by["ldam_s0"].group  # grouped by its run record while it trains
    assert by["ce_s1"].seed == 1 and by["ce_s1"].class_counts == COUNTS
    # the same run reached twice (parent and child) is loaded once; W&B's copy of metrics.json is not a run
    wb = runs_root / "lt" / "ce_s0" / "wandb" / "offline-run-1" / "files"
    wb.mkdir(parents=True)
    (wb / "metrics.json").write_text((runs_root / "lt" / "ce_s0" / "metrics.json").read_text())
    assert len(load_runs([runs_root / "lt", runs_root / "lt" / "ce_s0"])) == 7


def test_folder_without_metrics_is_a_clear_error(tmp_path: Path):
    empty = tmp_path / "not_a_run"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("hi")
    with pytest.raises(ReportError, match=r"no metrics\.json in or below .*not_a_run.*--out folder"):
        load_runs([empty])
    with pytest.raises(ReportError, match="does not exist"):
        load_runs([tmp_path / "missing"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text('{"test/acc": 0.5,')
    with pytest.raises(ReportError, match=r"bad.*not valid JSON"):
        load_runs([bad])
    assert main([str(empty), "--out", str(tmp_path / "rep")]) == 2


def test_grouping_by_the_recorded_group(runs_root: Path):
    groups = group_runs(load_runs([runs_root]))
    got = [(g.kind, g.label, sorted(r.seed for r in g.runs), len(g.finished)) for g in groups]
    assert got == [
        ("fewshot", "transform=none", [0], 1),
        ("fewshot", "transform=rotation", [0, 1], 2),
        # device differs between the CE seeds: bookkeeping, one group
        ("longtail", "loss=ce drw=False transform=none sd=False", [0, 1, 2], 3),
        ("longtail", "loss=ldam drw=True transform=rotation sd=True", [0, 1, 2, 3], 2),
    ]


def test_single_group_label_names_the_method(tmp_path: Path):
    write_run(tmp_path / "a", lt_metrics(0.5), lt_config(seed=0), {"class_counts": COUNTS})
    write_run(tmp_path / "b", lt_metrics(0.7), lt_config(seed=1), {"class_counts": COUNTS})
    (g,) = group_runs(load_runs([tmp_path]))
    assert g.label == "loss=ce drw=False transform=none sd=False" and len(g.runs) == 2


def test_longtail_table_exact_means_stds_and_nulls(runs_root: Path):
    table = report_table(load_runs([runs_root]))
    rows = rows_of(table.split("## Long-tailed")[1])
    ce = rows["loss=ce drw=False transform=none sd=False"]
    # method, seeds, SI, AG, SD, mode, balanced, many, medium, few
    assert ce[1:] == [
        "3",
        "82.00 +- 2.00",
        "-",
        "-",
        "single",
        "82.00 +- 2.00",
        "90.00 +- 0.00",
        "60.00 +- 0.00",
        "20.00 +- 0.00",
    ]
    ldam = rows["loss=ldam drw=True transform=rotation sd=True"]
    std_si = math.sqrt(2 * 0.01**2) * 100  # SI 0.70, 0.72 -> 71.00 +- 1.41
    assert ldam[1:6] == ["2", f"71.00 +- {std_si:.2f}", "76.00 +- 2.83", "77.00 +- 2.83", "distilled"]
    assert ldam[9] == "40.00 +- n/a (1 of 2 seeds)"  # few was null in one seed
    assert "Shared by every row: `dataset=cifar10 imbalance_ratio=100 profile=exp backbone=resnet32 epochs=200" in table


def test_fewshot_table_ci_columns(runs_root: Path):
    table = report_table(load_runs([runs_root]))
    fs_part = table.split("## Few-shot")[1].split("## Long-tailed")[0]
    rows = rows_of(fs_part)
    # method, seeds, episodes, acc +- 95% CI, acc +- std (seeds), SI +- 95% CI, SI +- std (seeds)
    rot = ["2", "600", "92.00 +- 0.50", "92.00 +- 2.83", "51.50 +- 1.00", "51.50 +- 2.12"]  # SI 0.50, 0.53
    assert rows["transform=rotation"][1:] == rot
    assert rows["transform=none"][1:] == ["1", "600", "85.00 +- 0.50", "85.00 +- n/a", "85.00 +- 0.50", "85.00 +- n/a"]
    header = next(line for line in fs_part.splitlines() if line.startswith("| method"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "method",
        "seeds",
        "episodes",
        "acc +- 95% CI",
        "acc +- std (seeds)",
        "SI +- 95% CI",
        "SI +- std (seeds)",
    ]


def test_all_null_metric_is_na(tmp_path: Path):
    write_run(tmp_path / "a", lt_metrics(0.5, few=None), lt_config(seed=0), {"class_counts": COUNTS})
    write_run(tmp_path / "b", lt_metrics(0.7, few=None), lt_config(seed=1), {"class_counts": COUNTS})
    (row,) = rows_of(report_table(load_runs([tmp_path]))).values()
    assert row[2] == "60.00 +- 14.14" and row[-1] == "n/a"


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_per_class_plot_serves_demo_and_longtail(tmp_path: Path):
    counts = [124, 96, 74, 57, 44, 34, 26, 20, 16, 12]
    demo = {f"method {k}": [min(1.0, 0.1 * k + 0.05 * i) for i in range(10)] for k in range(10)}
    assert_png(
        per_class_plot(demo, counts, tmp_path / "demo.png", class_names=[str(i) for i in range(10)], title="digits")
    )
    c100 = [max(5, int(500 * 0.01 ** (i / 99))) for i in range(100)]  # ties at the tail
    assert_png(per_class_plot({"SLA": [0.5] * 99 + [float("nan")]}, c100, tmp_path / "sub" / "lt.png"))
    with pytest.raises(ValueError, match="has 3 per-class accuracies but there are 10"):
        per_class_plot({"x": [0.1, 0.2, 0.3]}, counts, tmp_path / "bad.png")


def test_fewshot_plot(runs_root: Path, tmp_path: Path):
    groups = group_runs(load_runs([runs_root]))
    assert_png(fewshot_plot([g for g in groups if g.kind == "fewshot"], tmp_path / "fs.png"))
    with pytest.raises(ValueError, match="names the 'episodes' plot"):
        fewshot_plot(groups, tmp_path / "x.png")


def test_write_report_and_main(runs_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "report"
    assert main([str(runs_root), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert f"Made by `sla-report {runs_root} --out {out}`" in text
    assert "82.00 +- 2.00" in text and "92.00 +- 0.50" in text
    assert "![" in text and "(per_class.png)" in text and "(fewshot.png)" in text
    assert_png(out / "per_class.png")
    assert_png(out / "fewshot.png")
    unfinished = text.split("## Unfinished and other runs")[1].split("##")[0]
    assert "ldam_s2` (group `loss=ldam drw=True transform=rotation sd=True`): unfinished: 3 of 200 epochs" in unfinished
    assert "ldam_s3" in unfinished and "demo`: not tabled" in unfinished
    assert re.search(r"^\| \(not tabled\) +\| 0 +\| - .*\| \.\./runs/demo +\|$", text.split("## Runs")[1], re.M)
    assert "report.md" in capsys.readouterr().out
    # write_report on its own, few-shot only: no per-class plot
    path = write_report([runs_root / "fs"], tmp_path / "fs_report")
    assert path.name == "report.md" and (tmp_path / "fs_report" / "fewshot.png").is_file()
    assert not (tmp_path / "fs_report" / "per_class.png").exists()
    assert "## Long-tailed" not in path.read_text()


def test_reads_what_the_project_writer_writes(tmp_path: Path):
    from fewshot_sla.utils import write_json

    run = tmp_path / "run"
    cfg = lt_config(out=str(run))
    write_json(
        {**lt_metrics(0.6, few=float("nan")), "config": cfg, "seed": 0, "class_counts": COUNTS, **record_blocks(cfg)},
        run / "metrics.json",
    )
    (r,) = load_runs(run)  # a bare folder works too
    assert r.finished and r.kind == "longtail"
    (row,) = rows_of(report_table([r])).values()
    assert row[2] == "60.00 +- n/a" and row[-1] == "n/a"


def test_without_matplotlib_plots_fail_with_the_install_command(runs_root: Path, tmp_path: Path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'fewshot-sla\[plots\]'"):
        per_class_plot({"a": [0.5]}, [10], tmp_path / "x.png")
    text = write_report([runs_root / "fs"], tmp_path / "rep").read_text()  # the report still comes
    assert "Plots skipped: plotting needs matplotlib" in text and "92.00 +- 0.50" in text


# -- grouping by the recorded identity (issue 18) -----------------------------------------------------
def digest(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def groups_of(root: Path) -> list[tuple[str, list[Any]]]:
    return [(g.label, sorted(r.seed for r in g.runs)) for g in group_runs(load_runs([root]))]


def test_two_image_folders_two_seeds_are_two_groups(tmp_path: Path):
    # The folders differ only in their files' digest; data_root is the same path for both folders' seed 0 and
    # differs arbitrarily for seed 1 (a moved copy): paths never split or merge groups, the data identity does.
    a, b = digest("folder a"), digest("folder b")
    for seed, root_a, root_b in ((0, "data/photos", "data/photos"), (1, "/mnt/copy", "../elsewhere")):
        for name, root, files in (("a", root_a, a), ("b", root_b, b)):
            cfg = lt_config(dataset="imagefolder", data_root=root, seed=seed)
            write_run(tmp_path / f"{name}_s{seed}", lt_metrics(0.5 + seed / 10), cfg, {"class_counts": COUNTS},
                      files=files)
    assert groups_of(tmp_path) == [(f"data.files={a[:8]}", [0, 1]), (f"data.files={b[:8]}", [0, 1])]
    rows = rows_of(report_table(load_runs([tmp_path])))
    assert rows[f"data.files={a[:8]}"][1:3] == ["2", "55.00 +- 7.07"]
    assert "dataset=imagefolder" in report_table(load_runs([tmp_path]))  # shared: context, not label


def test_a_retested_seed_stays_in_its_methods_group(tmp_path: Path):
    write_run(tmp_path / "s0", fs_metrics(0.90, 0.004), fs_config(seed=0))
    # seed 1 re-tested with --test-only (on another device, W&B off): the same method, the same group
    write_run(tmp_path / "s1", fs_metrics(0.94, 0.006), fs_config(seed=1, test_only=True, device="cpu",
                                                                   wandb="disabled", checkpoint_every=50))
    (g,) = group_runs(load_runs([tmp_path]))
    assert g.label == "learner=protonet ways=5 shots=1 transform=rotation"  # one group: its name keys
    assert sorted(r.seed for r in g.finished) == [0, 1]
    (row,) = rows_of(report_table(load_runs([tmp_path]))).values()
    assert row[1:4] == ["2", "600", "92.00 +- 0.50"]


def test_runs_differing_in_a_method_key_are_groups_labelled_by_it(tmp_path: Path):
    for seed in (0, 1):  # seed 1 of lr 0.1 re-tested: still lr 0.1's group
        write_run(tmp_path / f"lr01_s{seed}", fs_metrics(0.90 + seed / 50, 0.004), fs_config(seed=seed, lr=0.1,
                                                                                          test_only=bool(seed)))
    write_run(tmp_path / "lr005_s0", fs_metrics(0.80, 0.004), fs_config(seed=0, lr=0.05))
    assert groups_of(tmp_path) == [("lr=0.05", [0]), ("lr=0.1", [0, 1])]
    rows = rows_of(report_table(load_runs([tmp_path])))
    assert rows["lr=0.1"][1:4] == ["2", "600", "91.00 +- 0.40"] and rows["lr=0.05"][1] == "1"


def test_a_metrics_json_without_its_record_is_listed_not_tabled(tmp_path: Path):
    write_run(tmp_path / "new", lt_metrics(0.6), lt_config(seed=0), {"class_counts": COUNTS})
    write_run(tmp_path / "old", lt_metrics(0.9), lt_config(seed=1), {"class_counts": COUNTS}, blocks=False)
    by = {r.path.name: r for r in load_runs([tmp_path])}
    assert by["old"].spec is None and not by["old"].finished
    assert "not tabled" in by["old"].status and "scripts/upgrade_run_records.py RUN_DIR" in by["old"].status
    (g,) = group_runs(list(by.values()))
    assert [r.path.name for r in g.runs] == ["new"]
    (row,) = rows_of(report_table(list(by.values()))).values()
    assert row[1:3] == ["1", "60.00 +- n/a"]  # the old run's 0.9 is not in it
    text = write_report([tmp_path], tmp_path / "rep").read_text()
    assert "- `../old`: not tabled: its metrics.json has no kind, identity and group entries" in text


def test_an_unreadable_record_is_listed_with_the_fix(tmp_path: Path):
    run = write_run(tmp_path / "r", lt_metrics(0.6), lt_config(), {"class_counts": COUNTS})
    m = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**m, "identity": {"method": {}}}))  # no data half
    (r,) = load_runs([run])
    assert r.spec is None and "not readable by this version" in r.status and "update fewshot-sla" in r.status
    (run / "metrics.json").write_text(json.dumps({k: v for k, v in m.items() if k != "group"}))
    assert "has kind, identity but not group" in load_runs([run])[0].status
    (run / "metrics.json").write_text(json.dumps({**m, "kind": "nobody_registered_this"}))
    (r,) = load_runs([run])
    assert r.spec is None and r.kind is None and not group_runs([r])
    assert "no report spec is registered for its kind 'nobody_registered_this'" in r.status


def test_a_kind_whose_package_does_not_import_says_so(monkeypatch: pytest.MonkeyPatch):
    from fewshot_sla.report import spec as spec_module

    monkeypatch.setitem(spec_module.KIND_MODULES, "ghost", "no_such_package_for_ghost.reporting")
    with pytest.raises(ReportError, match=r"tabled by no_such_package_for_ghost\.reporting, which does not import"):
        report_spec("ghost")


def toy_spec() -> dict[str, Any]:
    return {"kind": "toy", "title": "Toy regression", "name_keys": ["width"], "context_keys": ["depth"],
            "columns": [{"name": "MSE", "cell": "mean_std", "key": "test/mse"},
                        {"name": "data", "cell": "distinct", "key": "test/split"}],
            "legend": "MSE in % of the variance.", "plot": None}


def write_toy_runs(root: Path, kind: dict[str, Any]) -> None:
    """Two seeds of a toy package's method; ``kind``: how the record names its kind."""
    for seed, mse in ((0, 0.1), (1, 0.3)):
        ident = {"method": {"width": 8, "depth": 2}, "data": {}}
        run = root / f"toy_s{seed}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"test/mse": mse, "test/split": "val", "seed": seed,
                                                      "config": {"width": 8, "depth": 2, "seed": seed},
                                                      "identity": ident, "group": group_id(ident), **kind}))


def test_any_package_declares_its_own_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # A kind the core has never heard of: its package registers the table; the runs record only their kind.
    from fewshot_sla.report import spec as spec_module

    monkeypatch.setattr(spec_module, "_SPECS", dict(spec_module._SPECS))  # registrations end with the test
    spec = register_report(toy_spec())
    assert report_spec("toy") is spec
    write_toy_runs(tmp_path, {"kind": "toy"})
    table = report_table(load_runs([tmp_path]))
    assert table.startswith("## Toy regression\n\nShared by every row: `depth=2`\n\n| method  | seeds | MSE ")
    assert rows_of(table) == {"width=8": ["width=8", "2", "20.00 +- 14.14", "val"]}
    assert table.endswith("\n\nMSE in % of the variance.")
    with pytest.raises(ReportError, match="plot 'violin'"):
        register_report({**spec, "plot": "violin"})
    with pytest.raises(ReportError, match=r"needs \['ci'\]"):
        check_spec({**spec, "columns": [{"name": "x", "cell": "mean_ci", "key": "test/mse"}]})
    with pytest.raises(ReportError, match="clash"):
        check_spec({**spec, "columns": [{"name": "seeds", "cell": "mean_std", "key": "test/mse"}]})
    with pytest.raises(ReportError, match="cell kind 'median_iqr'"):
        check_spec({**spec, "columns": [{"name": "x", "cell": "median_iqr", "key": "test/mse"}]})


def test_the_table_is_the_kinds_code_not_a_copy_in_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from fewshot_sla.report import spec as spec_module

    monkeypatch.setattr(spec_module, "_SPECS", dict(spec_module._SPECS))
    register_report(toy_spec())
    # a run of an earlier version carried its kind's whole spec (here a stale heading) and no "kind" of its own
    stale = {**toy_spec(), "title": "Old title",
             "columns": [{"name": "old MSE", "cell": "mean_std", "key": "test/mse"}]}
    write_toy_runs(tmp_path, {"report": stale})
    table = report_table(load_runs([tmp_path]))
    assert table.startswith("## Toy regression") and "old MSE" not in table and "| MSE " in table
    # a new heading in the package's code: every report follows, no run is rewritten
    register_report({**toy_spec(), "columns": [{"name": "mean squared error", "cell": "mean_std", "key": "test/mse"}]})
    table = report_table(load_runs([tmp_path]))
    assert rows_of(table) == {"width=8": ["width=8", "2", "20.00 +- 14.14"]}
    assert "| method  | seeds | mean squared error |" in table


def test_each_cell_kind_has_its_cell():
    assert set(CELLS) == set(CELL_KINDS)


def test_a_copy_of_a_run_folder_is_not_another_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    # two seeds and a backup copy of seed 0: formerly a row of "3 seeds" (std over 0.80, 0.82, 0.80)
    import shutil

    for seed, si in ((0, 0.80), (1, 0.82)):
        write_run(tmp_path / "runs" / f"ce_s{seed}", lt_metrics(si), lt_config(seed=seed), {"class_counts": COUNTS})
    shutil.copytree(tmp_path / "runs" / "ce_s0", tmp_path / "runs" / "ce_s0_backup")
    first, copy = str(tmp_path / "runs" / "ce_s0"), str(tmp_path / "runs" / "ce_s0_backup")
    with pytest.raises(ReportError) as e:
        write_report([tmp_path / "runs"], tmp_path / "rep")
    assert f"{first!r} and {copy!r} are two runs of group `loss=ce drw=False transform=none sd=False` with seed 0" in (
        str(e.value))
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and first in err and copy in err
    assert "Traceback" not in err and not (tmp_path / "rep" / "report.md").exists()
    # without the copy: one row of two seeds
    (row,) = rows_of(report_table(load_runs([tmp_path / "runs" / "ce_s0", tmp_path / "runs" / "ce_s1"]))).values()
    assert row[1:3] == ["2", "81.00 +- 1.41"]


def test_the_core_report_knows_no_package_schema():
    names = ["imbalance_ratio", "learner", "ways", "shots", "drw", "sam_rho", "vs_gamma", "train_episodes",
             "test_only", "data_root", "checkpoint_every", "grid_loss", "class_rotations", "limit_train"]
    files = sorted(Path(report_module.__file__).parent.glob("*.py"))
    assert [f.name for f in files] == ["__init__.py", "__main__.py", "cli.py", "document.py", "load.py", "plots.py",
                                       "spec.py", "tables.py"]
    for f in files:
        source = f.read_text()
        assert sorted(n for n in names if re.search(rf"\b{n}\b", source)) == [], f.name
        tree = ast.parse(source)
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        if f.name == "spec.py":  # where the kinds shipped with fewshot-sla are tabled: a lookup, never special
            (table,) = [n.value for n in ast.walk(tree) if isinstance(n, ast.AnnAssign)
                        and getattr(n.target, "id", "") == "KIND_MODULES"]
            strings -= {c.value for c in ast.walk(table) if isinstance(c, ast.Constant)}
        assert not strings & {"longtail", "fewshot", "other"}, f.name  # ("episodes" names a plot)
        assert "import episodes" not in source and "import longtail" not in source


def test_the_library_does_not_load_the_command_line():
    import subprocess
    import sys

    code = "import sys, fewshot_sla.report; assert 'fewshot_sla.report.cli' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_group_is_the_w_and_b_group_rule():
    # what RunLogger gets from the recipe: runs.group_id of the same identity the report groups by
    cfg = lt_config(seed=3, data_root="/somewhere", out="x")
    rec = record_blocks(cfg)
    assert rec["group"] == group_id(identity(lt_config(seed=0), lt_reporting.GROUP_IGNORE, {}))
