"""Sharpness-aware minimisation (SAM; Foret et al., ICLR 2021) for the engine: the ascent step and the second pass.

Each optimiser step takes the gradient at the (first-order) worst point within ``rho`` of the weights ``w``:

1. the first pass on the batch gives ``g`` (the engine's ordinary forward/backward; under DDP already
   all-reduced, so every rank perturbs alike), the logged stats and the only update of BatchNorm's running
   statistics;
2. :func:`second_pass` moves to ``w + e`` with ``e = rho * g / ||g||`` (:func:`sam_perturbation`), runs the same
   batch again with the first pass's random draws (torch's global RNGs and the loop's named generators: the same
   dropout masks and random subsets), keeps that gradient, and puts back ``w`` and the buffers bit for bit;
3. the optimizer steps from ``w`` with the second gradient.

About 2x the step time. The perturbation needs the gradient of a whole optimiser step, so SAM does not combine
with gradient accumulation (:func:`check_sam`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import checkpoint

__all__ = ["sam_perturbation", "check_sam", "first_pass_rng", "second_pass"]


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


def check_sam(rho: float, accumulate: int) -> None:
    """Refuse a negative radius, and SAM (``rho > 0``) with gradient accumulation, saying what to change.

    Raises:
        ValueError: ``rho < 0``, or ``rho > 0`` with ``accumulate > 1``.
    """
    if rho < 0:
        raise ValueError(f"Loop.sam_rho is SAM's radius and must be >= 0 (0 = off), got {rho}")
    if rho > 0 and accumulate > 1:
        raise ValueError(f"SAM (sam_rho={rho}) perturbs with the gradient of a whole optimiser step and "
                         f"does not support gradient accumulation (accumulate={accumulate}): use accumulate=1 "
                         "(a larger batch per step instead) or sam_rho=0")


def first_pass_rng(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """The RNG states to take before the first pass, for :func:`second_pass` to replay its draws."""
    return checkpoint.rng_state(generators)


def second_pass(
    task: nn.Module,
    rho: float,
    rerun: Callable[[], object],
    rng_first: dict[str, Any],
    generators: dict[str, torch.Generator],
) -> None:
    """Replace the gradient at ``w`` by the gradient at ``w + e`` on the same batch, with the same random draws.

    Args:
        task: the module whose parameters hold the first pass's gradient (DDP-synchronised, if any).
        rho: SAM's radius (``> 0``).
        rerun: runs the forward/backward of the same batch again (the engine's; it accumulates into ``.grad``).
        rng_first: :func:`first_pass_rng` taken just before the first pass.
        generators: the named local generators the forward draws from (restored too).

    On return the parameters that had a gradient hold the second gradient; the weights, every buffer
    (BatchNorm's running statistics move once per step, in the first pass) and the RNG states are those
    that followed the first pass.
    """
    params = [p for p in task.parameters() if p.grad is not None]
    e = sam_perturbation([p.grad for p in params if p.grad is not None], rho)
    rng_after = checkpoint.rng_state(generators)
    with torch.no_grad():
        weights = [p.detach().clone() for p in params]
        buffers = [b.detach().clone() for b in task.buffers()]
        for p, e_p in zip(params, e):
            p.add_(e_p)
            p.grad = None  # the second gradient replaces the first
    checkpoint.set_rng_state(rng_first, generators)
    rerun()
    with torch.no_grad():  # copies, not w + e - e: the weights come back bit for bit
        for p, w in zip(params, weights):
            p.copy_(w)
        for b, saved in zip(task.buffers(), buffers):
            b.copy_(saved)
    checkpoint.set_rng_state(rng_after, generators)
