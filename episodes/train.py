"""``sla-fewshot``: episodic meta-training with SLA (Lee, Hwang & Shin, ICML 2020, Section 2.3).

    sla-fewshot --dataset omniglot --data-root DATA --learner protonet --ways 5 --shots 1 \
        --transform rotation --train-episodes 2000 --out runs/omni_5w1s_sla

Each training episode is expanded by :class:`episodes.SLAEpisode` into an ``N*M``-way episode (the
learner is unchanged); validation and test use SLA+AG (and report SLA+SI). ``--transform none`` is
the plain baseline. Writes ``OUT/metrics.json`` (mean accuracy with a 95% CI over the test
episodes), ``OUT/config.yaml``, ``OUT/checkpoint.pt`` / ``OUT/best.pt`` (atomic; ``--resume``
continues) and an offline W&B run with a per-episode table and per-class accuracy.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fewshot_sla import get_transform
from fewshot_sla.augment import random_crop_flip
from fewshot_sla.config import ConfigError, parse_config, save_config, to_dict
from fewshot_sla.metrics import mean_ci95
from fewshot_sla.tracking import RunLogger
from fewshot_sla.utils import DataError, atomic_torch_save, resolve_device, seed_everything

from .backbones import BACKBONES, make_backbone
from .data import DATASETS, gather, load_fewshot, to_float
from .maml import ALGORITHMS, MAMLLearner
from .protonet import ProtoNet
from .r2d2 import R2D2
from .sampler import EpisodeSampler, episode_labels, split_episode
from .sla_episode import SLAEpisode
from .svm import MetaOptSVM

#: protonet, r2d2 and svm work for any number of ways; the learn2learn learners have a fixed-size head.
LEARNERS = ("protonet", "r2d2", "svm") + ALGORITHMS
OPTIMIZERS = ("adam", "sgd")


@dataclass
class FewShotConfig:
    """Episodic few-shot training with SLA."""

    dataset: str = "omniglot"  # omniglot, mini-imagenet, cifar-fs or fc100
    data_root: str = "data"  # folder holding the data set (see docs/usage.md for each layout)
    omniglot_split: str = "vinyals"  # omniglot only: vinyals (1028/172/423) or background (Lake: 792/172/659)
    download: bool = False  # download the data set when missing (omniglot, cifar-fs, fc100; needs a network)
    image_size: int = 0  # image side (0 = the data set's default: omniglot 28, cifar 32, mini-imagenet 84)
    backbone: str = "conv4"  # conv4 or resnet12
    learner: str = "protonet"  # protonet, r2d2, svm (MetaOptNet), maml, fomaml, metasgd or anil
    inner_lr: float = 0.4  # maml family: inner-loop learning rate (Omniglot 0.4, mini-ImageNet 0.01)
    inner_steps: int = 1  # maml family: inner-loop steps in meta-training
    test_inner_steps: int = 3  # maml family: inner-loop steps at validation and test
    ways: int = 5  # classes per training episode
    shots: int = 1  # support images per class
    queries: int = 15  # query images per class
    test_ways: int = 0  # classes per val/test episode (0 = ways)
    test_shots: int = 0  # support images per class at val/test (0 = shots)
    test_queries: int = 0  # query images per class at val/test (0 = queries)
    transform: str = "rotation"  # SLA transformation family; none = the baseline
    augment: bool = False  # training episodes: random crop (zero padding) and horizontal flip, per image
    augment_padding: int = 8  # crop padding in pixels (MetaOptNet on mini-ImageNet: 8)
    augment_flip: bool = True  # with augment: also flip horizontally (keep off for handwriting)
    train_episodes: int = 2000  # optimiser steps of meta-training (each sees meta_batch episodes)
    val_episodes: int = 100  # episodes per validation
    val_every: int = 500  # validate every N steps
    test_episodes: int = 600  # test episodes (mean accuracy with 95% CI)
    meta_batch: int = 1  # episodes per optimiser step (gradients averaged)
    optimizer: str = "adam"  # adam or sgd (sgd: momentum, Nesterov)
    lr: float = 1e-3  # learning rate
    momentum: float = 0.9  # sgd momentum
    lr_step: int = 0  # multiply the lr by lr_gamma every N optimiser steps (0 = constant)
    lr_milestones: tuple[int, ...] = ()  # multiply the lr by lr_gamma at each of these steps (overrides lr_step)
    lr_factors: tuple[float, ...] = ()  # with lr_milestones: lr = lr * lr_factors[i] from milestone i on
    lr_gamma: float = 0.5  # lr decay factor
    weight_decay: float = 0.0  # weight decay
    seed: int = 0  # seed of episodes and init
    out: str = "runs/fewshot"  # output folder
    wandb: str = "offline"  # W&B mode: offline, online or disabled
    resume: bool = False  # continue from OUT/checkpoint.pt
    device: str = "auto"  # auto, cpu, cuda, ...
    num_threads: int = 0  # torch CPU threads (0 = default)
    checkpoint_every: int = 100  # write OUT/checkpoint.pt every N steps
    stop_after: int = 0  # stop after this many steps of this invocation (to test --resume; 0 = never)


def check_config(cfg: FewShotConfig) -> None:
    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(DATASETS)}")
    if cfg.learner not in LEARNERS:
        raise ValueError(f"unknown learner {cfg.learner!r}; choose one of {', '.join(LEARNERS)}")
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {cfg.backbone!r}; choose one of {', '.join(BACKBONES)}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
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
    if cfg.meta_batch < 1 or cfg.train_episodes < 1 or cfg.test_episodes < 1:
        raise ValueError("--meta-batch, --train-episodes and --test-episodes must be >= 1")


def build_learner(cfg: FewShotConfig, sla: SLAEpisode, in_channels: int, image_size: int) -> torch.nn.Module:
    """The episodic learner on its backbone. ProtoNet, R2D2 and the SVM take any number of ways; the
    learn2learn learners get an ``N*M``-way head (``sla.ways_joint(ways)``): with SLA they simply
    see a bigger episode."""
    encoder = make_backbone(cfg.backbone, in_channels, image_size)
    if cfg.learner == "protonet":
        return ProtoNet(encoder)
    if cfg.learner == "r2d2":
        return R2D2(encoder)
    if cfg.learner == "svm":
        return MetaOptSVM(encoder)
    return MAMLLearner(
        encoder,
        sla.ways_joint(cfg.ways),
        cfg.learner,
        inner_lr=cfg.inner_lr,
        inner_steps=cfg.inner_steps,
        test_inner_steps=cfg.test_inner_steps,
    )


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


def episode_logits(
    model: torch.nn.Module, sla: SLAEpisode, x: torch.Tensor, ways: int, shots: int, queries: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Joint query logits ``(Q*M, N*M)`` and the joint and plain query labels of one episode batch."""
    sy, qy = episode_labels(ways, shots, queries)
    sx, qx = split_episode(x, ways, shots, queries)
    sx, sy_j, qx, qy_j = sla.expand(sx, sy.to(x.device), qx, qy.to(x.device))
    return model(sx, sy_j, qx, ways=sla.ways_joint(ways)), qy_j, qy.to(x.device)  # type: ignore[return-value]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    sla: SLAEpisode,
    data: Any,
    cfg: FewShotConfig,
    episodes: int,
    seed: int,
    device: torch.device,
    progress: bool = False,
) -> dict[str, Any]:
    """Accuracy of SLA+SI and SLA+AG over ``episodes`` episodes, and per-class accuracy."""
    from tqdm import tqdm

    ways, shots, queries = test_episode_shape(cfg)
    sampler = EpisodeSampler(data.labels, ways, shots, queries, episodes, seed=seed)
    model.eval()
    acc_si, acc_ag = [], []
    hits = np.zeros(data.num_classes)
    seen = np.zeros(data.num_classes)
    for e, idx in enumerate(tqdm(sampler, desc="eval", disable=not progress, leave=False, mininterval=1)):
        x = to_float(gather(data.images, idx), cfg.dataset).to(device)
        z, _, qy = episode_logits(model, sla, x, ways, shots, queries)
        p_ag = sla.aggregate(z).argmax(1)
        acc_si.append((sla.single(z).argmax(1) == qy).float().mean().item())
        acc_ag.append((p_ag == qy).float().mean().item())
        cls = sampler.episode_classes(e)[qy.cpu().numpy()]
        np.add.at(hits, cls, (p_ag == qy).cpu().numpy())
        np.add.at(seen, cls, 1)
    with np.errstate(invalid="ignore"):
        per_class = np.where(seen > 0, hits / np.maximum(seen, 1), np.nan)
    return {"acc_single": acc_si, "acc_agg": acc_ag, "per_class": per_class}


