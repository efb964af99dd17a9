"""The training engine: one fit loop under every entry point (``sla-fewshot``, ``sla-longtail``, ``make demo``).

A recipe builds a *task* -- an ``nn.Module`` whose ``forward(*batch)`` returns a dict with ``loss``
(timm's ``task/classification.py`` style: :class:`fewshot_sla.SLAClassifier`, the DA / MT ablations,
the episodic task of :mod:`episodes.task`) -- an optimizer and a :class:`Loop` that says what a unit
of training is (an epoch of batches, or one optimiser step of a meta-batch of episodes). :func:`fit`
owns the rest:

* seeding, threads (one policy for every entry point: :mod:`fewshot_sla.threads`), device, ``torch.distributed``
  under ``torchrun`` (gloo on CPU, NCCL on GPU; one process runs without it), bf16 autocast and channels_last on
  request (:func:`setup`);
* the learning rate as a pure function of the unit (or of the unit and the batch, :attr:`Loop.step_lr`),
  schedules with ``set_epoch`` (samplers, DRW losses), gradient accumulation (``accumulate`` batches per
  optimiser step, DDP-synchronised once);
* optionally SAM (``sam_rho > 0``, :mod:`fewshot_sla.sam`): each optimiser step takes the gradient at the
  (first-order) worst point within ``rho`` of the weights: two forward/backward passes over the same batch,
  same random draws;
* evaluation every ``eval_every`` units and best-checkpoint selection (``OUT/best.pt``);
* under DDP, BatchNorm running statistics of every rank's batches, not rank 0's alone: with
  ``Loop.sequential_ranks`` (a meta-batch shared out between the ranks) the ranks' updates are replayed after
  each step in one process's order, so W processes keep one process's statistics
  (:class:`fewshot_sla.distributed.BatchNormReplay`); otherwise (a global batch split between the ranks) the
  ranks' statistics are averaged before every evaluation, every checkpoint and the end of the run
  (:func:`fewshot_sla.distributed.average_buffers`);
* one atomic checkpoint (:mod:`fewshot_sla.checkpoint`) every ``checkpoint_every`` units and when
  ``RunSpec.checkpoint_minutes`` passed since the last (at a unit's end), carrying the hash of the folder's record
  (:func:`fewshot_sla.lifecycle.record_hash`; a checkpoint of another record is refused); SIGINT / SIGTERM stop
  after the current unit with its checkpoint written (:class:`fewshot_sla.lifecycle.Interrupted`); and
  ``--resume`` that continues *exactly*: a run stopped anywhere (``stop_after``) and resumed gives
  the metrics of an uninterrupted one, because batches are a pure function of (seed, unit, rank)
  and every generator's state is in the checkpoint;
* logging through :class:`fewshot_sla.tracking.RunLogger` (one row per ``log_every`` units) and,
  optionally, one row per batch to ``OUT/<batch_log>`` as it is produced; progress bars from
  :mod:`fewshot_sla.progress` (plain lines at a bounded rate when stderr is not a terminal).

The engine reads only ``out["loss"]`` for training; a recipe's ``stats(out, batch)`` may turn other
entries into per-unit training metrics (``train/acc``).
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from . import checkpoint, distributed, lifecycle, sam
from .progress import exclude, phase, progress_bar
from .sam import sam_perturbation
from .seeding import stream_seed
from .threads import apply_threads
from .utils import eval_mode, resolve_device, seed_everything

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
    num_threads: int = 0  # torch CPU threads (0 = auto: the cores other processes leave free; fewshot_sla.threads)
    progress: bool = True  # tqdm bars (rank 0)
    compile_mode: str = "default"  # torch.compile's mode: default, reduce-overhead (CUDA graphs), max-autotune...
    checkpoint_minutes: float = 0.0  # also write OUT/checkpoint.pt when this many minutes passed since the last


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
        step_lr: ``(unit, batch index within the unit) -> learning rate`` (a pure function); when given, set on
            every parameter group before each batch's forward, instead of ``lr`` (per-step warm-up); ``lr`` then
            only gives the logged ``lr`` of a unit.
        accumulate: batches per optimiser step (meta-batch); the loss is divided by it.
        sequential_ranks: under DDP, the ranks' batches of an optimiser step are what one process runs one after
            the other, rank ``r`` taking batches ``r, r + W, ...`` of the window (the episodic meta-batch): the
            ranks' BatchNorm updates are then replayed in that order after each step
            (:class:`fewshot_sla.distributed.BatchNormReplay`), so W processes keep one process's running
            statistics. False (the default, a global batch split between the ranks): the ranks' statistics are
            averaged before each evaluation and checkpoint.
        set_epoch: objects whose ``set_epoch(unit)`` is called at the start of each unit.
        evaluate: ``task -> {metric: float}``, run on rank 0 in eval mode (every submodule's mode restored
            after), under DDP after the BatchNorm statistics are averaged over the ranks.
        eval_what: what ``evaluate`` goes over, for the line that opens each validation (``200 episodes``).
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
        sam_rho: SAM's neighbourhood radius (Foret et al., ICLR 2021; :mod:`fewshot_sla.sam`); 0 = off,
            0.05 the usual value. Each optimiser step then runs the batch twice: the first pass gives the
            gradient ``g`` (and the logged stats, and the only update of BatchNorm's running statistics),
            the second runs at ``w + rho * g / ||g||`` with the first pass's random draws (torch's global
            RNGs and ``generators``), and the optimizer steps from ``w`` with the second gradient.
            About 2x the step time; needs ``accumulate == 1``.
    """

    units: int
    batches: Callable[[int], Iterable[tuple[Any, ...]]]
    lr: Callable[[int], float]
    accumulate: int = 1
    set_epoch: Sequence[SupportsSetEpoch] = ()
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None
    eval_what: str = ""
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
    step_lr: Callable[[int, int], float] | None = None
    sequential_ranks: bool = False


