"""``sla-grid`` (fewshot_sla/grid.py): a 2 x 2 grid end to end through submitit's local executor (real job
processes) on a tiny synthetic image folder, an unfinished run resumed rather than restarted, a second invocation
that trains nothing and re-reports; the grid file's expansion; the SLURM job it would submit; bad input as one
line."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fewshot_sla import grid as g

#: sla-grid launches through submitit (the [grid] extra); without it only the launch-free tests run.
needs_submitit = pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                                    reason="submitit is not installed (pip install 'fewshot-sla[grid]')")

RUNS = ("ce_s0", "ce_s1", "ldam_s0", "ldam_s1")


def tiny_options(data: Path) -> dict:
    """2 epochs of ResNet-20 on :func:`tests.longtail.synthetic.write_folder`'s 4 classes, baseline, CPU."""
    return {"dataset": "imagefolder", "data_root": str(data), "imbalance_ratio": 4, "epochs": 2, "batch_size": 16,
            "backbone": "resnet20", "device": "cpu", "wandb": "disabled", "limit_test": 8, "num_threads": 1}


def write_grid(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def launches(run: Path) -> list[str]:
    """The sections of a run's grid.log, one per launch."""
    log = run / "grid.log"
    return log.read_text().split("=== ")[1:] if log.is_file() else []


@needs_submitit
@pytest.mark.slow
def test_local_grid_end_to_end_resumes_an_unfinished_run_then_skips_everything(tmp_path, monkeypatch, capsys):
    from longtail.benchmark import main as longtail_main
    from tests.longtail.synthetic import write_folder

    monkeypatch.setenv("WANDB_MODE", "disabled")
    data = write_folder(tmp_path / "data", 24, 6, seed=0)
    out = tmp_path / "grid"
    spec = {"cli": "sla-longtail", "out": str(out), "options": tiny_options(data),
            "axes": {"loss": {"ce": {"loss": "ce"}, "ldam": {"loss": "ldam", "drw": True}}, "seed": [0, 1]}}
    grid_file = write_grid(tmp_path / "grid.yaml", spec)
    # One run was started before and stopped after its first epoch (a job cut by its time limit leaves the same).
    first = g.load_grid(grid_file).runs[0]
    assert first.name == "ce_s0"
    assert longtail_main([*first.argv, "--stop-after", "1"]) == 0
    assert torch.load(out / "ce_s0" / "checkpoint.pt", weights_only=True)["unit"] == 1
    assert not g.is_finished(out / "ce_s0")

    assert g.main([str(grid_file), "--jobs", "2", "--launcher", "local"]) == g.EXIT_DONE
    text = capsys.readouterr().out
    assert "start   ce_s0 (resuming from its checkpoint)" in text and "4 of 4 runs finished (4 in this" in text
    for name in RUNS:
        m = json.loads((out / name / "metrics.json").read_text())
        assert [h["epoch"] for h in m["history"]] == [1, 2], name
        c = m["config"]
        assert (c["loss"], c["drw"], c["seed"], c["resume"]) == (name[:-3], name.startswith("ldam"), int(name[-1]),
                                                                  True)
        assert len(launches(out / name)) == 1, name
    # the unfinished run continued at epoch 2 (its launch trained no first epoch) rather than starting over
    (resumed,) = launches(out / "ce_s0")
    assert "starting from scratch" not in resumed and "2/2" in resumed and "1/2" not in resumed
    assert "starting from scratch" in launches(out / "ce_s1")[0]
    report = out / "report" / "report.md"
    assert "ldam" in report.read_text()

    # Again: nothing trains (no launch, no record touched) and the report is written again.
    stamps = {n: (out / n / "metrics.json").stat().st_mtime_ns for n in RUNS}
    report.unlink()
    assert g.main([str(grid_file), "--jobs", "2"]) == g.EXIT_DONE
    assert "4 of 4 runs finished (0 in this invocation)" in capsys.readouterr().out
    assert {n: (out / n / "metrics.json").stat().st_mtime_ns for n in RUNS} == stamps
    assert [len(launches(out / n)) for n in RUNS] == [1, 1, 1, 1]
    assert report.is_file()


@needs_submitit
def test_a_run_stopped_early_is_reported_as_remaining(tmp_path, monkeypatch, capsys):
    """Exit 3 (runs remain) when a run stops before its last epoch, here through the debug launcher (in-process)."""
    from tests.longtail.synthetic import write_folder

    monkeypatch.setenv("WANDB_MODE", "disabled")
    data = write_folder(tmp_path / "data", 12, 3, seed=0)
    opts = {**tiny_options(data), "epochs": 2}
    grid_file = write_grid(tmp_path / "g.yaml", {"cli": "sla-longtail", "out": str(tmp_path / "o"), "options": opts,
                                                 "runs": [{"name": "only", "loss": "ce"}]})
    assert g.main([str(grid_file), "--launcher", "debug", "--", "--stop-after", "1"]) == g.EXIT_INCOMPLETE
    text = capsys.readouterr().out
    assert "stopped only before its last epoch" in text and "runs remain" in text
    assert not (tmp_path / "o" / "report").exists()


@needs_submitit
def test_a_failing_run_is_reported_with_its_exit_status(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    opts = {**tiny_options(tmp_path / "no_such_folder")}
    grid_file = write_grid(tmp_path / "g.yaml", {"cli": "sla-longtail", "out": str(tmp_path / "o"), "options": opts,
                                                 "runs": [{"name": "bad", "loss": "ce"}]})
    assert g.main([str(grid_file), "--launcher", "debug"]) == g.EXIT_FAILED
    text = capsys.readouterr().out
    assert "FAILED  bad (exit 2)" in text and "failed runs: bad" in text and "1 failed" in text


def test_grid_expansion_names_and_option_order(tmp_path):
    grid_file = write_grid(tmp_path / "g.yaml", {
        "cli": "sla-fewshot", "out": "runs/x",
        "options": {"dataset": "omniglot", "data-root": "D", "encode": "joint", "lr": 0.001},
        "axes": {"method": {"base": {"transform": "none"}, "sla": {"transform": "rotation", "class_rotations": True}},
                 "lr": [0.01, 0.1], "seed": [0, 2]},
        "runs": [{"name": "extra", "learner": "r2d2", "encode": "separate"}],
        "report": {"sla": ["sla_*"], "one": "extra"},
    })
    grid = g.load_grid(grid_file, extra=["--test-episodes", "5"])
    names = [r.name for r in grid.runs]
    assert names == ["base_lr-0.01_s0", "base_lr-0.01_s2", "base_lr-0.1_s0", "base_lr-0.1_s2",
                     "sla_lr-0.01_s0", "sla_lr-0.01_s2", "sla_lr-0.1_s0", "sla_lr-0.1_s2", "extra"]
    by = {r.name: r for r in grid.runs}
    assert list(by["sla_lr-0.1_s2"].argv) == [
        "--dataset", "omniglot", "--data-root", "D", "--encode", "joint", "--lr", "0.1", "--transform", "rotation",
        "--class-rotations", "--seed", "2", "--out", str(Path("runs/x") / "sla_lr-0.1_s2"), "--resume",
        "--test-episodes", "5"]
    assert list(by["extra"].argv)[:10] == ["--dataset", "omniglot", "--data-root", "D", "--encode", "separate",
                                           "--lr", "0.001", "--learner", "r2d2"]
    assert grid.report == {"sla": names[4:8], "one": ["extra"]}
    assert g.option_args({"sd": False, "grid_loss": ["ce", "ldam"]}) == ["--no-sd", "--grid-loss", "ce", "ldam"]
    assert g.load_grid(grid_file, out="elsewhere").runs[0].out == Path("elsewhere") / "base_lr-0.01_s0"
    part = g.select(grid, ["sla_*_s0", "extra"])  # --only
    assert [r.name for r in part.runs] == ["sla_lr-0.01_s0", "sla_lr-0.1_s0", "extra"]
    assert part.report == {"sla": ["sla_lr-0.01_s0", "sla_lr-0.1_s0"], "one": ["extra"]}
    assert g.select(grid, []) is grid
    with pytest.raises(g.GridError, match=r"--only nope\* matches no run; runs: base_lr-0.01_s0, "):
        g.select(grid, ["nope*"])


def test_each_job_gets_its_share_of_the_cores_unless_the_grid_sets_threads(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(g, "cpu_count", lambda: 8)
    spec = {"cli": "sla-longtail", "out": str(tmp_path / "o"), "axes": {"seed": [0, 1]},
            "runs": [{"name": "set", "num_threads": 3}]}
    grid_file = write_grid(tmp_path / "g.yaml", spec)
    assert g.main([str(grid_file), "--jobs", "4", "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["start    s0", "start    s1", "start    set"]
    assert all(ln.endswith("--resume --num-threads 2") for ln in lines[:2])
    assert lines[2].endswith("--num-threads 3 --out " + str(tmp_path / "o" / "set") + " --resume")
    assert g.main([str(grid_file), "--launcher", "slurm", "--cpus-per-job", "6", "--dry-run"]) == 0
    assert capsys.readouterr().out.count("--num-threads 6") == 2


def slurm_args(**kw) -> argparse.Namespace:
    base = {"partition": "gpu", "gpus_per_job": 1, "cpus_per_job": 8, "time": 90, "mem_gb": 16}
    return argparse.Namespace(**{**base, **kw})


@needs_submitit
def test_the_slurm_job_it_would_submit(tmp_path, monkeypatch):
    """The sbatch file submitit would write for --launcher slurm (built, not submitted: srun is made to look
    present), and the requeue hook: a preempted job comes back as the same call, which resumes."""
    from submitit.slurm.slurm import SlurmExecutor

    assert g.slurm_parameters(slurm_args()) == {
        "name": "sla-grid", "nodes": 1, "tasks_per_node": 1, "slurm_signal_delay_s": 120, "slurm_partition": "gpu",
        "gpus_per_node": 1, "cpus_per_task": 8, "timeout_min": 90, "mem_gb": 16}
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    ex = g.make_executor("slurm", tmp_path / "%j", slurm_args())
    text = ex._executor._make_submission_file_text("python -m x", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --time=90", "#SBATCH --mem=16GB", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --signal=USR2@120", "#SBATCH --job-name=sla-grid", "#SBATCH --open-mode=append"):
        assert line in text.splitlines(), line
    assert "--partition" not in g.slurm_parameters(slurm_args(partition=None, gpus_per_job=None))

    job = g.RunJob("longtail.benchmark:main", "r", tmp_path / "r", ["--seed", "1", "--out", "o", "--resume"])
    from submitit.helpers import DelayedSubmission

    requeued = DelayedSubmission(job)._checkpoint_function()
    assert requeued is not None and requeued.function is job and requeued.function.argv[-1] == "--resume"


@needs_submitit
def test_slurm_launcher_without_a_cluster_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: -1))
    grid_file = write_grid(tmp_path / "g.yaml", {"cli": "sla-longtail", "out": str(tmp_path / "o"),
                                                 "axes": {"seed": [0]}})
    assert g.main([str(grid_file), "--launcher", "slurm"]) == g.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: --launcher slurm needs a SLURM cluster") and "Traceback" not in err


@pytest.mark.parametrize(
    "spec,msg",
    [
        ({"cli": "sla-nothing", "out": "o", "axes": {"seed": [0]}}, "cli must be one of sla-fewshot, sla-longtail"),
        ({"cli": "sla-longtail", "out": "o", "axes": {"bogus_key": [1, 2]}},
         "run bogus_key-1: sla-longtail: error: unrecognized arguments: --bogus-key 1"),
        ({"cli": "sla-fewshot", "out": "o", "axes": {"learner": ["protonet", "nope"]}},
         "run learner-nope: sla-fewshot: error: argument --learner: invalid choice: 'nope'"),
        ({"cli": "sla-longtail", "out": "o"}, "the grid has no run; give axes and/or runs"),
        ({"cli": "sla-longtail", "out": "o", "axes": {"seed": []}}, "axes.seed is empty"),
        ({"cli": "sla-longtail", "out": "o", "axes": {"seed": [0]}, "jobs": 2}, "unknown key(s) jobs"),
        ({"cli": "sla-longtail", "axes": {"seed": [0]}}, "no out folder"),
        ({"cli": "sla-longtail", "out": "o", "options": {"out": "x"}, "axes": {"seed": [0]}},
         "out is set by the grid"),
        ({"cli": "sla-longtail", "out": "o", "runs": [{"name": "a"}, {"name": "a"}]}, "run name(s) a used twice"),
        ({"cli": "sla-longtail", "out": "o", "axes": {"seed": [0]}, "report": {"x": ["nope*"]}},
         "report group 'x' matches no run"),
        ("- just a list", "must be a mapping"),
    ],
)
def test_bad_grid_files_are_one_clear_line(spec, msg, tmp_path, capsys):
    path = tmp_path / "g.yaml"
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    assert g.main([str(path), "--dry-run"]) == g.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and "Traceback" not in err and err.count("\n") == 1


def test_missing_file_owned_flags_and_missing_submitit(tmp_path, monkeypatch, capsys):
    assert g.main([str(tmp_path / "absent.yaml")]) == g.EXIT_USAGE
    assert "cannot read the grid file" in capsys.readouterr().err
    grid_file = write_grid(tmp_path / "g.yaml", {"cli": "sla-longtail", "out": str(tmp_path / "o"),
                                                 "axes": {"seed": [0]}})
    assert g.main([str(grid_file), "--", "--out", "x"]) == g.EXIT_USAGE
    assert "--out cannot be passed to the runs" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    assert g.main([str(grid_file), "--dry-run"]) == 0  # a dry run needs no submitit
    capsys.readouterr()
    assert g.main([str(grid_file)]) == g.EXIT_USAGE
    err = capsys.readouterr().err
    assert err == "error: sla-grid launches runs through submitit, which is not installed: " \
                  "pip install 'fewshot-sla[grid]'\n"
