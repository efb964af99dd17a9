"""What produced a run (package version, git commit of this project only, versions, hardware) and the optional
extras: a run that needs a missing one stops before any data with one line naming it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import fewshot_sla
from fewshot_sla import extras, runs
from fewshot_sla.utils import project_checkout, provenance

ROOT = Path(__file__).resolve().parents[2]


def _tree(root: Path, name: str, git: bool = True) -> Path:
    (root / "fewshot_sla").mkdir(parents=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n')
    if git:
        (root / ".git").mkdir()
    return root / "fewshot_sla"


def test_the_commit_is_recorded_only_from_this_projects_own_checkout(tmp_path):
    assert project_checkout(_tree(tmp_path / "ours", "fewshot-sla")) == tmp_path / "ours"
    # a wheel installed into a venv that sits in someone else's repository, or a copy outside git: no commit
    assert project_checkout(_tree(tmp_path / "theirs", "their-project")) is None
    assert project_checkout(_tree(tmp_path / "nogit", "fewshot-sla", git=False)) is None
    site = tmp_path / "repo" / "venv" / "lib" / "site-packages"
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    site.joinpath("fewshot_sla").mkdir(parents=True)
    assert project_checkout(site / "fewshot_sla") is None


def test_a_record_holds_the_version_the_versions_and_the_hardware():
    import numpy
    import torch

    rec = runs.make_record("fewshot", {"seed": 0}, {}, runs.identity({"seed": 0}, (), {}))
    p = provenance()
    assert rec["package_version"] == fewshot_sla.__version__ == p["package_version"]
    assert (rec["torch"], rec["numpy"]) == (torch.__version__, numpy.__version__)
    assert rec["cpu"] and "cuda_device" in rec
    # this test runs from the checkout: the commit is this repository's (or None where git is missing)
    assert rec["git_commit"] is None or len(rec["git_commit"].split("-")[0]) == 40


def test_the_version_has_one_source():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'version = { attr = "fewshot_sla.__version__" }' in text
    assert "\nversion =" not in text.split("[tool.setuptools.dynamic]")[0]


@pytest.fixture
def without(monkeypatch):
    """Make modules unimportable, as in an install without their extra."""

    def hide(*names: str) -> None:
        for n in names:
            monkeypatch.setitem(sys.modules, n, None)

    return hide


def test_require_names_the_extra(without):
    without("qpth")
    assert not extras.available("qpth")
    with pytest.raises(extras.MissingExtra, match=r"pip install 'fewshot-sla\[svm\]'"):
        extras.require("qpth")


@pytest.mark.parametrize(
    ("module", "extra", "flags"),
    [
        ("qpth", "svm", ["--learner", "svm"]),
        ("sklearn", "sklearn", ["--learner", "pretrain", "--test-head", "logreg"]),
        ("wandb", "wandb", ["--wandb", "online"]),
    ],
)
def test_sla_fewshot_stops_before_any_data_with_one_line(module, extra, flags, without, tmp_path, capsys):
    from episodes.train import main

    without(module)
    out = tmp_path / "run"
    rc = main(["--dataset", "omniglot", "--data-root", str(tmp_path / "no-data-here"), "--out", str(out), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and f"pip install 'fewshot-sla[{extra}]'" in err[0], err  # not the missing data
    assert not (out / "checkpoint.pt").exists()


def test_sla_longtail_online_wandb_needs_the_extra(without, tmp_path, capsys):
    from longtail.benchmark import main

    without("wandb")
    rc = main(["--dataset", "cifar10", "--data-root", str(tmp_path / "none"), "--out", str(tmp_path / "r"),
               "--wandb", "online"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "fewshot-sla[wandb]" in err[0], err


def test_a_default_run_without_wandb_says_so_once(without, tmp_path, capsys, monkeypatch):
    from fewshot_sla import tracking

    without("wandb")
    monkeypatch.setattr(tracking, "_SAID", set())
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for i in range(2):
        logger = tracking.RunLogger(tmp_path / f"r{i}", {"seed": i}, wandb_mode="offline")
        logger.log({"train/loss": 1.0}, step=1)
        logger.finish({"test/acc": 50.0})
    err = capsys.readouterr().err
    assert err.count("wandb is not installed") == 1 and "fewshot-sla[wandb]" in err
    assert json.loads((tmp_path / "r1" / "metrics.json").read_text())["package_version"] == fewshot_sla.__version__


def test_a_long_tail_run_without_matplotlib_writes_its_metrics_and_skips_the_plot(without, tmp_path):
    """Plots are the [plots] extra: without matplotlib a run finishes, writes metrics.json and warns once."""
    from longtail.benchmark import run
    from tests.longtail.synthetic import tiny, write_folder

    without("matplotlib", "matplotlib.figure")
    data = write_folder(tmp_path / "data", 12, 4, seed=0)
    with pytest.warns(UserWarning, match=r"fewshot-sla\[plots\]"):
        met = run(tiny(data, tmp_path / "run", epochs=1))
    assert "test/acc" in met and (tmp_path / "run" / "metrics.json").is_file()
    assert not (tmp_path / "run" / "per_class_acc.png").exists()
