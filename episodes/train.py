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

from fewshot_sla.config import ConfigError, parse_config, save_config, to_dict
from fewshot_sla.metrics import mean_ci95
from fewshot_sla.tracking import RunLogger
from fewshot_sla.utils import DataError, atomic_torch_save, resolve_device, seed_everything

from .data import DATASETS, load_fewshot, to_float
from .protonet import Conv4, ProtoNet
from .sampler import EpisodeSampler, episode_labels, split_episode
from .sla_episode import SLAEpisode

LEARNERS = ("protonet",)


@dataclass
class FewShotConfig:
    """Episodic few-shot training with SLA."""

    dataset: str = "omniglot"  # omniglot (mini-imagenet, cifar-fs, fc100: loaders not implemented yet)
    data_root: str = "data"  # folder holding the data set (omniglot: the folder with omniglot-py/)
    image_size: int = 0  # image side (0 = the data set's default: omniglot 28)
    backbone: str = "conv4"  # conv4
    learner: str = "protonet"  # protonet
    ways: int = 5  # classes per training episode
    shots: int = 1  # support images per class
    queries: int = 15  # query images per class
    test_ways: int = 0  # classes per val/test episode (0 = ways)
    test_shots: int = 0  # support images per class at val/test (0 = shots)
    transform: str = "rotation"  # SLA transformation family; none = the baseline
    train_episodes: int = 2000  # training episodes
    val_episodes: int = 100  # episodes per validation
    val_every: int = 500  # validate every N training episodes
    test_episodes: int = 600  # test episodes (mean accuracy with 95% CI)
    lr: float = 1e-3  # Adam learning rate
    lr_step: int = 0  # multiply the lr by lr_gamma every N episodes (0 = constant)
    lr_gamma: float = 0.5  # lr decay factor
    weight_decay: float = 0.0  # Adam weight decay
    seed: int = 0  # seed of episodes and init
    out: str = "runs/fewshot"  # output folder
    wandb: str = "offline"  # W&B mode: offline, online or disabled
    resume: bool = False  # continue from OUT/checkpoint.pt
    device: str = "auto"  # auto, cpu, cuda, ...
    num_threads: int = 0  # torch CPU threads (0 = default)
    checkpoint_every: int = 100  # write OUT/checkpoint.pt every N episodes
    stop_after: int = 0  # stop after this many episodes of this invocation (to test --resume; 0 = never)


def check_config(cfg: FewShotConfig) -> None:
    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(DATASETS)}")
    if cfg.learner not in LEARNERS:
        raise ValueError(f"learner {cfg.learner!r} is not implemented yet; choose one of {', '.join(LEARNERS)}")
    if cfg.backbone != "conv4":
        raise ValueError(f"backbone {cfg.backbone!r} is not implemented yet; use conv4")


def episode_logits(
    model: ProtoNet, sla: SLAEpisode, x: torch.Tensor, ways: int, shots: int, queries: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Joint query logits ``(Q*M, N*M)`` and the joint and plain query labels of one episode batch."""
    sy, qy = episode_labels(ways, shots, queries)
    sx, qx = split_episode(x, ways, shots, queries)
    sx, sy_j, qx, qy_j = sla.expand(sx, sy.to(x.device), qx, qy.to(x.device))
    return model(sx, sy_j, qx, ways=sla.ways_joint(ways)), qy_j, qy.to(x.device)  # type: ignore[return-value]


@torch.no_grad()
def evaluate(
    model: ProtoNet,
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

    ways, shots = cfg.test_ways or cfg.ways, cfg.test_shots or cfg.shots
    sampler = EpisodeSampler(data.labels, ways, shots, cfg.queries, episodes, seed=seed)
    model.eval()
    acc_si, acc_ag = [], []
    hits = np.zeros(data.num_classes)
    seen = np.zeros(data.num_classes)
    for e, idx in enumerate(tqdm(sampler, desc="eval", disable=not progress, leave=False, mininterval=1)):
        x = to_float(data.images[idx.numpy()], cfg.dataset).to(device)
        z, _, qy = episode_logits(model, sla, x, ways, shots, cfg.queries)
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
    train = load_fewshot(cfg.dataset, cfg.data_root, "train", size)
    sla.transform.check(train.images[:1].float())  # e.g. colour permutations of 1-channel Omniglot
    val = load_fewshot(cfg.dataset, cfg.data_root, "val", size)
    # Fail early (before any training) for episodes the splits cannot hold.
    EpisodeSampler(val.labels, cfg.test_ways or cfg.ways, cfg.test_shots or cfg.shots, cfg.queries, 1)
    sampler = EpisodeSampler(train.labels, cfg.ways, cfg.shots, cfg.queries, cfg.train_episodes, seed=cfg.seed)

    seed_everything(cfg.seed)
    c, h = train.images.shape[1], train.images.shape[2]
    model = ProtoNet(Conv4(c, h)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, best, episode_rows = 0, -1.0, []
    ckpt = out / "checkpoint.pt"
    if cfg.resume and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, best, episode_rows = state["episode"], state["best"], state["episode_rows"]
        torch.set_rng_state(state["rng"])
    logger = RunLogger(
        out, to_dict(cfg), wandb_mode=cfg.wandb, project="fewshot-sla-episodes", name=out.name, quiet=True
    )
    save_config(cfg, out / "config.yaml")

    def lr_at(e: int) -> float:
        return cfg.lr * (cfg.lr_gamma ** (e // cfg.lr_step) if cfg.lr_step else 1.0)

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
            g["lr"] = lr_at(e)
        x = to_float(train.images[sampler.episode(e).numpy()], cfg.dataset).to(device)
        z, qy_j, qy = episode_logits(model, sla, x, cfg.ways, cfg.shots, cfg.queries)
        loss = F.cross_entropy(z, qy_j)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc = (sla.aggregate(z.detach()).argmax(1) == qy).float().mean().item()
        episode_rows.append([e + 1, loss.item(), acc])
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
    if len(episode_rows) < cfg.train_episodes:
        return {"episodes_done": len(episode_rows)}

    test = load_fewshot(cfg.dataset, cfg.data_root, "test", size)
    model.load_state_dict(torch.load(out / "best.pt", map_location=device, weights_only=False)["model"])
    res = evaluate(model, sla, test, cfg, cfg.test_episodes, cfg.seed + 20_000, device, progress=True)
    si, si_ci = mean_ci95(res["acc_single"])
    ag, ag_ci = mean_ci95(res["acc_agg"])
    metrics = {
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
    except (DataError, ValueError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "test/acc_agg" in m:
        print(
            f"test: SLA+SI {100 * m['test/acc_single']:.2f} +- {100 * m['test/acc_single_ci95']:.2f}   "
            f"SLA+AG {100 * m['test/acc_agg']:.2f} +- {100 * m['test/acc_agg_ci95']:.2f}   "
            f"({cfg.test_episodes} episodes)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
