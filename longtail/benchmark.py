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
``OUT/checkpoint.pt`` (atomic, every epoch; ``--resume`` continues it exactly),
``OUT/per_class_acc.png`` and an offline W&B run.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fewshot_sla import SLAClassifier, get_transform
from fewshot_sla import engine as eng
from fewshot_sla.augment import random_crop_flip
from fewshot_sla.config import ConfigError, config_from_dict, parse_config, save_config, to_dict
from fewshot_sla.distributed import closing_group
from fewshot_sla.distributed import info as dist_info
from fewshot_sla.metrics import accuracy, balanced_accuracy, per_class_accuracy, shot_group_accuracy
from fewshot_sla.nets import make_backbone
from fewshot_sla.tracking import RunLogger, format_table
from fewshot_sla.utils import DataError, inference_batches, write_json

from .config import LTConfig
from .data import CIFAR_MEAN, CIFAR_STD, LTData, load_longtail, normalize
from .losses import head_for, make_loss
from .samplers import make_sampler
from .schedules import LTSchedule, cosine_lr, scale_epochs

__all__ = ["LTConfig", "run", "run_grid", "main", "build_model", "evaluate", "report", "limit_per_class"]


# -- pieces -----------------------------------------------------------------------------------------
def check_config(cfg: LTConfig) -> None:
    tf = get_transform(cfg.transform)
    if cfg.sd and tf.m == 1:
        raise ValueError("--sd distils the aggregated SLA teacher: it needs a --transform other than none")
    if cfg.imbalance_ratio < 1:
        raise ValueError(f"--imbalance-ratio must be >= 1, got {cfg.imbalance_ratio}")
    if cfg.sam_rho < 0:
        raise ValueError(f"--sam-rho is SAM's radius and must be >= 0 (0 = plain SGD), got {cfg.sam_rho}")
    if cfg.epochs < 1 or cfg.batch_size < 2:
        raise ValueError("--epochs must be >= 1 and --batch-size >= 2")
    world = dist_info().world_size
    if cfg.batch_size % world or cfg.batch_size // world < 2:
        raise ValueError(
            f"--batch-size {cfg.batch_size} is the global batch and must split evenly into {world} processes of "
            ">= 2 images; pick a multiple of the process count"
        )


def build_model(cfg: LTConfig, counts: list[int], plan: LTSchedule) -> SLAClassifier:
    """The SLA regime with the imbalance loss on the joint head (joint class (i, j) counts n_i)."""
    transform = get_transform(cfg.transform, stats=(CIFAR_MEAN, CIFAR_STD))  # resolved once; M flows from it
    drw = plan.drw_epoch if cfg.drw else None
    kw = {"gamma": cfg.vs_gamma, "tau": cfg.vs_tau} if cfg.loss == "vs" else {}
    criterion = make_loss(cfg.loss, counts, m=transform.m, drw_epoch=drw, **kw)
    return SLAClassifier(
        make_backbone(cfg.backbone),
        len(counts),
        transform,
        distill=cfg.sd,
        criterion=criterion,
        sd_criterion=make_loss(cfg.loss, counts, m=1, drw_epoch=drw, **kw) if cfg.sd else None,
        temperature=cfg.temperature,
        distill_scale=criterion.logit_scale,  # LDAM: distil s * cos, not cosines (else KD is ~400x too weak)
        head=head_for(cfg.loss),
        seed=cfg.seed,
    )


def limit_per_class(labels: np.ndarray, limit: int) -> np.ndarray:
    """Indices of about ``limit`` images keeping the class proportions (at least one per class),
    the first images of each class in order."""
    counts = np.bincount(labels)
    keep_n = np.maximum(1, np.round(counts * limit / len(labels)).astype(int))
    return np.sort(np.concatenate([np.where(labels == c)[0][:k] for c, k in enumerate(keep_n)]))


