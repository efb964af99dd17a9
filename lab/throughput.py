"""Training throughput of ``sla-longtail``'s own step: per variant, and with several processes on one device.

    python -m lab.throughput --device cuda --variants fp32 bf16+cl compile graphs --processes 1 4 8

Every measurement builds what ``sla-longtail`` builds (:func:`longtail.recipe.build_model` of the resolved recipe,
its SGD optimiser, :func:`longtail.recipe.make_loop`: the uint8 training set on the device, sampler indices ->
gather -> crop/flip -> normalise) and runs :func:`fewshot_sla.engine.fit` itself over ``warmup + steps`` batches.
The clock reads at every batch boundary inside fit's loop (CUDA events on a GPU, so nothing synchronises between
steps; ``perf_counter`` on a CPU), and a step's time is the median over the timed steps. The images are random
uint8 with CIFAR-10-LT-100's class counts (the cost does not depend on the pixels); the loss is cross-entropy.

``K`` processes at once (:func:`measure_processes`): K copies of one measurement start together, wait for one
another after their warm-up (a file barrier) and time the same window; their images/s add up to the device's.

Variants (:data:`VARIANTS`; the ``sla-longtail`` flags of each: :func:`variant_flags`):
``fp32`` (eager), ``bf16+cl`` (bf16 autocast and channels-last), ``compile`` (that, with ``torch.compile``) and
``graphs`` (that, compiled with ``mode="reduce-overhead"``: CUDA graphs, with the epoch's last partial batch
dropped so that every step has one shape).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from fewshot_sla import engine as eng
from longtail.config import LTConfig
from longtail.data import LTData, class_counts

__all__ = ["VARIANTS", "REGIMES", "Variant", "StepTiming", "synthetic_data", "variant_flags", "measure",
           "measure_processes", "main"]

COUNTS = class_counts(5000, 10, 100.0, "exp")  # CIFAR-10-LT-100: 12,406 training images
TEST_IMAGES = 10_000
#: regime -> (SLA transform, self-distillation head)
REGIMES: dict[str, tuple[str, bool]] = {"baseline": ("none", False), "SLA+SD": ("rotation", True)}
BARRIER_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Variant:
    """How a run executes (changes speed and the last bits, not the method)."""

    amp: bool
    channels_last: bool
    compile: bool
    compile_mode: str = "default"

    @property
    def drop_last(self) -> bool:
        """CUDA graphs replay one shape: the epoch's last partial batch is dropped (``--drop-last``)."""
        return self.compile_mode == "reduce-overhead"


VARIANTS: dict[str, Variant] = {
    "fp32": Variant(False, False, False),
    "bf16+cl": Variant(True, True, False),
    "compile": Variant(True, True, True),
    "graphs": Variant(True, True, True, "reduce-overhead"),
}


def variant_flags(name: str) -> list[str]:
    """The ``sla-longtail`` options that run a training as variant ``name`` does."""
    v = VARIANTS[name]
    return ((["--amp"] if v.amp else []) + (["--channels-last"] if v.channels_last else [])
            + (["--compile"] if v.compile else []) + (["--compile-mode", v.compile_mode] if v.compile else [])
            + (["--drop-last"] if v.drop_last else []))


@dataclass
class StepTiming:
    """One measurement: the median step, images/s per model and of all ``processes`` together, peak memory."""

    regime: str
    variant: str
    processes: int
    batch: int
    m: int  # SLA's copies per image (images per step = batch * m)
    step_ms: float
    images_s: float  # training images per second (before SLA's copies) of one model
    total_images_s: float  # of all processes together
    peak_mib: float  # peak device memory of one process (CUDA; 0 on a CPU)
    warmup_s: float  # the warm-up steps (compilation, cuDNN's search) of one process
    error: str | None = None


def synthetic_data(seed: int = 0, test_images: int = TEST_IMAGES) -> LTData:
    """Random uint8 images with CIFAR-10-LT-100's class counts, and a ``test_images``-image test set."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.repeat_interleave(torch.arange(10), torch.tensor(COUNTS))
    return LTData(
        torch.randint(0, 256, (len(labels), 3, 32, 32), dtype=torch.uint8, generator=g),
        labels,
        torch.randint(0, 256, (test_images, 3, 32, 32), dtype=torch.uint8, generator=g),
        torch.arange(test_images) % 10,
        [f"class{i}" for i in range(10)],
        list(COUNTS),
    )


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Clock:
    """Marks at batch boundaries: CUDA events (no synchronisation in between) or ``perf_counter``."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []

    def mark(self) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter())

    def steps_ms(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:])]
        return [(b - a) * 1e3 for a, b in zip(self.marks, self.marks[1:])]


