#!/usr/bin/env python
"""SLA's cost relative to the baseline for a CIFAR ResNet-32 at batch 128 (CPU, and CUDA when present).

    python bench/sla_overhead.py [--batch 128] [--repeats 5] [--threads 2] [--channels-last] [--device cpu]

Rows (median seconds per call over --repeats timed calls after one warm-up):
* train step (forward + backward + SGD step): baseline, SLA (rotation, M = 4), random-subset SLA (k = 2);
  the floor for SLA / baseline is M (SLA sees M times the images), the target <= 1.05 * M;
* inference: baseline, SLA+SI, SLA+SD (target <= 1.05 x baseline), SLA+AG (target <= 1.05 * M).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fewshot_sla import SLAClassifier  # noqa: E402
from fewshot_sla.nets import resnet32  # noqa: E402
from fewshot_sla.tracking import format_table  # noqa: E402


def timeit(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(device: torch.device, batch: int, repeats: int, channels_last: bool) -> list[dict]:
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    m = 4
    x_big = torch.randn(batch * m, 3, 32, 32, device=device)
    y_big = torch.randint(0, 10, (batch * m,), device=device)

    def make(**kw) -> SLAClassifier:
        return SLAClassifier(resnet32(), 10, **kw).to(device, memory_format=fmt)

    models = {"baseline": make(transform="none"), "sla": make(transform="rotation"),
              "sla_subset": make(transform="rotation", subset_k=2), "sla_sd": make(transform="rotation", distill=True)}

    def train_step(model: SLAClassifier, xb: torch.Tensor = x, yb: torch.Tensor = y):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step() -> None:
            loss = model(xb, yb)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    res = {}
    for name in ("baseline", "sla", "sla_subset", "sla_sd"):
        models[name].train()
        res[f"train/{name}"] = timeit(train_step(models[name]), repeats, device)
    # The same network on B*M plain images: what SLA's step costs without any SLA code. On a CPU a
    # 4x larger batch costs more than 4x (cache effects), so SLA's own overhead is SLA / this row.
    res["train/baseline_bm"] = timeit(train_step(models["baseline"], x_big, y_big), repeats, device)
    with torch.no_grad():
        for name, mode in (("baseline", "single"), ("sla", "single"), ("sla_sd", "distilled"), ("sla", "aggregated")):
            model = models[name].eval()
            res[f"infer/{name}/{mode}"] = timeit(lambda mdl=model, md=mode: mdl.predict(x, md), repeats, device)
        res["infer/baseline_bm"] = timeit(lambda: models["baseline"].predict(x_big, "single"), repeats, device)
    b_train, b_inf = res["train/baseline"], res["infer/baseline/single"]
    rows = [
        {"what": "train step: baseline", "seconds": b_train, "ratio": 1.0, "target": "1"},
        {"what": f"train step: baseline at batch {batch * m} (= B*M)", "seconds": res["train/baseline_bm"],
         "ratio": res["train/baseline_bm"] / b_train, "target": "(reference)"},
        {"what": "train step: SLA (M=4)", "seconds": res["train/sla"], "ratio": res["train/sla"] / b_train,
         "target": f"<= {1.05 * m:.2f} (floor {m})"},
        {"what": "  SLA step / baseline step at B*M", "seconds": float("nan"),
         "ratio": res["train/sla"] / res["train/baseline_bm"], "target": "<= 1.05"},
        {"what": "train step: SLA+SD (M=4)", "seconds": res["train/sla_sd"], "ratio": res["train/sla_sd"] / b_train,
         "target": f"<= {1.05 * m:.2f}"},
        {"what": "train step: random-subset SLA (k=2)", "seconds": res["train/sla_subset"],
         "ratio": res["train/sla_subset"] / b_train, "target": "~2 (k)"},
        {"what": "inference: baseline", "seconds": b_inf, "ratio": 1.0, "target": "1"},
        {"what": "inference: SLA+SI", "seconds": res["infer/sla/single"], "ratio": res["infer/sla/single"] / b_inf,
         "target": "<= 1.05"},
        {"what": "inference: SLA+SD", "seconds": res["infer/sla_sd/distilled"],
         "ratio": res["infer/sla_sd/distilled"] / b_inf, "target": "<= 1.05"},
        {"what": "inference: SLA+AG (M=4)", "seconds": res["infer/sla/aggregated"],
         "ratio": res["infer/sla/aggregated"] / b_inf, "target": f"<= {1.05 * m:.2f}"},
        {"what": f"inference: baseline at batch {batch * m}", "seconds": res["infer/baseline_bm"],
         "ratio": res["infer/baseline_bm"] / b_inf, "target": "(reference)"},
    ]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--device", nargs="*", default=None, help="devices to run on (default: cpu, and cuda if present)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    for d in devices:
        dev = torch.device(d)
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {args.threads} threads"
        print(f"\n### {name}: ResNet-32, batch {args.batch}, channels_last={args.channels_last}, "
              f"median of {args.repeats}, torch {torch.__version__}\n")
        print(format_table(bench(dev, args.batch, args.repeats, args.channels_last)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
