"""The one checkpoint format: everything needed to continue a run exactly, nothing that can be derived.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so it loads with
``torch.load(..., weights_only=True)`` (no pickled code can run from a file a user passes):

* ``format``: :data:`FORMAT`;
* ``model``, ``optimizer``, ``scaler``: the state dicts;
* ``unit``: units (epochs or optimiser steps) completed;
* ``best``: ``{"metric", "value", "unit"}`` of the best evaluation so far (``value`` None before any);
* ``rng``: torch's global CPU (and CUDA) generator states and every named local generator's state;
* ``history``: the logged rows so far (one per logging unit: a few hundred at most);
* ``config``: the resolved config, for the record.

Per-batch rows are *not* in it (they go to a file as they are produced), nor anything a schedule
derives from the position (DRW weights, sampler permutations, learning rates).
Writes are atomic (temporary file + ``os.replace``): a crash leaves the old file or the new one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .io import load_checkpoint, save_checkpoint
from .utils import DataError

__all__ = ["FORMAT", "save", "load", "rng_state", "set_rng_state"]

FORMAT = 1


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """The global torch RNG states (CPU and every CUDA device) and each named generator's state."""
    out: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    out["generators"] = {k: g.get_state() for k, g in (generators or {}).items()}
    return out


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore what :func:`rng_state` returned; a generator missing from ``state`` is an error."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    saved = state.get("generators", {})
    for name, g in (generators or {}).items():
        if name not in saved:
            raise DataError(f"checkpoint has no state for generator {name!r}; it was written by another recipe")
        g.set_state(saved[name].cpu())


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (see the module docstring) atomically."""
    save_checkpoint({"format": FORMAT, **state}, path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (:func:`fewshot_sla.io.load_checkpoint`).

    Raises:
        DataError: the file is missing, corrupt, or holds objects other than tensors and containers
            (refused before anything in it runs).
    """
    return load_checkpoint(path, map_location)