@dataclass
class FitResult:
    units_done: int
    finished: bool
    history: list[dict[str, float]]
    best: dict[str, Any]


EMULATED_BF16 = ("--amp on a CPU without native bf16 (AVX512-BF16/AMX): bf16 is emulated there and many times "
                 "slower than fp32 (docs/performance.md); drop --amp")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), i.e. whether CPU ``--amp`` pays off."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def setup(spec: RunSpec) -> Context:
    """Threads (:func:`fewshot_sla.threads.apply_threads`), device (this rank's GPU under torchrun), process group,
    and the global seeds.

    Call it before building the model, so that initialisation is a function of the seed.
    """
    apply_threads(spec.num_threads)
    device = resolve_device(spec.device)
    d = distributed.info()
    if device.type == "cuda" and d.world_size > 1:
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    d = distributed.init(device)
    if device.type == "cuda":  # cuDNN times its convolution algorithms once per shape and keeps the fastest
        torch.backends.cudnn.benchmark = True
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


@dataclass
class _State:
    """Where a run is: what a checkpoint holds besides the state dicts and the RNG states."""

    unit: int = 0  # units done
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    pending: dict[str, Any] = field(default_factory=lambda: {"sums": {}, "n": 0})  # train stats since the last row


def _check_loop(loop: Loop) -> None:
    if loop.units < 1 or loop.accumulate < 1 or loop.log_every < 1:
        raise ValueError(f"Loop needs units, accumulate and log_every >= 1, got {loop.units}, {loop.accumulate} "
                         f"and {loop.log_every}")
    sam.check_sam(loop.sam_rho, loop.accumulate)


def _prepare(task: nn.Module, ctx: Context) -> bool:
    """Move ``task`` to the device and memory format; returns whether bf16 autocast is on (warns if emulated)."""
    task.to(ctx.device)
    task.to(memory_format=torch.channels_last if ctx.spec.channels_last else torch.contiguous_format)
    amp = ctx.spec.amp and ctx.device.type in ("cuda", "cpu")
    if amp and ctx.device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(EMULATED_BF16, stacklevel=3)
    return amp


