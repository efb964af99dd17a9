"""The engine: exact resume across every kind of schedule switch, best-checkpoint selection, safe
checkpoints, independent streams, and DDP's global batch (2 gloo processes)."""

from __future__ import annotations

import csv
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from fewshot_sla import checkpoint, engine
from fewshot_sla.utils import DataError
from tests.launch import torchrun

ROOT = Path(__file__).resolve().parents[2]


class ToyTask(nn.Module):
    """A BN + dropout net with a loss whose weight switches at ``switch`` (a DRW stand-in, set by
    ``set_epoch``) and a random subset of each batch drawn from its own generator."""

    def __init__(self, switch: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
        self.switch, self.epoch = switch, 0
        self.generator = torch.Generator().manual_seed(7)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        keep = torch.randperm(len(y), generator=self.generator)[: max(2, len(y) - 1)]
        w = torch.tensor([1.0, 2.0, 5.0]) if self.epoch >= self.switch else None
        z = self.net(x[keep])
        return {"loss": nn.functional.cross_entropy(z, y[keep], weight=w), "logits": z, "y": y[keep]}


def toy_run(out: Path, stop_after: int = 0, resume: bool = False, units: int = 6, evaluate=None, select=None,
            switch: int = 4, amp: bool = False, accumulate: int = 2, sam_rho: float = 0.0, weight_decay: float = 0.0):
    ctx = engine.setup(engine.RunSpec(str(out), seed=3, resume=resume, stop_after=stop_after, progress=False, amp=amp))
    task = ToyTask(switch)
    opt = torch.optim.SGD(task.parameters(), lr=0.1, momentum=0.9, weight_decay=weight_decay)
    data_x = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    data_y = torch.arange(40) % 3

    def batches(u: int):
        g = torch.Generator().manual_seed(engine.stream_seed(3, u))
        perm = torch.randperm(40, generator=g)
        return [(data_x[b], data_y[b]) for b in perm.split(8)]

    loop = engine.Loop(
        units=units,
        batches=batches,
        lr=lambda u: 0.1 if u < 3 else 0.01,  # a milestone at unit 3
        accumulate=accumulate,
        set_epoch=[task],  # the loss switch at unit 4 (DRW-like)
        evaluate=evaluate,
        eval_every=1 if evaluate else 0,
        select=select,
        stats=lambda o, b: {"acc": (o["logits"].argmax(1) == o["y"]).float().mean()},
        generators={"subset": task.generator},
        batch_log="batches.csv",
        sam_rho=sam_rho,
    )
    res = engine.fit(task, opt, loop, ctx)
    return task, res


@pytest.mark.parametrize("stop", [1, 3, 4, 5])  # before the milestone, at it, at the loss switch, after both
def test_resume_is_exact_across_schedule_switches(tmp_path, stop):
    a, ra = toy_run(tmp_path / "a")
    _, part = toy_run(tmp_path / "b", stop_after=stop)
    assert not part.finished and part.units_done == stop
    b, rb = toy_run(tmp_path / "b", resume=True)
    assert rb.finished and rb.units_done == 6
    assert ra.history == rb.history
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    rows_a = list(csv.reader(open(tmp_path / "a" / "batches.csv")))
    rows_b = list(csv.reader(open(tmp_path / "b" / "batches.csv")))
    assert rows_a == rows_b and len(rows_a) == 1 + 6 * 5  # header + 5 batches per unit, no duplicates


# bf16 autocast runs on every CPU (emulated where AVX512-BF16/AMX is missing: slower, same rounding), so these
# tests run everywhere; the engine's warning about emulation is checked on its own below.
bf16_cpu = pytest.mark.filterwarnings("ignore:--amp on a CPU without native bf16")


@pytest.mark.parametrize("native", [False, True])
def test_amp_on_a_cpu_without_native_bf16_warns_with_the_fix(native, tmp_path, monkeypatch, recwarn):
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: native)
    toy_run(tmp_path / "amp", units=1, amp=True)
    said = [str(w.message) for w in recwarn if "native bf16" in str(w.message)]
    assert said == ([] if native else [engine.EMULATED_BF16]) and "drop --amp" in engine.EMULATED_BF16
    toy_run(tmp_path / "fp32", units=1)  # fp32: nothing to say
    assert sum("native bf16" in str(w.message) for w in recwarn) == len(said)


