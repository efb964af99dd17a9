"""The engine's per-step learning-rate hook (``Loop.step_lr``), which the long-tail warm-up uses: the lr of each
batch is ``step_lr(unit, batch)``, set before the batch's forward, and a resumed run sets the same ones."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fewshot_sla import engine as eng


class _Spy(nn.Module):
    """A linear least-squares task that records the optimiser's lr at every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Linear(3, 1)
        self.optimizer: torch.optim.Optimizer | None = None
        self.seen: list[float] = []

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        assert self.optimizer is not None
        self.seen.append(self.optimizer.param_groups[0]["lr"])
        return {"loss": ((self.w(x).squeeze(1) - y) ** 2).mean()}


def _batches(unit: int) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(unit)
    return [(torch.randn(4, 3, generator=g), torch.randn(4, generator=g)) for _ in range(3)]


def _fit(out: str, resume: bool = False, stop_after: int = 0, step_lr=None) -> tuple[_Spy, eng.FitResult]:
    ctx = eng.setup(eng.RunSpec(out, seed=0, device="cpu", resume=resume, stop_after=stop_after, progress=False))
    task = _Spy()
    opt = torch.optim.SGD(task.parameters(), lr=99.0)
    task.optimizer = opt
    loop = eng.Loop(units=3, batches=_batches, lr=lambda u: 10.0 + u, step_lr=step_lr)
    return task, eng.fit(task, opt, loop, ctx)


def test_step_lr_is_set_before_every_batch(tmp_path):
    task, res = _fit(str(tmp_path / "a"), step_lr=lambda u, b: u + b / 10)
    assert task.seen == [0.0, 0.1, 0.2, 1.0, 1.1, 1.2, 2.0, 2.1, 2.2]
    assert [r["lr"] for r in res.history] == [10.0, 11.0, 12.0]  # the row's lr is lr(unit)
    plain, _ = _fit(str(tmp_path / "b"))  # without it: lr(unit) for every batch, as before
    assert plain.seen == [10.0] * 3 + [11.0] * 3 + [12.0] * 3


def test_resume_sets_the_same_step_lrs(tmp_path):
    def lr(u: int, b: int) -> float:
        return 0.01 * (1 + u * 3 + b)

    straight, a = _fit(str(tmp_path / "a"), step_lr=lr)
    first, _ = _fit(str(tmp_path / "b"), stop_after=1, step_lr=lr)
    second, b = _fit(str(tmp_path / "b"), resume=True, step_lr=lr)
    assert first.seen + second.seen == straight.seen
    assert a.history == b.history
    assert torch.equal(straight.w.weight, second.w.weight)
