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
produced), ``OUT/test_episodes.csv`` and an offline W&B run.

Testing scores ``--test-episodes`` episodes (0 = auto: 10,000 for protonet, r2d2 and svm, 600 for the MAML family;
:func:`resolve_test_episodes`) through :func:`episodes.evaluate.evaluate_episodes`, which embeds the test split once
for the metric learners (the same accuracies as one forward pass per episode). A finished run is re-tested without
training by

    sla-fewshot --config RUN/config.yaml --test-only [--test-episodes N]

which loads ``RUN/best.pt`` and overwrites ``RUN/metrics.json`` and ``RUN/test_episodes.csv``.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fewshot_sla import checkpoint, get_transform
from fewshot_sla import engine as eng
from fewshot_sla.augment import random_crop_flip
from fewshot_sla.config import ConfigError, parse_config, save_config, to_dict
from fewshot_sla.distributed import closing_group
from fewshot_sla.metrics import mean_ci95
from fewshot_sla.tracking import RunLogger
from fewshot_sla.transforms import Transform
from fewshot_sla.utils import DataError

from .backbones import make_backbone
from .config import FewShotConfig
from .data import FewShotData, dataset_stats, gather, load_splits, to_float
from .evaluate import evaluate_episodes
from .maml import ALGORITHMS, MAMLLearner
from .protonet import ProtoNet
from .r2d2 import R2D2
from .sampler import EpisodeSampler
from .svm import MetaOptSVM
from .task import EpisodeTask

__all__ = [
    "FewShotConfig", "run", "main", "check_config", "build_task", "evaluate", "lr_at", "LEARNERS",
    "AUTO_TEST_EPISODES", "resolve_test_episodes", "best_checkpoint", "load_best",
]

#: protonet, r2d2 and svm work for any number of ways; the learn2learn learners have a fixed-size head.
LEARNERS = ("protonet", "r2d2", "svm") + ALGORITHMS

#: What ``--test-episodes 0`` means per learner. The metric learners score an episode from features embedded once
#: (episodes.evaluate), so 10,000 episodes cost little more than one pass over the test split and give the tight
#: intervals recent papers report; the MAML family adapts (and runs the encoder) per episode: the classic 600.
AUTO_TEST_EPISODES: dict[str, int] = {
    "protonet": 10_000, "r2d2": 10_000, "svm": 10_000, **dict.fromkeys(ALGORITHMS, 600)
}


def resolve_test_episodes(cfg: FewShotConfig) -> int:
    """The number of test episodes: ``cfg.test_episodes``, or :data:`AUTO_TEST_EPISODES` of the learner when it is 0."""
    if cfg.test_episodes < 0:
        raise ValueError(f"--test-episodes must be >= 1, or 0 for the learner's default; got {cfg.test_episodes}")
    return cfg.test_episodes or AUTO_TEST_EPISODES[cfg.learner]


def check_config(cfg: FewShotConfig, world_size: int = 1) -> None:
    if cfg.learner in ALGORITHMS and (cfg.test_ways or cfg.ways) != cfg.ways:
        raise ValueError(
            f"--learner {cfg.learner} has a fixed {cfg.ways}-way head: --test-ways must equal --ways "
            "(or use protonet, r2d2 or svm, which take any number of ways)"
        )
    if cfg.lr_factors and len(cfg.lr_factors) != len(cfg.lr_milestones):
        raise ValueError(
            f"--lr-factors has {len(cfg.lr_factors)} values but --lr-milestones has {len(cfg.lr_milestones)}; "
            "give one factor per milestone"
        )
    if cfg.meta_batch < 1 or cfg.train_episodes < 1:
        raise ValueError("--meta-batch and --train-episodes must be >= 1")
    if cfg.val_every < 0:
        raise ValueError(f"--val-every must be >= 1, or 0 to validate only after the last step; got {cfg.val_every}")
    resolve_test_episodes(cfg)  # --test-episodes >= 0
    if cfg.meta_batch % world_size:
        raise ValueError(
            f"--meta-batch {cfg.meta_batch} must split evenly into the {world_size} processes (episodes of a "
            "meta-batch are divided between them); pick a multiple of the process count"
        )


