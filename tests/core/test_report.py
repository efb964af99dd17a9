"""sla-report on synthetic run folders: grouping, exact means and stds, CIs, unfinished runs, plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from fewshot_sla.report import (
    ReportError,
    fewshot_plot,
    group_runs,
    load_runs,
    main,
    mean_std,
    per_class_plot,
    report_table,
    write_report,
)

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


def write_run(
    folder: Path,
    metrics: dict[str, Any],
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
    with_metrics: bool = True,
) -> Path:
    """A run folder as the scripts write it: strict JSON (NaN -> null) and config.yaml."""
    folder.mkdir(parents=True)
    config = {**config, "out": str(folder)}
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if with_metrics:
        rec = {**metrics, "config": config, "seed": config["seed"], "git_commit": "abc1234", **(extra or {})}
        rec = json.loads(json.dumps(rec), parse_constant=lambda _: None)  # NaN -> null
        text = json.dumps(rec, indent=2, allow_nan=False)
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
    write_run(root / "lt" / "ldam_s3", {}, lt_config(seed=3, **sla), with_metrics=False)  # never wrote metrics.json
    write_run(root / "fs" / "sla_s0", fs_metrics(0.90, 0.004), fs_config(seed=0))
    write_run(root / "fs" / "sla_s1", fs_metrics(0.94, 0.006, 0.53), fs_config(seed=1))
    write_run(root / "fs" / "base_s0", fs_metrics(0.85, 0.005, 0.85, 0.005), fs_config(transform="none"))
    write_run(
        root / "demo",
        {"test/baseline/single/acc": 0.7},
        {"epochs": 30, "methods": ["baseline"], "seed": 0},
        {"class_counts": COUNTS},
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
    assert by["demo"].kind == "other" and not by["demo"].finished and "not a sla-longtail" in by["demo"].status
    assert not by["ldam_s2"].finished and "3 of 200 epochs" in by["ldam_s2"].status
    assert not by["ldam_s3"].finished and "no metrics.json" in by["ldam_s3"].status
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


def test_grouping_by_config_minus_seed(runs_root: Path):
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
    rows = rows_of(table.split("## Few-shot")[0])
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
    rows = rows_of(table.split("## Few-shot")[1])
    # method, seeds, episodes, acc +- 95% CI, acc +- std (seeds), SI +- 95% CI, SI +- std (seeds)
    rot = ["2", "600", "92.00 +- 0.50", "92.00 +- 2.83", "51.50 +- 1.00", "51.50 +- 2.12"]  # SI 0.50, 0.53
    assert rows["transform=rotation"][1:] == rot
    assert rows["transform=none"][1:] == ["1", "600", "85.00 +- 0.50", "85.00 +- n/a", "85.00 +- 0.50", "85.00 +- n/a"]
    header = next(line for line in table.split("## Few-shot")[1].splitlines() if line.startswith("| method"))
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
    with pytest.raises(ValueError, match="few-shot groups only"):
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
    assert "ldam_s3" in unfinished and "demo`: not a sla-longtail" in unfinished
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
        {**lt_metrics(0.6, few=float("nan")), "config": cfg, "seed": 0, "class_counts": COUNTS}, run / "metrics.json"
    )
    (r,) = load_runs(run)  # a bare folder works too
    assert r.finished and r.kind == "longtail"
    (row,) = rows_of(report_table([r])).values()
    assert row[2] == "60.00 +- n/a" and row[-1] == "n/a"


def test_without_matplotlib_plots_fail_with_the_install_command(runs_root: Path, tmp_path: Path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import now raises ImportError
    with pytest.raises(ImportError, match="pip install matplotlib"):
        per_class_plot({"a": [0.5]}, [10], tmp_path / "x.png")
    text = write_report([runs_root / "fs"], tmp_path / "rep").read_text()  # the report still comes
    assert "Plots skipped: plotting needs matplotlib" in text and "92.00 +- 0.50" in text


def test_a_config_key_added_later_does_not_split_a_method(tmp_path: Path):
    old = {k: v for k, v in lt_config(seed=0).items() if k not in ("vs_gamma", "vs_tau", "sam_rho")}
    write_run(tmp_path / "old", lt_metrics(0.5), old, {"class_counts": COUNTS})
    write_run(tmp_path / "new", lt_metrics(0.7), {**lt_config(seed=1), "sam_rho": 0.0}, {"class_counts": COUNTS})
    write_run(tmp_path / "sam", lt_metrics(0.6), {**lt_config(seed=0), "sam_rho": 0.05}, {"class_counts": COUNTS})
    groups = group_runs(load_runs([tmp_path]))
    assert [(g.label, sorted(r.seed for r in g.runs)) for g in groups] == [("sam_rho=0", [0, 1]), ("sam_rho=0.05", [0])]
