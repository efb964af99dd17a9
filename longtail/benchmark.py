"""``sla-longtail``: long-tailed CIFAR with SLA on top of any imbalance loss (LDAM-DRW protocol).

    sla-longtail --dataset cifar10 --data-root DATA --imbalance-ratio 100 --loss ldam --drw \
        --transform rotation --sd --epochs 200 --out runs/c10_ldam_sla
    sla-longtail ... --grid-loss ce ldam --grid-transform none rotation      # one results table
    torchrun --nproc_per_node=2 -m longtail.benchmark ...                    # DistributedDataParallel

Training images stay uint8 in memory; a batch is sampler indices -> numpy gather -> batch
augmentation (crop + flip) -> the SLA regime of :mod:`fewshot_sla`. Writes ``OUT/metrics.json``,
``OUT/config.yaml``, ``OUT/checkpoint.pt`` (atomic, every epoch; ``--resume`` continues it),
``OUT/per_class_acc.png`` and an offline W&B run.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from fewshot_sla import SLAClassifier
from fewshot_sla.config import ConfigError, parse_config, save_config, to_dict
from fewshot_sla.metrics import accuracy, balanced_accuracy, per_class_accuracy, shot_group_accuracy
from fewshot_sla.nets import BACKBONES
from fewshot_sla.tracking import RunLogger, format_table
from fewshot_sla.utils import DataError, atomic_torch_save, resolve_device, seed_everything, write_json

from .data import augment_batch, load_longtail, normalize
from .losses import LOSSES, drw_weights, head_for, make_loss
from .samplers import SAMPLERS, make_sampler
from .schedules import scale_epochs


@dataclass
class LTConfig:
    """Long-tailed CIFAR with SLA (LDAM-DRW protocol)."""

    dataset: str = "cifar10"  # cifar10, cifar100 or imagefolder
    data_root: str = "data"  # folder holding cifar-10-batches-py / cifar-100-python, or an ImageFolder tree
    download: bool = False  # download CIFAR with torchvision when missing (needs a network)
    imbalance_ratio: float = 100.0  # n_max / n_min of the training classes
    profile: str = "exp"  # imbalance profile: exp or step
    loss: str = "ce"  # ce, focal, cb, ldam, balanced-softmax, logit-adjusted
    sampler: str = "instance"  # instance, class-balanced, sqrt, progressive
    drw: bool = False  # deferred re-weighting (class-balanced weights from the DRW epoch on)
    transform: str = "none"  # SLA transformation family; none = the baseline
    sd: bool = False  # add the self-distillation head (SLA+SD)
    temperature: float = 1.0  # self-distillation temperature
    epochs: int = 200  # training epochs (LDAM-DRW: 200; milestones scale with it)
    batch_size: int = 128  # images per batch before SLA's M copies
    lr: float = 0.1  # base learning rate (SGD)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 2e-4  # SGD weight decay
    backbone: str = "resnet32"  # resnet20, resnet32 or resnet56
    seed: int = 0  # seed of subsampling (0 = LDAM-DRW's subsets), init, sampler and augmentation
    out: str = "runs/longtail"  # output folder
    wandb: str = "offline"  # W&B mode: offline, online or disabled
    resume: bool = False  # continue from OUT/checkpoint.pt
    amp: bool = False  # mixed precision (CUDA)
    channels_last: bool = False  # channels-last memory format
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    num_threads: int = 0  # torch CPU threads (0 = torch's default)
    limit_train: int = 0  # keep only the first N long-tailed training images (tiny runs; 0 = all)
    limit_test: int = 0  # evaluate on N test images (stratified by order; 0 = all)
    eval_every: int = 0  # evaluate on the test set every N epochs (0 = only at the end)
    stop_after: int = 0  # stop after this many epochs of this invocation (to test --resume; 0 = never)
    grid_loss: tuple[str, ...] = ()  # grid mode: losses to run
    grid_transform: tuple[str, ...] = ()  # grid mode: transforms to run (none = baseline)


# -- distributed helpers (every call guarded: one process runs without torch.distributed) ----------
def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment, (0, 1, 0) otherwise."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


# -- pieces -----------------------------------------------------------------------------------------
def build_model(cfg: LTConfig, counts: list[int]) -> SLAClassifier:
    """The SLA regime with the imbalance loss on the joint head (joint class (i, j) counts n_i)."""
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {cfg.backbone!r}; choose one of {', '.join(BACKBONES)}")
    from fewshot_sla import get_transform

    m = get_transform(cfg.transform).m
    return SLAClassifier(
        BACKBONES[cfg.backbone](),
        len(counts),
        cfg.transform,
        distill=cfg.sd,
        criterion=make_loss(cfg.loss, counts, m=m),
        sd_criterion=make_loss(cfg.loss, counts, m=1) if cfg.sd else None,
        temperature=cfg.temperature,
        head=head_for(cfg.loss),
        seed=cfg.seed,
    )


def check_config(cfg: LTConfig) -> None:
    from fewshot_sla import get_transform

    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss {cfg.loss!r}; choose one of {', '.join(LOSSES)}")
    if cfg.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {cfg.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    get_transform(cfg.transform)
    if cfg.sd and get_transform(cfg.transform).m == 1:
        raise ValueError("--sd distils the aggregated SLA teacher: it needs a --transform other than none")
    if cfg.imbalance_ratio < 1:
        raise ValueError(f"--imbalance-ratio must be >= 1, got {cfg.imbalance_ratio}")
    if cfg.epochs < 1 or cfg.batch_size < 2:
        raise ValueError("--epochs must be >= 1 and --batch-size >= 2")


@torch.no_grad()
def evaluate(
    model: SLAClassifier, images: torch.Tensor, labels: np.ndarray, device: torch.device, batch: int = 500
) -> dict[str, np.ndarray]:
    """Predictions of every mode the model has on the test images."""
    model.eval()
    preds: dict[str, list[np.ndarray]] = {m: [] for m in model.modes()}
    for s in range(0, len(images), batch):
        x = normalize(images[s : s + batch]).to(device)
        for mode in preds:
            preds[mode].append(model.predict(x, mode).argmax(1).cpu().numpy())
    return {m: np.concatenate(p) for m, p in preds.items()}


def report(preds: dict[str, np.ndarray], labels: np.ndarray, counts: list[int]) -> dict[str, Any]:
    """The metrics keys of metrics.json. ``test/acc`` is SLA+SI (the plain prediction); the
    balanced/group metrics use the best mode the model has (distilled > aggregated > single)."""
    n = len(counts)
    out: dict[str, Any] = {"test/acc": accuracy(labels, preds["single"])}
    if "aggregated" in preds:
        out["test/acc_agg"] = accuracy(labels, preds["aggregated"])
    if "distilled" in preds:
        out["test/acc_distilled"] = accuracy(labels, preds["distilled"])
    main = "distilled" if "distilled" in preds else "aggregated" if "aggregated" in preds else "single"
    pca = per_class_accuracy(labels, preds[main], n)
    out["test/main_mode"] = main
    out["test/balanced_acc"] = balanced_accuracy(labels, preds[main])
    out.update({f"test/acc_{k}": v for k, v in shot_group_accuracy(pca, counts).items()})
    out["test/per_class_acc"] = [float(a) for a in pca]
    return out


def per_class_plot(pca: list[float], counts: list[int], names: list[str], path: Path, title: str) -> Path | None:
    """Per-class test accuracy (bars) against training-class size (line, log scale), by frequency."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    order = np.argsort(counts)[::-1]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(counts)), 4))
    ax.bar(np.arange(len(order)), np.asarray(pca)[order], color="tab:blue")
    ax.set_ylabel("test accuracy", color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_xticks(np.arange(len(order)), [names[i] for i in order], rotation=60, ha="right", fontsize=7)
    ax2 = ax.twinx()
    ax2.plot(np.arange(len(order)), np.asarray(counts)[order], color="tab:red", marker="o")
    ax2.set_yscale("log")
    ax2.set_ylabel("training images", color="tab:red")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def limit_per_class(labels: np.ndarray, limit: int) -> np.ndarray:
    """Indices of about ``limit`` images keeping the class proportions (at least one per class),
    the first images of each class in order."""
    counts = np.bincount(labels)
    keep_n = np.maximum(1, np.round(counts * limit / len(labels)).astype(int))
    return np.sort(np.concatenate([np.where(labels == c)[0][:k] for c, k in enumerate(keep_n)]))


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}


