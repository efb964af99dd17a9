"""Process-group helpers. Every call is guarded, so one process runs without ``torch.distributed``.

Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) :func:`init` starts the process group:
NCCL when the run is on CUDA, gloo on CPU. Without it every helper is a no-op (rank 0 of 1).
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "info", "init", "is_initialized", "barrier", "all_reduce_sum", "broadcast_object", "shutdown",
           "closing_group"]


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


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all ranks in place (identity in one process); returns ``t``."""
    if is_initialized():
        dist.all_reduce(t)
    return t


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s ``obj`` on every rank (identity in one process)."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shutdown(synchronize: bool = True) -> None:
    """End the process group, on every rank together when ``synchronize`` (pass False after an error, when a peer
    may never reach this call).

    The barrier keeps one rank from closing its connections while a peer still has traffic in flight, and the
    collection frees objects that still hold the group (a DDP wrapper's reducer) while the interpreter is fully
    alive: gloo freed during interpreter teardown can abort the process after a run that succeeded."""
    if is_initialized():
        if synchronize:
            dist.barrier()
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
