"""Process-group helpers. Every call is guarded, so one process runs without ``torch.distributed``.

Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) :func:`init` starts the process group:
NCCL when the run is on CUDA, gloo on CPU. Without it every helper is a no-op (rank 0 of 1).

Every collective of the library goes through these helpers, and they hand the backend tensors on its own
device (:func:`backend_device`: this rank's GPU for NCCL, which reduces CUDA tensors only; the CPU for gloo),
moving a tensor there and the result back, so a caller may pass a tensor from anywhere (the engine's
per-unit metrics are a CPU float64 vector, BatchNorm's buffers live on the model's device).
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "info", "init", "is_initialized", "world_size", "backend_device", "barrier", "all_reduce_sum",
           "all_gather", "average_buffers", "BatchNormReplay", "broadcast_object", "shutdown", "closing_group"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def info() -> DistInfo:
    """``(rank, world_size, local_rank)`` from torchrun's environment; ``(0, 1, 0)`` otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init(device: torch.device) -> DistInfo:
    """Start the process group when launched by torchrun (NCCL for CUDA, gloo for CPU); returns :func:`info`."""
    d = info()
    if d.world_size > 1 and not is_initialized():
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run one process")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return d


def world_size() -> int:
    """The number of processes in the group (1 without one)."""
    return dist.get_world_size() if is_initialized() else 1


