"""Learning-rate and re-weighting schedules of the LDAM-DRW protocol, as pure functions of the epoch.

LDAM-DRW (Cao et al., NeurIPS 2019, ``cifar_train.py``) trains 200 epochs with SGD, base LR 0.1:
for the 0-based epoch ``e`` it sets, with ``k = e + 1``, ``lr = base * k / 5`` while ``k <= 5``
(linear warm-up), ``base * 0.01`` once ``k > 160``, ``base * 0.0001`` once ``k > 180``, else
``base``. Deferred re-weighting (DRW) switches the loss weights to class-balanced ones from the
0-based epoch 160 on (``idx = epoch // 160``). :func:`scale_epochs` maps that 200-epoch plan
proportionally onto a shorter run (CPU budgets).

A run's learning rate is :func:`lr_at`, a pure function of ``(epoch, batch, batches_per_epoch)``: the schedule
(:data:`SCHEDULES`: LDAM-DRW's steps or a cosine) after a linear warm-up that grows per optimiser step
(``warmup="step"``) or per epoch (``"epoch"``, LDAM-DRW's code, and every run before per-step warm-up existed).
Per epoch, a warm-up of one epoch -- what :func:`scale_epochs` gives any run of 20 to 59 epochs -- is no warm-up
at all: epoch 0 already trains at ``base * 1 / 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["ldam_lr", "cosine_lr", "drw_active", "LTSchedule", "scale_epochs", "REFERENCE_EPOCHS", "ldam_step_lr",
           "cosine_step_lr", "SCHEDULES", "WARMUPS", "lr_at"]

REFERENCE_EPOCHS = 200  # LDAM-DRW's run length; its milestones are 160 and 180, DRW from 160, warm-up 5


def ldam_lr(
    epoch: float,
    base_lr: float = 0.1,
    warmup: int = 5,
    milestones: Sequence[int] = (160, 180),
    gamma: float = 0.01,
) -> float:
    """Learning rate at 0-based ``epoch`` (LDAM-DRW's ``adjust_learning_rate``).

    ``k = epoch + 1``; ``base * k / warmup`` while ``k <= warmup``; afterwards
    ``base * gamma ** (number of milestones < k)``: with the defaults 0.1 for epochs 5..159,
    0.001 for 160..179 and 1e-5 for 180..199 (``x0.01`` twice). A fractional epoch
    (``epoch + step / steps_per_epoch``) gives a per-step warm-up.

    Args:
        epoch: 0-based epoch (may be fractional).
        base_lr: LR after warm-up.
        warmup: warm-up epochs (0 = none).
        milestones: epochs after which the LR is multiplied by ``gamma`` (increasing).
        gamma: decay factor per milestone.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if list(milestones) != sorted(milestones):
        raise ValueError(f"milestones must be increasing, got {list(milestones)}")
    k = epoch + 1
    if k <= warmup:
        return base_lr * k / warmup
    return base_lr * gamma ** sum(1 for ms in milestones if k > ms)


def drw_active(epoch: int, drw_epoch: int | None = 160) -> bool:
    """Whether deferred re-weighting is on at 0-based ``epoch`` (``epoch >= drw_epoch``; None = never)."""
    return drw_epoch is not None and epoch >= drw_epoch


@dataclass(frozen=True)
class LTSchedule:
    """An LDAM-DRW plan for ``epochs`` epochs (see :func:`scale_epochs`)."""

    epochs: int
    warmup: int
    milestones: tuple[int, ...]
    drw_epoch: int

    def lr(self, epoch: float, base_lr: float = 0.1, gamma: float = 0.01) -> float:
        """:func:`ldam_lr` with this plan's warm-up and milestones."""
        return ldam_lr(epoch, base_lr, self.warmup, self.milestones, gamma)

    def drw(self, epoch: int) -> bool:
        """:func:`drw_active` with this plan's DRW epoch."""
        return drw_active(epoch, self.drw_epoch)


def scale_epochs(
    total_epochs: int,
    reference_epochs: int = REFERENCE_EPOCHS,
    warmup: int = 5,
    milestones: Sequence[int] = (160, 180),
    drw_epoch: int = 160,
) -> LTSchedule:
    """Scale LDAM-DRW's 200-epoch plan to ``total_epochs`` proportionally.

    Every epoch mark ``e`` becomes ``round(e * total / 200)``; the warm-up keeps at least 1 epoch and
    the milestones stay strictly increasing inside ``[1, total_epochs)`` when the run has more epochs
    than milestones. ``total_epochs = 200`` returns the original plan; 20 gives warm-up 1 (0.5 rounded
    half up), milestones (16, 18) and DRW from epoch 16; 100 gives warm-up 3, (80, 90), DRW from 80.

    Args:
        total_epochs: length of the shorter (or longer) run, >= 1.
        reference_epochs, warmup, milestones, drw_epoch: the plan being scaled (LDAM-DRW's defaults).
    """
    if int(total_epochs) != total_epochs or total_epochs < 1:
        raise ValueError(f"total_epochs must be a positive integer, got {total_epochs!r}")
    f = total_epochs / reference_epochs

    def scale(e: int) -> int:
        return int(math.floor(e * f + 0.5))  # half up (Python's round() is half-to-even)

    ms = [scale(e) for e in milestones]
    for i in reversed(range(len(ms))):  # keep them inside the run and strictly increasing ...
        ms[i] = min(ms[i], (ms[i + 1] - 1) if i + 1 < len(ms) else total_epochs - 1)
    for i in range(len(ms)):  # ... and positive (possible when total_epochs > len(milestones))
        ms[i] = max(ms[i], (ms[i - 1] + 1) if i else 1)
    return LTSchedule(
        epochs=int(total_epochs),
        warmup=max(1, scale(warmup)) if warmup > 0 else 0,
        milestones=tuple(ms),
        drw_epoch=min(max(scale(drw_epoch), 1), max(total_epochs - 1, 1)) if total_epochs > 1 else 0,
    )


def cosine_lr(epoch: float, epochs: int, base_lr: float = 0.1, warmup: int = 1) -> float:
    """Linear warm-up over ``warmup`` epochs (as :func:`ldam_lr`), then a cosine decay to 0 at ``epochs``.

    A short CPU budget converges better with it than with LDAM-DRW's late steps.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    k = epoch + 1
    if k <= warmup:
        return base_lr * k / warmup
    t = (epoch - warmup) / max(epochs - warmup, 1)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(t, 1.0)))


def _step(epoch: int, batch: int, batches_per_epoch: int) -> int:
    if batches_per_epoch < 1 or epoch < 0 or not 0 <= batch < batches_per_epoch:
        raise ValueError(
            f"need epoch >= 0 and 0 <= batch < batches_per_epoch (>= 1), got epoch {epoch}, batch {batch}, "
            f"batches_per_epoch {batches_per_epoch}"
        )
    return epoch * batches_per_epoch + batch


def ldam_step_lr(plan: LTSchedule, base_lr: float, epoch: int, batch: int = 0, batches_per_epoch: int = 1,
                 gamma: float = 0.01) -> float:
    """LDAM-DRW's learning rate at optimiser step ``batch`` of 0-based ``epoch``.

    With ``s = epoch * B + batch`` and ``W = plan.warmup * B`` (``B = batches_per_epoch``): ``base * (s + 1) / W``
    while ``s < W`` (a linear warm-up over ``plan.warmup`` epochs of steps), then ``base * gamma ** (number of
    milestones < epoch + 1)`` (the steps stay per epoch, as LDAM-DRW's). ``B = 1, batch = 0`` is
    :meth:`LTSchedule.lr` exactly (the per-epoch warm-up).
    """
    s, w = _step(epoch, batch, batches_per_epoch), plan.warmup * batches_per_epoch
    if s < w:
        return base_lr * (s + 1) / w
    return base_lr * gamma ** sum(1 for ms in plan.milestones if epoch + 1 > ms)


def cosine_step_lr(plan: LTSchedule, base_lr: float, epoch: int, batch: int = 0, batches_per_epoch: int = 1) -> float:
    """Linear warm-up over ``plan.warmup`` epochs of steps (as :func:`ldam_step_lr`), then a cosine from ``base``
    to 0 at step ``plan.epochs * B``: ``0.5 * base * (1 + cos(pi * (s - W) / ((epochs - warmup) * B)))``.
    ``B = 1, batch = 0`` is :func:`cosine_lr` exactly (per epoch)."""
    s, w = _step(epoch, batch, batches_per_epoch), plan.warmup * batches_per_epoch
    if s < w:
        return base_lr * (s + 1) / w
    t = (s - w) / max((plan.epochs - plan.warmup) * batches_per_epoch, 1)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(t, 1.0)))


#: The learning-rate schedules by name: ``(plan, base_lr, epoch, batch, batches_per_epoch) -> lr``.
SCHEDULES: dict[str, Callable[[LTSchedule, float, int, int, int], float]] = {
    "ldam": ldam_step_lr,
    "cosine": cosine_step_lr,
}

#: Warm-up granularities by name: ``(batch, batches_per_epoch) ->`` the ``(batch, batches_per_epoch)`` a schedule
#: sees. ``"step"`` grows the lr every optimiser step; ``"epoch"`` sets it once per epoch (LDAM-DRW's code).
WARMUPS: dict[str, Callable[[int, int], tuple[int, int]]] = {
    "step": lambda batch, batches_per_epoch: (batch, batches_per_epoch),
    "epoch": lambda batch, batches_per_epoch: (0, 1),
}


def lr_at(schedule: str, warmup: str, plan: LTSchedule, base_lr: float, epoch: int, batch: int,
          batches_per_epoch: int) -> float:
    """The learning rate of optimiser step ``batch`` (of ``batches_per_epoch``) in 0-based ``epoch``.

    Args:
        schedule: a key of :data:`SCHEDULES`.
        warmup: a key of :data:`WARMUPS`.
        plan: the run's :class:`LTSchedule` (:func:`scale_epochs`).
        base_lr: the lr after warm-up.
        epoch, batch, batches_per_epoch: the step.
    """
    if schedule not in SCHEDULES or warmup not in WARMUPS:
        raise ValueError(f"unknown schedule {schedule!r} or warm-up {warmup!r}; choose from {list(SCHEDULES)} and "
                         f"{list(WARMUPS)}")
    _step(epoch, batch, batches_per_epoch)
    b, n = WARMUPS[warmup](batch, batches_per_epoch)
    return SCHEDULES[schedule](plan, base_lr, epoch, b, n)
