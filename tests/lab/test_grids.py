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


PROTOCOL = GRIDS.parents[1] / "docs" / "runs" / "longtail_cpu_protocol"


@pytest.mark.skipif(not PROTOCOL.is_dir(), reason="docs/runs/longtail_cpu_protocol is not in this checkout")
def test_the_cpu_protocol_grid_makes_the_committed_runs():
    """Each committed 30-epoch run is the grid's run of the same name: the same config but for where the data lies,
    bf16 and threads (given after --, machine-dependent) and bookkeeping; older records read with the defaults of
    their day (LEGACY_DEFAULTS)."""
    import dataclasses

    from fewshot_sla.runs import RUN_KEYS
    from fewshot_sla.utils import read_json
    from longtail.reporting import GROUP_IGNORE, LEGACY_DEFAULTS

    grid = {r.name: r for r in g.load_grid(GRIDS / "longtail_cpu_protocol.yaml").runs}
    records = sorted(PROTOCOL.glob("*/metrics.json"))
    assert len(records) == 24
    skip = RUN_KEYS | GROUP_IGNORE
    for path in records:
        recorded = {**LEGACY_DEFAULTS, **read_json(path)["config"]}
        cfg = dataclasses.asdict(parse_config(LTConfig, list(grid[path.parent.name].argv), package="longtail"))
        keys = (set(cfg) | set(recorded)) - skip
        assert {k: cfg.get(k) for k in keys} == {k: recorded.get(k) for k in keys}, path.parent.name
