"""``sla-longtail``: long-tailed CIFAR with SLA on top of any imbalance loss (LDAM-DRW protocol).

    sla-longtail --dataset cifar10 --data-root DATA --imbalance-ratio 100 --loss ldam --drw \
        --transform rotation --sd --epochs 200 --out runs/c10_ldam_sla
    sla-longtail ... --grid-loss ce ldam --grid-transform none rotation      # one results table
    torchrun --nproc_per_node=2 -m longtail.benchmark ...                    # DistributedDataParallel

``--batch-size`` is the global batch: under ``torchrun`` each of the ``P`` processes takes
``batch_size / P`` images per step, so the number of steps and the learning rate stay those of one
process (LDAM-DRW: batch 128). Training images stay uint8 -- on the GPU when training runs there --
and a batch is sampler indices -> gather -> crop + flip (random draws on the CPU, so the GPU path
augments exactly as the CPU path) -> normalise -> the SLA regime of :mod:`fewshot_sla`. The loop is
:func:`fewshot_sla.engine.fit`. Writes ``OUT/metrics.json``, ``OUT/config.yaml``,
``OUT/checkpoint.pt`` (atomic, every epoch; ``--resume`` continues it exactly), ``OUT/per_class_acc.png``,
``OUT/summary.md`` (the run in words, for a person), an offline W&B run, and before training the run record
``OUT/recipe.json`` (:mod:`longtail.recipe`: what the run derived from its config and data; ``--resume`` refuses a
changed training config or data folder).
``sla-longtail --out RUN --resume`` continues a run from its folder alone, ``--test-only`` tests its checkpoint again
(an unfinished run only with ``--allow-unfinished``); a new run in a folder holding another run is refused unless
``--overwrite``; Ctrl-C (SIGINT) or SIGTERM stops after the current epoch with its checkpoint written (exit status
130 / 143) (:mod:`fewshot_sla.lifecycle`).

This module is the command line only (:func:`main`, :func:`run`); the recipe -- model, loop, evaluation, report --
is :mod:`longtail.recipe`, the grid of ``--grid-loss`` x ``--grid-transform`` :func:`longtail.grid.run_grid`.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from fewshot_sla.config import ConfigError, parse_config, resume_argv, save_config, to_dict

from .config import LTConfig
from .grid import run_grid

# torch and the modules that use it are imported inside run() and main(), once the command line is parsed: --help
# answers without loading them.

__all__ = ["LTConfig", "run", "main"]


def run(cfg: LTConfig) -> dict[str, Any]:
    """Train and evaluate one configuration; returns the metrics (the content of metrics.json). With
    ``cfg.test_only``, test ``OUT/checkpoint.pt`` of the recorded run again without training.

    Raises:
        fewshot_sla.lifecycle.Interrupted: SIGINT / SIGTERM stopped training (after an epoch, its checkpoint written).
    """
    import torch

    from fewshot_sla import distributed
    from fewshot_sla import engine as eng
    from fewshot_sla.distributed import info as dist_info
    from fewshot_sla.tracking import RunLogger

    from .recipe import (
        build_model,
        check_config,
        finish,
        load_data,
        load_last,
        make_loop,
        open_run,
        retest_status,
        sync_batchnorm,
    )

    check_config(cfg, dist_info().world_size)
    finished = retest_status(cfg, cfg.out) if cfg.test_only else True  # before any data is loaded
    spec = eng.RunSpec(cfg.out, cfg.seed, cfg.device, cfg.amp, cfg.channels_last, cfg.compile, cfg.resume,
                       cfg.stop_after, cfg.num_threads, compile_mode=cfg.compile_mode,
                       checkpoint_minutes=cfg.checkpoint_minutes)
    ctx = eng.setup(spec)
    data = load_data(cfg, progress=ctx.is_main)
    recipe, record = open_run(cfg, data, ctx.out, write=ctx.is_main, world_size=ctx.dist.world_size)
    distributed.barrier()  # the record is on disk before any rank reads it
    model = sync_batchnorm(build_model(recipe), cfg.sync_bn, ctx.device, ctx.dist.world_size).to(ctx.device)
    logger = RunLogger(ctx.out, to_dict(recipe.cfg if cfg.test_only else cfg), wandb_mode=cfg.wandb,
                       project="fewshot-sla-longtail", name=ctx.out.name, group=record["group"], enabled=ctx.is_main,
                       quiet=True)
    if cfg.test_only:  # recipe.json, config.yaml and checkpoint.pt stay the training run's
        if not ctx.is_main:
            return {}
        return finish(recipe, record, model, data, ctx, logger, load_last(model, ctx.out, ctx.device, finished))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loop = make_loop(recipe, ctx, data, model)
    if ctx.is_main:
        save_config(cfg, ctx.out / "config.yaml")
    fit = eng.fit(model, opt, loop, ctx, logger, to_dict(cfg))
    if not fit.finished or not ctx.is_main:
        return {"epochs_done": fit.units_done}
    return finish(recipe, record, model, data, ctx, logger, fit)


def main(argv: list[str] | None = None) -> int:
    argv = resume_argv(sys.argv[1:] if argv is None else argv)
    cfg = parse_config(LTConfig, argv, prog="sla-longtail", package="longtail")
    from fewshot_sla import lifecycle
    from fewshot_sla.distributed import closing_group
    from fewshot_sla.distributed import info as dist_info
    from fewshot_sla.tracking import format_table
    from fewshot_sla.utils import DataError

    from .recipe import COMMAND

    try:
        with closing_group():
            if cfg.grid_loss or cfg.grid_transform:
                run_grid(cfg, run)
            else:
                met = run(cfg)
                if dist_info().is_main and "test/acc" in met:
                    print(format_table([{k: v for k, v in met.items() if isinstance(v, float)}]))
    except (DataError, ValueError, ConfigError, ImportError) as e:  # ImportError: a missing extra
        print(f"error: {e}", file=sys.stderr)
        return 2
    except lifecycle.Interrupted as stop:
        print(lifecycle.stop_message(stop, COMMAND, cfg.out), file=sys.stderr)
        return lifecycle.exit_code(stop.signum)
    except KeyboardInterrupt:  # outside training's safe points (data loading, the test) or a second Ctrl-C
        print(lifecycle.interrupted_message(COMMAND, cfg.out), file=sys.stderr)
        return lifecycle.exit_code(signal.SIGINT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