def _resume(task: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loop: Loop,
            ctx: Context) -> _State:
    """The state of ``OUT/checkpoint.pt`` loaded into the task, optimizer, scaler and generators (``--resume``),
    or a fresh one."""
    path = ctx.out / "checkpoint.pt"
    fresh = _State(best={"metric": loop.select, "value": None, "unit": None})
    if not ctx.spec.resume:
        return fresh
    if not path.is_file():
        if ctx.is_main:
            print(f"--resume: no checkpoint at {path}; starting from scratch", file=sys.stderr)
        return fresh
    st = checkpoint.load(path, ctx.device)
    if st.get("format") != checkpoint.FORMAT:
        raise ValueError(
            f"{path} is not a checkpoint of this version (format {st.get('format')!r}, expected "
            f"{checkpoint.FORMAT}); start a new run in another folder"
        )
    lifecycle.check_checkpoint(st, path, ctx.out)
    task.load_state_dict(st["model"])
    optimizer.load_state_dict(st["optimizer"])
    scaler.load_state_dict(st["scaler"])
    checkpoint.set_rng_state(st["rng"], loop.generators)
    pending = {"sums": {k: v.to(ctx.device) for k, v in st["pending"]["sums"].items()}, "n": st["pending"]["n"]}
    return _State(int(st["unit"]), list(st["history"]), dict(st["best"]), pending)