def build_task(cfg: FewShotConfig, transform: Transform, in_channels: int, image_size: int) -> EpisodeTask:
    """The learner on its backbone inside the episodic task. ProtoNet, R2D2 and the SVM take any number
    of ways; the learn2learn learners get an ``N*M``-way head: with SLA they simply see a bigger episode."""
    encoder = make_backbone(cfg.backbone, in_channels, image_size)
    learner: torch.nn.Module
    if cfg.learner == "protonet":
        learner = ProtoNet(encoder)
    elif cfg.learner == "r2d2":
        learner = R2D2(encoder)
    elif cfg.learner == "svm":
        learner = MetaOptSVM(encoder)
    else:
        learner = MAMLLearner(encoder, cfg.ways * transform.m, cfg.learner, inner_lr=cfg.inner_lr,
                              inner_steps=cfg.inner_steps, test_inner_steps=cfg.test_inner_steps)
    return EpisodeTask(learner, transform, cfg.ways, cfg.shots, cfg.queries)


def test_episode_shape(cfg: FewShotConfig) -> tuple[int, int, int]:
    """(ways, shots, queries) of validation and test episodes."""
    return cfg.test_ways or cfg.ways, cfg.test_shots or cfg.shots, cfg.test_queries or cfg.queries


def lr_at(cfg: FewShotConfig, step: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): step decay or milestones."""
    if cfg.lr_milestones:
        passed = sum(step >= m for m in cfg.lr_milestones)
        if cfg.lr_factors:
            return cfg.lr * (cfg.lr_factors[passed - 1] if passed else 1.0)
        return cfg.lr * cfg.lr_gamma**passed
    return cfg.lr * (cfg.lr_gamma ** (step // cfg.lr_step) if cfg.lr_step else 1.0)


@torch.no_grad()
def evaluate(
    task: EpisodeTask, data: FewShotData, cfg: FewShotConfig, episodes: int, seed: int, device: torch.device,
    progress: bool = False,
) -> dict[str, Any]:
    """Per-episode accuracy of SLA+SI and SLA+AG over ``episodes`` episodes of the val/test shape, and per-class
    accuracy (AG): :func:`episodes.evaluate.evaluate_episodes`, which embeds ``data`` once for protonet, r2d2 and
    svm when that is cheaper than an encoder pass per episode (the same accuracies either way)."""
    ways, shots, queries = test_episode_shape(cfg)
    return evaluate_episodes(task, data, ways, shots, queries, episodes, seed, device,
                             normalize=lambda x: to_float(x, cfg.dataset, data.stats), progress=progress)


def make_loop(
    cfg: FewShotConfig, ctx: eng.Context, train: FewShotData, val: FewShotData, task: EpisodeTask
) -> eng.Loop:
    """One unit = one optimiser step over a meta-batch; this rank takes episodes ``rank, rank + P, ...`` of it."""
    mb, rank, world = cfg.meta_batch, ctx.dist.rank, ctx.dist.world_size
    sampler = EpisodeSampler(train.labels, cfg.ways, cfg.shots, cfg.queries, cfg.train_episodes * mb, seed=cfg.seed)

    def batches(step: int) -> Iterator[tuple[Tensor]]:
        for i in range(rank, mb, world):
            e = step * mb + i
            x = gather(train.images, sampler.episode(e))
            if cfg.augment:  # on the raw episode, before SLA's transforms; a pure function of (seed, episode)
                gen = torch.Generator().manual_seed(eng.stream_seed(cfg.seed, e))
                x = random_crop_flip(x, gen, cfg.augment_padding, cfg.augment_flip)
            yield (to_float(x, cfg.dataset, train.stats),)

    def validate(t: torch.nn.Module) -> dict[str, float]:
        res = evaluate(task, val, cfg, cfg.val_episodes, cfg.seed + 10_000, ctx.device)
        return {"val/acc_agg": float(np.mean(res["acc_agg"])), "val/acc_single": float(np.mean(res["acc_single"]))}

    return eng.Loop(
        units=cfg.train_episodes,
        batches=batches,
        lr=lambda step: lr_at(cfg, step),
        accumulate=mb // world,
        sequential_ranks=True,  # rank r runs episodes r, r + P, ... of the meta-batch: BN kept as one process's
        evaluate=validate,
        eval_every=cfg.val_every,
        eval_final=True,
        select="val/acc_agg",
        stats=lambda out, batch: {"acc": (out["logits"].argmax(1) == out["y"]).float().mean()},
        log_every=cfg.val_every or min(100, cfg.train_episodes),  # --val-every 0: validate only at the end
        unit_name="step",
        batch_log="train_episodes.csv",
        checkpoint_every=cfg.checkpoint_every,
    )


def test_and_log(cfg: FewShotConfig, task: EpisodeTask, test: FewShotData, ctx: eng.Context, logger: RunLogger,
                 fit: eng.FitResult) -> dict[str, Any]:
    """Test the best checkpoint; metrics.json, test_episodes.csv and the W&B tables."""
    episodes = resolve_test_episodes(cfg)
    res = evaluate(task, test, cfg, episodes, cfg.seed + 20_000, ctx.device, progress=True)
    si, si_ci = mean_ci95(res["acc_single"])
    ag, ag_ci = mean_ci95(res["acc_agg"])
    metrics = {  # the headline number: SLA+AG with SLA; for the baseline (M = 1) AG and SI are the same numbers
        "test/acc": ag, "test/acc_ci95": ag_ci, "test/acc_single": si, "test/acc_single_ci95": si_ci,
        "test/acc_agg": ag, "test/acc_agg_ci95": ag_ci, "val/best_acc": fit.best["value"],
        "test/episodes": episodes,
        "test/per_class_acc": {n: float(a) for n, a in zip(test.class_names, res["per_class"])},
    }
    rows = [[i + 1, a, b] for i, (a, b) in enumerate(zip(res["acc_single"], res["acc_agg"]))]
    with open(ctx.out / "test_episodes.csv", "w", newline="") as f:
        csv.writer(f).writerows([["episode", "acc_single", "acc_agg"], *rows])
    if (ctx.out / "train_episodes.csv").is_file():  # absent when --test-only runs on a folder trained elsewhere
        with open(ctx.out / "train_episodes.csv", newline="") as f:
            train_rows = [[float(v) for v in r] for r in list(csv.reader(f))[1:]]
        logger.log_table("train/episodes", ["step", "batch", "loss", "acc"], train_rows)
    logger.log_table("test/episodes", ["episode", "acc_single", "acc_agg"], rows)
    logger.log_per_class("test/per_class_acc", [float(a) for a in res["per_class"]], test.class_names)
    logger.finish(metrics, extra={"seed": cfg.seed, "history": fit.history, "world_size": ctx.dist.world_size})
    return metrics


def best_checkpoint(out: Path) -> Path:
    """``out/best.pt``, or a :class:`DataError` saying how to get one (``--test-only`` needs a trained run)."""
    best_path = out / "best.pt"
    if not best_path.is_file():
        raise DataError(
            f"--test-only evaluates the best checkpoint {best_path}, which does not exist: train the run first "
            "(the same command without --test-only), or point --out (the config's out) at a finished run folder"
        )
    return best_path


def load_best(task: EpisodeTask, out: Path, device: torch.device) -> eng.FitResult:
    """Load ``out/best.pt`` into ``task`` (weights only) for ``--test-only``; returns what :func:`test_and_log`
    records of the training: the best validation (from best.pt) and the history (from checkpoint.pt, if kept).

    Raises:
        DataError: best.pt is missing or unreadable, or holds weights of another learner or backbone.
    """
    best_path = best_checkpoint(out)
    st = checkpoint.load(best_path, device)
    try:
        task.load_state_dict(st["model"])
    except (KeyError, RuntimeError) as e:
        raise DataError(
            f"{best_path} does not fit the learner/backbone/transform of this config ({type(e).__name__}: "
            f"{str(e)[:300]}); test with the run's own config: --config {out / 'config.yaml'}"
        ) from e
    ckpt = out / "checkpoint.pt"
    history = list(checkpoint.load(ckpt)["history"]) if ckpt.is_file() else []
    best = dict(st.get("best") or {"metric": "val/acc_agg", "value": None, "unit": st.get("unit")})
    return eng.FitResult(units_done=int(st.get("unit") or 0), finished=True, history=history, best=best)


def run(cfg: FewShotConfig) -> dict[str, Any]:
    """Meta-train, keep the best validation checkpoint, test it; returns the metrics. With ``cfg.test_only``,
    test ``OUT/best.pt`` without training (metrics.json and test_episodes.csv overwritten)."""
    # resolved once, here: config.yaml, W&B and metrics.json record the number of episodes actually run
    cfg = dataclasses.replace(cfg, test_episodes=resolve_test_episodes(cfg))
    if cfg.test_only:
        best_checkpoint(Path(cfg.out))  # fail before loading any data
    spec = eng.RunSpec(cfg.out, cfg.seed, cfg.device, cfg.amp, cfg.channels_last, False, cfg.resume, cfg.stop_after,
                       cfg.num_threads)
    ctx = eng.setup(spec)
    check_config(cfg, ctx.dist.world_size)
    splits = load_splits(cfg)
    transform = get_transform(cfg.transform, stats=dataset_stats(cfg, splits["train"]))  # resolved once; sets M
    transform.check(splits["train"].images[:1].float())  # e.g. colour permutations of 1-channel Omniglot
    for split in (splits["val"], splits["test"]):  # fail before training for episodes a split cannot hold
        EpisodeSampler(split.labels, *test_episode_shape(cfg), 1)
    c, h = splits["train"].images.shape[1:3]
    task = build_task(cfg, transform, c, h).to(ctx.device)
    if cfg.test_only:  # config.yaml, checkpoint.pt and train_episodes.csv stay the training run's
        if not ctx.is_main:
            return {}
        fit_best = load_best(task, ctx.out, ctx.device)
        logger = RunLogger(ctx.out, to_dict(cfg), wandb_mode=cfg.wandb, project="fewshot-sla-episodes",
                           name=ctx.out.name, enabled=True, quiet=True)
        return test_and_log(cfg, task, splits["test"], ctx, logger, fit_best)
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(task.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                                     nesterov=True, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(task.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    logger = RunLogger(ctx.out, to_dict(cfg), wandb_mode=cfg.wandb, project="fewshot-sla-episodes",
                       name=ctx.out.name, enabled=ctx.is_main, quiet=True)
    if ctx.is_main:
        save_config(cfg, ctx.out / "config.yaml")
    loop = make_loop(cfg, ctx, splits["train"], splits["val"], task)
    fit = eng.fit(task, opt, loop, ctx, logger, to_dict(cfg))
    if not fit.finished or not ctx.is_main:
        return {"episodes_done": fit.units_done}
    return test_and_log(cfg, task, splits["test"], ctx, logger, fit)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(FewShotConfig, argv, prog="sla-fewshot")
    try:
        with closing_group():
            m = run(cfg)
    except (DataError, ValueError, ConfigError, ImportError) as e:  # ImportError: learn2learn or qpth missing
        print(f"error: {e}", file=sys.stderr)
        return 2
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
