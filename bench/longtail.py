#!/usr/bin/env python
"""Long-tail training throughput on sla-longtail's own path, and the projected time of one 200-epoch run; and
the test evaluation against LDAM-DRW's own test loop.

    python bench/longtail.py                                   # CPU (3 timed steps), and CUDA when present
    python bench/longtail.py --device cuda --steps 50 --variants plain amp+cl amp+cl+compile
    python bench/longtail.py --tables eval --device cpu        # the evaluation table, 1 and 2 threads

For each device, regime (baseline; SLA: rotation, M=4; SLA+SD) and variant (CUDA: plain, bf16 autocast
``amp``, channels-last ``cl``, ``torch.compile``; CPU: plain) it builds what ``sla-longtail`` builds --
``longtail.recipe.build_model`` of the resolved recipe, its SGD optimiser, ``make_loop`` (uint8 training set on the
device, sampler indices -> gather -> ``random_crop_flip`` with CPU draws -> ``normalize``) -- and times
``fewshot_sla.engine.fit`` itself over ``--steps`` batches of ``--batch`` images after ``--warmup`` batches
(the clock reads, synchronised, at batch boundaries inside fit's loop). Also timed: the data pipeline alone
(``data ms``) and the final test evaluation (``longtail.recipe.evaluate``, every prediction mode) on
``--eval-images`` images, scaled to CIFAR's 10,000.

Projected wall time of one run on CIFAR-10-LT-100 = 200 epochs x 12,406 images / (images/s) + the
evaluation; per-epoch checkpoints (about 2 MB each) and logging are left out. The images are random uint8
with CIFAR-10-LT-100's class counts (the cost does not depend on the pixels); the loss is cross-entropy.
Prints one Markdown table per device.

``--tables eval``: the test evaluation of ``--eval-images`` (default 10,000) random uint8 CIFAR-size images per
device and thread count (``--eval-threads``): a reference loop as LDAM-DRW's ``validate()`` (eval mode, no
gradients, batches of 100 of pre-normalised float tensors, ``model(x).argmax(1)``) on the baseline ResNet-32, then
``longtail.recipe.evaluate`` (uint8 -> normalise per batch -> ``predict_modes`` -> argmax) for the baseline and
SLA+SD (rotation, M = 4) at ``--eval-batch`` 100, 500 and the device's automatic one (inputs per forward pass; SLA:
a quarter of that in images, whose 4 copies fill the aggregated pass), and the evaluation before
``predict_modes`` (one ``predict(x, mode)`` per mode, batches of 500). Each row is the fastest of
``--eval-repeats`` rounds, the rows timed round-robin (so a load that comes and goes shares itself out); seconds
scaled to 10,000 images, images/s, the ratio to the reference, and whether the predictions equal the
reference's (baseline) or the per-mode evaluation's (SLA+SD, every mode).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fewshot_sla import SLAClassifier, eval_mode  # noqa: E402
from fewshot_sla import engine as eng  # noqa: E402
from fewshot_sla.io import normalize  # noqa: E402
from fewshot_sla.tracking import format_table  # noqa: E402
from fewshot_sla.utils import inference_batches  # noqa: E402
from lab.throughput import COUNTS, TEST_IMAGES, sync, synthetic_data  # noqa: E402
from longtail.config import LTConfig  # noqa: E402
from longtail.data import LTData  # noqa: E402
from longtail.recipe import build_model, eval_batch_size, evaluate, make_loop, resolve  # noqa: E402

EPOCHS = 200
IMAGES_PER_EPOCH = sum(COUNTS)
REGIMES = {"baseline": ("none", False), "SLA": ("rotation", False), "SLA+SD": ("rotation", True)}
# variant name -> (amp, channels_last, compile); "cl" = channels-last
VARIANTS = {
    "plain": (False, False, False),
    "amp": (True, False, False),
    "cl": (False, True, False),
    "amp+cl": (True, True, False),
    "compile": (False, False, True),
    "amp+cl+compile": (True, True, True),
}
CUDA_VARIANTS = ("plain", "amp", "cl", "amp+cl", "amp+cl+compile")


def timed(
    batches: Callable[[int], Iterable[tuple[Any, ...]]], warmup: int, steps: int, device: torch.device,
    marks: dict[str, float],
) -> Callable[[int], Iterator[tuple[Any, ...]]]:
    """``batches`` cut to ``warmup + steps`` batches, reading the clock when fit asks for batch ``warmup``
    (every warm-up step done) and after the last step; producing a batch counts as part of its step."""

    def gen(epoch: int) -> Iterator[tuple[Any, ...]]:
        it = iter(batches(epoch))
        done = 0
        for i in range(warmup + steps):
            if i == warmup:
                sync(device)
                marks["t0"] = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            yield batch
            done = i + 1
        sync(device)
        marks["t1"] = time.perf_counter()
        marks["steps"] = done - warmup

    return gen


def measure(regime: str, variant: str, device: str, data: LTData, args: argparse.Namespace) -> dict[str, Any]:
    """One row: fit's step time and images/s, the data pipeline alone, the evaluation, the projection."""
    transform, sd = REGIMES[regime]
    amp, cl, compile_ = VARIANTS[variant]
    with tempfile.TemporaryDirectory() as out:
        cfg = LTConfig(transform=transform, sd=sd, epochs=EPOCHS, batch_size=args.batch, device=device, amp=amp,
                       channels_last=cl, compile=compile_, out=out, wandb="disabled", num_threads=args.threads)
        spec = eng.RunSpec(cfg.out, cfg.seed, cfg.device, cfg.amp, cfg.channels_last, cfg.compile,
                           num_threads=cfg.num_threads, progress=False)
        ctx = eng.setup(spec)
        recipe = resolve(cfg, data)
        model = build_model(recipe).to(ctx.device)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        loop = make_loop(recipe, ctx, data, model)
        warmup = max(args.warmup, 3) if compile_ else args.warmup  # compilation takes the first step(s)
        marks: dict[str, float] = {}
        bench_loop = replace(loop, units=1, batches=timed(loop.batches, warmup, args.steps, ctx.device, marks),
                             checkpoint_every=0, inner_progress=False, evaluate=None)
        eng.fit(model, opt, bench_loop, ctx)
        steps = int(marks["steps"])
        if steps < 1:
            raise SystemExit(f"--warmup {warmup} + --steps {args.steps} exceed the {IMAGES_PER_EPOCH // args.batch} "
                             "batches of an epoch; lower them")
        step_s = (marks["t1"] - marks["t0"]) / steps
        # The data pipeline alone (sampler -> gather -> crop/flip -> normalise), same batches.
        sync(ctx.device)
        t = time.perf_counter()
        n = 0
        for _ in zip(range(warmup + steps), loop.batches(0)):
            n += 1
        sync(ctx.device)
        data_s = (time.perf_counter() - t) / n
        # The final evaluation (every prediction mode, as sla-longtail's finish does), scaled to 10,000 images.
        test = data.test_images[: args.eval_images]
        evaluate(model, test[:500], ctx.device, recipe.stats)  # warm-up: cuDNN's algorithm search, oneDNN's primitives
        sync(ctx.device)
        t = time.perf_counter()
        evaluate(model, test, ctx.device, recipe.stats)
        sync(ctx.device)
        eval_s = (time.perf_counter() - t) * TEST_IMAGES / len(test)
    ips = args.batch / step_s
    return {
        "regime": regime + (" (M=4)" if transform != "none" else ""),
        "variant": variant,
        "step ms": f"{step_s * 1e3:.1f}",
        "img/s": f"{ips:,.0f}",
        "data ms": f"{data_s * 1e3:.1f}",
        "eval s": f"{eval_s:.1f}",
        "200-epoch run": fmt_duration(EPOCHS * IMAGES_PER_EPOCH / ips + eval_s),
        "_regime": regime,
        "_seconds": EPOCHS * IMAGES_PER_EPOCH / ips + eval_s,
    }


