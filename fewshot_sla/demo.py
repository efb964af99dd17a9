"""``make demo``: SLA on a long-tailed data set that ships with scikit-learn (no download).

scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes) are split into a balanced test set
(50 per class) and a training pool, which is subsampled to a long tail (imbalance ratio 10,
exponential profile). The same small CNN is trained as

* the baseline (cross-entropy, no transformation),
* SLA with rotations (M = 4), evaluated with single inference (SLA+SI) and aggregation (SLA+AG),
* SLA+SD (self-distillation head),
* random-subset SLA (k = 2 of the M = 4 copies per image),
* the paper's ablations DA (rotations as plain augmentation) and MT (multi-task heads),

and the demo prints a results table (with many/medium/few-shot accuracy), writes
``OUT/results.md``, ``OUT/metrics.json``, ``OUT/per_class_acc.png`` and an offline W&B run.

    python -m fewshot_sla.demo --out runs/demo [--epochs 60] [--wandb offline|disabled] [--num-threads N]
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import parse_config, save_config, to_dict

if TYPE_CHECKING:
    from torch import Tensor, nn

# numpy, torch and the modules that use them are imported inside the functions that need them: --help answers
# without loading them.


@dataclass
class DemoConfig:
    """Long-tailed digits: baseline vs SLA+SI / SLA+AG / SLA+SD / random-subset SLA / DA / MT."""

    out: str = "runs/demo"  # output folder
    epochs: int = 30  # training epochs per method
    batch_size: int = 64  # images per batch (before SLA's M copies)
    lr: float = 0.01  # Adam learning rate
    imbalance_ratio: float = 10.0  # n_max / n_min of the training classes
    test_per_class: int = 50  # balanced test images per class
    transform: str = "rotation"  # SLA transformation family
    subset_k: int = 2  # copies per image for random-subset SLA
    temperature: float = 1.0  # self-distillation temperature
    seed: int = 0  # seed of the split, the subsampling, init and batches
    methods: tuple[str, ...] = ("baseline", "sla", "sla_sd", "sla_subset", "da", "mt")  # what to train
    wandb: str = "offline"  # W&B mode: offline, online or disabled
    num_threads: int = 0  # torch CPU threads (0 = auto: the cores other processes leave free)


def longtail_digits(cfg: DemoConfig) -> dict[str, Any]:
    """Balanced test split and an exponentially long-tailed training set of sklearn's digits."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    from .counts import class_counts

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    y = digits.target.astype(np.int64)
    rng = np.random.RandomState(cfg.seed)
    n_cls = 10
    test_idx, pool = [], []
    for c in range(n_cls):
        idx = rng.permutation(np.where(y == c)[0])
        test_idx.append(idx[: cfg.test_per_class])
        pool.append(idx[cfg.test_per_class :])
    counts = class_counts(min(len(p) for p in pool), n_cls, cfg.imbalance_ratio)
    train_idx = np.concatenate([p[:n] for p, n in zip(pool, counts)])
    test = np.concatenate(test_idx)
    mean, std = x[train_idx].mean(), x[train_idx].std()
    to_t = lambda i: torch.from_numpy((x[i] - mean) / std).unsqueeze(1)  # noqa: E731
    return {
        "x_train": to_t(train_idx),
        "y_train": torch.from_numpy(y[train_idx]),
        "x_test": to_t(test),
        "y_test": torch.from_numpy(y[test]),
        "counts": counts,
        "classes": [str(c) for c in range(n_cls)],
    }


def build(method: str, cfg: DemoConfig) -> nn.Module:
    """One regime per method name; every one uses the same backbone."""
    from .model import DataAugmentation, MultiTask, SLAClassifier
    from .nets import SmallCNN

    backbone = SmallCNN()
    if method == "baseline":
        return SLAClassifier(backbone, 10, "none")
    if method == "sla":
        return SLAClassifier(backbone, 10, cfg.transform)
    if method == "sla_sd":
        return SLAClassifier(backbone, 10, cfg.transform, distill=True, temperature=cfg.temperature)
    if method == "sla_subset":
        return SLAClassifier(backbone, 10, cfg.transform, subset_k=cfg.subset_k, seed=cfg.seed)
    if method == "da":
        return DataAugmentation(backbone, 10, cfg.transform)
    if method == "mt":
        return MultiTask(backbone, 10, cfg.transform)
    raise ValueError(f"unknown demo method {method!r}; known: baseline, sla, sla_sd, sla_subset, da, mt")