@bf16_cpu
def test_amp_on_cpu_trains_in_bf16_and_resumes_exactly(tmp_path):
    _, r32 = toy_run(tmp_path / "fp32")
    a, ra = toy_run(tmp_path / "a", amp=True)
    # bf16 autocast is in effect: the trace moves off fp32's by bf16 rounding, not by a different run
    loss32 = [h["train/loss"] for h in r32.history]
    loss16 = [h["train/loss"] for h in ra.history]
    assert loss16 != loss32
    assert max(abs(x - y) for x, y in zip(loss16, loss32)) < 0.05
    # and a bf16 run stopped at the milestone resumes exactly
    _, part = toy_run(tmp_path / "b", stop_after=3, amp=True)
    b, rb = toy_run(tmp_path / "b", resume=True, amp=True)
    assert ra.history == rb.history
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q) and p.dtype == torch.float32  # autocast keeps fp32 master weights


def test_the_schedules_take_effect(tmp_path):
    """The milestone and the loss switch change training (else the resume test would prove nothing)."""
    _, base = toy_run(tmp_path / "a")
    assert [r["lr"] for r in base.history] == [0.1, 0.1, 0.1, 0.01, 0.01, 0.01]
    _, never = toy_run(tmp_path / "b", switch=99)
    assert never.history[:4] == base.history[:4] and never.history[4] != base.history[4]


def test_best_checkpoint_is_selected_and_loaded(tmp_path):
    scores = iter([0.2, 0.9, 0.5, 0.1])
    snapshots = {}

    def evaluate(task):
        snapshots[len(snapshots) + 1] = {k: v.clone() for k, v in task.state_dict().items()}
        return {"val/acc": next(scores)}

    task, res = toy_run(tmp_path, units=4, evaluate=evaluate, select="val/acc")
    assert res.best == {"metric": "val/acc", "value": 0.9, "unit": 2}
    assert all(torch.equal(v, snapshots[2][k]) for k, v in task.state_dict().items())
    assert [r["val/acc"] for r in res.history] == [0.2, 0.9, 0.5, 0.1]


def test_evaluation_runs_in_eval_mode_and_restores_every_mode(tmp_path):
    modes = []

    def evaluate(task):
        modes.append([m.training for m in task.modules()])
        task.net[1].train()  # an evaluation that forgets to restore a mode changes nothing for training
        return {"val/acc": 0.5}

    task, _ = toy_run(tmp_path, units=2, evaluate=evaluate, select="val/acc")
    assert modes and all(not any(m) for m in modes)
    assert all(m.training for m in task.modules())


def test_checkpoint_holds_only_tensors_and_containers(tmp_path):
    toy_run(tmp_path, stop_after=2)
    st = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # would raise on any pickled object
    assert st["format"] == checkpoint.FORMAT and st["unit"] == 2
    assert set(st) >= {"model", "optimizer", "scaler", "unit", "best", "rng", "history", "pending"}
    assert "subset" in st["rng"]["generators"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + str(Path(os.environ.get("EVIL_MARKER", "/tmp/x"))),))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(pickle.dumps({"format": 1, "model": _Evil()}))
    with pytest.raises(DataError, match="refused to load checkpoint"):
        checkpoint.load(path)
    with pytest.raises(DataError, match="refused to load checkpoint"):
        toy_run(tmp_path, resume=True)
    assert not marker.exists()


def test_stream_seeds_are_independent():
    a = {engine.stream_seed(s, e) for s in range(20) for e in range(20)}
    assert len(a) == 400  # (s, e) and (s + 1, e - 1) no longer collide as seed + epoch did
    assert engine.stream_seed(1, 2) == engine.stream_seed(1, 2)
    with pytest.raises(ValueError, match=">= 0"):
        engine.stream_seed(-1)


class LrProbe(nn.Module):
    """A linear MSE task that notes the optimizer's learning rate at each forward."""

    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Linear(3, 1)
        self.optimizer: torch.optim.Optimizer | None = None
        self.seen: list[float] = []

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        assert self.optimizer is not None
        self.seen.append(self.optimizer.param_groups[0]["lr"])
        return {"loss": nn.functional.mse_loss(self.f(x), y)}