def backend_device() -> torch.device:
    """The device whose tensors the process group's collectives take: this rank's current GPU for NCCL, the CPU
    for gloo (and MPI), and the CPU without a process group."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _on_backend_device(t: torch.Tensor, collective: Callable[[torch.Tensor], object]) -> torch.Tensor:
    """Run ``collective`` in place on ``t``, through a copy on :func:`backend_device` when ``t`` lives elsewhere
    (the result is copied back into ``t``); returns ``t``."""
    device = backend_device()
    if t.device == device:
        collective(t)
        return t
    moved = t.to(device)
    collective(moved)
    with torch.no_grad():
        t.copy_(moved)
    return t


def barrier() -> None:
    """Wait for every rank (NCCL: on this rank's GPU, so the backend need not guess the device)."""
    if not is_initialized():
        return
    device = backend_device()
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all ranks in place (identity in one process); returns ``t``, on the device it came on."""
    if is_initialized():
        _on_backend_device(t, dist.all_reduce)
    return t


def all_gather(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` (same shape and dtype on all), stacked in rank order: ``(world_size, *t.shape)`` on
    ``t``'s device (``t[None]`` in one process)."""
    if not is_initialized():
        return t[None].clone()
    device = backend_device()
    mine = t.to(device).contiguous()
    parts = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(parts, mine)
    return torch.stack(parts).to(t.device)


def average_buffers(module: nn.Module, skip: Collection[nn.Module] = ()) -> nn.Module:
    """Replace each floating-point buffer of ``module`` by its mean over the ranks, in place (identity in one
    process); returns ``module``.

    Under DDP each rank's BatchNorm running statistics see only that rank's batches (the engine's DDP does not
    broadcast rank 0's buffers), so evaluating or saving one rank's would ignore the others' data: the mean is
    the statistics of every rank's batches, the same on every rank. Integer buffers (``num_batches_tracked``)
    count the same batches on every rank and are left as they are. One collective per (dtype, device).

    Args:
        module: the model.
        skip: submodules whose buffers are already the same on every rank (a :class:`BatchNormReplay`'s).
    """
    if not is_initialized():
        return module
    skipped = {id(b) for m in skip for b in m.buffers()}
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for b in module.buffers():
        if b.is_floating_point() and id(b) not in skipped:
            groups.setdefault((b.dtype, b.device), []).append(b)
    n = world_size()
    with torch.no_grad():
        for bufs in groups.values():
            flat = all_reduce_sum(torch.cat([b.reshape(-1) for b in bufs]))
            flat /= n
            for b, part in zip(bufs, flat.split([b.numel() for b in bufs])):
                b.copy_(part.view_as(b))
    return module


def _replayable(m: nn.Module) -> bool:
    """A BatchNorm layer whose update is ``r <- (1 - momentum) r + momentum * batch_stat`` (not SyncBatchNorm,
    whose statistics are already global, nor the cumulative average of ``momentum=None``)."""
    return (isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
            and m.track_running_stats and m.momentum is not None and m.running_mean is not None)


class BatchNormReplay:
    """Keep the BatchNorm running statistics W processes would have as one process: replay the ranks' updates of
    each accumulation window in one process's order.

    For recipes whose global step is a *sequence* of batches that one process runs one after the other and W
    processes share out, rank ``r`` taking batches ``r, r + W, r + 2W, ...`` of the window (the episodic
    meta-batch). The parameters of such a run equal one process's (DDP sums the gradients), but each rank's
    BatchNorm would see only its own batches, one update per batch instead of one per batch of the window.
    The update of a layer with momentum ``m`` is affine, ``r <- a^n r + c`` with ``a = 1 - m`` over its ``n``
    updates in a batch, and ``c`` depends on the batch's statistics only; so each rank records ``(c, n)`` per
    batch, :meth:`end_window` gathers them and applies them, from the window's starting statistics, in the order
    ``t * W + rank``. Every rank then holds the statistics (and ``num_batches_tracked``) of one process, to float
    rounding (the replay runs in float64). Layers that do not update that way (SyncBatchNorm, ``momentum=None``)
    are left to :func:`average_buffers`.

    Args:
        module: the model, on its device (its BatchNorm layers are found once, here).
        window: batches per rank in an accumulation window (the engine's ``accumulate``).
    """

    def __init__(self, module: nn.Module, window: int) -> None:
        self.modules = [m for m in module.modules() if _replayable(m)]
        self.window = window
        self._start: tuple[torch.Tensor, torch.Tensor] | None = None
        self._before: tuple[torch.Tensor, torch.Tensor] | None = None
        self._records: list[torch.Tensor] = []
        sizes = [m.get_buffer("running_mean").numel() for m in self.modules]
        self._sizes = sizes
        self._width = 2 * sum(sizes)
        self._decay = torch.cat([torch.full((2 * k,), 1.0 - float(m.momentum), dtype=torch.float64)  # type: ignore[arg-type]
                                 for m, k in zip(self.modules, sizes)] or [torch.zeros(0, dtype=torch.float64)])
        self._expand = torch.tensor([2 * k for k in sizes], dtype=torch.long)

    def _state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(the running means and variances as one float64 CPU vector, each layer's num_batches_tracked)."""
        pairs = [torch.cat([m.get_buffer("running_mean"), m.get_buffer("running_var")]) for m in self.modules]
        stats = torch.cat(pairs).detach().double().cpu()
        counts = torch.stack([m.get_buffer("num_batches_tracked").detach().cpu() for m in self.modules])
        return stats, counts

    def _decay_pow(self, n: torch.Tensor) -> torch.Tensor:
        return self._decay ** n.repeat_interleave(self._expand)

    def before_batch(self) -> None:
        """Call before each batch's forward."""
        if not self.modules:
            return
        self._before = self._state()
        if self._start is None:
            self._start = self._before

    def after_batch(self) -> None:
        """Call after each batch's forward/backward: records its ``(c, n)``."""
        if not self.modules:
            return
        assert self._before is not None, "BatchNormReplay.after_batch without before_batch"
        (r0, n0), (r1, n1) = self._before, self._state()
        n = (n1 - n0).double()
        self._records.append(torch.cat([r1 - self._decay_pow(n) * r0, n]))

    def end_window(self) -> None:
        """Gather every rank's records of the window and write the replayed statistics into the layers."""
        if not self.modules or self._start is None:
            return
        if len(self._records) > self.window:
            raise RuntimeError(f"BatchNormReplay: {len(self._records)} batches in a window of {self.window}")
        stats, counts = self._start
        pad = torch.zeros(self.window - len(self._records), self._width + len(self.modules), dtype=torch.float64)
        gathered = all_gather(torch.cat([torch.stack(self._records), pad]))  # (W, window, width + layers)
        seen = torch.zeros(len(self.modules), dtype=torch.float64)
        for t in range(self.window):  # one process's order: batch t of every rank, rank by rank
            for rank in range(gathered.shape[0]):
                c, n = gathered[rank, t, : self._width], gathered[rank, t, self._width :]
                stats = self._decay_pow(n) * stats + c  # a padded record (n = 0, c = 0) changes nothing
                seen += n
        offset = 0
        with torch.no_grad():
            for m, k, count, extra in zip(self.modules, self._sizes, counts, seen):
                m.get_buffer("running_mean").copy_(stats[offset : offset + k])
                m.get_buffer("running_var").copy_(stats[offset + k : offset + 2 * k])
                m.get_buffer("num_batches_tracked").fill_(int(count) + round(float(extra)))
                offset += 2 * k
        self._start = self._before = None
        self._records = []


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s ``obj`` on every rank (identity in one process); pickled through :func:`backend_device`."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=backend_device())
    return box[0]


def shutdown(synchronize: bool = True) -> None:
    """End the process group, on every rank together when ``synchronize`` (pass False after an error, when a peer
    may never reach this call).

    The barrier keeps one rank from closing its connections while a peer still has traffic in flight, and the
    collection frees objects that still hold the group (a DDP wrapper's reducer) while the interpreter is fully
    alive: gloo freed during interpreter teardown can abort the process after a run that succeeded."""
    if is_initialized():
        if synchronize:
            barrier()
        gc.collect()
        dist.destroy_process_group()


@contextlib.contextmanager
def closing_group() -> Iterator[None]:
    """Run the body, then :func:`shutdown`: with every rank together when the body returned, without waiting
    after an error (the entry points wrap their run in this)."""
    try:
        yield
    except BaseException:
        shutdown(synchronize=False)
        raise
    shutdown()
