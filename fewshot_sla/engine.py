"""The training engine: one fit loop under every entry point (``sla-fewshot``, ``sla-longtail``, ``make demo``).

A recipe builds a *task* -- an ``nn.Module`` whose ``forward(*batch)`` returns a dict with ``loss``
(timm's ``task/classification.py`` style: :class:`fewshot_sla.SLAClassifier`, the DA / MT ablations,
the episodic task of :mod:`episodes.task`) -- an optimizer and a :class:`Loop` that says what a unit
of training is (an epoch of batches, or one optimiser step of a meta-batch of episodes). :func:`fit`
owns the rest:

* seeding, threads, device, ``torch.distributed`` under ``torchrun`` (gloo on CPU, NCCL on GPU; one
  process runs without it), bf16 autocast and channels_last on request (:func:`setup`);
* the learning rate as a pure function of the unit, schedules with ``set_epoch`` (samplers, DRW
  losses), gradient accumulation (``accumulate`` batches per optimiser step, DDP-synchronised once);
* optionally SAM (``sam_rho > 0``): each optimiser step takes the gradient at the (first-order) worst
  point within ``rho`` of the weights: two forward/backward passes over the same batch, same random draws;
* evaluation every ``eval_every`` units and best-checkpoint selection (``OUT/best.pt``);
* one atomic checkpoint (:mod:`fewshot_sla.checkpoint`) every ``checkpoint_every`` units, and
  ``--resume`` that continues *exactly*: a run stopped anywhere (``stop_after``) and resumed gives
  the metrics of an uninterrupted one, because batches are a pure function of (seed, unit, rank)
  and every generator's state is in the checkpoint;
* logging through :class:`fewshot_sla.tracking.RunLogger` (one row per ``log_every`` units) and,
  optionally, one row per batch to ``OUT/<batch_log>`` as it is produced.

The engine reads only ``out["loss"]`` for training; a recipe's ``stats(out, batch)`` may turn other
entries into per-unit training metrics (``train/acc``).
"""

from __future__ import annotations

import contextlib
import csv
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from . import checkpoint, distributed
from .seeding import stream_seed
from .utils import resolve_device, seed_everything

__all__ = ["RunSpec", "Context", "Loop", "FitResult", "SupportsSetEpoch", "setup", "fit", "to_device", "stream_seed",
           "sam_perturbation"]


class SupportsSetEpoch(Protocol):
    def set_epoch(self, epoch: int) -> None: ...


@dataclass
class RunSpec:
    """Where and how a run executes (the part of every recipe's config the engine reads)."""

    out: str  # run folder: checkpoint.pt, best.pt, metrics.json, ...
    seed: int = 0  # seeds init (global RNGs) and, through the recipe, every batch stream
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    amp: bool = False  # bf16 autocast of the training forward (CUDA; CPU with native bf16, e.g. AVX512-BF16/AMX)
    channels_last: bool = False  # channels-last memory format for the model and 4-D batches
    compile: bool = False  # torch.compile the training forward
    resume: bool = False  # continue from OUT/checkpoint.pt when it exists
    stop_after: int = 0  # stop after this many units of this invocation (0 = never)
    num_threads: int = 0  # torch CPU threads (0 = torch's default)
    progress: bool = True  # tqdm bars (rank 0)


@dataclass
class Context:
    """What :func:`setup` resolved: the device and this process's place in the process group."""

    spec: RunSpec
    device: torch.device
    dist: distributed.DistInfo

    @property
    def out(self) -> Path:
        return Path(self.spec.out)

    @property
    def is_main(self) -> bool:
        return self.dist.is_main


