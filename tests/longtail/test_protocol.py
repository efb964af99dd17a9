"""The protocol runner (longtail/protocol.py, scripts/longtail_protocol.sh): a grid run in chunks -- one
stopped by --stop-after, one cut by the time limit -- then finished and reported; finished runs are skipped.

The grid is tiny (2 losses x 2 methods x 1 seed, 2 epochs of a 4-class PNG ImageFolder, ResNet-20) so that
the whole test is a few sla-longtail processes on CPU."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from fewshot_sla.utils import read_json
from longtail.protocol import EXIT_DONE, EXIT_INCOMPLETE, EXIT_USAGE, main
from tests.longtail.synthetic import write_folder

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "longtail_protocol.sh"
RUNS = ("ce_baseline_s0", "ce_slasd_s0", "ldam_baseline_s0", "ldam_slasd_s0")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """4 classes x (24 train, 6 test) PNGs (tests/longtail/synthetic.py)."""
    return write_folder(tmp_path_factory.mktemp("protocol_folder"), 24, 6, seed=0)


def write_recipes(prefix: Path) -> None:
    """Recipes with weight decays of their own, to see that each run trains with its loss's recipe."""
    common = {"imbalance_ratio": 4, "backbone": "resnet20", "batch_size": 16, "epochs": 200}
    Path(f"{prefix}ce.yaml").write_text(yaml.safe_dump({**common, "loss": "ce", "weight_decay": 1e-3}))
    Path(f"{prefix}ldam_drw.yaml").write_text(yaml.safe_dump({**common, "loss": "ldam", "drw": True,
                                                              "weight_decay": 5e-4}))


def base_argv(folder: Path, out: Path, recipes: Path) -> list[str]:
    return ["--dataset", "imagefolder", "--data-root", str(folder), "--imbalance-ratio", "4", "--losses", "ce ldam",
            "--seeds", "0", "--epochs", "2", "--out", str(out), "--recipes", str(recipes), "--jobs", "1",
            # pass-through to every run:
            "--device", "cpu", "--num-threads", "1", "--limit-test", "8", "--wandb", "disabled"]


def launches(run_dir: Path) -> int:
    log = run_dir / "protocol.log"
    return log.read_text().count("=== ") if log.is_file() else 0


@pytest.mark.slow
def test_grid_in_chunks_then_report(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the runs inherit it (it wins over --wandb)
    write_recipes(tmp_path / "r_")
    out = tmp_path / "out"
    argv = base_argv(folder, out, tmp_path / "r_")
    grid = out / "imagefolder_ir4"

    # Chunk 1: one run launched, and it stops after its first epoch (--stop-after passes through).
    assert main(argv + ["--max-runs", "1", "--stop-after", "1"]) == EXIT_INCOMPLETE
    first = grid / RUNS[0]
    assert (first / "checkpoint.pt").is_file() and not (first / "metrics.json").exists()
    assert not any((grid / r).exists() for r in RUNS[1:])
    cfg = yaml.safe_load((first / "config.yaml").read_text())
    assert (cfg["weight_decay"], cfg["backbone"], cfg["loss"], cfg["transform"]) == (1e-3, "resnet20", "ce", "none")
    assert "runs remain" in capsys.readouterr().out

    # Chunk 2: the time limit arrives (0.5 s in: --grace 1 before 1.5 s) while the run is still starting;
    # it is killed (SIGTERM) and its checkpoint of epoch 1 stays intact.
    assert main(argv + ["--time-limit", "1.5", "--grace", "1"]) == EXIT_INCOMPLETE
    text = capsys.readouterr().out
    assert "time limit" in text and "runs remain" in text
    assert not (first / "metrics.json").exists()
    assert torch.load(first / "checkpoint.pt", weights_only=True)["unit"] == 1

    # Chunk 3, through the shell script: two runs at a time; the first resumes, the others start; the report.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(["bash", str(SCRIPT), *argv, "--jobs", "2"], capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == EXIT_DONE, res.stdout[-3000:] + res.stderr[-3000:]
    assert "resuming from its checkpoint" in res.stdout and "4 of 4 runs finished" in res.stdout
    for name in RUNS:
        m = read_json(grid / name / "metrics.json")
        assert 0.0 <= m["test/acc"] <= 1.0 and m["epochs_done"] == 2 and len(m["history"]) == 2, name
        loss, method, _ = name.split("_")
        c = m["config"]
        assert c["loss"] == loss and c["drw"] == (loss == "ldam") and c["sd"] == (method == "slasd")
        assert c["weight_decay"] == {"ce": 1e-3, "ldam": 5e-4}[loss] and c["resume"] and c["limit_test"] == 8
        assert ("test/acc_distilled" in m) == (method == "slasd")
    # the first run trained its two epochs over three invocations, resumed rather than restarted
    assert launches(first) == 3 and [r["epoch"] for r in read_json(first / "metrics.json")["history"]] == [1, 2]
    report = (grid / "report" / "report.md").read_text()
    assert "ldam" in report and "rotation" in report

    # Chunk 4: nothing left; nothing is launched and the report is rewritten.
    assert main(argv) == EXIT_DONE
    assert "4 of 4 runs finished (0 in this invocation)" in capsys.readouterr().out
    assert [launches(grid / r) for r in RUNS] == [3, 1, 1, 1]


def test_dry_run_uses_the_shipped_recipes(capsys):
    assert main(["--data-root", "DATA", "--losses", "ldam,vs", "--seeds", "0 1", "--jobs", "1", "--dry-run",
                 "--amp"]) == EXIT_DONE
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 8  # 2 losses x 2 methods x 2 seeds
    ldam = [ln for ln in lines if "--loss ldam" in ln]
    assert all("longtail/configs/cifar10_ir100_ldam_drw.yaml" in ln and "--drw" in ln for ln in ldam)
    assert all(ln.endswith("--resume --amp") for ln in lines)
    assert sum("--transform rotation --sd" in ln for ln in lines) == 4
    assert "runs/protocol/cifar10_ir100/vs_slasd_s1" in lines[-1]


@pytest.mark.parametrize(
    "extra,msg",
    [
        (["--seed", "3"], "--seed cannot be passed through"),
        (["--", "--out", "x"], "--out cannot be passed through"),
        (["--losses", "hinge"], "unknown loss(es) ['hinge']"),
        (["--time-limit", "10", "--grace", "30"], "must exceed --grace"),
        (["--recipes", "/nonexistent/r_"], "no recipe /nonexistent/r_ce.yaml"),
        (["--backbone", "vit"], "not valid sla-longtail arguments"),
        (["--seeds", "0 0"], "distinct"),
    ],
)
def test_bad_usage_is_one_clear_error(extra, msg, capsys):
    assert main(["--data-root", "DATA", "--jobs", "1", "--dry-run", *extra]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and "Traceback" not in err


@pytest.mark.parametrize("native", [False, True])
def test_amp_on_a_cpu_without_native_bf16_is_said_once_on_the_console(native, monkeypatch, capsys):
    import fewshot_sla.engine as eng

    monkeypatch.setattr(eng, "cpu_has_native_bf16", lambda: native)
    argv = ["--data-root", "DATA", "--losses", "ce", "--seeds", "0 1", "--jobs", "1", "--dry-run", "--device", "cpu"]
    assert main([*argv, "--amp"]) == EXIT_DONE
    err = capsys.readouterr().err
    assert (err.count("drop --amp") == 1) is not native and ("warning" in err) is not native
    assert main(argv) == EXIT_DONE  # fp32: nothing to say
    assert "drop --amp" not in capsys.readouterr().err
