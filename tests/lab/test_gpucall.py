"""The GPU call (lab/gpucall.py, scripts/gpu_call.sh): its plan for a given measured throughput (which runs,
in which order, how many fit), its dry run end to end on a CPU without wandb, learn2learn or qpth, and the size of
what travels to the device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lab import gpucall as gc
from lab import throughput as tp

ROOT = Path(__file__).resolve().parents[2]
N_TRAIN = {100.0: 12406, 10.0: 20431}  # CIFAR-10-LT-100 and -10


def row(regime: str, variant: str, k: int, step_ms: float, warmup_s: float = 2.0, error: str | None = None):
    m = 4 if regime == "SLA+SD" else 1
    return tp.StepTiming(regime, variant, k, 128, m, step_ms, 128 / step_ms * 1e3, k * 128 / step_ms * 1e3, 100.0,
                         warmup_s, error)


def test_priority_queue_order_and_committed_runs_are_skipped():
    q = gc.priority_queue()
    assert len(q) == 2 * 3 * 2 + 2 * 3 * 2 + 4 * 3 * 2  # tiers: LDAM-DRW+LA, VS+CE at 100; all four at 10
    assert [i.name for i in q[:6]] == [
        "imagefolder_ir100/ldam_baseline_s0", "imagefolder_ir100/ldam_slasd_s0",
        "imagefolder_ir100/logit-adjusted_baseline_s0", "imagefolder_ir100/logit-adjusted_slasd_s0",
        "imagefolder_ir100/ldam_baseline_s1", "imagefolder_ir100/ldam_slasd_s1",
    ]
    assert q[12].name == "imagefolder_ir100/vs_baseline_s0" and q[24].name == "imagefolder_ir10/ldam_baseline_s0"
    left = gc.priority_queue({"imagefolder_ir100/ldam_baseline_s0", "imagefolder_ir100/ldam_slasd_s0"})
    assert left[0].name == "imagefolder_ir100/logit-adjusted_baseline_s0" and len(left) == len(q) - 2


def test_committed_runs_reads_finished_run_folders(tmp_path):
    done = tmp_path / "imagefolder_ir100" / "ldam_baseline_s0"
    started = tmp_path / "imagefolder_ir100" / "ldam_slasd_s0"
    done.mkdir(parents=True)
    started.mkdir(parents=True)
    (done / "metrics.json").write_text(json.dumps({"test/acc": 0.7}))
    (started / "metrics.json").write_text(json.dumps({"epochs_done": 3}))
    assert gc.committed_runs(tmp_path) == {"imagefolder_ir100/ldam_baseline_s0"}
    assert gc.committed_runs(tmp_path / "absent") == set()


def test_candidate_rates_scale_the_baseline_by_the_one_process_ratio():
    rows = [row("baseline", "bf16+cl", 1, 10.0), row("SLA+SD", "bf16+cl", 1, 30.0),
            row("SLA+SD", "bf16+cl", 4, 60.0), row("SLA+SD", "compile", 1, 20.0, warmup_s=40.0),
            row("SLA+SD", "graphs", 1, float("nan"), error="RuntimeError: boom")]
    rates = {(r.variant, r.processes): r for r in gc.candidate_rates(rows)}
    assert set(rates) == {("bf16+cl", 1), ("bf16+cl", 4), ("compile", 1)}  # the failed variant is no candidate
    assert rates[("bf16+cl", 4)].step_s == pytest.approx({"SLA+SD": 0.060, "baseline": 0.020})
    # compile measured SLA+SD only: its baseline comes from the eager bf16+cl ratio (1/3)
    assert rates[("compile", 1)].step_s["baseline"] == pytest.approx(0.020 / 3)
    assert rates[("compile", 1)].warmup_s == 40.0


def test_run_seconds_by_hand():
    r = gc.Rates("bf16+cl", 1, {"SLA+SD": 0.04, "baseline": 0.01}, 5.0)
    item = gc.QueueItem(100.0, "ldam", "slasd", 0)
    # 12,406 images in batches of 128: 96 full + one of 118 = 97 steps an epoch
    expect = 200 * 97 * 0.04 * (1 + gc.MARGIN) + 5.0 + gc.STARTUP_S + gc.EVAL_S
    assert gc.run_seconds(item, r, N_TRAIN, 200) == pytest.approx(expect)
    graphs = gc.Rates("graphs", 1, {"SLA+SD": 0.04, "baseline": 0.01}, 5.0)  # drops the partial batch: 96
    assert gc.run_seconds(item, graphs, N_TRAIN, 200) == pytest.approx(expect - 200 * 0.04 * (1 + gc.MARGIN))


def test_schedule_keeps_the_order_and_fills_the_first_free_lane():
    r = gc.Rates("bf16+cl", 2, {"SLA+SD": 0.04, "baseline": 0.01}, 0.0)
    q = gc.priority_queue()
    base = gc.run_seconds(q[0], r, N_TRAIN, 200)  # ldam baseline
    sla = gc.run_seconds(q[1], r, N_TRAIN, 200)  # ldam SLA+SD
    slots = gc.schedule(q, r, N_TRAIN, 200, seconds=base + sla + 1e-6)
    # lane 0: ldam baseline, then LA baseline (lane 0 frees first); lane 1: ldam SLA+SD; LA SLA+SD would end at
    # 2 * base + sla > the budget, so the list stops there (nothing later jumps ahead)
    assert [(s.item.name.split("/")[1], s.lane) for s in slots] == [
        ("ldam_baseline_s0", 0), ("ldam_slasd_s0", 1), ("logit-adjusted_baseline_s0", 0)]
    assert slots[2].start_s == pytest.approx(base) and slots[2].end_s == pytest.approx(2 * base)
    assert [s.item.name for s in gc.schedule(q, r, N_TRAIN, 200, seconds=1e9, max_runs=5)] == [i.name for i in q[:5]]
    assert gc.schedule(q, r, N_TRAIN, 200, seconds=base - 1) == []


def test_plan_picks_the_candidate_that_finishes_the_most_runs():
    q = gc.priority_queue()
    one = gc.Rates("bf16+cl", 1, {"SLA+SD": 0.008, "baseline": 0.003}, 2.0)
    four = gc.Rates("bf16+cl", 4, {"SLA+SD": 0.016, "baseline": 0.006}, 2.0)  # 2x the per-model time, 4 lanes
    slow_compile = gc.Rates("compile", 1, {"SLA+SD": 0.006, "baseline": 0.002}, 500.0)  # faster, but 500 s warm-up
    seconds = 420.0
    # by hand (97 steps an epoch, 200 epochs, +15%, +32 s a run): one process: baseline 98.9 s, SLA+SD 210.5 s ->
    # 3 runs in sequence; four: 165.9 s and 389.0 s -> lanes 0-3 take runs 1-4, lane 0 frees at 165.9 for run 5
    # (ends 331.8), run 6 (SLA+SD) would end at 554.9: 5 runs; compile: every run over 500 s: none
    plan = gc.plan_runs(q, [one, four, slow_compile], N_TRAIN, 200, seconds)
    assert (plan.variant, plan.processes) == ("bf16+cl", 4)
    # each lane's runs, in order, as the runner would start them, all ending within the budget
    names = [s.item.name.split("/")[1] for s in plan.slots]
    assert names == [i.name.split("/")[1] for i in q[:5]]
    assert [s.lane for s in plan.slots] == [0, 1, 2, 3, 0]
    assert plan.slots[4].start_s == pytest.approx(plan.slots[0].end_s)
    assert len(gc.schedule(q, one, N_TRAIN, 200, seconds)) == 3
    assert gc.schedule(q, slow_compile, N_TRAIN, 200, seconds) == []
    assert max(s.end_s for s in plan.slots) <= seconds
    assert plan.left[0] == q[len(names)]
    d = plan.to_dict()
    assert d["flags"] == ["--amp", "--channels-last"] and len(d["runs"]) == len(names)
    # nothing fits: no variant, everything left for a later call
    none = gc.plan_runs(q, [one], N_TRAIN, 200, seconds=10.0)
    assert none.slots == [] and none.variant == "bf16+cl" and len(none.left) == len(q)
    assert gc.plan_runs(q, [], N_TRAIN, 200, seconds).variant is None


def test_variant_flags_are_sla_longtail_options():
    from fewshot_sla.config import parse_config
    from longtail.config import LTConfig

    for name, v in tp.VARIANTS.items():
        cfg = parse_config(LTConfig, tp.variant_flags(name))
        assert (cfg.amp, cfg.channels_last, cfg.compile, cfg.compile_mode, cfg.drop_last) == (
            v.amp, v.channels_last, v.compile, v.compile_mode, v.drop_last)


@pytest.mark.slow
def test_dry_run_end_to_end_without_wandb_learn2learn_qpth_or_submitit(tmp_path):
    """The call's dry run, as make test runs it: tiny data, 1-epoch runs, the same plan and packing, with wandb,
    learn2learn, qpth and submitit unimportable (the device has none of them)."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for name in ("wandb", "learn2learn", "qpth", "submitit"):
        (blocked / f"{name}.py").write_text(f"raise ImportError('{name} is not installed on the device')\n")
    env = {**os.environ, "PYTHONPATH": str(blocked), "PYTHON": sys.executable}
    env.pop("WANDB_MODE", None)
    out = tmp_path / "out"
    proc = subprocess.run([str(ROOT / "scripts" / "gpu_call.sh"), "--dry-run", "--out", str(out),
                           "--committed", str(tmp_path / "committed")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["environment.json", "gpu_call.log", "plan.json", "runs.tar.gz", "throughput.json",
                     "throughput.md"]
    assert len(files) <= gc.MAX_FILES
    plan = json.loads((out / "plan.json").read_text())
    assert [r["name"] for r in plan["runs"]] == ["imagefolder_ir100/ldam_baseline_s0",
                                                 "imagefolder_ir100/ldam_slasd_s0"]
    rows = json.loads((out / "throughput.json").read_text())
    assert {(r["regime"], r["variant"], r["processes"]) for r in rows if r["error"] is None} >= {
        ("baseline", "fp32", 1), ("SLA+SD", "fp32", 1), ("SLA+SD", "bf16+cl", 2)}
    with tarfile.open(out / "runs.tar.gz") as t:
        names = t.getnames()
        met = json.load(t.extractfile("imagefolder_ir100/ldam_slasd_s0/metrics.json"))  # type: ignore[arg-type]
    assert {"imagefolder_ir100/ldam_baseline_s0/config.yaml",
            "imagefolder_ir100/ldam_slasd_s0/recipe.json"} <= set(names)
    assert met["epochs_done"] == 1 and "test/acc_distilled" in met
    assert met["config"]["loss"] == "ldam" and met["config"]["drw"] and met["config"]["norm_stats"] == "cifar"
    assert met["config"]["wandb"] == "disabled"
    log = (out / "gpu_call.log").read_text()
    assert "done    ldam_slasd_s0" in log and "runs: 2 finished, 0 failed" in log


def test_what_travels_to_the_device_fits_in_64_mib():
    """The tracked working tree plus the carried data (.gpu/data: materialize.py and the CIFAR-10 JPEG pack)."""
    try:
        tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    size = sum((ROOT / f).stat().st_size for f in tracked.decode().split("\0") if f and (ROOT / f).is_file())
    pack = ROOT.parent / "shared" / "data" / "cifar10" / "cifar10_jpeg.npz"
    if not pack.is_file():
        pytest.skip(f"{pack} is absent: the carried data's size is unknown")
    carried = pack.stat().st_size + (ROOT.parent / "shared" / "data" / "materialize.py").stat().st_size
    assert size + carried < 60 * 2**20, f"{(size + carried) / 2**20:.1f} MiB would travel (limit 64 MiB)"