LABELS = {
    ("baseline", "single"): "Baseline",
    ("sla", "single"): "SLA+SI",
    ("sla", "aggregated"): "SLA+AG",
    ("sla_sd", "aggregated"): "SLA+SD (AG of its joint head)",
    ("sla_sd", "distilled"): "SLA+SD",
    ("sla_sd", "single"): "SLA+SD (SI of its joint head)",
    ("sla_subset", "single"): "SLA k=2 +SI",
    ("sla_subset", "aggregated"): "SLA k=2 +AG",
    ("da", "single"): "DA",
    ("mt", "single"): "MT",
}


def train_one(method: str, data: dict[str, Any], cfg: DemoConfig) -> tuple[nn.Module, float]:
    """Train one regime with the engine: Adam, cosine learning rate per epoch, batches a function of (seed, epoch)."""
    import torch

    from . import engine
    from .model import SLAClassifier

    ctx = engine.setup(engine.RunSpec(str(Path(cfg.out) / method), seed=cfg.seed, num_threads=cfg.num_threads))
    model = build(method, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=5e-4)
    x, y = data["x_train"], data["y_train"]

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(engine.stream_seed(cfg.seed, epoch))
        for idx in torch.randperm(len(y), generator=g).split(cfg.batch_size):
            if len(idx) >= 2:  # BatchNorm needs two samples
                yield x[idx], y[idx]

    loop = engine.Loop(
        units=cfg.epochs,
        batches=batches,
        lr=lambda e: 0.5 * cfg.lr * (1 + math.cos(math.pi * e / cfg.epochs)),
        checkpoint_every=0,  # seconds per method: nothing to resume
        generators={"subset": model.generator} if isinstance(model, SLAClassifier) else {},
    )
    t0 = time.perf_counter()
    engine.fit(model, opt, loop, ctx)
    return model.eval(), time.perf_counter() - t0


def run(cfg: DemoConfig) -> dict[str, Any]:
    """Train every method, evaluate each prediction mode, write the outputs; returns the metrics."""
    from .metrics import classification_report
    from .report.plots import per_class_plot
    from .threads import apply_threads
    from .tracking import RunLogger, format_table

    threads = apply_threads(cfg.num_threads)  # decided once: every method trains with the same thread count
    cfg = dataclasses.replace(cfg, num_threads=threads.threads)
    print(f"demo: {threads.threads} CPU thread(s) ({threads.reason})", file=sys.stderr)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    data = longtail_digits(cfg)
    logger = RunLogger(out, to_dict(cfg), wandb_mode=cfg.wandb, name="demo-digits-lt", quiet=True)
    rows: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    for i, method in enumerate(cfg.methods, 1):
        print(f"demo: training {method} ({i}/{len(cfg.methods)}, {cfg.epochs} epochs)", file=sys.stderr, flush=True)
        model, secs = train_one(method, data, cfg)
        for mode in model.modes():  # type: ignore[operator]
            pred = model.predict(data["x_test"], mode).argmax(1)  # type: ignore[operator]
            rep = classification_report(data["y_test"], pred, 10, data["counts"])
            name = LABELS.get((method, mode), f"{method}/{mode}")
            keep = ("acc", "acc_many", "acc_medium", "acc_few", "per_class_acc")
            row = {"method": name, **{k.replace("acc_", ""): rep[k] for k in keep}, "train_s": secs}
            rows.append(row)
            key = f"{method}/{mode}"
            metrics.update({f"test/{key}/{k}": v for k, v in rep.items()})
            logger.log_per_class(f"per_class/{key}", rep["per_class_acc"], data["classes"], data["counts"])  # type: ignore[arg-type]
    cols = ["method", "acc", "many", "medium", "few", "train_s"]
    table = format_table(rows, cols)
    header = (
        f"Long-tailed digits (imbalance {cfg.imbalance_ratio:g}, train counts {data['counts']}, "
        f"{len(data['y_test'])} balanced test images); {cfg.epochs} epochs, seed {cfg.seed}.\n"
        "many > 100, medium 20-100, few < 20 training images.\n\n"
    )
    print("\n" + header + table)
    logger.write_text("results.md", header + table + "\n")
    series = {r["method"]: r["per_class_acc"] for r in rows}
    title = "Long-tailed digits: per-class accuracy"
    plot = per_class_plot(series, data["counts"], out / "per_class_acc.png", title=title)
    if plot is not None:
        logger.log_image("per_class_acc", plot)
        print(f"\nper-class plot: {plot}")
    logger.log_table("results", cols, [[r[c] for c in cols] for r in rows])
    logger.finish(metrics, extra={"seed": cfg.seed, "class_counts": data["counts"]})
    print(f"metrics: {out / 'metrics.json'}" + (f"\nW&B offline run: {logger.wandb_dir}" if logger.wandb_dir else ""))
    return {"rows": rows, "metrics": metrics}


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(DemoConfig, argv, prog="sla-demo")
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