@dataclass
class Loop:
    """What one run trains: ``units`` of ``batches``; every field a recipe sets, nothing hidden.

    Attributes:
        units: epochs (long tail, demo) or optimiser steps (episodes).
        batches: ``unit -> iterable of batches`` on this rank; a batch is a tuple passed as
            ``task(*batch)``. Must be a pure function of (seed, unit, rank) for exact resume.
        lr: ``unit -> learning rate`` (a pure function), set on every parameter group.
        accumulate: batches per optimiser step (meta-batch); the loss is divided by it.
        set_epoch: objects whose ``set_epoch(unit)`` is called at the start of each unit.
        evaluate: ``task -> {metric: float}``, run on rank 0 in eval mode.
        eval_every: evaluate after every N units (0 = never).
        eval_final: also evaluate after the last unit.
        select: metric of ``evaluate`` whose maximum picks ``OUT/best.pt``; the best weights are
            loaded back into the task when training finishes.
        stats: ``(out, batch) -> {name: 0-dim tensor}`` averaged per unit as ``train/<name>``.
        extra: ``unit -> {name: float}`` added to each logged row (e.g. whether DRW is on).
        log_every: one history row per N units (train metrics averaged over them).
        unit_name: key of the unit counter in rows (``epoch`` or ``step``).
        generators: named local generators whose states are checkpointed.
        batch_log: file name under OUT for one CSV row per batch (None = none).
        checkpoint_every: write ``OUT/checkpoint.pt`` every N units (and at the end and at a stop);
            0 = never.
        inner_progress: a progress bar over the batches of each unit (long epochs).
        batches_per_unit: the number of batches of a unit, for that bar's total (optional).
        sam_rho: SAM's neighbourhood radius (Foret et al., ICLR 2021); 0 = off, 0.05 the usual value.
            Each optimiser step then runs the batch twice: the first pass gives the gradient ``g``
            (and the logged stats, and the only update of BatchNorm's running statistics), the
            second runs at ``w + rho * g / ||g||`` with the first pass's random draws (torch's global
            RNGs and ``generators``), and the optimizer steps from ``w`` with the second gradient.
            About 2x the step time; needs ``accumulate == 1``.
    """

    units: int
    batches: Callable[[int], Iterable[tuple[Any, ...]]]
    lr: Callable[[int], float]
    accumulate: int = 1
    set_epoch: Sequence[SupportsSetEpoch] = ()
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None
    eval_every: int = 0
    eval_final: bool = False
    select: str | None = None
    stats: Callable[[dict[str, Tensor], tuple[Any, ...]], dict[str, Tensor]] | None = None
    extra: Callable[[int], dict[str, float]] | None = None
    log_every: int = 1
    unit_name: str = "epoch"
    generators: dict[str, torch.Generator] = field(default_factory=dict)
    batch_log: str | None = None
    checkpoint_every: int = 1
    inner_progress: bool = False
    batches_per_unit: int | None = None
    sam_rho: float = 0.0


@dataclass
class FitResult:
    units_done: int
    finished: bool
    history: list[dict[str, float]]
    best: dict[str, Any]


def sam_perturbation(grads: Sequence[Tensor], rho: float) -> list[Tensor]:
    """SAM's ascent step ``e = rho * g / (||g||_2 + 1e-12)`` (Foret et al., ICLR 2021, eq. 2).

    Args:
        grads: the gradients of the parameters that have one; their norm is taken as one vector.
        rho: the neighbourhood radius.

    Returns:
        ``e`` per gradient, same shapes and dtypes: ``||e||_2 = rho`` (for a nonzero ``g``).
    """
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads]))
    scale = rho / (norm + 1e-12)
    return [g * scale.to(g.dtype) for g in grads]


