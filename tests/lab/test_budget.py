"""``lab.budget``: pairing, exact gains and spreads, skipped runs, separate schedules, the plot and the CLI on the
committed 30-epoch protocol; the budget script continuing across sessions; the committed budget table."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fewshot_sla.report import ReportError
from fewshot_sla.runs import group_id, identity
from lab.budget import main, write_budget
from longtail.reporting import GROUP_IGNORE
from tests.longtail.synthetic import write_folder

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "docs" / "runs" / "longtail_cpu_protocol"

# The config of docs/runs/longtail_cpu_protocol/logit-adjusted_slasd_s0/metrics.json, with today's keys.
CONFIG: dict[str, Any] = {
    "dataset": "imagefolder", "data_root": ".data/cifar10-jpeg", "download": False, "imbalance_ratio": 100.0,
    "profile": "exp", "norm_stats": "cifar", "subset_seed": 0, "loss": "logit-adjusted", "sampler": "instance",
    "vs_gamma": 0.2, "vs_tau": 1.2, "drw": False, "transform": "rotation", "sd": True, "temperature": 1.0,
    "epochs": 30, "schedule": "cosine", "warmup": "epoch", "batch_size": 64, "lr": 0.1, "momentum": 0.9,
    "weight_decay": 0.0002, "sam_rho": 0.0, "backbone": "resnet32", "seed": 0, "out": "runs/x", "wandb": "offline",
    "resume": True, "amp": False, "channels_last": True, "compile": False, "sync_bn": False, "device": "auto",
    "num_threads": 2, "limit_train": 0, "limit_test": 0, "eval_every": 0, "stop_after": 0, "grid_loss": [],
    "grid_transform": [],
}


def write_run(root: Path, name: str, acc: float | None, agg: float | None = None, dist: float | None = None,
              files: str = "de6606d18760d271", record_only: bool = False, **cfg: Any) -> Path:
    """A run folder as ``sla-longtail`` writes it: metrics.json with the test metrics, config, identity, group and
    kind (``acc`` None: still training, only config.yaml and recipe.json)."""
    config = {**CONFIG, **cfg}
    ident = identity(config, GROUP_IGNORE, {"files": files})
    blocks = {"identity": ident, "group": group_id(ident), "kind": "longtail"}
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))
    if acc is None:
        (d / "recipe.json").write_text(json.dumps({"format": "fewshot-sla/run/1", "kind": "longtail",
                                                   "config": config, **blocks}))
        return d
    metrics: dict[str, Any] = {"epochs_done": config["epochs"], "test/acc": acc}
    if config["sd"]:
        metrics.update({"test/acc_agg": agg, "test/acc_distilled": dist, "test/main_mode": "distilled"})
    else:
        metrics["test/main_mode"] = "single"
    metrics.update({"test/balanced_acc": acc, "test/acc_many": acc, "test/acc_medium": acc, "test/acc_few": None,
                    "config": config, "git_commit": "0" * 40, "seed": config["seed"], "subset_seed": 0,
                    "class_counts": [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50], "world_size": 1, **blocks})
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


def base(root: Path, epochs: int, seed: int, acc: float | None, **kw: Any) -> Path:
    return write_run(root, f"e{epochs}/la_baseline_s{seed}", acc, epochs=epochs, seed=seed, transform="none",
                     sd=False, **kw)


def slasd(root: Path, epochs: int, seed: int, si: float, ag: float, sd: float, **kw: Any) -> Path:
    return write_run(root, f"e{epochs}/la_slasd_s{seed}", si, ag, sd, epochs=epochs, seed=seed, **kw)


def rows(result: dict[str, Any], loss: str = "logit-adjusted", curve: int = 0) -> dict[int, dict[str, Any]]:
    return {r["epochs"]: r for r in result["curves"][curve]["losses"][loss]}


def test_paired_gains_means_and_stds_by_hand(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    base(runs, 10, 0, 0.60)
    slasd(runs, 10, 0, 0.63, 0.61, 0.65)
    base(runs, 10, 1, 0.62)
    slasd(runs, 10, 1, 0.60, 0.58, 0.64)
    base(runs, 20, 0, 0.70)
    slasd(runs, 20, 0, 0.69, 0.68, 0.71)
    res = write_budget([runs], tmp_path / "out")
    r10, r20 = rows(res)[10], rows(res)[20]
    assert r10["seeds"] == [0, 1]
    assert r10["gain_sd"]["values"] == pytest.approx([5.0, 2.0])
    assert r10["gain_sd"]["mean"] == pytest.approx(3.5)
    assert r10["gain_sd"]["std"] == pytest.approx(math.sqrt(4.5))  # ((1.5^2 + 1.5^2) / (2 - 1)) ** 0.5
    assert r10["baseline"]["mean"] == pytest.approx(61.0) and r10["baseline"]["std"] == pytest.approx(math.sqrt(2))
    assert r10["sla_sd"]["mean"] == pytest.approx(64.5)
    assert r10["sla_si"]["mean"] == pytest.approx(61.5) and r10["sla_ag"]["mean"] == pytest.approx(59.5)
    assert r10["gain_si"]["values"] == pytest.approx([3.0, -2.0])
    assert r10["gain_ag"]["values"] == pytest.approx([1.0, -4.0])
    assert r20["gain_sd"]["values"] == pytest.approx([1.0]) and math.isnan(r20["gain_sd"]["std"])
    md = (tmp_path / "out" / "budget.md").read_text()
    assert "| 10     | 0,1   | 61.00 +- 1.41 | 64.50 +- 0.71 |" in md
    assert "+3.50 +- 2.12" in md and "+5.00, +2.00" in md
    assert "+1.00 +- n/a" in md  # one seed: no std
    saved = json.loads((tmp_path / "out" / "budget.json").read_text())
    assert saved["curves"][0]["losses"]["logit-adjusted"][1]["gain_sd"]["std"] is None  # strict JSON: null
    png = (tmp_path / "out" / "gain_vs_epochs.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_unfinished_and_unpaired_runs_are_skipped_with_a_note(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    base(runs, 10, 0, 0.60)
    slasd(runs, 10, 0, 0.63, 0.61, 0.65)
    base(runs, 10, 1, None)  # still training: config.yaml and recipe.json only
    slasd(runs, 10, 1, 0.60, 0.58, 0.64)
    res = write_budget([runs], tmp_path / "out")
    assert rows(res)[10]["seeds"] == [0] and rows(res)[10]["gain_sd"]["values"] == pytest.approx([5.0])
    notes = "\n".join(res["notes"])
    assert "la_baseline_s1`: skipped (no test/acc): unfinished" in notes
    assert "la_slasd_s1`: skipped, a slasd run without its pair" in notes
    assert "la_slasd_s1" in (tmp_path / "out" / "budget.md").read_text()


def test_another_schedule_is_its_own_curve_and_speed_keys_are_not(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    base(runs, 10, 0, 0.60)
    slasd(runs, 10, 0, 0.63, 0.61, 0.65, amp=True, num_threads=1, channels_last=False)  # speed only: same curve
    base(runs, 10, 1, 0.62, warmup="step")  # another warm-up is another schedule
    slasd(runs, 10, 1, 0.60, 0.58, 0.64, warmup="step")
    write_run(runs, "gpu/la_baseline_s0", 0.80, epochs=200, batch_size=128, transform="none", sd=False)
    write_run(runs, "gpu/la_slasd_s0", 0.80, 0.80, 0.90, epochs=200, batch_size=128)
    res = write_budget([runs], tmp_path / "out")
    labels = [c["label"] for c in res["curves"]]
    assert labels == ["warmup=epoch batch_size=64", "warmup=step batch_size=64", "warmup=epoch batch_size=128"]
    assert rows(res, curve=0).keys() == {10} and rows(res, curve=0)[10]["gain_sd"]["values"] == pytest.approx([5.0])
    assert rows(res, curve=1)[10]["gain_sd"]["values"] == pytest.approx([2.0])
    assert rows(res, curve=2)[200]["gain_sd"]["values"] == pytest.approx([10.0])
    md = (tmp_path / "out" / "budget.md").read_text()
    assert "## logit-adjusted (warmup=epoch batch_size=128)" in md


def test_same_data_joins_two_names_of_one_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    base(runs, 10, 0, 0.60)
    slasd(runs, 10, 0, 0.63, 0.61, 0.65)
    base(runs, 30, 0, 0.68, files="cifar10-jpeg-materialized")
    slasd(runs, 30, 0, 0.72, 0.70, 0.72, files="cifar10-jpeg-materialized")
    apart = write_budget([runs], tmp_path / "a")
    labels = [c["label"] for c in apart["curves"]]
    assert labels == ["data.files=de6606d18760d271", "data.files=cifar10-jpeg-materialized"]
    joined = write_budget([runs], tmp_path / "b", same_data={"cifar10-jpeg-materialized": "de6606d18760d271"})
    assert len(joined["curves"]) == 1 and rows(joined).keys() == {10, 30}


def test_two_copies_of_one_run_are_refused(tmp_path: Path) -> None:
    base(tmp_path / "a", 10, 0, 0.60)
    base(tmp_path / "b", 10, 0, 0.60)
    slasd(tmp_path / "a", 10, 0, 0.63, 0.61, 0.65)
    with pytest.raises(ReportError, match="two baseline runs of loss logit-adjusted, 10 epochs, seed 0"):
        write_budget([tmp_path / "a", tmp_path / "b"], tmp_path / "out")


@pytest.mark.skipif(not PROTOCOL.is_dir(), reason="docs/runs/longtail_cpu_protocol is not in this checkout")
def test_cli_on_the_committed_30_epoch_protocol(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(PROTOCOL), "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "budget.json").read_text())
    assert [c["label"] for c in res["curves"]] == [""]  # one schedule
    la = rows(res)[30]
    assert la["seeds"] == [0, 1, 2]
    assert la["gain_sd"]["values"] == pytest.approx([4.41, 2.71, 0.94])  # 72.65-68.24, 73.43-70.72, 71.31-70.37
    assert round(la["gain_sd"]["mean"], 1) == 2.7
    assert round(rows(res, "ldam+drw")[30]["gain_sd"]["mean"], 1) == 4.0
    assert round(rows(res, "ce")[30]["gain_sd"]["mean"], 1) == -2.5
    assert "| 30     | 0,1,2 | 69.78 +- 1.34 | 72.46 +- 1.07 |" in capsys.readouterr().out
    assert (tmp_path / "gain_vs_epochs.png").is_file()
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2


#: The script runs each point through sla-grid, which launches through submitit (the [grid] extra).
needs_submitit = pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                                    reason="submitit is not installed (pip install 'fewshot-sla[grid]')")


def budget_script(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """scripts/results_longtail_budget_cpu.sh on the tiny folder under ``tmp_path/data`` (ResNet-20, fp32, no W&B),
    its carried runs in ``tmp_path/unfinished``; ``env`` sets POINTS, RUNS, COMMITTED, EXTRA (added to the base)."""
    extra = "--backbone resnet20 --device cpu --wandb disabled --limit-test 8 " + env.pop("EXTRA", "")
    full = {**os.environ, "DATA": str(tmp_path / "data"), "AMP": "", "WANDB_MODE": "disabled",
            "UNFINISHED": str(tmp_path / "unfinished"), "PYTHON": sys.executable, "EXTRA": extra, **env}
    return subprocess.run(["bash", str(ROOT / "scripts" / "results_longtail_budget_cpu.sh"), *args], env=full,
                          capture_output=True, text=True, timeout=600)


@needs_submitit
@pytest.mark.slow
def test_the_budget_script_saves_finished_records_and_a_later_session_skips_them(tmp_path: Path) -> None:
    """scripts/results_longtail_budget_cpu.sh on a tiny folder: each finished run's record (no checkpoint) lands in
    COMMITTED; a fresh RUNS folder (a new session's machine) with the same COMMITTED trains nothing again, and
    ``python -m lab.budget`` pairs the committed records."""
    write_folder(tmp_path / "data" / "cifar10-jpeg", 100, 4, seed=0)  # imbalance 100: 100, 21, 4, 1 images
    committed = tmp_path / "committed"

    def run(runs: Path) -> str:
        res = budget_script(tmp_path, POINTS="1:ce:0", RUNS=str(runs), COMMITTED=str(committed))
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        return res.stdout

    run(tmp_path / "runs1")
    names = ("ce_baseline_s0", "ce_slasd_s0")
    for name in names:
        saved = committed / "e1" / "imagefolder_ir100" / name
        assert sorted(p.name for p in saved.iterdir()) == ["config.yaml", "metrics.json", "recipe.json"]
        assert json.loads((saved / "metrics.json").read_text())["config"]["backbone"] == "resnet20"
    out = run(tmp_path / "runs2")
    assert "2 of 2 runs finished (0 in this invocation)" in out
    assert not list((tmp_path / "runs2").rglob("checkpoint.pt"))
    assert main([str(committed), "--out", str(tmp_path / "budget")]) == 0
    res = json.loads((tmp_path / "budget" / "budget.json").read_text())
    assert rows(res, "ce")[1]["seeds"] == [0]


@needs_submitit
def test_the_budget_script_carries_an_unfinished_run_to_a_later_session_which_resumes_it(tmp_path: Path) -> None:
    """A run longer than a session: stopped after its first epoch, ``--save-unfinished`` copies its folder (the
    checkpoint and record, no wandb/ or plots) into UNFINISHED; a fresh RUNS folder (the next session's machine)
    gets it back, resumes it at epoch 2 rather than starting over, and ends with the test accuracy and the per-epoch
    losses of a run never stopped; the carried copy is then deleted."""
    write_folder(tmp_path / "data" / "cifar10-jpeg", 100, 4, seed=0)
    unfinished = tmp_path / "unfinished"

    def run(session: str, *args: str, stop: bool = False) -> subprocess.CompletedProcess[str]:
        return budget_script(tmp_path, *args, POINTS="2:ce:0", RUNS=str(tmp_path / session / "runs"),
                             COMMITTED=str(tmp_path / session / "committed"),
                             EXTRA="--num-threads 1" + (" --stop-after 1" if stop else ""))

    first = run("s1", stop=True)
    assert first.returncode == 3, first.stdout[-3000:] + first.stderr[-3000:]  # runs remain
    saved = run("s1", "--save-unfinished")
    assert saved.returncode == 0, saved.stderr[-3000:]
    carried = unfinished / "e2" / "imagefolder_ir100" / "ce_baseline_s0"
    names = sorted(p.name for p in carried.iterdir())
    assert "checkpoint.pt" in names and "config.yaml" in names and "recipe.json" in names
    assert "wandb" not in names and not [n for n in names if n.endswith(".png")]

    second = run("s2")  # a fresh machine: nothing of s1's RUNS, only the carried folders
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "carried:" in second.stdout
    straight = run("s3")  # never stopped
    assert straight.returncode == 0, straight.stdout[-3000:] + straight.stderr[-3000:]
    for name in ("ce_baseline_s0", "ce_slasd_s0"):
        resumed = tmp_path / "s2" / "runs" / "e2" / "imagefolder_ir100" / name
        ref = tmp_path / "s3" / "runs" / "e2" / "imagefolder_ir100" / name
        log = (resumed / "grid.log").read_text()  # the carried log, then this session's invocation
        assert log.count("starting from scratch") == 1 and log.count("=== ") == 2  # resumed, not started over
        assert "1/2" not in log.split("=== ")[-1] and "2/2" in log.split("=== ")[-1]
        hist = [json.loads(line) for line in (resumed / "history.jsonl").read_text().splitlines()]
        ref_hist = [json.loads(line) for line in (ref / "history.jsonl").read_text().splitlines()]
        assert [h.get("train/loss") for h in hist] == [h.get("train/loss") for h in ref_hist]
        got, want = (json.loads((d / "metrics.json").read_text()) for d in (resumed, ref))
        assert got["test/acc"] == want["test/acc"]
        assert (tmp_path / "s2" / "committed" / "e2" / "imagefolder_ir100" / name / "metrics.json").is_file()
    assert not list(unfinished.rglob("checkpoint.pt"))  # finished: the carried copies are gone


def fake_run(folder: Path, epochs_done: int, finished: bool = False) -> None:
    """A run folder as the protocol leaves it: ``epochs_done`` history rows and a checkpoint, or a finished record."""
    folder.mkdir(parents=True)
    for name in ("config.yaml", "recipe.json"):
        (folder / name).write_text("{}")
    (folder / "history.jsonl").write_text("".join(f'{{"epoch": {e}}}\n' for e in range(1, epochs_done + 1)))
    if finished:
        (folder / "metrics.json").write_text('{"test/acc": 0.5}')
    else:
        (folder / "checkpoint.pt").write_bytes(b"epoch %d" % epochs_done)


def test_saving_two_lanes_carries_the_most_advanced_copy_and_never_a_run_finished_in_the_other(tmp_path: Path) -> None:
    """Two lanes started from the same carried folders, so each lane's RUNS holds a stale copy of the run the other
    lane advanced: whichever lane is saved first, the carried copy is the one with more epochs done, and a run one lane
    finished is not carried again from the other's stale copy (its committed record stands)."""
    point = Path("e60") / "imagefolder_ir100"
    for order in ("ab", "ba"):
        base = tmp_path / order
        lanes = {"a": base / "runs_a", "b": base / "runs_b"}
        fake_run(lanes["a"] / point / "la_slasd_s0", 55)  # lane a advanced it from 10 to 55 epochs
        fake_run(lanes["b"] / point / "la_slasd_s0", 10)  # lane b's stale copy
        fake_run(lanes["a"] / point / "la_baseline_s1", 50)  # lane a's stale copy
        fake_run(lanes["b"] / point / "la_baseline_s1", 60, finished=True)  # lane b finished it
        fake_run(base / "unfinished" / point / "la_baseline_s1", 50)  # carried from the last session
        for lane in order:
            res = budget_script(base, "--save-unfinished", RUNS=str(lanes[lane]), COMMITTED=str(base / "committed"))
            assert res.returncode == 0, res.stderr[-3000:]
        carried = base / "unfinished" / point
        assert sorted(p.name for p in carried.iterdir()) == ["la_slasd_s0"], order
        assert (carried / "la_slasd_s0" / "checkpoint.pt").read_bytes() == b"epoch 55", order
        assert (base / "committed" / point / "la_baseline_s1" / "metrics.json").is_file()

        fresh = base / "next_session"  # the next session's start: the finished run keeps its record, not a checkpoint
        res = budget_script(base, RUNS=str(fresh), COMMITTED=str(base / "committed"), POINTS=" ")  # copies, no runs
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert not (fresh / point / "la_baseline_s1" / "checkpoint.pt").exists()
        assert (fresh / point / "la_slasd_s0" / "checkpoint.pt").read_bytes() == b"epoch 55"


BUDGET = ROOT / "docs" / "runs" / "longtail_budget_cpu"


@pytest.mark.skipif(not (BUDGET.is_dir() and PROTOCOL.is_dir()), reason="the budget runs are not in this checkout")
def test_the_committed_budget_table_is_what_the_committed_records_give(tmp_path: Path) -> None:
    assert main([str(PROTOCOL), str(BUDGET), "--out", str(tmp_path)]) == 0
    committed = (ROOT / "docs" / "runs" / "longtail_budget_cpu_report" / "budget.md").read_text()

    def tables(text: str) -> str:  # all but the "Made by" line and the notes, whose paths differ
        return text[text.index("\n## "):].split("\n## Notes")[0]

    assert tables((tmp_path / "budget.md").read_text()) == tables(committed)
    la = rows(json.loads((tmp_path / "budget.json").read_text()))
    assert la[10]["seeds"] == [0, 1] and la[30]["seeds"] == [0, 1, 2]  # one curve: the 10-epoch runs join the 30's


@pytest.mark.skipif(not (BUDGET.is_dir() and PROTOCOL.is_dir()), reason="the budget runs are not in this checkout")
def test_the_results_page_budget_table_is_the_committed_budget() -> None:
    """docs/results.md copies the budget table by hand: every row's numbers are the committed budget.json's."""
    budget = json.loads((ROOT / "docs" / "runs" / "longtail_budget_cpu_report" / "budget.json").read_text())
    page = (ROOT / "docs" / "results.md").read_text()
    section = page[page.index("## Long tail: the budget curve"):]
    names = {"logit adjustment": "logit-adjusted", "CE": "ce"}
    start = section.index("| loss | epochs")
    table = section[start:section.index("\n\n", start)].splitlines()[2:]
    assert len(table) >= 4

    def cell(stat: dict[str, Any], signed: bool = False) -> str:
        fmt = "{:+.2f}" if signed else "{:.2f}"
        return fmt.format(stat["mean"]) + ("" if stat["std"] is None else " +- {:.2f}".format(stat["std"]))

    for line in table:
        loss, epochs, seeds, *numbers = (c.strip().strip("*") for c in line.strip("|").split("|"))
        row = rows(budget, names[loss])[int(epochs)]
        assert seeds == ", ".join(map(str, row["seeds"])), line
        want = [cell(row[k]) for k in ("baseline", "sla_sd", "sla_si", "sla_ag")] + [cell(row["gain_sd"], True)]
        want.append(", ".join(f"{v:+.2f}" for v in row["gain_sd"]["values"]))
        assert numbers == want, line
