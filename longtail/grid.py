"""The in-process grid of ``sla-longtail --grid-loss L... --grid-transform T...``: every (loss, transform) pair as
one run in ``OUT/<loss>_<transform>/``, in this process (so also under ``torchrun``), then one table in
``OUT/results.md`` and ``OUT/results.json``. Grids of separate processes, resumable, on one machine or a cluster:
``sla-grid`` (:mod:`fewshot_sla.grid`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import LTConfig

__all__ = ["grid_configs", "grid_row", "run_grid"]


def grid_configs(cfg: LTConfig) -> list[LTConfig]:
    """The runs of ``cfg``'s ``--grid-loss`` x ``--grid-transform`` (``cfg``'s own loss or transform where a list
    is empty), each into ``OUT/<loss>_<transform>/``; ``--sd`` only where the transform is not ``none``.

    Every entry goes through :func:`fewshot_sla.config.config_from_dict`, so it is checked like a flag (an unknown
    loss is a clear error)."""
    from fewshot_sla.config import config_from_dict

    return [
        config_from_dict(LTConfig, {"loss": loss, "transform": tf, "sd": cfg.sd and tf != "none", "grid_loss": (),
                                    "grid_transform": (), "out": str(Path(cfg.out) / f"{loss}_{tf}")},
                         base=cfg, source="grid")
        for loss in cfg.grid_loss or (cfg.loss,)
        for tf in cfg.grid_transform or (cfg.transform,)
    ]


def grid_row(cfg: LTConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    """One row of the grid's table: the run's loss and transform, its accuracies (NaN where a mode is missing)."""
    import math

    return {
        "loss": cfg.loss + ("+DRW" if cfg.drw else ""),
        "transform": cfg.transform,
        "SI": metrics["test/acc"],
        "AG": metrics.get("test/acc_agg", math.nan),
        "SD": metrics.get("test/acc_distilled", math.nan),
        "balanced": metrics["test/balanced_acc"],
        "many": metrics["test/acc_many"],
        "medium": metrics["test/acc_medium"],
        "few": metrics["test/acc_few"],
    }


def run_grid(cfg: LTConfig, run: Callable[[LTConfig], dict[str, Any]]) -> list[dict[str, Any]]:
    """Run every entry of :func:`grid_configs` with ``run`` (``longtail.benchmark.run``), then print and write the
    table of the finished ones (rank 0): ``OUT/results.md`` and ``OUT/results.json``."""
    from fewshot_sla.distributed import info as dist_info
    from fewshot_sla.tracking import format_table
    from fewshot_sla.utils import write_json

    rows = []
    for sub in grid_configs(cfg):
        met = run(sub)
        if met.get("test/acc") is not None:
            rows.append(grid_row(sub, met))
    if rows and dist_info().is_main:
        table = format_table(rows)
        print("\n" + table)
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "results.md").write_text(table + "\n")
        write_json(rows, Path(cfg.out) / "results.json")
    return rows