EMULATED_BF16 = ("--amp on a CPU without native bf16 (AVX512-BF16/AMX): bf16 is emulated there and many times "
                 "slower than fp32 (docs/performance.md); drop --amp")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), i.e. whether CPU ``--amp`` pays off."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def setup(spec: RunSpec) -> Context:
    """Threads, device (this rank's GPU under torchrun), process group, and the global seeds.

    Call it before building the model, so that initialisation is a function of the seed.
    """
    if spec.num_threads > 0:
        torch.set_num_threads(spec.num_threads)
    device = resolve_device(spec.device)
    d = distributed.info()
    if device.type == "cuda" and d.world_size > 1:
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    d = distributed.init(device)
    seed_everything(spec.seed)
    return Context(spec, device, d)


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move every tensor of a (nested) tuple/list to ``device``; 4-D float tensors to channels_last on request."""
    if isinstance(batch, Tensor):
        t = batch.to(device, non_blocking=True)
        if channels_last and t.dim() == 4 and t.is_floating_point():
            t = t.contiguous(memory_format=torch.channels_last)
        return t
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device, channels_last) for b in batch)
    return batch


class _BatchLog:
    """One CSV row per batch, appended as produced; on resume the rows past the checkpoint are dropped."""

    def __init__(self, path: Path | None, unit_name: str, resume_unit: int) -> None:
        self.path, self.unit_name, self.columns = path, unit_name, None
        self._f: Any = None
        if path is None:
            return
        kept: list[list[str]] = []
        if resume_unit > 0 and path.is_file():
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            if rows:
                self.columns = rows[0]
                kept = [r for r in rows[1:] if r and int(r[0]) <= resume_unit]
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "w", newline="")
        self._w = csv.writer(self._f)
        if self.columns is not None:
            self._w.writerow(self.columns)
            self._w.writerows(kept)

    def write(self, unit: int, batch: int, values: dict[str, float]) -> None:
        if self._f is None:
            return
        if self.columns is None:
            self.columns = [self.unit_name, "batch", *values]
            self._w.writerow(self.columns)
        self._w.writerow([unit, batch, *(f"{values[c]:.6g}" for c in self.columns[2:])])

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _unit_metrics(sums: dict[str, Tensor], n: int) -> dict[str, float]:
    """Per-unit means of the summed training stats, averaged over ranks."""
    keys = sorted(sums)
    if not keys:
        return {}
    vec = torch.stack([sums[k].double().cpu() for k in keys] + [torch.tensor(float(n), dtype=torch.float64)])
    distributed.all_reduce_sum(vec)
    return {f"train/{k}": (vec[i] / max(vec[-1].item(), 1.0)).item() for i, k in enumerate(keys)}


def fit(
    task: nn.Module,
    optimizer: torch.optim.Optimizer,
    loop: Loop,
    ctx: Context,
    logger: Any = None,
    config: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``task`` with ``optimizer`` as ``loop`` says; resume, checkpoint, evaluate, log.

    Args:
        task: ``forward(*batch) -> {"loss": scalar, ...}``, already on ``ctx.device``.
        optimizer: over ``task``'s parameters.
        loop: see :class:`Loop`.
        ctx: from :func:`setup`.
        logger: a :class:`fewshot_sla.tracking.RunLogger` (or None: nothing logged).
        config: the resolved config, stored in the checkpoint for the record.

    Returns:
        :class:`FitResult`; with ``loop.select`` and a finished run, the task holds the best weights.
    """
    from tqdm import tqdm

    if loop.units < 1 or loop.accumulate < 1 or loop.log_every < 1:
        raise ValueError(f"Loop needs units, accumulate and log_every >= 1, got {loop.units}, {loop.accumulate} "
                         f"and {loop.log_every}")
    if loop.sam_rho < 0:
        raise ValueError(f"Loop.sam_rho is SAM's radius and must be >= 0 (0 = off), got {loop.sam_rho}")
    sam = loop.sam_rho > 0
    if sam and loop.accumulate > 1:
        raise ValueError(f"SAM (sam_rho={loop.sam_rho}) perturbs with the gradient of a whole optimiser step and "
                         f"does not support gradient accumulation (accumulate={loop.accumulate}): use accumulate=1 "
                         "(a larger batch per step instead) or sam_rho=0")
    spec, device, main = ctx.spec, ctx.device, ctx.is_main
    out = ctx.out
    ckpt_path, best_path = out / "checkpoint.pt", out / "best.pt"
    fmt = torch.channels_last if spec.channels_last else torch.contiguous_format
    task.to(device)
    task.to(memory_format=fmt)
    amp = spec.amp and device.type in ("cuda", "cpu")
    if amp and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(EMULATED_BF16, stacklevel=2)
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs no loss scaling; kept in the format
    start, history = 0, []
    best: dict[str, Any] = {"metric": loop.select, "value": None, "unit": None}
    pending: dict[str, Any] = {"sums": {}, "n": 0}
    if spec.resume and ckpt_path.is_file():
        st = checkpoint.load(ckpt_path, device)
        if st.get("format") != checkpoint.FORMAT:
            raise ValueError(
                f"{ckpt_path} is not a checkpoint of this version (format {st.get('format')!r}, expected "
                f"{checkpoint.FORMAT}); start a new run in another folder"
            )
        task.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        scaler.load_state_dict(st["scaler"])
        start, history, best = int(st["unit"]), list(st["history"]), dict(st["best"])
        pending = {"sums": {k: v.to(device) for k, v in st["pending"]["sums"].items()}, "n": st["pending"]["n"]}
        checkpoint.set_rng_state(st["rng"], loop.generators)
    elif spec.resume and main:
        print(f"--resume: no checkpoint at {ckpt_path}; starting from scratch", file=sys.stderr)
    if logger is not None and hasattr(logger, "truncate_history"):
        logger.truncate_history(start)  # rows past the checkpoint are logged again below
    train_model: nn.Module = task
    if ctx.dist.world_size > 1:
        ids = [device] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(task, device_ids=ids)
    if spec.compile:
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    log_name = loop.batch_log
    if log_name and ctx.dist.world_size > 1:
        log_name = f"{Path(log_name).stem}.rank{ctx.dist.rank}{Path(log_name).suffix}"
    blog = _BatchLog(out / log_name if log_name else None, loop.unit_name, start)

    def forward_backward(batch: tuple[Any, ...]) -> dict[str, Tensor]:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            res = train_model(*batch)
        scaler.scale(res["loss"] / loop.accumulate).backward()
        return res

    def sam_second_pass(batch: tuple[Any, ...], rng_first: dict[str, Any]) -> None:
        """Replace the gradient at ``w`` (already DDP-synchronised) by the gradient at ``w + e`` on the same
        batch with the first pass's random draws; restore ``w``, the buffers (BatchNorm's running statistics
        are updated once, by the first pass) and the RNG states that followed the first pass."""
        params = [p for p in task.parameters() if p.grad is not None]
        e = sam_perturbation([p.grad for p in params if p.grad is not None], loop.sam_rho)
        rng_after = checkpoint.rng_state(loop.generators)
        with torch.no_grad():
            weights = [p.detach().clone() for p in params]
            buffers = [b.detach().clone() for b in task.buffers()]
            for p, e_p in zip(params, e):
                p.add_(e_p)
                p.grad = None  # the second gradient replaces the first
        checkpoint.set_rng_state(rng_first, loop.generators)
        forward_backward(batch)
        with torch.no_grad():  # copies, not w + e - e: the weights come back bit for bit
            for p, w in zip(params, weights):
                p.copy_(w)
            for b, saved in zip(task.buffers(), buffers):
                b.copy_(saved)
        checkpoint.set_rng_state(rng_after, loop.generators)

    def save_checkpoint(units_done: int) -> None:
        if not main:
            return
        checkpoint.save(
            ckpt_path,
            {
                "model": task.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "unit": units_done,
                "best": best,
                "pending": pending,
                "rng": checkpoint.rng_state(loop.generators),
                "history": history,
                "config": config or {},
            },
        )

    bar = tqdm(
        range(start, loop.units),
        desc=f"train ({loop.unit_name}s)",
        initial=start,
        total=loop.units,
        disable=not (main and spec.progress),
        file=sys.stderr,
        mininterval=2,
        dynamic_ncols=True,
    )
    done = start
    try:
        for u in bar:
            if spec.stop_after and u - start >= spec.stop_after:
                break
            lr = float(loop.lr(u))
            for g in optimizer.param_groups:
                g["lr"] = lr
            for s in loop.set_epoch:
                s.set_epoch(u)
            task.train()
            optimizer.zero_grad(set_to_none=True)
            micro = 0
            batches = loop.batches(u)
            if loop.inner_progress and main and spec.progress:
                batches = tqdm(batches, desc=f"{loop.unit_name} {u + 1}", total=loop.batches_per_unit, leave=False,
                               file=sys.stderr, mininterval=1)
            for i, batch in enumerate(batches):
                batch = to_device(batch, device, spec.channels_last)
                last_micro = (micro + 1) % loop.accumulate == 0
                no_sync = ctx.dist.world_size > 1 and not last_micro
                rng_first = checkpoint.rng_state(loop.generators) if sam else {}
                with train_model.no_sync() if no_sync else contextlib.nullcontext():  # type: ignore[operator]
                    res = forward_backward(batch)
                loss = res["loss"]
                micro += 1
                if last_micro:
                    if sam:
                        sam_second_pass(batch, rng_first)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                vals = {"loss": loss.detach().float()}
                if loop.stats is not None:
                    vals.update({k: v.detach().float() for k, v in loop.stats(res, batch).items()})
                for k, v in vals.items():
                    pending["sums"][k] = pending["sums"].get(k, 0.0) + v
                pending["n"] += 1
                if blog.path is not None:
                    blog.write(u + 1, i, {k: float(v) for k, v in vals.items()})
            if micro % loop.accumulate:  # a last, shorter accumulation window
                scaler.step(optimizer)
                scaler.update()
            done = u + 1
            stopping = bool(spec.stop_after) and done - start >= spec.stop_after
            row: dict[str, float] = {}
            if done % loop.log_every == 0 or done == loop.units:
                row = {loop.unit_name: done, "lr": lr, **_unit_metrics(pending["sums"], pending["n"])}
                pending = {"sums": {}, "n": 0}
            evaluate = loop.evaluate is not None and (
                (loop.eval_every and done % loop.eval_every == 0) or (loop.eval_final and done == loop.units)
            )
            if evaluate and main:
                assert loop.evaluate is not None
                task.eval()
                res_eval = loop.evaluate(task)
                task.train()
                row = {loop.unit_name: done, "lr": lr, **row, **res_eval}
                score = res_eval.get(loop.select) if loop.select else None
                if score is not None and (best["value"] is None or score > best["value"]):
                    best = {"metric": loop.select, "value": float(score), "unit": done}
                    checkpoint.save(best_path, {"model": task.state_dict(), "unit": done, "best": best})
            if row:
                if loop.extra is not None:
                    row.update(loop.extra(u))
                history.append(row)
                if logger is not None:
                    logger.log(row, step=done)
                if "train/loss" in row:
                    bar.set_postfix(loss=f"{row['train/loss']:.3f}", refresh=False)
            blog.flush()
            if loop.checkpoint_every and (done % loop.checkpoint_every == 0 or done == loop.units or stopping):
                save_checkpoint(done)
            distributed.barrier()
    finally:
        blog.close()
        bar.close()
    finished = done >= loop.units
    if finished and loop.select and best["value"] is not None and best_path.is_file():
        task.load_state_dict(checkpoint.load(best_path, device)["model"])
    return FitResult(done, finished, history, best)