def run(cfg: FewShotConfig) -> dict[str, Any]:
    """Meta-train, keep the best validation checkpoint, test it; returns the metrics."""
    from tqdm import tqdm

    check_config(cfg)
    device = resolve_device(cfg.device)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.out)
    sla = SLAEpisode(cfg.transform)
    size = cfg.image_size or None

    def load(split: str, download: bool = False) -> Any:
        return load_fewshot(cfg.dataset, cfg.data_root, split, size, download, omniglot_scheme=cfg.omniglot_split)

    train = load("train", cfg.download)
    sla.transform.check(train.images[:1].float())  # e.g. colour permutations of 1-channel Omniglot
    val, test = load("val"), load("test")
    # Fail early (before any training) for episodes the splits cannot hold.
    for split in (val, test):
        EpisodeSampler(split.labels, *test_episode_shape(cfg), 1)
    mb = cfg.meta_batch
    sampler = EpisodeSampler(train.labels, cfg.ways, cfg.shots, cfg.queries, cfg.train_episodes * mb, seed=cfg.seed)

    seed_everything(cfg.seed)
    c, h = train.images.shape[1], train.images.shape[2]
    model = build_learner(cfg, sla, c, h).to(device)
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
        )
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, best, episode_rows = 0, -1.0, []
    ckpt = out / "checkpoint.pt"
    if cfg.resume and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, best, episode_rows = state["episode"], state["best"], state["episode_rows"]
        torch.set_rng_state(state["rng"])
    elif cfg.resume:
        print(f"--resume: no checkpoint at {ckpt}; starting from scratch", file=sys.stderr)
    logger = RunLogger(
        out, to_dict(cfg), wandb_mode=cfg.wandb, project="fewshot-sla-episodes", name=out.name, quiet=True
    )
    save_config(cfg, out / "config.yaml")

    aug_gen = torch.Generator()
    bar = tqdm(
        range(start, cfg.train_episodes),
        desc="meta-train",
        file=sys.stderr,
        mininterval=2,
        initial=start,
        total=cfg.train_episodes,
    )
    for e in bar:
        if cfg.stop_after and e - start >= cfg.stop_after:
            break
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, e)
        opt.zero_grad(set_to_none=True)
        for i in range(mb):  # a meta-batch: episode e*mb + i, gradients averaged
            x = gather(train.images, sampler.episode(e * mb + i))
            if cfg.augment:  # on the raw episode, before SLA's transforms; a pure function of (seed, episode)
                aug_gen.manual_seed(cfg.seed * 1_000_003 + e * mb + i)
                x = random_crop_flip(x, aug_gen, cfg.augment_padding, cfg.augment_flip)
            x = to_float(x, cfg.dataset).to(device)
            z, qy_j, qy = episode_logits(model, sla, x, cfg.ways, cfg.shots, cfg.queries)
            loss = F.cross_entropy(z, qy_j)
            (loss / mb).backward()
            acc = (sla.aggregate(z.detach()).argmax(1) == qy).float().mean().item()
            episode_rows.append([e * mb + i + 1, loss.item(), acc])
        opt.step()
        if (e + 1) % cfg.val_every == 0 or e + 1 == cfg.train_episodes:
            res = evaluate(model, sla, val, cfg, cfg.val_episodes, cfg.seed + 10_000, device)
            val_acc = float(np.mean(res["acc_agg"]))
            logger.log(
                {
                    "train/loss": loss.item(),
                    "train/acc": acc,
                    "val/acc_agg": val_acc,
                    "val/acc_single": float(np.mean(res["acc_single"])),
                },
                step=e + 1,
            )
            if val_acc > best:
                best = val_acc
                atomic_torch_save({"model": model.state_dict(), "episode": e + 1, "val_acc": val_acc}, out / "best.pt")
            bar.set_postfix(val=f"{val_acc:.3f}")
        if (e + 1) % cfg.checkpoint_every == 0 or e + 1 == cfg.train_episodes:
            atomic_torch_save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "episode": e + 1,
                    "best": best,
                    "episode_rows": episode_rows,
                    "rng": torch.get_rng_state(),
                },
                ckpt,
            )
    if len(episode_rows) < cfg.train_episodes * mb:
        return {"episodes_done": len(episode_rows) // mb}

    model.load_state_dict(torch.load(out / "best.pt", map_location=device, weights_only=False)["model"])
    res = evaluate(model, sla, test, cfg, cfg.test_episodes, cfg.seed + 20_000, device, progress=True)
    si, si_ci = mean_ci95(res["acc_single"])
    ag, ag_ci = mean_ci95(res["acc_agg"])
    metrics = {
        # the headline number: SLA+AG with SLA, plain accuracy for the baseline (M = 1: all three agree)
        "test/acc": ag,
        "test/acc_ci95": ag_ci,
        "test/acc_single": si,
        "test/acc_single_ci95": si_ci,
        "test/acc_agg": ag,
        "test/acc_agg_ci95": ag_ci,
        "val/best_acc": best,
        "test/episodes": cfg.test_episodes,
        "test/per_class_acc": {n: float(a) for n, a in zip(test.class_names, res["per_class"])},
    }
    logger.log_table("train/episodes", ["episode", "loss", "accuracy"], episode_rows)
    logger.log_table(
        "test/episodes",
        ["episode", "acc_single", "acc_agg"],
        [[i + 1, a, b] for i, (a, b) in enumerate(zip(res["acc_single"], res["acc_agg"]))],
    )
    logger.log_per_class("test/per_class_acc", [float(a) for a in res["per_class"]], test.class_names)
    logger.finish(metrics, extra={"seed": cfg.seed})
    return metrics


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(FewShotConfig, argv, prog="sla-fewshot")
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        m = run(cfg)
    except (DataError, ValueError, ConfigError, ImportError) as e:  # ImportError: learn2learn or qpth missing
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "test/acc_agg" in m and get_transform(cfg.transform).m == 1:
        acc, ci = 100 * m["test/acc"], 100 * m["test/acc_ci95"]
        print(f"test: baseline {acc:.2f} +- {ci:.2f}   ({cfg.test_episodes} episodes)")
    elif "test/acc_agg" in m:
        print(
            f"test: SLA+SI {100 * m['test/acc_single']:.2f} +- {100 * m['test/acc_single_ci95']:.2f}   "
            f"SLA+AG {100 * m['test/acc_agg']:.2f} +- {100 * m['test/acc_agg_ci95']:.2f}   "
            f"({cfg.test_episodes} episodes)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