@pytest.mark.parametrize("per_batch", [False, True])
def test_step_lr_sets_each_batchs_rate_before_its_forward(tmp_path, per_batch):
    x, y = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), torch.randn(6, 1)
    data = [(x[i : i + 2], y[i : i + 2]) for i in range(0, 6, 2)]
    ctx = engine.setup(engine.RunSpec(str(tmp_path), seed=0, device="cpu", progress=False))
    task = LrProbe()
    ref = LrProbe()
    ref.load_state_dict(task.state_dict())
    task.optimizer = torch.optim.SGD(task.parameters(), lr=9.0)
    step_lr = (lambda u, i: 0.01 * (10 * u + i + 1)) if per_batch else None
    loop = engine.Loop(units=2, batches=lambda u: data, lr=lambda u: 0.5 + u, step_lr=step_lr, checkpoint_every=0)
    res = engine.fit(task, task.optimizer, loop, ctx)
    want = [0.01, 0.02, 0.03, 0.11, 0.12, 0.13] if per_batch else [0.5] * 3 + [1.5] * 3
    assert task.seen == pytest.approx(want)
    assert [r["lr"] for r in res.history] == [0.5, 1.5]  # the logged lr stays lr(unit)
    ref.optimizer = torch.optim.SGD(ref.parameters(), lr=9.0)  # the same steps by hand
    for lr, (bx, by) in zip(want, data + data):
        ref.optimizer.param_groups[0]["lr"] = lr
        ref.optimizer.zero_grad()
        ref(bx, by)["loss"].backward()
        ref.optimizer.step()
    assert all(torch.equal(p, q) for p, q in zip(task.parameters(), ref.parameters()))


def test_setup_seeds_initialisation(tmp_path):
    engine.setup(engine.RunSpec(str(tmp_path), seed=5))
    w1 = nn.Linear(3, 3).weight.detach().clone()
    engine.setup(engine.RunSpec(str(tmp_path), seed=5))
    assert torch.equal(w1, nn.Linear(3, 3).weight)


DDP_SCRIPT = r'''
import sys, json, torch
from torch import nn
from fewshot_sla import engine, distributed
out, global_batch = sys.argv[1], int(sys.argv[2])
ctx = engine.setup(engine.RunSpec(out, seed=0, device="cpu", progress=False))
torch.manual_seed(0)
class Lin(nn.Module):
    def __init__(self):
        super().__init__(); self.f = nn.Linear(5, 3)
    def forward(self, x, y):
        return {"loss": nn.functional.cross_entropy(self.f(x), y)}
task = Lin()
x = torch.randn(64, 5, generator=torch.Generator().manual_seed(1)); y = torch.arange(64) % 3
r, w = ctx.dist.rank, ctx.dist.world_size
per = global_batch // w
def batches(u):
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(u))
    return [(x[b[r * per:(r + 1) * per]], y[b[r * per:(r + 1) * per]]) for b in perm.split(global_batch)]
loop = engine.Loop(units=3, batches=batches, lr=lambda u: 0.5, checkpoint_every=0)
engine.fit(task, torch.optim.SGD(task.parameters(), lr=0.5), loop, ctx)
if ctx.is_main:
    json.dump([p.detach().tolist() for p in task.parameters()], open(out + "/params.json", "w"))
distributed.shutdown()
'''


@pytest.mark.slow
@pytest.mark.dist
def test_ddp_global_batch_equals_one_process(tmp_path):
    """2 gloo processes with global batch 16 (8 each) take the steps of one process with batch 16."""
    import json

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for name, launcher in (("one", [sys.executable]),
                           ("two", torchrun(2))):
        (tmp_path / name).mkdir()
        res = subprocess.run([*launcher, str(script), str(tmp_path / name), "16"], env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "params.json").read_text())
    two = json.loads((tmp_path / "two" / "params.json").read_text())
    for a, b in zip(one, two):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-6)