def _training_model(task: nn.Module, ctx: Context) -> nn.Module:
    """``task`` as the training forward runs it: under DDP (no buffer broadcast, which would overwrite every rank's
    BatchNorm statistics with rank 0's: they are combined by the replay or the average), compiled on request."""
    model: nn.Module = task
    if ctx.dist.world_size > 1:
        ids = [ctx.device] if ctx.device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel
        no_broadcast: dict[str, Any] = (  # broadcast_buffers is the older name (torch < 2.13)
            {"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
            else {"broadcast_buffers": False})
        model = ddp(task, device_ids=ids, **no_broadcast)
    if ctx.spec.compile:
        model = torch.compile(model, mode=ctx.spec.compile_mode)  # type: ignore[assignment]
    return model


def _batch_log(loop: Loop, ctx: Context, start: int) -> _BatchLog:
    name = loop.batch_log
    if name and ctx.dist.world_size > 1:
        name = f"{Path(name).stem}.rank{ctx.dist.rank}{Path(name).suffix}"
    return _BatchLog(ctx.out / name if name else None, loop.unit_name, start)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


class _Stepper:
    """What one batch does to the weights: forward/backward (bf16 autocast; DDP synchronises the last batch of an
    accumulation window only), then at the window's end SAM's second pass and the optimiser step (and, with
    ``Loop.sequential_ranks`` under DDP, the replay of the ranks' BatchNorm updates)."""

    def __init__(self, task: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, loop: Loop, ctx: Context, amp: bool) -> None:
        self.task, self.model, self.optimizer, self.scaler = task, model, optimizer, scaler
        self.loop, self.amp, self.device, self.ddp = loop, amp, ctx.device, ctx.dist.world_size > 1
        self.replay = distributed.BatchNormReplay(task, loop.accumulate) if self.ddp and loop.sequential_ranks else None

    def forward_backward(self, batch: tuple[Any, ...]) -> dict[str, Tensor]:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            res = self.model(*batch)
        self.scaler.scale(res["loss"] / self.loop.accumulate).backward()
        return res

    def batch(self, batch: tuple[Any, ...], micro: int) -> dict[str, Tensor]:
        """Train on the ``micro``-th batch (0-based) of the unit; returns the (first) forward's outputs."""
        loop = self.loop
        closes_window = (micro + 1) % loop.accumulate == 0
        rng_first = sam.first_pass_rng(loop.generators) if loop.sam_rho > 0 else {}
        no_sync = self.ddp and not closes_window
        if self.replay is not None:
            self.replay.before_batch()
        with self.model.no_sync() if no_sync else contextlib.nullcontext():  # type: ignore[operator]
            res = self.forward_backward(batch)
        if closes_window and loop.sam_rho > 0:
            sam.second_pass(self.task, loop.sam_rho, lambda: self.forward_backward(batch), rng_first, loop.generators)
        if self.replay is not None:
            self.replay.after_batch()
        if closes_window:
            self.step()
            self.optimizer.zero_grad(set_to_none=True)
        return res

    @property
    def replayed(self) -> list[nn.Module]:
        """The BatchNorm layers whose statistics the replay keeps equal on every rank."""
        return self.replay.modules if self.replay is not None else []

    def step(self) -> None:
        """The optimiser step that closes a window (the replayed BatchNorm statistics with it)."""
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.replay is not None:
            self.replay.end_window()


def _start_unit(u: int, task: nn.Module, optimizer: torch.optim.Optimizer, loop: Loop) -> float:
    """The learning rate and the schedules of unit ``u``, the task in training mode; returns the unit's lr."""
    lr = float(loop.lr(u))
    _set_lr(optimizer, lr)
    for s in loop.set_epoch:
        s.set_epoch(u)
    task.train()
    optimizer.zero_grad(set_to_none=True)
    return lr


def _train_unit(u: int, stepper: _Stepper, loop: Loop, ctx: Context, state: _State, blog: _BatchLog) -> None:
    """Every batch of unit ``u``: train, add its stats to ``state.pending``, log its row."""
    batches = loop.batches(u)
    if loop.inner_progress and ctx.is_main and ctx.spec.progress:
        batches = progress_bar(batches, desc=f"{loop.unit_name} {u + 1}", total=loop.batches_per_unit, leave=False,
                               mininterval=1)
    micro = 0
    for i, batch in enumerate(batches):
        if loop.step_lr is not None:
            _set_lr(stepper.optimizer, float(loop.step_lr(u, i)))
        batch = to_device(batch, ctx.device, ctx.spec.channels_last)
        res = stepper.batch(batch, micro)
        micro += 1
        vals = {"loss": res["loss"].detach().float()}
        if loop.stats is not None:
            vals.update({k: v.detach().float() for k, v in loop.stats(res, batch).items()})
        for k, v in vals.items():
            state.pending["sums"][k] = state.pending["sums"].get(k, 0.0) + v
        state.pending["n"] += 1
        if blog.path is not None:
            blog.write(u + 1, i, {k: float(v) for k, v in vals.items()})
    if micro % loop.accumulate:  # a last, shorter accumulation window
        stepper.step()


def _unit_metrics(sums: dict[str, Tensor], n: int) -> dict[str, float]:
    """Per-unit means of the summed training stats, averaged over ranks."""
    keys = sorted(sums)
    if not keys:
        return {}
    vec = torch.stack([sums[k].double().cpu() for k in keys] + [torch.tensor(float(n), dtype=torch.float64)])
    distributed.all_reduce_sum(vec)  # on the backend's device (NCCL reduces CUDA tensors only) and back
    return {f"train/{k}": (vec[i] / max(vec[-1].item(), 1.0)).item() for i, k in enumerate(keys)}


def _train_row(done: int, lr: float, loop: Loop, state: _State) -> dict[str, float]:
    """The history row of the training metrics when ``done`` closes a logging window (``{}`` otherwise)."""
    if done % loop.log_every and done != loop.units:
        return {}
    row = {loop.unit_name: done, "lr": lr, **_unit_metrics(state.pending["sums"], state.pending["n"])}
    state.pending = {"sums": {}, "n": 0}
    return row


def _evaluation_due(done: int, loop: Loop) -> bool:
    return loop.evaluate is not None and bool(
        (loop.eval_every and done % loop.eval_every == 0) or (loop.eval_final and done == loop.units)
    )


def _evaluate(task: nn.Module, loop: Loop, done: int, lr: float, row: dict[str, float], state: _State,
              best_path: Path, record: str | None = None) -> dict[str, float]:
    """Evaluate in eval mode, keep ``best.pt`` when the selected metric improves; returns the row with the scores."""
    assert loop.evaluate is not None
    with eval_mode(task):
        scores = loop.evaluate(task)
    row = {loop.unit_name: done, "lr": lr, **row, **scores}
    score = scores.get(loop.select) if loop.select else None
    if score is not None and (state.best["value"] is None or score > state.best["value"]):
        state.best = {"metric": loop.select, "value": float(score), "unit": done}
        checkpoint.save(best_path, {"model": task.state_dict(), "unit": done, "best": state.best, "record": record})
    return row


def _log_row(row: dict[str, float], u: int, loop: Loop, state: _State, logger: Any, bar: Any) -> None:
    if loop.extra is not None:
        row.update(loop.extra(u))
    state.history.append(row)
    if logger is not None:
        logger.log(row, step=state.unit)
    if "train/loss" in row:
        bar.set_postfix(loss=f"{row['train/loss']:.3f}", refresh=False)


def _save_checkpoint(path: Path, task: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                     loop: Loop, state: _State, config: dict[str, Any] | None, record: str | None = None) -> None:
    checkpoint.save(
        path,
        {
            "model": task.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "unit": state.unit,
            "best": state.best,
            "pending": state.pending,
            "rng": checkpoint.rng_state(loop.generators),
            "history": state.history,
            "config": config or {},
            "record": record,
        },
    )


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
    _check_loop(loop)
    spec, main, best_path = ctx.spec, ctx.is_main, ctx.out / "best.pt"
    record = lifecycle.folder_hash(ctx.out)  # every checkpoint names the record it belongs to
    amp = _prepare(task, ctx)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=False)  # bf16 needs no loss scaling; kept in the format
    state = _resume(task, optimizer, scaler, loop, ctx)
    if logger is not None and hasattr(logger, "truncate_history"):
        logger.truncate_history(state.unit)  # rows past the checkpoint are logged again below
    stepper = _Stepper(task, _training_model(task, ctx), optimizer, scaler, loop, ctx, amp)
    blog = _batch_log(loop, ctx, state.unit)
    start = state.unit
    bar = progress_bar(range(start, loop.units), desc=f"train ({loop.unit_name}s)", initial=start, total=loop.units,
                       unit=loop.unit_name, enabled=main and spec.progress, mininterval=2)
    stop, last_save, ckpt_path = _Signals(), time.monotonic(), ctx.out / "checkpoint.pt"
    try:
        with stop:
            for u in bar:
                if spec.stop_after and u - start >= spec.stop_after:
                    break
                lr = _start_unit(u, task, optimizer, loop)
                _train_unit(u, stepper, loop, ctx, state, blog)
                state.unit = done = u + 1
                timed = bool(spec.checkpoint_minutes) and time.monotonic() - last_save >= 60 * spec.checkpoint_minutes
                timed, stopping = _agree(ctx, timed, stop.signum is not None)
                last = done == loop.units or (bool(spec.stop_after) and done - start >= spec.stop_after) or stopping
                row = _train_row(done, lr, loop, state)
                evaluating = _evaluation_due(done, loop)
                saving = bool(loop.checkpoint_every) and (done % loop.checkpoint_every == 0 or last or timed)
                if ctx.dist.world_size > 1 and (evaluating or saving or last):
                    distributed.average_buffers(task, skip=stepper.replayed)  # every rank's BN statistics, on all
                if evaluating and main:
                    what = f"{loop.eval_what} " if loop.eval_what else ""
                    with phase("validation", f"{what}after {loop.unit_name} {done}", enabled=spec.progress) as p:
                        row = _evaluate(task, loop, done, lr, row, state, best_path, record)
                    exclude(bar, p.seconds)  # the bar's s/unit is the training's
                if row:
                    _log_row(row, u, loop, state, logger, bar)
                blog.flush()
                if saving and main:
                    _save_checkpoint(ckpt_path, task, optimizer, scaler, loop, state, config, record)
                if saving:
                    last_save = time.monotonic()
                distributed.barrier()
                if stopping:
                    raise lifecycle.Interrupted(stop.signum or signal.SIGTERM, done, loop.units, loop.unit_name,
                                                ckpt_path if loop.checkpoint_every else None)
    finally:
        blog.close()
        bar.close()
    finished = state.unit >= loop.units
    if finished and loop.select and state.best["value"] is not None and best_path.is_file():
        task.load_state_dict(checkpoint.load(best_path, ctx.device)["model"])
    return FitResult(state.unit, finished, state.history, state.best)


def _agree(ctx: Context, timed: bool, stopping: bool) -> tuple[bool, bool]:
    """Under DDP, whether any rank's clock says a checkpoint is due and any rank got a signal (every rank then
    takes the same branch: the checkpoint's collectives run on all of them or on none)."""
    if ctx.dist.world_size == 1:
        return timed, stopping
    vec = torch.tensor([float(timed), float(stopping)], dtype=torch.float64)
    distributed.all_reduce_sum(vec)
    return bool(vec[0] > 0), bool(vec[1] > 0)


class _Signals:
    """While entered: SIGINT and SIGTERM set :attr:`signum` instead of ending the process, so that :func:`fit`
    stops after the current unit with its checkpoint written (a second signal ends it as usual). Only in the main
    thread (Python delivers signals there); elsewhere it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # asked twice: stop now
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signum = signum

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()