def load_data(cfg: LTConfig, progress: bool) -> LTData:
    """The long-tailed training set (``--subset-seed``'s subset, cut to ``--limit-train``) and the test set."""
    d = load_longtail(
        cfg.dataset, cfg.data_root, cfg.imbalance_ratio, cfg.profile, cfg.subset_seed, cfg.download, progress=progress
    )
    y = d.train_labels.numpy()
    if cfg.limit_train and cfg.limit_train < len(y):
        keep = torch.from_numpy(limit_per_class(y, cfg.limit_train))
        d.train_images, d.train_labels = d.train_images[keep], d.train_labels[keep]
        d.counts = np.bincount(d.train_labels.numpy(), minlength=d.num_classes).tolist()
    if cfg.limit_test and cfg.limit_test < len(d.test_labels):
        n = len(d.test_labels)
        order = np.argsort(np.arange(n) % max(1, n // cfg.limit_test), kind="stable")
        sel = torch.from_numpy(np.sort(order[: cfg.limit_test]))
        d.test_images, d.test_labels = d.test_images[sel], d.test_labels[sel]
    return d


def make_loop(cfg: LTConfig, ctx: eng.Context, data: LTData, model: SLAClassifier) -> eng.Loop:
    """Epochs of sampler batches, augmented where the model trains; DRW and the sampler via ``set_epoch``."""
    rank, world = ctx.dist.rank, ctx.dist.world_size
    plan = scale_epochs(cfg.epochs)
    sampler = make_sampler(cfg.sampler, data.train_labels, cfg.seed, cfg.epochs, rank, world)
    # The training set lives where the model trains (uint8: 37 MB for CIFAR-10-LT-100); no host round-trip.
    train_x, train_y = data.train_images.to(ctx.device), data.train_labels.to(ctx.device)
    per_rank = cfg.batch_size // world

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        idx = sampler.epoch_indices(epoch).to(ctx.device)
        gen = torch.Generator().manual_seed(eng.stream_seed(cfg.seed, epoch, rank))  # draws on the CPU, any device
        for s in range(0, len(idx), per_rank):
            b = idx[s : s + per_rank]
            if len(b) >= 2:  # BatchNorm needs two images
                yield normalize(random_crop_flip(train_x[b], gen, 4)), train_y[b]

    def lr(epoch: int) -> float:
        return plan.lr(epoch, cfg.lr) if cfg.schedule == "ldam" else cosine_lr(epoch, cfg.epochs, cfg.lr, plan.warmup)

    def stats(out: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        y = batch[1]
        if "logits" in out:
            z = out["logits"]
        else:  # random-subset SLA: the identity copy's transform-0 columns
            z = out["joint_logits"].view(len(y), -1, model.num_classes, model.m)[:, 0, :, 0]
        return {"acc": (z.argmax(1) == y).float().mean()}

    def test_metrics(m: torch.nn.Module) -> dict[str, float]:
        rep = report(evaluate(model, data.test_images, ctx.device), data.test_labels.numpy(), data.counts)
        return {k: v for k, v in rep.items() if isinstance(v, float)}

    criteria: list[eng.SupportsSetEpoch] = [c for c in (model.criterion, model.sd_criterion) if hasattr(c, "set_epoch")]  # type: ignore[misc]
    return eng.Loop(
        units=cfg.epochs,
        batches=batches,
        lr=lr,
        set_epoch=[sampler, *criteria],
        evaluate=test_metrics if cfg.eval_every else None,
        eval_every=cfg.eval_every,
        stats=stats,
        extra=lambda e: {"drw": float(cfg.drw and plan.drw(e))},
        unit_name="epoch",
        generators={"subset": model.generator},
        inner_progress=True,
        batches_per_unit=math.ceil(len(sampler) / per_rank),
        sam_rho=cfg.sam_rho,
    )


@torch.no_grad()
def evaluate(model: SLAClassifier, images: Tensor, device: torch.device, batch: int = 500) -> dict[str, np.ndarray]:
    """Predicted classes of every mode the model has, ``{mode: (N,)}``, on uint8 test images."""
    preds: dict[str, list[np.ndarray]] = {m: [] for m in model.modes()}
    for rows in inference_batches(len(images), batch):
        x = normalize(images[rows].to(device))
        for mode in preds:
            preds[mode].append(model.predict(x, mode).argmax(1).cpu().numpy())
    return {m: np.concatenate(p) for m, p in preds.items()}


def report(preds: dict[str, np.ndarray], labels: np.ndarray, counts: list[int]) -> dict[str, Any]:
    """The metrics keys of metrics.json. ``test/acc`` is SLA+SI (the plain prediction); the
    balanced/group metrics use the best mode the model has (distilled > aggregated > single)."""
    out: dict[str, Any] = {"test/acc": accuracy(labels, preds["single"])}
    if "aggregated" in preds:
        out["test/acc_agg"] = accuracy(labels, preds["aggregated"])
    if "distilled" in preds:
        out["test/acc_distilled"] = accuracy(labels, preds["distilled"])
    main = "distilled" if "distilled" in preds else "aggregated" if "aggregated" in preds else "single"
    pca = per_class_accuracy(labels, preds[main], len(counts))
    out["test/main_mode"] = main
    out["test/balanced_acc"] = balanced_accuracy(labels, preds[main])
    out.update({f"test/acc_{k}": v for k, v in shot_group_accuracy(pca, counts).items()})
    out["test/per_class_acc"] = [float(a) for a in pca]
    return out


def finish(
    cfg: LTConfig, model: SLAClassifier, data: LTData, ctx: eng.Context, logger: RunLogger, fit: eng.FitResult
) -> dict[str, Any]:
    """Test the trained model; metrics.json, the per-class plot and the W&B tables (rank 0)."""
    from fewshot_sla.report import per_class_plot

    preds = evaluate(model, data.test_images, ctx.device)
    labels = data.test_labels.numpy()
    metrics = {"epochs_done": fit.units_done, **report(preds, labels, data.counts)}
    main = metrics["test/main_mode"]
    title = (
        f"{cfg.dataset}-LT {cfg.imbalance_ratio:g}, {cfg.loss}{'+DRW' if cfg.drw else ''}, "
        f"{'baseline' if model.m == 1 else 'SLA'}{'+SD' if cfg.sd else ''} ({main})"
    )
    plot = per_class_plot({title: metrics["test/per_class_acc"]}, data.counts, ctx.out / "per_class_acc.png",
                          class_names=data.class_names, title=title)
    logger.log_per_class("test/per_class_acc", metrics["test/per_class_acc"], data.class_names, data.counts)
    logger.log_confusion("test/confusion", labels.tolist(), preds[main].tolist(), data.class_names)
    if plot is not None:
        logger.log_image("test/per_class_acc_plot", plot)
    extra = {"seed": cfg.seed, "subset_seed": cfg.subset_seed, "class_counts": data.counts,
             "class_names": data.class_names, "history": fit.history, "world_size": ctx.dist.world_size}
    logger.finish(metrics, extra=extra)
    return metrics


# -- one run ----------------------------------------------------------------------------------------
def run(cfg: LTConfig) -> dict[str, Any]:
    """Train and evaluate one configuration; returns the metrics (the content of metrics.json)."""
    check_config(cfg)
    spec = eng.RunSpec(cfg.out, cfg.seed, cfg.device, cfg.amp, cfg.channels_last, cfg.compile, cfg.resume,
                       cfg.stop_after, cfg.num_threads)
    ctx = eng.setup(spec)
    data = load_data(cfg, progress=ctx.is_main)
    model = build_model(cfg, data.counts, scale_epochs(cfg.epochs)).to(ctx.device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loop = make_loop(cfg, ctx, data, model)
    logger = RunLogger(ctx.out, to_dict(cfg), wandb_mode=cfg.wandb, project="fewshot-sla-longtail",
                       name=ctx.out.name, enabled=ctx.is_main, quiet=True)
    if ctx.is_main:
        save_config(cfg, ctx.out / "config.yaml")
    fit = eng.fit(model, opt, loop, ctx, logger, to_dict(cfg))
    if not fit.finished or not ctx.is_main:
        return {"epochs_done": fit.units_done}
    return finish(cfg, model, data, ctx, logger, fit)


def run_grid(cfg: LTConfig) -> list[dict[str, Any]]:
    """Every (loss, transform) of the grid into OUT/<loss>_<transform>/, and one results table."""
    rows = []
    for loss in cfg.grid_loss or (cfg.loss,):
        for tf in cfg.grid_transform or (cfg.transform,):
            # through config_from_dict, so that a grid entry is checked like a flag (unknown loss -> clear error)
            sub = config_from_dict(LTConfig, {"loss": loss, "transform": tf, "sd": cfg.sd and tf != "none",
                                              "grid_loss": (), "grid_transform": (),
                                              "out": str(Path(cfg.out) / f"{loss}_{tf}")}, base=cfg, source="grid")
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
    if rows and dist_info().is_main:
        table = format_table(rows)
        print("\n" + table)
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "results.md").write_text(table + "\n")
        write_json(rows, Path(cfg.out) / "results.json")
    return rows


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(LTConfig, argv, prog="sla-longtail")
    try:
        with closing_group():
            if cfg.grid_loss or cfg.grid_transform:
                run_grid(cfg)
            else:
                met = run(cfg)
                if dist_info().is_main and "test/acc" in met:
                    print(format_table([{k: v for k, v in met.items() if isinstance(v, float)}]))
    except (DataError, ValueError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