BN_DDP_SCRIPT = r'''
import sys, json, torch
from torch import nn
from fewshot_sla import engine, distributed
out, mode = sys.argv[1], sys.argv[2]
ctx = engine.setup(engine.RunSpec(out, seed=0, device="cpu", progress=False))
torch.manual_seed(0)
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.BatchNorm1d(5, affine=False)  # on the raw input: batch statistics independent of the weights
        self.f = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    def forward(self, x, y):
        self.inp(x)
        return {"loss": nn.functional.cross_entropy(self.f(x), y)}
task = Net()
x = torch.randn(64, 5, generator=torch.Generator().manual_seed(1)) * 3 + 1; y = torch.arange(64) % 3
r, w = ctx.dist.rank, ctx.dist.world_size
def sequential(u):  # a window of 4 batches of 8 per step; rank r runs batches r, r + w, ... of it
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(u)).split(8)
    return [(x[b], y[b]) for s in range(0, 8, 4) for i, b in enumerate(perm[s:s + 4]) if i % w == r]
def split(u):  # a global batch of 16 per step, shared between the ranks
    per = 16 // w
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(u))
    return [(x[b[r * per:(r + 1) * per]], y[b[r * per:(r + 1) * per]]) for b in perm.split(16)]
seen = []
def evaluate(t):
    seen.append({k: v.tolist() for k, v in t.state_dict().items() if "running" in k or "num_batches" in k})
    return {"val/score": float(len(seen))}
loop = engine.Loop(units=3, batches=sequential if mode == "sequential" else split, lr=lambda u: 0.5,
                   accumulate=4 // w if mode == "sequential" else 1, sequential_ranks=mode == "sequential",
                   evaluate=evaluate, eval_every=1, select="val/score", checkpoint_every=1)
engine.fit(task, torch.optim.SGD(task.parameters(), lr=0.5), loop, ctx)
final = {k: v.tolist() for k, v in task.state_dict().items()}
json.dump({"final": final, "seen": seen}, open(f"{out}/rank{r}.json", "w"))
distributed.shutdown()
'''


def _bn_ddp_runs(tmp_path: Path, mode: str) -> dict[str, dict]:
    import json

    script = tmp_path / "bn_ddp.py"
    script.write_text(BN_DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    runs = {}
    for name, launcher in (("one", [sys.executable]), ("two", torchrun(2))):
        (tmp_path / name).mkdir()
        res = subprocess.run([*launcher, str(script), str(tmp_path / name), mode], env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        runs[name] = json.loads((tmp_path / name / "rank0.json").read_text())
        runs[name]["best"] = torch.load(tmp_path / name / "best.pt", weights_only=True)["model"]
        runs[name]["checkpoint"] = torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["model"]
    runs["rank1"] = json.loads((tmp_path / "two" / "rank1.json").read_text())
    return runs


def _close(a, b, atol: float = 1e-5) -> bool:
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=atol)


@pytest.mark.slow
@pytest.mark.dist
def test_ddp_meta_batch_keeps_one_processs_batchnorm_statistics(tmp_path):
    """A window of 4 batches run by one process, or shared out 2 + 2 to 2 gloo processes (Loop.sequential_ranks):
    the same weights, and the same BatchNorm running statistics and counts at every evaluation, in best.pt and in
    checkpoint.pt, on both ranks (each rank alone would have seen half the batches)."""
    runs = _bn_ddp_runs(tmp_path, "sequential")
    one, two = runs["one"], runs["two"]
    buffers = [k for k in one["final"] if "running" in k or "num_batches" in k]
    assert len(buffers) == 6 and one["final"]["f.1.num_batches_tracked"] == 3 * 2 * 4  # units x steps x window
    for k, v in one["final"].items():
        assert _close(v, two["final"][k]), k
        assert runs["rank1"]["final"][k] == two["final"][k], k  # the ranks agree exactly
    assert len(one["seen"]) == len(two["seen"]) == 3
    for a, b in zip(one["seen"], two["seen"]):
        assert all(_close(a[k], b[k]) for k in buffers)
    for f in ("best", "checkpoint"):
        assert all(_close(one[f][k], two[f][k]) for k in buffers), f


@pytest.mark.slow
@pytest.mark.dist
def test_ddp_split_batch_averages_batchnorm_statistics(tmp_path):
    """A global batch of 16 split 8 + 8 between 2 gloo processes: the running statistics evaluated and saved are the
    mean of the ranks' (not rank 0's): for a BatchNorm on the raw input, whose batch means do not depend on the
    weights, the running mean is then one process's; the counters stay the per-rank count of batches."""
    runs = _bn_ddp_runs(tmp_path, "split")
    one, two = runs["one"], runs["two"]
    assert _close(one["final"]["inp.running_mean"], two["final"]["inp.running_mean"], atol=1e-6)
    assert not _close(one["final"]["inp.running_var"], two["final"]["inp.running_var"], atol=1e-3)  # 8 vs 16 images
    assert one["final"]["inp.num_batches_tracked"] == two["final"]["inp.num_batches_tracked"] == 3 * 4
    for a, b in zip(one["seen"], two["seen"]):
        assert _close(a["inp.running_mean"], b["inp.running_mean"], atol=1e-6)
    for f in ("best", "checkpoint"):
        assert _close(one[f]["inp.running_mean"], two[f]["inp.running_mean"], atol=1e-6), f
    assert runs["rank1"]["final"] == two["final"]  # every buffer averaged, and the weights the same, on both ranks