# -- the evaluation table ---------------------------------------------------------------------------------------------
REFERENCE_BATCH = 100  # LDAM-DRW's cifar_train.py tests in batches of 100
EVAL_REGIMES = ("baseline", "SLA+SD")


@torch.no_grad()
def reference_predict(model: SLAClassifier, x: Tensor, batch: int = REFERENCE_BATCH) -> Tensor:
    """LDAM-DRW's ``validate()``: eval mode, batches of pre-normalised float images, ``model(x).argmax(1)``; the
    baseline's network is its backbone and head (``M = 1``: ``N`` columns)."""
    net = nn.Sequential(model.backbone, model.joint_head)
    with eval_mode(net):
        return torch.cat([net(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])


@torch.no_grad()
def per_mode_evaluate(model: SLAClassifier, images: Tensor, device: torch.device, stats: Any,
                      batch: int = 500) -> dict[str, np.ndarray]:
    """The evaluation before ``predict_modes``: one ``predict(x, mode)`` per mode (SLA+SD: ``1 + M + 1``
    backbone passes), batches of 500."""
    preds: dict[str, list[np.ndarray]] = {m: [] for m in model.modes()}
    for rows in inference_batches(len(images), batch):
        x = normalize(images[rows].to(device), *stats)
        for mode in preds:
            preds[mode].append(model.predict(x, mode).argmax(1).cpu().numpy())
    return {m: np.concatenate(p) for m, p in preds.items()}


def eval_rows(device: str, threads: int, data: LTData, n_images: int, repeats: int) -> list[dict[str, Any]]:
    """The evaluation table's rows of one device and thread count (see the module docstring)."""
    if not device.startswith("cuda"):
        torch.set_num_threads(threads)
    dev = torch.device(device)
    images = data.test_images[:n_images]
    models, stats = {}, None
    for regime in EVAL_REGIMES:
        transform, sd = REGIMES[regime]
        recipe = resolve(LTConfig(transform=transform, sd=sd, device=device, wandb="disabled"), data)
        torch.manual_seed(0)
        models[regime], stats = build_model(recipe).to(dev).eval(), recipe.stats
    assert stats is not None
    x_ref = normalize(images.to(dev), *stats)  # the reference's DataLoader hands it normalised tensors
    auto = eval_batch_size(0, dev)
    batches = list(dict.fromkeys([REFERENCE_BATCH, 500, auto]))
    # (regime, evaluation, batch label, the call); the call returns {mode: predictions}
    cases: list[tuple[str, str, str, Callable[[], dict[str, np.ndarray]]]] = [(
        "baseline", "reference loop", str(REFERENCE_BATCH),
        lambda: {"single": reference_predict(models["baseline"], x_ref).cpu().numpy()},
    )]
    for regime in EVAL_REGIMES:
        for b in batches:
            per = eval_batch_size(b, dev, models[regime].m)  # images per batch: SLA's M copies fill a pass
            label = f"{b}{' (auto)' if b == auto else ''}{f': {per} img x {models[regime].m}' if per != b else ''}"
            cases.append((regime, "evaluate", label,
                          lambda m=models[regime], b=b: evaluate(m, images, dev, stats, b)))  # type: ignore[misc]
        if regime != "baseline":
            cases.append((regime, "per-mode predict (before)", "500",
                          lambda m=models[regime]: per_mode_evaluate(m, images, dev, stats)))  # type: ignore[misc]
    # warm-up, untimed: oneDNN's primitives / cuDNN's algorithm search for every model and batch size
    reference_predict(models["baseline"], x_ref[: 2 * REFERENCE_BATCH])
    for model in models.values():
        for b in batches:
            evaluate(model, images[: 2 * b], dev, stats, b)
    best = [float("inf")] * len(cases)
    preds: list[dict[str, np.ndarray]] = [{} for _ in cases]
    for _ in range(repeats):
        for i, (*_, call) in enumerate(cases):
            sync(dev)
            t = time.perf_counter()
            preds[i] = call()
            sync(dev)
            best[i] = min(best[i], time.perf_counter() - t)
    ref_s = best[0]
    before = next(p for (r, e, *_), p in zip(cases, preds) if e.startswith("per-mode"))
    rows = []
    for (regime, how, batch, _), secs, p in zip(cases, best, preds):
        want = preds[0] if regime == "baseline" else before
        same = all(np.array_equal(p[m], want[m]) for m in want) and list(p) == list(want)
        rows.append({
            "threads": threads if dev.type == "cpu" else "-",
            "model": regime + (" (M=4)" if regime != "baseline" else ""),
            "evaluation": how,
            "batch": batch,
            "s per 10k": f"{secs * TEST_IMAGES / n_images:.1f}",
            "img/s": f"{n_images / secs:,.0f}",
            "x reference": f"{secs / ref_s:.2f}",
            "same predictions": "yes" if same else "NO",
        })
        print(f"[{device}, {threads} thread(s)] {regime}, {how}, batch {batch}: {secs:.2f} s", file=sys.stderr,
              flush=True)
    return rows


def fmt_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min"


def device_label(device: str, threads: int) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    n = threads or torch.get_num_threads()
    return f"CPU, {n} thread{'s' if n > 1 else ''}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", nargs="+", default=None, help="devices (default: cpu, and cuda when available)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 on CPU, 40 on CUDA)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed first steps (default: 1 on CPU, 5 on CUDA)")
    ap.add_argument("--batch", type=int, default=128, help="batch size before SLA's M copies (default: 128)")
    ap.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    ap.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                    help=f"CUDA variants (default: {' '.join(CUDA_VARIANTS)}); CPU runs plain only unless given")
    ap.add_argument("--eval-images", type=int, default=None,
                    help="test images evaluated (train table: scaled to 10,000; 250 on CPU, 10,000 on CUDA; "
                         "eval table: 10,000)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--tables", nargs="+", choices=["train", "eval"], default=["train"],
                    help="train: the training throughput (default); eval: the test evaluation vs the reference loop")
    ap.add_argument("--eval-threads", type=int, nargs="+", default=[1, 2], help="eval table: CPU thread counts")
    ap.add_argument("--eval-repeats", type=int, default=1, help="eval table: rounds, each row its fastest")
    args = ap.parse_args(argv)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    data = synthetic_data()
    if "eval" in args.tables:
        n = min(TEST_IMAGES, args.eval_images or TEST_IMAGES)
        for device in devices:
            threads = args.eval_threads if not device.startswith("cuda") else [0]
            rows = [row for t in threads for row in eval_rows(device, t, data, n, max(1, args.eval_repeats))]
            label = device_label(device, 0).split(",")[0]
            print(f"\n### Test evaluation, {label}: {n:,} random uint8 32x32 images, ResNet-32, fastest of "
                  f"{max(1, args.eval_repeats)} round(s), torch {torch.__version__}; reference = LDAM-DRW's "
                  f"validate() loop (batches of {REFERENCE_BATCH} of normalised tensors, model(x).argmax(1))\n")
            print(format_table(rows))
    if "train" not in args.tables:
        return 0
    for device in devices:
        cuda = device.startswith("cuda")
        if cuda and not torch.cuda.is_available():
            print(f"error: --device {device}: CUDA is not available here", file=sys.stderr)
            return 2
        dargs = argparse.Namespace(**vars(args))
        dargs.steps = args.steps or (40 if cuda else 3)
        dargs.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
        dargs.eval_images = min(TEST_IMAGES, args.eval_images or (TEST_IMAGES if cuda else 250))
        variants = args.variants or (list(CUDA_VARIANTS) if cuda else ["plain"])
        rows = []
        for regime in args.regimes:
            for variant in variants:
                print(f"[{device}] {regime}, {variant} ...", file=sys.stderr, flush=True)
                rows.append(measure(regime, variant, device, data, dargs))
        print(
            f"\n### {device_label(device, args.threads)}: ResNet-32, batch {args.batch}, mean over "
            f"{dargs.steps} steps of sla-longtail's fit loop after {dargs.warmup} warm-up; evaluation on "
            f"{dargs.eval_images} test images scaled to 10,000\n"
        )
        cols = ["regime", "variant", "step ms", "img/s", "data ms", "eval s", "200-epoch run"]
        print(format_table(rows, cols))
        best = {r: min(x["_seconds"] for x in rows if x["_regime"] == r) for r in {x["_regime"] for x in rows}}
        if "baseline" in best and "SLA+SD" in best:
            grid = 12 * best["baseline"] + 12 * best["SLA+SD"]
            print(f"\nThe protocol's grid (4 losses x {{baseline, SLA+SD}} x 3 seeds = 24 runs) at the fastest "
                  f"variant, one run at a time: {fmt_duration(grid)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
