"""``sla-fewshot``: episodic meta-training with SLA (Lee, Hwang & Shin, ICML 2020, Section 2.3).

    sla-fewshot --dataset omniglot --data-root DATA --learner protonet --ways 5 --shots 1 \
        --transform rotation --train-episodes 2000 --out runs/omni_5w1s_sla
    torchrun --nproc_per_node=2 -m episodes.train ... --meta-batch 4      # a meta-batch split across 2 processes

Each training episode is expanded by :class:`episodes.SLAEpisode` into an ``N*M``-way episode (the
learner is unchanged; :class:`episodes.task.EpisodeTask`); validation and test use SLA+AG (and report
SLA+SI). ``--transform none`` is the plain baseline. The loop is :func:`fewshot_sla.engine.fit`: one
unit is one optimiser step over ``--meta-batch`` episodes. Writes ``OUT/metrics.json`` (mean accuracy
with a 95% CI over the test episodes), ``OUT/config.yaml``, ``OUT/checkpoint.pt`` / ``OUT/best.pt``
(atomic; ``--resume`` continues exactly), ``OUT/train_episodes.csv`` (one row per training episode, as
produced), ``OUT/test_episodes.csv``, an offline W&B run and, last, ``OUT/summary.md`` (the run in words, for a
person: :mod:`fewshot_sla.summary`).

Testing scores ``--test-episodes`` episodes (0 = auto: 10,000 for protonet, r2d2 and svm, 600 for the MAML family;
:func:`resolve_test_episodes`) through :func:`episodes.evaluate.evaluate_episodes`, which embeds the test split once
for the metric learners (the same accuracies as one forward pass per episode). A finished run is re-tested without
training by

    sla-fewshot --config RUN/config.yaml --test-only [--test-episodes N]

which loads ``RUN/best.pt`` and overwrites ``RUN/metrics.json`` and ``RUN/test_episodes.csv`` (a run whose training
has not finished is refused unless ``--allow-unfinished``; its metrics.json then says ``"finished": false``).
``sla-fewshot --out RUN --resume`` continues a run from its folder alone; a new run in a folder holding another run
is refused unless ``--overwrite``; Ctrl-C (SIGINT) or SIGTERM stops after the current step with its checkpoint
written (exit status 130 / 143) (:mod:`fewshot_sla.lifecycle`).

The run record ``OUT/recipe.json`` (:mod:`episodes.recipe`, written before training) is what ``--resume`` and
``--test-only`` read: the recorded class lists and statistics, and a refusal, naming the keys, of a config that
differs in anything but bookkeeping (:data:`episodes.recipe.RESUME_FREE`, :data:`~episodes.recipe.RETEST_FREE`).
"""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path
from typing import Any

from fewshot_sla.config import ConfigError, parse_config, resume_argv, save_config, to_dict

from .config import FewShotConfig

# torch and the modules that use it are imported inside run() and main(), once the command line is parsed: --help
# answers without loading them.

__all__ = ["FewShotConfig", "run", "main"]

COMMAND = "sla-fewshot"