def _timed(batches: Callable[[int], Iterable[tuple[Any, ...]]], warmup: int, steps: int, clock: _Clock,
           device: torch.device, at_warmup: Callable[[], None],
           info: dict[str, float]) -> Callable[[int], Iterator[Any]]:
    """``batches`` cut to ``warmup + steps`` batches; the clock marks every boundary from batch ``warmup`` on (a
    step's time includes producing its batch), and ``at_warmup`` runs once the warm-up steps are done."""

    def gen(epoch: int) -> Iterator[Any]:
        it = iter(batches(epoch))
        t0 = time.perf_counter()
        for i in range(warmup + steps + 1):
            if i == warmup:
                sync(device)
                info["warmup_s"] = time.perf_counter() - t0
                at_warmup()
            if i >= warmup:
                clock.mark()
            if i == warmup + steps:
                return
            try:
                yield next(it)
            except StopIteration:
                return

    return gen


def measure(regime: str, variant: str, device: str = "cpu", batch: int = 128, warmup: int = 5, steps: int = 20,
            threads: int = 0, data: LTData | None = None, at_warmup: Callable[[], None] = lambda: None) -> StepTiming:
    """Time ``steps`` training steps of ``regime`` (:data:`REGIMES`) as ``variant`` (:data:`VARIANTS`) runs them,
    after ``warmup`` untimed ones (at least 3 when compiling)."""
    from longtail.recipe import build_model, make_loop, resolve

    transform, sd = REGIMES[regime]
    v = VARIANTS[variant]
    data = data if data is not None else synthetic_data(test_images=20)
    warmup = max(warmup, 3) if v.compile else warmup
    if warmup + steps > sum(data.counts) // batch:
        raise ValueError(f"warmup {warmup} + steps {steps} exceed the {sum(data.counts) // batch} batches of "
                         "an epoch; lower them")
    with tempfile.TemporaryDirectory() as out:
        cfg = LTConfig(transform=transform, sd=sd, epochs=1, batch_size=batch, device=device, amp=v.amp,
                       channels_last=v.channels_last, compile=v.compile, compile_mode=v.compile_mode,  # type: ignore[arg-type]
                       drop_last=v.drop_last, out=out, wandb="disabled", num_threads=threads)
        ctx = eng.setup(eng.RunSpec(cfg.out, cfg.seed, cfg.device, cfg.amp, cfg.channels_last, cfg.compile,
                                    num_threads=cfg.num_threads, progress=False, compile_mode=cfg.compile_mode))
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        recipe = resolve(cfg, data)
        model = build_model(recipe).to(ctx.device)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        loop = make_loop(recipe, ctx, data, model)
        clock, info = _Clock(ctx.device), {"warmup_s": 0.0}
        bench = replace(loop, units=1, batches=_timed(loop.batches, warmup, steps, clock, ctx.device, at_warmup, info),
                        checkpoint_every=0, inner_progress=False, evaluate=None)
        eng.fit(model, opt, bench, ctx)
        times = clock.steps_ms()
        peak = torch.cuda.max_memory_allocated(ctx.device) / 2**20 if ctx.device.type == "cuda" else 0.0
    if not times:
        raise ValueError("no step was timed")
    step = statistics.median(times)
    ips = batch / step * 1e3
    return StepTiming(regime, variant, 1, batch, recipe.transform.m, step, ips, ips, peak, info["warmup_s"])


def _barrier(folder: Path, index: int, parties: int) -> None:
    (folder / f"ready.{index}").touch()
    end = time.monotonic() + BARRIER_TIMEOUT_S
    while len(list(folder.glob("ready.*"))) < parties:
        if time.monotonic() > end:
            raise TimeoutError(f"the other {parties - 1} processes did not reach the barrier in {BARRIER_TIMEOUT_S} s")
        time.sleep(0.01)


