"""SAM in the engine (Foret et al., ICLR 2021): the update is the hand-computed one, it is in effect, the
second pass replays the first pass's random draws, BatchNorm's statistics move once per step, the logged
stats are the first pass's, and --resume stays exact."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from fewshot_sla import engine
from tests.core.test_engine import ToyTask
from tests.core.test_engine import toy_run as engine_toy_run
from tests.launch import torchrun


class LinearMSE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Linear(3, 2)

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        return {"loss": nn.functional.mse_loss(self.f(x), y)}


def mse_grad(w: Tensor, b: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """d/d(w, b) of mean((x w^T + b - y)^2), written out."""
    r = 2 * (x @ w.T + b - y) / y.numel()
    return r.T @ x, r.sum(0)


def one_step(task: nn.Module, batch: tuple[Tensor, ...], out: Path, rho: float, lr: float = 0.5,
             momentum: float = 0.0) -> engine.FitResult:
    ctx = engine.setup(engine.RunSpec(str(out), seed=0, device="cpu", progress=False))
    opt = torch.optim.SGD(task.parameters(), lr=lr, momentum=momentum)
    loop = engine.Loop(units=1, batches=lambda u: [batch], lr=lambda u: lr, checkpoint_every=0, sam_rho=rho)
    return engine.fit(task, opt, loop, ctx)


def test_one_sam_step_is_the_hand_computed_update(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=g), torch.randn(8, 2, generator=g)
    torch.manual_seed(1)
    task = LinearMSE()
    w0, b0 = task.f.weight.detach().double().clone(), task.f.bias.detach().double().clone()
    lr, rho = 0.5, 0.3
    gw, gb = mse_grad(w0, b0, x.double(), y.double())
    norm = torch.sqrt((gw**2).sum() + (gb**2).sum())
    gw2, gb2 = mse_grad(w0 + rho * gw / norm, b0 + rho * gb / norm, x.double(), y.double())
    one_step(task, (x, y), tmp_path, rho, lr)
    assert torch.allclose(task.f.weight.double(), w0 - lr * gw2, rtol=0, atol=1e-6)
    assert torch.allclose(task.f.bias.double(), b0 - lr * gb2, rtol=0, atol=1e-6)
    plain = w0 - lr * gw  # and the SAM step is not the plain step
    assert (task.f.weight.double() - plain).abs().max() > 1e-3


def test_sam_perturbation_has_norm_rho():
    grads = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    e = engine.sam_perturbation(grads, 0.5)
    assert torch.equal(e[0], torch.tensor([0.3, 0.0])) and torch.allclose(e[1], torch.tensor([[0.4]]))


def toy_run(out: Path, rho: float, stop_after: int = 0, resume: bool = False, units: int = 4):
    """test_engine's toy run (BN + dropout + a random subset from its own generator, a milestone at unit 3 and
    a loss switch at unit 2), one batch per optimiser step and a little weight decay."""
    return engine_toy_run(out, stop_after, resume, units, switch=2, accumulate=1, sam_rho=rho, weight_decay=1e-3)


def batch_rows(out: Path) -> list[list[str]]:
    return list(csv.reader(open(out / "batches.csv")))[1:]


def test_sam_is_in_effect_and_logs_the_first_pass(tmp_path):
    a, ra = toy_run(tmp_path / "plain", 0.0)
    b, rb = toy_run(tmp_path / "sam", 0.05)
    la, lb = [r["train/loss"] for r in ra.history], [r["train/loss"] for r in rb.history]
    assert all(x != y for x, y in zip(la, lb)), (la, lb)
    assert not torch.equal(a.net[0].weight, b.net[0].weight)
    # the first batch's logged loss is the loss at w (first pass), the same as without SAM; the second
    # pass's loss at w + e differs, so logging it would fail here
    rows_a, rows_b = batch_rows(tmp_path / "plain"), batch_rows(tmp_path / "sam")
    assert rows_a[0] == rows_b[0] and rows_a[1] != rows_b[1]


def test_second_pass_replays_the_first_passs_draws(tmp_path, monkeypatch):
    """With a tiny rho the SAM step is the plain step: same dropout masks and random subsets in both passes,
    BN statistics updated once, and the RNG streams left where the plain run leaves them."""
    a, ra = toy_run(tmp_path / "plain", 0.0)
    b, rb = toy_run(tmp_path / "sam", 1e-8)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va.float(), vb.float(), rtol=0, atol=1e-5), k
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    # without restoring the RNG states the second pass draws other masks and subsets: far from the plain step
    monkeypatch.setattr(engine.checkpoint, "set_rng_state", lambda *args: None)
    c, _ = toy_run(tmp_path / "norestore", 1e-8)
    assert (c.net[0].weight - a.net[0].weight).abs().max() > 1e-3


def test_batchnorm_statistics_move_once_per_step(tmp_path):
    x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(2)), torch.arange(8) % 3
    runs = {}
    for rho in (0.0, 0.5):
        torch.manual_seed(0)
        task = ToyTask(switch=99)
        task.net[3].p = 0.0  # no dropout: the second pass differs from the first by the weights only
        one_step(task, (x, y), tmp_path / str(rho), rho, lr=0.1)
        runs[rho] = task
    bn_plain, bn_sam = runs[0.0].net[1], runs[0.5].net[1]
    assert int(bn_sam.num_batches_tracked) == 1
    assert torch.equal(bn_plain.running_mean, bn_sam.running_mean)
    assert torch.equal(bn_plain.running_var, bn_sam.running_var)
    assert not torch.equal(runs[0.0].net[0].weight, runs[0.5].net[0].weight)  # while the steps differ


@pytest.mark.parametrize("stop", [1, 3])  # before the lr milestone and the loss switch; after both
def test_sam_resume_is_exact(tmp_path, stop):
    a, ra = toy_run(tmp_path / "a", 0.05)
    _, part = toy_run(tmp_path / "b", 0.05, stop_after=stop)
    assert not part.finished and part.units_done == stop
    b, rb = toy_run(tmp_path / "b", 0.05, resume=True)
    assert rb.finished and ra.history == rb.history
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert batch_rows(tmp_path / "a") == batch_rows(tmp_path / "b")


def test_bad_sam_settings_are_clear_errors(tmp_path):
    ctx = engine.setup(engine.RunSpec(str(tmp_path), device="cpu", progress=False))
    task = LinearMSE()
    opt = torch.optim.SGD(task.parameters(), lr=0.1)
    batch = (torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="sam_rho.*>= 0"):
        engine.fit(task, opt, engine.Loop(units=1, batches=lambda u: [batch], lr=lambda u: 0.1, sam_rho=-0.1), ctx)
    with pytest.raises(ValueError, match="accumulation.*accumulate=1"):
        engine.fit(task, opt, engine.Loop(units=1, batches=lambda u: [batch], lr=lambda u: 0.1, accumulate=2,
                                          sam_rho=0.05), ctx)


class ConvTask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        return {"loss": nn.functional.cross_entropy(self.net(x), y)}


def conv_run(out: Path, rho: float, amp: bool = False, channels_last: bool = False) -> nn.Module:
    ctx = engine.setup(engine.RunSpec(str(out), seed=0, device="cpu", progress=False, amp=amp,
                                      channels_last=channels_last))
    task = ConvTask()
    opt = torch.optim.SGD(task.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(32) % 3
    loop = engine.Loop(units=2, batches=lambda u: [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)],
                       lr=lambda u: 0.1, checkpoint_every=0, sam_rho=rho)
    engine.fit(task, opt, loop, ctx)
    return task


@pytest.mark.filterwarnings("ignore:--amp on a CPU without native bf16")  # emulated bf16 runs too, slower
def test_sam_under_bf16_autocast_and_channels_last(tmp_path):
    # channels_last in every run: dropout draws its mask in memory order, so the layout changes the masks
    ref = conv_run(tmp_path / "ref", 0.05, channels_last=True)
    plain = conv_run(tmp_path / "plain", 0.0, amp=True, channels_last=True)
    task = conv_run(tmp_path / "amp", 0.05, amp=True, channels_last=True)
    conv = task.net[0].weight
    assert conv.dtype == torch.float32 and conv.is_contiguous(memory_format=torch.channels_last)
    # the bf16 SAM run follows the fp32 SAM run up to bf16 rounding, and is not the plain run
    diff_ref = max((p - q).abs().max().item() for p, q in zip(task.parameters(), ref.parameters()))
    diff_plain = max((p - q).abs().max().item() for p, q in zip(task.parameters(), plain.parameters()))
    assert diff_ref < 0.006 < diff_plain, (diff_ref, diff_plain)
    # and the second pass replays the first pass's dropout masks under autocast too
    tiny = conv_run(tmp_path / "tiny", 1e-8, amp=True, channels_last=True)
    for p, q in zip(tiny.parameters(), plain.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.dist
def test_ddp_sam_equals_one_process(tmp_path):
    """2 gloo processes with global batch 16 take the SAM steps of one process with batch 16: the perturbation
    uses the all-reduced gradient (a rank's own gradient would give another w + e on each rank)."""
    import json
    import os
    import subprocess
    import sys

    from tests.core.test_engine import DDP_SCRIPT, ROOT

    script = tmp_path / "ddp_sam.py"
    script.write_text(DDP_SCRIPT.replace("checkpoint_every=0)", "checkpoint_every=0, sam_rho=float(sys.argv[3]))"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    runs = {"one": ([sys.executable], "0.5"), "two": (torchrun(2), "0.5"), "plain": ([sys.executable], "0")}
    params = {}
    for name, (launcher, rho) in runs.items():
        (tmp_path / name).mkdir()
        res = subprocess.run([*launcher, str(script), str(tmp_path / name), "16", rho], env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        params[name] = [torch.tensor(p) for p in json.loads((tmp_path / name / "params.json").read_text())]
    for a, b, c in zip(params["one"], params["two"], params["plain"]):
        assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, c, atol=1e-3)