def run(cfg: FewShotConfig) -> dict[str, Any]:
    """Meta-train, keep the best validation checkpoint, test it; returns the metrics. With ``cfg.test_only``,
    test ``OUT/best.pt`` of the recorded run without training (metrics.json and test_episodes.csv overwritten).

    Raises:
        fewshot_sla.lifecycle.Interrupted: SIGINT / SIGTERM stopped training (after a step, its checkpoint written).
    """
    from fewshot_sla import distributed, lifecycle, runs
    from fewshot_sla import engine as eng
    from fewshot_sla.tracking import RunLogger

    from . import recipe as rc
    from .reporting import LEGACY_DEFAULTS

    cfg = dataclasses.replace(cfg, test_episodes=rc.resolve_test_episodes(cfg))
    out = Path(cfg.out)
    record = None
    if cfg.test_only or (cfg.resume and (out / "checkpoint.pt").is_file()):
        what = "--test-only" if cfg.test_only else "--resume"
        if cfg.test_only:
            rc.best_checkpoint(out)  # fail before loading any data
        record = runs.read_record(out, rc.KIND, what, legacy=LEGACY_DEFAULTS)
        # a finished run only tests again when resumed: then the test's shape may change, as with --test-only
        retest = cfg.test_only or rc.training_finished(out, record)
        runs.check_resume(record, to_dict(cfg), rc.RETEST_FREE if retest else rc.RESUME_FREE, what)
    finished, done = True, None
    if cfg.test_only and record is not None:
        total, unit_name = rc.units_of(record["config"])
        done = rc.units_done(out)
        finished = lifecycle.check_finished(done, total, unit_name, cfg.allow_unfinished, COMMAND, out)
    ctx = eng.setup(eng.RunSpec(cfg.out, cfg.seed, cfg.device, cfg.amp, cfg.channels_last, False, cfg.resume,
                                cfg.stop_after, cfg.num_threads, checkpoint_minutes=cfg.checkpoint_minutes))
    rc.check_config(cfg, ctx.dist.world_size)
    if record is None:
        lifecycle.check_new_run(out, cfg.resume, cfg.overwrite, COMMAND, clear=ctx.is_main)
        distributed.barrier()
    elif not cfg.test_only:
        lifecycle.check_processes(record, ctx.dist.world_size, False, rc.processes_matter(cfg))
    loaded = rc.load_splits_for(cfg, record)
    recipe = rc.Recipe.from_record(record, cfg) if record else rc.resolve(cfg, loaded)
    splits = rc.episode_splits(recipe, loaded)
    task = rc.build_task(recipe).to(ctx.device)
    logger = RunLogger(ctx.out, to_dict(recipe.cfg), wandb_mode=cfg.wandb, project="fewshot-sla-episodes",
                       name=ctx.out.name, group=recipe.metrics_extra()["group"], enabled=ctx.is_main, quiet=True)
    if cfg.test_only:  # recipe.json, config.yaml, checkpoint.pt and train_episodes.csv stay the training run's
        if not ctx.is_main:
            return {}
        best = rc.load_best(task, ctx.out, ctx.device)  # its units_done: best.pt's step; the training's: done
        best = dataclasses.replace(best, finished=finished, units_done=best.units_done if done is None else done)
        return rc.test_and_log(recipe, task, splits["test"], ctx, logger, best)
    if record is None:  # a new run: its record first, then the start weights it names
        if ctx.is_main:
            runs.write_record(ctx.out, {**recipe.record(), "processes": lifecycle.processes(ctx.dist.world_size)})
            save_config(recipe.cfg, ctx.out / "config.yaml")
        init = rc.initialize(recipe, task)
        if init and ctx.is_main:
            print(f"--init: {init['loaded']} tensors from {init['file']}"
                  + (f" ({len(init['ignored'])} not in the encoder ignored: {init['ignored'][:4]})"
                     if init["ignored"] else ""), file=sys.stderr)
        distributed.barrier()  # the record is on disk before any rank reads its hash
    loop = rc.make_loop(recipe, ctx, splits["train"], splits["val"], task)
    fit = eng.fit(task, rc.make_optimizer(recipe, task), loop, ctx, logger, to_dict(recipe.cfg))
    if not fit.finished or not ctx.is_main:
        return {"episodes_done": fit.units_done}
    return rc.test_and_log(recipe, task, splits["test"], ctx, logger, fit)


def main(argv: list[str] | None = None) -> int:
    argv = resume_argv(sys.argv[1:] if argv is None else argv)
    cfg = parse_config(FewShotConfig, argv, prog="sla-fewshot", package="episodes")
    from fewshot_sla import get_transform, lifecycle
    from fewshot_sla.distributed import closing_group
    from fewshot_sla.utils import DataError

    try:
        with closing_group():
            m = run(cfg)
    except (DataError, ValueError, ConfigError, ImportError) as e:  # ImportError: qpth missing
        print(f"error: {e}", file=sys.stderr)
        return 2
    except lifecycle.Interrupted as stop:
        print(lifecycle.stop_message(stop, COMMAND, cfg.out), file=sys.stderr)
        return lifecycle.exit_code(stop.signum)
    except KeyboardInterrupt:  # outside training's safe points (data loading, the test) or a second Ctrl-C
        print(lifecycle.interrupted_message(COMMAND, cfg.out), file=sys.stderr)
        return lifecycle.exit_code(signal.SIGINT)
    if "test/acc_agg" in m and get_transform(cfg.transform).m == 1:
        acc, ci = 100 * m["test/acc"], 100 * m["test/acc_ci95"]
        print(f"test: baseline {acc:.2f} +- {ci:.2f}   ({m['test/episodes']} episodes)")
    elif "test/acc_agg" in m:
        print(
            f"test: SLA+SI {100 * m['test/acc_single']:.2f} +- {100 * m['test/acc_single_ci95']:.2f}   "
            f"SLA+AG {100 * m['test/acc_agg']:.2f} +- {100 * m['test/acc_agg_ci95']:.2f}   "
            f"({m['test/episodes']} episodes)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