def measure_processes(processes: int, regime: str, variant: str, device: str = "cpu", batch: int = 128,
                      warmup: int = 5, steps: int = 20, threads: int = 0, timeout: float = 600.0) -> StepTiming:
    """:func:`measure` in ``processes`` processes at once on one device, timing the same window (a file barrier
    after the warm-up); per-model figures are the processes' mean, ``total_images_s`` their sum. One eager
    process measures in this one; a compiled variant always in a process of its own, within ``timeout``."""
    if processes == 1 and not VARIANTS[variant].compile:  # compiling runs apart: a failure cannot poison this one
        return measure(regime, variant, device, batch, warmup, steps, threads)
    # The workers run this module by name: the folder holding lab/ (the checkout) goes on their path.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                     os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as folder:
        cmd = [sys.executable, "-m", "lab.throughput", "--worker", folder, "--parties", str(processes),
               "--regimes", regime, "--variants", variant, "--device", device, "--batch", str(batch),
               "--warmup", str(warmup), "--steps", str(steps), "--threads", str(threads)]
        procs = [subprocess.Popen([*cmd, "--index", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                  text=True) for i in range(processes)]
        outs = []
        for p in procs:
            try:
                out, err = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                raise TimeoutError(f"{processes} processes of {regime}/{variant} took over {timeout:g} s") from None
            if p.returncode != 0:
                raise RuntimeError(f"a measuring process failed (exit {p.returncode}): {err.strip()[-800:]}")
            outs.append(StepTiming(**json.loads(out.strip().splitlines()[-1])))
    return StepTiming(regime, variant, processes, batch, outs[0].m, statistics.mean(t.step_ms for t in outs),
                      statistics.mean(t.images_s for t in outs), sum(t.images_s for t in outs),
                      max(t.peak_mib for t in outs), max(t.warmup_s for t in outs))


def safe(fn: Callable[..., StepTiming], regime: str, variant: str, processes: int, *args: Any,
         **kwargs: Any) -> StepTiming:
    """``fn(...)``, or a row holding the error (a variant that does not run here must not stop a table)."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 -- any failure of a variant is reported, not raised
        return StepTiming(regime, variant, processes, kwargs.get("batch", 128), 0, float("nan"), float("nan"),
                          float("nan"), 0.0, 0.0, f"{type(e).__name__}: {str(e)[:300]}")


def table(rows: list[StepTiming]) -> str:
    """A Markdown table of measurements."""
    from fewshot_sla.tracking import format_table

    def cell(r: StepTiming) -> dict[str, Any]:
        if r.error:
            return {"regime": r.regime, "variant": r.variant, "processes": r.processes, "step ms": "-",
                    "img/s per model": "-", "img/s total": "-", "peak MiB": "-", "warm-up s": "-",
                    "note": r.error[:80]}
        return {"regime": r.regime + (f" (M={r.m})" if r.m > 1 else ""), "variant": r.variant,
                "processes": r.processes, "step ms": f"{r.step_ms:.1f}", "img/s per model": f"{r.images_s:,.0f}",
                "img/s total": f"{r.total_images_s:,.0f}", "peak MiB": f"{r.peak_mib:,.0f}",
                "warm-up s": f"{r.warmup_s:.1f}", "note": ""}

    return format_table([cell(r) for r in rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    ap.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                    help="default: all on CUDA, fp32 and bf16+cl on a CPU")
    ap.add_argument("--processes", nargs="+", type=int, default=[1], help="processes at once (default: 1)")
    ap.add_argument("--batch", type=int, default=128, help="batch before SLA's copies (default: 128)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0 = torch's default)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # barrier folder of measure_processes
    ap.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--parties", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        folder = Path(args.worker)
        t = measure(args.regimes[0], args.variants[0], args.device, args.batch, args.warmup, args.steps, args.threads,
                    at_warmup=lambda: _barrier(folder, args.index, args.parties))
        print(json.dumps(asdict(t)))
        return 0
    variants = args.variants or (list(VARIANTS) if args.device.startswith("cuda") else ["fp32", "bf16+cl"])
    rows = [safe(measure_processes, r, v, k, k, r, v, args.device, batch=args.batch, warmup=args.warmup,
                 steps=args.steps, threads=args.threads)
            for r in args.regimes for v in variants for k in args.processes]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
