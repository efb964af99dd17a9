"""The grid files of lab/grids/ (docs/results.md's protocols for ``sla-grid``): each one loads and every run's
arguments parse as its CLI's; the long-tail protocol grid is the protocol (its runs, recipes and methods)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fewshot_sla import grid as g
from fewshot_sla.config import parse_config
from longtail.config import LTConfig

GRIDS = Path(__file__).resolve().parents[2] / "lab" / "grids"


@pytest.mark.parametrize("path", sorted(GRIDS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_grid_file_loads_and_its_runs_parse(path):
    grid = g.load_grid(path)
    g.check_runs(grid)
    assert grid.runs and all(r.argv[-3:] == ("--out", str(r.out), "--resume") for r in grid.runs)


@pytest.mark.parametrize("ratio", [100, 10])
def test_the_longtail_protocol_grid(ratio):
    grid = g.load_grid(GRIDS / f"longtail_cifar10_ir{ratio}.yaml", extra=["--data-root", "DATA"])
    names = [r.name for r in grid.runs]
    assert len(names) == 24 and names[:3] == ["ce_baseline_s0", "ce_baseline_s1", "ce_baseline_s2"]
    assert names[-1] == "vs_slasd_s2" and grid.out == Path(f"runs/protocol/cifar10_ir{ratio}")
    recipes = {"ce": "ce", "ldam": "ldam_drw", "logit-adjusted": "logit_adjusted", "vs": "vs"}
    for run in grid.runs:
        loss, method, seed = run.name.rsplit("_", 2)
        cfg = parse_config(LTConfig, list(run.argv), package="longtail")
        recipe = parse_config(LTConfig, ["--config", f"longtail/cifar10_ir{ratio}_{recipes[loss]}"],
                              package="longtail")
        assert (cfg.loss, cfg.drw, cfg.seed) == (loss, loss == "ldam", int(seed[1:])), run.name
        assert (cfg.transform, cfg.sd) == (("none", False) if method == "baseline" else ("rotation", True))
        assert (cfg.epochs, cfg.imbalance_ratio, cfg.dataset, cfg.data_root) == (200, ratio, "cifar10", "DATA")
        assert cfg.weight_decay == recipe.weight_decay and cfg.resume