# -- one run ----------------------------------------------------------------------------------------
def run(cfg: LTConfig) -> dict[str, Any]:
    """Train and evaluate one configuration; returns the metrics (the content of metrics.json)."""
    from tqdm import tqdm

    check_config(cfg)
    rank, world, local_rank = dist_info()
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
        dist.init_process_group(backend)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.out)
    data = load_longtail(
        cfg.dataset,
        cfg.data_root,
        cfg.imbalance_ratio,
        cfg.profile,
        cfg.seed,
        download=cfg.download,
        progress=rank == 0,
    )
    train_x = data.train_images.numpy()
    train_y = data.train_labels.numpy()
    if cfg.limit_train and cfg.limit_train < len(train_y):
        keep = limit_per_class(train_y, cfg.limit_train)
        train_x, train_y = train_x[keep], train_y[keep]
    counts = np.bincount(train_y, minlength=data.num_classes).tolist()
    test_x, test_y = data.test_images, data.test_labels.numpy()
    if cfg.limit_test:
        keep = np.argsort(np.arange(len(test_y)) % max(1, len(test_y) // cfg.limit_test), kind="stable")
        keep = np.sort(keep[: cfg.limit_test])
        test_x, test_y = test_x[keep], test_y[keep]

    seed_everything(cfg.seed)
    model = build_model(cfg, counts)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    train_model: nn.Module = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")
    plan = scale_epochs(cfg.epochs)
    sampler = make_sampler(cfg.sampler, train_y, seed=cfg.seed, num_epochs=cfg.epochs, rank=rank, world_size=world)
    aug_gen = torch.Generator()
    start_epoch, history = 0, []
    ckpt_path = out / "checkpoint.pt"
    if cfg.resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        start_epoch, history = ck["epoch"], ck["history"]
        model._gen.set_state(ck["subset_gen"])
        torch.set_rng_state(ck["rng"]["torch"])
        np.random.set_state(ck["rng"]["numpy"])
    elif cfg.resume and rank == 0:
        print(f"--resume: no checkpoint at {ckpt_path}; starting from scratch", file=sys.stderr)

    logger = RunLogger(
        out,
        to_dict(cfg),
        wandb_mode=cfg.wandb,
        project="fewshot-sla-longtail",
        name=out.name,
        enabled=rank == 0,
        quiet=True,
    )
    if rank == 0:
        save_config(cfg, out / "config.yaml")
    m = model.m
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.stop_after and epoch - start_epoch >= cfg.stop_after:
            break
        lr = plan.lr(epoch, cfg.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        weight = drw_weights(counts) if cfg.drw and plan.drw(epoch) else None
        model.criterion.set_weight(weight)  # type: ignore[union-attr]
        if model.sd_criterion is not None:
            model.sd_criterion.set_weight(weight)  # type: ignore[union-attr]
        sampler.set_epoch(epoch)
        aug_gen.manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + rank)  # a pure function of (seed, epoch, rank)
        idx = np.fromiter(iter(sampler), dtype=np.int64)
        batches = [idx[s : s + cfg.batch_size] for s in range(0, len(idx), cfg.batch_size)]
        batches = [b for b in batches if len(b) >= 2]  # BatchNorm needs two images
        model.train()
        loss_sum, correct, seen = torch.zeros((), device=device), 0, 0
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=rank != 0, leave=False, file=sys.stderr)
        for b in bar:
            x = augment_batch(torch.from_numpy(train_x[b]), aug_gen).to(device, memory_format=fmt)
            y = torch.from_numpy(train_y[b]).to(device)
            with torch.autocast(device.type, enabled=cfg.amp and device.type == "cuda"):
                res = train_model(x, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(res["loss"]).backward()
            scaler.step(opt)
            scaler.update()
            loss_sum += res["loss"].detach() * len(b)
            if "logits" in res:
                correct += int((res["logits"].argmax(1) == y).sum())
            else:  # random subset: the identity copy's transform-0 columns
                z = res["joint_logits"].detach().view(len(b), -1, model.num_classes, m)[:, 0, :, 0]
                correct += int((z.argmax(1) == y).sum())
            seen += len(b)
        stats = torch.tensor([loss_sum.item(), correct, seen], dtype=torch.float64)
        _all_reduce_mean(stats)
        row = {
            "epoch": epoch + 1,
            "train/loss": stats[0].item() / max(stats[2].item(), 1),
            "train/acc": stats[1].item() / max(stats[2].item(), 1),
            "lr": lr,
            "drw": float(weight is not None),
        }
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs and rank == 0:
            preds = evaluate(model, test_x, test_y, device)
            row.update({k: v for k, v in report(preds, test_y, counts).items() if isinstance(v, float)})
        history.append(row)
        logger.log(row, step=epoch + 1)
        if rank == 0:
            atomic_torch_save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "subset_gen": model._gen.get_state(),
                    "rng": _rng_state(),
                    "config": to_dict(cfg),
                },
                ckpt_path,
            )
        _barrier()
    finished = len(history) >= cfg.epochs
    metrics: dict[str, Any] = {"epochs_done": len(history)}
    if rank == 0 and finished:
        preds = evaluate(model, test_x, test_y, device)
        metrics.update(report(preds, test_y, counts))
        names = data.class_names
        title = (
            f"{cfg.dataset}-LT {cfg.imbalance_ratio:g}, {cfg.loss}{'+DRW' if cfg.drw else ''}, "
            f"{'baseline' if m == 1 else 'SLA'}{'+SD' if cfg.sd else ''} ({metrics['test/main_mode']})"
        )
        plot = per_class_plot(metrics["test/per_class_acc"], counts, names, out / "per_class_acc.png", title)
        logger.log_per_class("test/per_class_acc", metrics["test/per_class_acc"], names, counts)
        logger.log_confusion("test/confusion", test_y, preds[metrics["test/main_mode"]], names)
        if plot is not None:
            logger.log_image("test/per_class_acc_plot", plot)
        logger.finish(
            metrics, extra={"seed": cfg.seed, "class_counts": counts, "history": history, "world_size": world}
        )
    _barrier()
    return metrics


