"""fewshot_sla.distributed: every collective on the process group's device, buffers averaged over ranks.

No GPU here: a fake NCCL process group stands in (torch.distributed's ``is_initialized``, ``get_backend``,
``get_world_size`` and the collectives patched) whose device is ``meta``; the fake collectives record the device
of every tensor they are handed and answer with a CPU tensor, as a reduction would. The real two-process (gloo)
behaviour is tested in test_engine.py and tests/episodes/test_ddp.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from fewshot_sla import distributed, engine

ANSWER = 7.0  # what the fake all_reduce answers, everywhere


@pytest.fixture
def fake_nccl(monkeypatch):
    """A 2-rank 'nccl' group whose device is meta; returns the list of (collective, device) it was handed."""
    calls: list[tuple[str, torch.device | None]] = []

    def all_reduce(t, op=None, group=None, async_op=False):
        calls.append(("all_reduce", t.device))
        torch.utils.swap_tensors(t, torch.full(t.shape, ANSWER, dtype=t.dtype))  # the 'reduced' value, on the CPU

    def barrier(group=None, async_op=False, device_ids=None):
        calls.append(("barrier", None))

    def broadcast_object_list(objects, src=0, group=None, device=None):
        calls.append(("broadcast_object_list", device))

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    monkeypatch.setattr(dist, "barrier", barrier)
    monkeypatch.setattr(dist, "broadcast_object_list", broadcast_object_list)
    monkeypatch.setattr(distributed, "backend_device", lambda: torch.device("meta"))
    return calls


def test_backend_device_follows_the_backend(monkeypatch):
    assert distributed.backend_device() == torch.device("cpu")  # no process group
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    for backend, device in (("nccl", torch.device("cuda", 1)), ("gloo", torch.device("cpu"))):
        monkeypatch.setattr(dist, "get_backend", lambda group=None, b=backend: b)
        assert distributed.backend_device() == device


def test_helpers_hand_the_backend_its_own_device_and_bring_the_result_back(fake_nccl):
    t = torch.ones(3, dtype=torch.float64)
    assert distributed.all_reduce_sum(t) is t  # in place, on the caller's device
    assert t.device.type == "cpu" and torch.equal(t, torch.full((3,), ANSWER, dtype=torch.float64))
    bn = nn.BatchNorm1d(4)
    bn.num_batches_tracked += 5
    assert distributed.average_buffers(bn) is bn
    assert torch.equal(bn.running_mean, torch.full((4,), ANSWER / 2)) and torch.equal(bn.running_var, bn.running_mean)
    assert int(bn.num_batches_tracked) == 5  # integer counters are equal on every rank: left alone
    distributed.broadcast_object({"a": 1})
    distributed.barrier()
    assert fake_nccl == [("all_reduce", torch.device("meta"))] * 2 + [("broadcast_object_list", torch.device("meta")),
                                                                     ("barrier", None)]


class BNTask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.cross_entropy(self.net(x), y)}


def test_every_engine_collective_is_on_the_backend_device(fake_nccl, tmp_path, monkeypatch):
    """A fit on rank 0 of 2 under the fake NCCL: the per-unit metrics (a CPU float64 vector in the engine) and the
    BatchNorm averaging reach the collective on the backend's device, and the reduced values come back."""
    wrapped: list[dict] = []

    def ddp(module, device_ids=None, broadcast_buffers=None, forward_sync_buffers=None):
        wrapped.append({"broadcast_buffers": broadcast_buffers, "forward_sync_buffers": forward_sync_buffers})
        return module  # one process stands in for the wrapper; accumulate=1 never asks for no_sync

    monkeypatch.setattr(nn.parallel, "DistributedDataParallel", ddp)
    # the ranks' agreement on a signal / a timed checkpoint is its own collective (test below): the fake answers 7 to
    # every reduction, which would read as a signal on some rank
    monkeypatch.setattr(engine, "_agree", lambda ctx, timed, stopping: (timed, stopping))
    spec = engine.RunSpec(str(tmp_path), device="cpu", progress=False)
    ctx = engine.Context(spec, torch.device("cpu"), distributed.DistInfo(rank=0, world_size=2))
    task = BNTask()
    x, y = torch.randn(8, 3, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 2
    seen: list[torch.Tensor] = []

    def evaluate(t: nn.Module) -> dict[str, float]:
        seen.append(t.net[1].running_mean.clone())
        return {"val/acc": 0.5}

    loop = engine.Loop(units=2, batches=lambda u: [(x[:4], y[:4]), (x[4:], y[4:])], lr=lambda u: 0.1,
                       evaluate=evaluate, eval_every=1, select="val/acc")
    res = engine.fit(task, torch.optim.SGD(task.parameters(), lr=0.1), loop, ctx)
    devices = {d for name, d in fake_nccl if name != "barrier"}
    assert devices == {torch.device("meta")}
    assert sum(name == "all_reduce" for name, _ in fake_nccl) == 2 * 2  # per unit: the metrics and the buffers
    assert [r["train/loss"] for r in res.history] == [1.0, 1.0]  # sum / count, both answered 7: the result came back
    assert all(torch.equal(m, torch.full((4,), ANSWER / 2)) for m in seen)  # evaluated on the averaged buffers
    assert False in (wrapped[0]["forward_sync_buffers"], wrapped[0]["broadcast_buffers"])  # rank-own BN statistics
    best = torch.load(tmp_path / "best.pt", weights_only=True)["model"]
    assert torch.equal(best["net.1.running_mean"], torch.full((4,), ANSWER / 2))


def test_batchnorm_replay_equals_one_process(monkeypatch):
    """Two ranks simulated in one process: rank r runs batches r, r + 2 of each window of 4; after the replay both
    hold exactly the statistics and counts of one process running the 4 batches in order (two windows)."""
    import copy

    torch.manual_seed(0)
    one = nn.Sequential(nn.BatchNorm1d(3), nn.BatchNorm1d(3, momentum=0.3), nn.BatchNorm1d(3, momentum=None))
    ranks = [copy.deepcopy(one) for _ in range(2)]
    batches = [torch.randn(6, 3) * (i + 1) + i for i in range(8)]
    for b in batches:
        one(b)
    replays = [distributed.BatchNormReplay(m, window=2) for m in ranks]
    assert [len(r.modules) for r in replays] == [2, 2]  # momentum=None (a cumulative average) is not replayed
    for w in range(2):
        for t in range(2):
            for r in range(2):
                replays[r].before_batch()
                ranks[r](batches[4 * w + 2 * t + r])
                replays[r].after_batch()
        gathered = torch.stack([torch.stack(rp._records) for rp in replays])  # what all_gather returns, rank order
        monkeypatch.setattr(distributed, "all_gather", lambda t, g=gathered: g)
        for rp in replays:
            rp.end_window()
    for m in ranks:
        for (k, want), got in zip(one.state_dict().items(), m.state_dict().values()):
            if k.startswith("2."):
                continue  # the cumulative average: left to average_buffers
            assert torch.allclose(want.double(), got.double(), rtol=0, atol=1e-6) and want.dtype == got.dtype, k
    assert int(ranks[0][0].num_batches_tracked) == 8
    # without the replay a rank's statistics are far from one process's
    alone = copy.deepcopy(one[0])
    alone.reset_running_stats()
    for b in batches[0::2]:  # rank 0's batches
        alone(b)
    assert (alone.running_mean - one[0].running_mean).abs().max() > 0.1


def test_batchnorm_replay_pads_a_short_window_and_skips_syncbn(monkeypatch):
    m = nn.Sequential(nn.BatchNorm1d(2), nn.SyncBatchNorm(2))
    replay = distributed.BatchNormReplay(m, window=3)
    assert replay.modules == [m[0]]
    m[0].train()
    replay.before_batch()
    m[0](torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    replay.after_batch()
    want = {k: v.clone() for k, v in m[0].state_dict().items()}
    monkeypatch.setattr(distributed, "all_gather", lambda t: t[None])  # one rank, 1 record + 2 padded
    replay.end_window()
    for k, v in m[0].state_dict().items():
        assert torch.allclose(v.double(), want[k].double(), atol=1e-7), k
    assert torch.allclose(m[0].running_mean, torch.tensor([0.2, 0.4]))  # 0.9 * 0 + 0.1 * [2, 4]


def test_the_ranks_agree_on_a_signal_through_the_backend_device(fake_nccl, tmp_path):
    """Whether any rank got SIGINT/SIGTERM (or its clock says a checkpoint is due) is summed over the ranks, so that
    every rank stops (or checkpoints) after the same unit; one process asks no collective."""
    spec = engine.RunSpec(str(tmp_path), device="cpu", progress=False)
    two = engine.Context(spec, torch.device("cpu"), distributed.DistInfo(rank=0, world_size=2))
    assert engine._agree(two, False, False) == (True, True)  # the other rank's answer (7) says yes to both
    assert fake_nccl == [("all_reduce", torch.device("meta"))]
    one = engine.Context(spec, torch.device("cpu"), distributed.DistInfo(rank=0, world_size=1))
    assert engine._agree(one, True, False) == (True, False) and len(fake_nccl) == 1
