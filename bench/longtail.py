#!/usr/bin/env python
"""Long-tail training throughput: images/second for ResNet-32 baseline and SLA, and the data
pipeline (numpy gather + batch crop/flip augmentation) as a share of a training step.

    python bench/longtail.py [--batch 128] [--steps 5] [--threads 2] [--channels-last] [--device cpu cuda]

Uses the real long-tailed CIFAR-10 from .data/cifar10-jpeg when it is there (else random uint8
images of the same shape; the output says which).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fewshot_sla import SLAClassifier  # noqa: E402
from fewshot_sla.nets import resnet32  # noqa: E402
from fewshot_sla.tracking import format_table  # noqa: E402
from longtail.data import augment_batch, load_longtail  # noqa: E402
from longtail.samplers import make_sampler  # noqa: E402


def images() -> tuple[np.ndarray, np.ndarray, str]:
    root = ROOT / ".data" / "cifar10-jpeg"
    if root.is_dir():
        d = load_longtail("imagefolder", root, 100.0, progress=False)
        return d.train_images.numpy(), d.train_labels.numpy(), "real CIFAR-10-LT-100 (JPEG copy)"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (12406, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 12406), "random uint8"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--device", nargs="*", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x_all, y_all, source = images()
    sampler = make_sampler("instance", y_all, seed=0)
    idx = np.fromiter(iter(sampler), dtype=np.int64)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    for d in devices:
        dev = torch.device(d)
        rows = []
        for name, tf in (("baseline", "none"), ("SLA (rotation, M=4)", "rotation")):
            torch.manual_seed(0)
            model = SLAClassifier(resnet32(), 10, tf).to(dev, memory_format=fmt).train()
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
            gen = torch.Generator().manual_seed(0)
            data_t, step_t = [], []
            for s in range(args.steps + 1):
                b = idx[s * args.batch : (s + 1) * args.batch]
                t0 = time.perf_counter()
                x = augment_batch(torch.from_numpy(x_all[b]), gen).to(dev, memory_format=fmt)
                y = torch.from_numpy(y_all[b]).to(dev)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t1 = time.perf_counter()
                loss = model(x, y)["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t2 = time.perf_counter()
                if s:  # the first step warms up
                    data_t.append(t1 - t0)
                    step_t.append(t2 - t0)
            dt, st = statistics.median(data_t), statistics.median(step_t)
            rows.append(
                {
                    "regime": name,
                    "step s": st,
                    "train img/s": args.batch / st,
                    "data ms": dt * 1e3,
                    "data share": dt / st,
                }
            )
        label = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {args.threads} threads"
        print(
            f"\n### {label}: ResNet-32, batch {args.batch} (SLA: x4 copies), median of {args.steps} steps, "
            f"channels_last={args.channels_last}, data: {source}\n"
        )
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