def run_grid(cfg: LTConfig) -> list[dict[str, Any]]:
    """Every (loss, transform) of the grid into OUT/<loss>_<transform>/, and one results table."""
    rows = []
    for loss in cfg.grid_loss or (cfg.loss,):
        for tf in cfg.grid_transform or (cfg.transform,):
            sub = replace(
                cfg,
                loss=loss,
                transform=tf,
                sd=cfg.sd and tf != "none",
                grid_loss=(),
                grid_transform=(),
                out=str(Path(cfg.out) / f"{loss}_{tf}"),
            )
            met = run(sub)
            if met.get("test/acc") is None:
                continue
            rows.append(
                {
                    "loss": loss + ("+DRW" if cfg.drw else ""),
                    "transform": tf,
                    "SI": met["test/acc"],
                    "AG": met.get("test/acc_agg", math.nan),
                    "SD": met.get("test/acc_distilled", math.nan),
                    "balanced": met["test/balanced_acc"],
                    "many": met["test/acc_many"],
                    "medium": met["test/acc_medium"],
                    "few": met["test/acc_few"],
                }
            )
    if rows and dist_info()[0] == 0:
        table = format_table(rows)
        print("\n" + table)
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "results.md").write_text(table + "\n")
        write_json(rows, Path(cfg.out) / "results.json")
    return rows


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(LTConfig, argv, prog="sla-longtail")
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        if cfg.grid_loss or cfg.grid_transform:
            run_grid(cfg)
        else:
            met = run(cfg)
            if dist_info()[0] == 0 and "test/acc" in met:
                print(format_table([{k: v for k, v in met.items() if isinstance(v, float)}]))
    except (DataError, ValueError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
