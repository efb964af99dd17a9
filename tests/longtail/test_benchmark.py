"""sla-longtail end to end: each loss trains as itself, resume is exact through DRW, the subset is fixed
across seeds, strict JSON, the plot and W&B, the grid, DDP's global batch, clear errors.

Most tests use a small synthetic ImageFolder (4 classes of 32x32 PNGs, seconds on CPU); one uses the
real CIFAR-10 JPEG copy from ../shared/data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fewshot_sla.utils import read_json
from longtail import losses as L
from longtail.benchmark import main, run
from longtail.data import CIFAR_MEAN, CIFAR_STD, limit_per_class
from longtail.recipe import build_model, build_recipe, load_data, make_loop, resolve
from longtail.schedules import scale_epochs
from tests.launch import torchrun
from tests.longtail.synthetic import tiny, write_folder

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"test/acc", "test/balanced_acc", "test/acc_many", "test/acc_medium", "test/acc_few", "test/per_class_acc"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """4 classes x (60 train, 12 test) PNGs (tests/longtail/synthetic.py)."""
    return write_folder(tmp_path_factory.mktemp("lt_folder"), 60, 12, seed=0)


def _model(cfg, counts):
    """build_model of a recipe with these class counts (no data loaded)."""
    recipe = build_recipe(cfg, class_names=[f"c{i}" for i in range(len(counts))], counts=counts,
                          stats=(CIFAR_MEAN, CIFAR_STD), image_size=32)
    return build_model(recipe)


def test_limit_per_class_keeps_proportions():
    labels = np.repeat(np.arange(3), [100, 10, 1])
    keep = limit_per_class(labels, 20)
    assert np.bincount(labels[keep]).tolist() == [18, 2, 1]


@pytest.mark.slow
def test_each_loss_trains_as_itself(folder, tmp_path):
    """Same seed, different losses: different training traces (on main, cb was bit-identical to ce)."""
    traces = {}
    for loss in ("ce", "cb", "focal", "ldam", "balanced-softmax", "logit-adjusted", "vs"):
        run(tiny(folder, tmp_path / loss, loss=loss, epochs=1))
        traces[loss] = read_json(tmp_path / loss / "metrics.json")["history"][0]["train/loss"]
    assert len(set(traces.values())) == len(traces), traces


@pytest.mark.parametrize("drw", [False, True])
def test_class_balanced_weights_are_in_effect_every_epoch(folder, tmp_path, monkeypatch, drw):
    """With --loss cb the weights in effect are the class-balanced ones in every epoch, with and without DRW."""
    seen: list[tuple[int, torch.Tensor | None]] = []
    orig = L.ImbalanceLoss.set_epoch

    def spy(self, epoch):
        orig(self, epoch)
        if isinstance(self, L.ClassBalancedLoss):
            seen.append((epoch, None if self.weight is None else self.weight.clone()))

    monkeypatch.setattr(L.ImbalanceLoss, "set_epoch", spy)
    run(tiny(folder, tmp_path, loss="cb", drw=drw, epochs=5, limit_test=8))
    counts = read_json(tmp_path / "metrics.json")["class_counts"]
    assert [e for e, _ in seen] == [0, 1, 2, 3, 4]
    for _, w in seen:
        assert w is not None and torch.allclose(w, L.cb_weights(counts))


def test_sd_distils_scaled_logits_for_ldam(folder):
    counts = [60, 29, 14, 10]
    plan = scale_epochs(10)
    ldam = _model(tiny(folder, "x", loss="ldam", transform="rotation", sd=True, epochs=10), counts)
    ce = _model(tiny(folder, "x", loss="ce", transform="rotation", sd=True, epochs=10), counts)
    assert ldam.distill_scale == 30.0 and ce.distill_scale == 1.0
    # DRW reaches both criteria of the model through set_epoch, at the scaled DRW epoch
    drw = _model(tiny(folder, "x", loss="ldam", drw=True, transform="rotation", sd=True, epochs=10), counts)
    for crit in (drw.criterion, drw.sd_criterion):
        crit.set_epoch(plan.drw_epoch - 1)
        assert crit.weight is None
        crit.set_epoch(plan.drw_epoch)
        assert crit.weight is not None


@pytest.mark.slow
def test_resume_is_exact_across_warmup_milestones_and_drw(folder, tmp_path):
    """Stopped after the per-step warm-up (epoch 1), at the first lr milestone and the DRW switch (epoch 6) and at
    the second milestone (epoch 7), then resumed each time: the metrics and history of an uninterrupted run."""
    kw = dict(epochs=8, loss="ldam", drw=True, transform="rotation2", sd=True, limit_test=16)
    plan = scale_epochs(8)
    assert (plan.warmup, plan.drw_epoch, plan.milestones) == (1, 6, (6, 7))
    straight = run(tiny(folder, tmp_path / "a", **kw))
    done = 0
    for stop in (1, 6, 7):
        part = run(tiny(folder, tmp_path / "b", stop_after=stop - done, resume=done > 0, **kw))
        assert part == {"epochs_done": stop}
        done = stop
    with open(tmp_path / "b" / "history.jsonl", "a") as f:  # as if the run had logged an epoch, then died
        f.write(json.dumps({"step": done + 1, "train/loss": 123.0}) + "\n")
    resumed = run(tiny(folder, tmp_path / "b", resume=True, **kw))
    assert json.dumps(straight, sort_keys=True) == json.dumps(resumed, sort_keys=True)
    ha = read_json(tmp_path / "a" / "metrics.json")["history"]
    hb = read_json(tmp_path / "b" / "metrics.json")["history"]
    assert ha == hb and [r["drw"] for r in ha] == [0.0] * 6 + [1.0] * 2
    assert [r["lr"] for r in ha][5:] == pytest.approx([0.1, 1e-3, 1e-5])
    # history.jsonl: no row twice, whatever the interrupted run had logged past its checkpoint
    ja, jb = ((tmp_path / r / "history.jsonl").read_text().splitlines() for r in ("a", "b"))
    assert [json.loads(x)["step"] for x in ja] == [json.loads(x)["step"] for x in jb] == list(range(1, 9))
    assert all(json.loads(x)["train/loss"] != 123.0 for x in jb)


def test_sam_is_in_effect(folder, tmp_path):
    """--sam-rho reaches the engine: same seed, SAM or plain SGD, different training."""
    kw = dict(epochs=1, limit_train=48, limit_test=8)
    run(tiny(folder, tmp_path / "sgd", **kw))
    run(tiny(folder, tmp_path / "sam", sam_rho=0.5, **kw))
    h0, h1 = (read_json(tmp_path / r / "metrics.json")["history"][0] for r in ("sgd", "sam"))
    assert h0["train/loss"] != h1["train/loss"]
    assert read_json(tmp_path / "sam" / "metrics.json")["config"]["sam_rho"] == 0.5


def test_seeds_share_the_subset_and_differ_in_training(folder, tmp_path):
    a, b = load_data(tiny(folder, "x", seed=0), False), load_data(tiny(folder, "x", seed=1), False)
    assert torch.equal(a.train_images, b.train_images) and a.counts == b.counts == [60, 33, 18, 10]
    c = load_data(tiny(folder, "x", subset_seed=1), False)
    assert c.counts == a.counts and not torch.equal(c.train_images, a.train_images)
    run(tiny(folder, tmp_path / "s0", seed=0, epochs=1, limit_test=8))
    run(tiny(folder, tmp_path / "s1", seed=1, epochs=1, limit_test=8))
    m0, m1 = (read_json(tmp_path / s / "metrics.json") for s in ("s0", "s1"))
    assert m0["class_counts"] == m1["class_counts"] and m0["history"] != m1["history"]
    assert (m0["seed"], m1["seed"], m0["subset_seed"]) == (0, 1, 0)


def test_metrics_json_is_strict_json_and_complete(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    met = run(tiny(folder, tmp_path, epochs=1, transform="rotation", sd=True, loss="ldam", drw=True,
                   wandb="offline"))
    text = (tmp_path / "metrics.json").read_text()

    def refuse(c):
        raise ValueError(f"non-standard JSON constant {c}")

    m = json.loads(text, parse_constant=refuse)
    assert m["test/acc_many"] is None and math.isnan(met["test/acc_many"])  # no class has > 100 images
    assert KEYS | {"test/acc_agg", "test/acc_distilled"} <= set(m) and m["test/main_mode"] == "distilled"
    assert m["class_counts"] == [60, 33, 18, 10] and m["config"]["loss"] == "ldam" and "git_commit" in m
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["transform"] == "rotation"
    assert (tmp_path / "per_class_acc.png").stat().st_size > 5_000
    assert list(tmp_path.glob("wandb/offline-run-*/files/media/table/**/*per_class_acc*.table.json"))


@pytest.mark.slow
def test_grid_table(folder, tmp_path, capsys):
    rc = main(["--dataset", "imagefolder", "--data-root", str(folder), "--imbalance-ratio", "6", "--epochs", "1",
               "--batch-size", "16", "--backbone", "resnet20", "--wandb", "disabled", "--num-threads", "1",
               "--out", str(tmp_path), "--grid-loss", "ce", "balanced-softmax", "--grid-transform", "none",
               "rotation2"])
    assert rc == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["loss"], r["transform"]) for r in rows] == [
        ("ce", "none"), ("ce", "rotation2"), ("balanced-softmax", "none"), ("balanced-softmax", "rotation2")
    ]
    assert rows[0]["AG"] is None and 0 <= rows[1]["AG"] <= 1
    assert "| loss" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--imbalance-ratio", "0.5"], "--imbalance-ratio must be >= 1"),
        (["--transform", "flip"], "unknown transform 'flip'"),
        (["--sd"], "--sd distils the aggregated SLA teacher"),
        (["--batch-size", "1"], "--batch-size >= 2"),
        (["--sam-rho", "-1"], "--sam-rho is SAM's radius and must be >= 0"),
    ],
)
def test_bad_input_is_a_clear_error(argv, msg, tmp_path, capsys):
    assert main(argv + ["--out", str(tmp_path), "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--loss", "hinge"], ["--sampler", "random"], ["--backbone", "vit"]])
def test_unknown_choices_name_the_choices(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "invalid choice" in err and "choose from" in err and "Traceback" not in err


def test_missing_data_root(tmp_path, capsys):
    rc = main(["--dataset", "cifar10", "--data-root", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
               "--wandb", "disabled"])
    err = capsys.readouterr().err.strip().splitlines()  # what was being loaded, then why it stopped
    assert rc == 2 and err[0].startswith("data: loading cifar10 from ") and len(err) == 2
    assert err[1].startswith("error: ") and "nope" in err[1]


@pytest.mark.slow
@pytest.mark.realdata
def test_real_cifar10_lt_tiny(cifar10_imagefolder, tmp_path):
    met = run(tiny(cifar10_imagefolder, tmp_path, imbalance_ratio=100.0, limit_train=300, limit_test=100, epochs=1,
                   batch_size=50, transform="rotation", sd=True))
    m = read_json(tmp_path / "metrics.json")
    assert len(m["test/per_class_acc"]) == 10 and m["test/main_mode"] == "distilled"
    assert abs(sum(m["class_counts"]) - 300) <= 5 and m["class_counts"][0] > m["class_counts"][-1]
    assert 0.0 <= met["test/acc"] <= 1.0


def _torchrun(folder, out, *extra, nproc=2):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [*torchrun(nproc), "-m",
           "longtail.benchmark", "--dataset", "imagefolder", "--data-root", str(folder), "--imbalance-ratio", "6",
           "--epochs", "2", "--batch-size", "16", "--backbone", "resnet20", "--device", "cpu", "--num-threads", "1",
           "--out", str(out), "--transform", "rotation2", "--wandb", "disabled", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
@pytest.mark.dist
def test_two_process_gloo_global_batch(folder, tmp_path):
    """Two gloo processes train on the global batch (the same steps and images as one process, see
    test_processes_share_one_global_batch); without --sync-bn each normalises with the BatchNorm statistics of
    its half of the batch, so the losses are not one process's (torch's SyncBatchNorm needs CUDA)."""
    res = _torchrun(folder, tmp_path / "two")
    assert res.returncode == 0, res.stderr[-3000:]
    m = read_json(tmp_path / "two" / "metrics.json")
    assert KEYS | {"test/acc_agg"} <= set(m) and m["world_size"] == 2 and len(m["history"]) == 2
    assert 0.0 <= m["test/acc"] <= 1.0
    one = run(tiny(folder, tmp_path / "one", epochs=2, transform="rotation2", device="cpu"))
    assert one["test/acc"] >= 0.0
    h1, h2 = read_json(tmp_path / "one" / "metrics.json")["history"], m["history"]
    assert [r["lr"] for r in h1] == [r["lr"] for r in h2]
    assert h1[0]["train/loss"] != pytest.approx(h2[0]["train/loss"], rel=1e-5)  # BatchNorm on half batches
    # --sync-bn would make them one process's, but torch's SyncBatchNorm runs on CUDA only: a clear refusal
    res = _torchrun(folder, tmp_path / "sync", "--sync-bn")
    assert res.returncode != 0 and res.stderr.count("error: --sync-bn: torch") == 2 and "CUDA only" in res.stderr
    assert 'longtail/recipe.py"' not in res.stderr  # each rank's message, not a traceback (torchrun adds its own)


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="torch's SyncBatchNorm needs two CUDA devices here")
def test_sync_bn_two_processes_equal_one(folder, tmp_path):
    """With --sync-bn, two processes (NCCL) give one process's metrics for the same global batch (96 training
    images: 6 global batches of 16, no padded draw)."""
    res = _torchrun(folder, tmp_path / "two", "--sync-bn", "--device", "cuda", "--limit-train", "96")
    assert res.returncode == 0, res.stderr[-3000:]
    one = run(tiny(folder, tmp_path / "one", epochs=2, transform="rotation2", device="cuda", limit_train=96))
    two = read_json(tmp_path / "two" / "metrics.json")
    h1, h2 = read_json(tmp_path / "one" / "metrics.json")["history"], two["history"]
    for r1, r2 in zip(h1, h2):
        assert r1["train/loss"] == pytest.approx(r2["train/loss"], rel=1e-4)
    assert abs(one["test/acc"] - two["test/acc"]) <= 1 / 48  # at most one test image of 48 on the other side


def test_processes_share_one_global_batch(folder):
    """Under P processes rank r's batch is the share [r::P] of the one-process batch, augmentation included."""
    from fewshot_sla import engine as eng
    from fewshot_sla.distributed import DistInfo

    cfg = tiny(folder, "x", seed=3, batch_size=8)
    data = load_data(cfg)
    recipe = resolve(cfg, data)
    model = build_model(recipe)
    spec = eng.RunSpec("x", seed=3, device="cpu")

    def loop(rank, world):
        return make_loop(recipe, eng.Context(spec, torch.device("cpu"), DistInfo(rank, world, rank)), data, model)

    one, r0, r1 = loop(0, 1), loop(0, 2), loop(1, 2)
    assert one.batches_per_unit == r0.batches_per_unit == len(list(one.batches(1)))
    for (x, y), (x0, y0), (x1, y1) in zip(one.batches(1), r0.batches(1), r1.batches(1)):
        assert torch.equal(x0, x[0::2]) and torch.equal(x1, x[1::2])
        assert torch.equal(y0, y[0::2]) and torch.equal(y1, y[1::2])


def test_sync_bn_converts_or_refuses():
    from fewshot_sla.config import ConfigError
    from longtail.recipe import sync_batchnorm

    def model():
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))

    kinds = {type(m).__name__ for m in sync_batchnorm(model(), True, torch.device("cuda"), 2).modules()}
    assert "SyncBatchNorm" in kinds and "BatchNorm2d" not in kinds
    for sync, world in ((False, 2), (True, 1)):
        assert isinstance(sync_batchnorm(model(), sync, torch.device("cpu"), world)[1], torch.nn.BatchNorm2d)
    with pytest.raises(ConfigError, match="--sync-bn: torch .*CUDA only.*drop --sync-bn"):
        sync_batchnorm(model(), True, torch.device("cpu"), 2)


@pytest.mark.slow
def test_a_default_run_makes_no_network_call(folder, tmp_path):
    """`sla-longtail` with its defaults (W&B offline) end to end under strace: no non-loopback connect()."""
    import shutil

    from tests.core.test_tracking import _non_loopback_connects

    strace = shutil.which("strace")
    if strace is None or subprocess.run([strace, "-f", "true"], capture_output=True).returncode != 0:
        pytest.skip("strace is missing or cannot trace here; it records the run's connect() calls")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    trace = tmp_path / "strace.log"
    cmd = [strace, "-f", "-qq", "-o", str(trace), "-e", "trace=connect", sys.executable, "-m", "longtail.benchmark",
           "--dataset", "imagefolder", "--data-root", str(folder), "--imbalance-ratio", "6", "--epochs", "1",
           "--batch-size", "16", "--backbone", "resnet20", "--limit-test", "8", "--out", str(tmp_path / "out")]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not _non_loopback_connects(trace.read_text())
    assert list((tmp_path / "out" / "wandb").glob("offline-run-*"))  # it did log to W&B, offline


def test_vs_parameters_reach_the_loss(folder):
    counts = [60, 29, 14, 10]
    z, y = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3, 0, 1])
    plain = _model(tiny(folder, "x", loss="vs", vs_gamma=0.0, vs_tau=0.0), counts).criterion
    assert torch.allclose(plain(z, y), torch.nn.functional.cross_entropy(z, y))  # gamma = tau = 0: plain CE
    vs = _model(tiny(folder, "x", loss="vs", vs_gamma=0.3, vs_tau=1.0), counts).criterion
    delta = (torch.tensor(counts, dtype=torch.float) / 60) ** 0.3
    iota = torch.log(torch.tensor(counts, dtype=torch.float) / sum(counts))
    assert torch.allclose(vs(z, y), torch.nn.functional.cross_entropy(z * delta + iota, y), atol=1e-6)


def test_training_batches_match_a_per_image_reference(folder):
    """The device path's batches (uint8 set where the model trains, crop + flip draws on the CPU from
    stream_seed(seed, epoch, 0), then normalise with the folder's own statistics) equal a per-image
    torchvision-style reference: the augmentation stream does not depend on the device the data lives on."""
    import torch.nn.functional as F

    from fewshot_sla import engine as eng
    from fewshot_sla.io import normalize
    from longtail.data import channel_stats
    from longtail.samplers import make_sampler

    cfg = tiny(folder, "x", seed=4)
    ctx = eng.setup(eng.RunSpec("x", seed=4, device="cpu"))
    data = load_data(cfg, False)
    recipe = resolve(cfg, data)
    assert recipe.stats == channel_stats(data.train_images)
    loop = make_loop(recipe, ctx, data, build_model(recipe))
    idx = make_sampler("instance", data.train_labels, 4, cfg.epochs).epoch_indices(1)
    gen = torch.Generator().manual_seed(eng.stream_seed(4, 1, 0))
    for s, (x, y) in zip(range(0, len(idx), 16), loop.batches(1)):
        b = idx[s : s + 16]
        dy, dx = torch.randint(0, 9, (len(b),), generator=gen), torch.randint(0, 9, (len(b),), generator=gen)
        flip = torch.rand(len(b), generator=gen) < 0.5
        ref = []
        for i, k in enumerate(b.tolist()):
            img = F.pad(data.train_images[k], (4, 4, 4, 4))[:, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
            ref.append(img.flip(-1) if flip[i] else img)
        assert torch.equal(x, normalize(torch.stack(ref), *recipe.stats)) and torch.equal(y, data.train_labels[b])


def test_drop_last_drops_only_the_partial_batch(folder):
    """--drop-last (static shapes for CUDA graphs): the same full batches in the same order, the partial one gone,
    and the lr schedule's steps per epoch counted the same way."""
    from fewshot_sla import engine as eng
    from fewshot_sla.distributed import DistInfo

    keep, drop = tiny(folder, "x", seed=3, batch_size=16), tiny(folder, "x", seed=3, batch_size=16, drop_last=True)
    data = load_data(keep)
    ctx = eng.Context(eng.RunSpec("x", seed=3, device="cpu"), torch.device("cpu"), DistInfo(0, 1, 0))
    loops = [make_loop(resolve(c, data), ctx, data, build_model(resolve(c, data))) for c in (keep, drop)]
    full, partial = divmod(len(data.train_labels), 16)
    assert partial >= 2  # the data has a partial last batch to drop
    a, b = (list(lp.batches(1)) for lp in loops)
    assert [len(y) for _, y in a] == [16] * full + [partial] and [len(y) for _, y in b] == [16] * full
    assert all(torch.equal(x0, x1) and torch.equal(y0, y1) for (x0, y0), (x1, y1) in zip(a, b))
    assert (loops[0].batches_per_unit, loops[1].batches_per_unit) == (full + 1, full)


class _SmallNet(torch.nn.Module):
    """Conv-BN-ReLU, pooled: a backbone small enough for inductor to compile in seconds on a CPU."""

    out_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.mark.slow
def test_compiled_step_computes_the_eager_losses(folder, tmp_path, monkeypatch):
    """--compile (torch.compile of the training forward; on CUDA also with --compile-mode reduce-overhead) trains
    the same run: every step's loss (the engine's per-batch log) equals eager's within bf16 rounding (inductor fuses
    and reorders the sums), and the compiled run is not the eager one replayed (its losses are not bit-equal).
    sla-longtail's whole step (crop/flip, rotations, joint head, SD head and KL, LDAM-DRW) with a small backbone in
    place of the ResNet, which inductor would take minutes to compile on a CPU."""
    import csv
    from dataclasses import replace

    import longtail.recipe as lt_recipe
    from fewshot_sla import engine as eng

    monkeypatch.setattr(lt_recipe, "make_backbone", lambda name: _SmallNet())
    losses = {}
    for compiled in (False, True):
        cfg = tiny(folder, tmp_path / f"c{compiled}", seed=2, epochs=1, transform="rotation", sd=True, amp=True,
                   compile=compiled, loss="ldam", drw=True)
        ctx = eng.setup(eng.RunSpec(cfg.out, cfg.seed, "cpu", cfg.amp, False, cfg.compile, progress=False,
                                    num_threads=1))
        data = load_data(cfg)
        recipe = resolve(cfg, data)
        model = build_model(recipe)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        loop = replace(make_loop(recipe, ctx, data, model), batch_log="batches.csv", checkpoint_every=0)
        eng.fit(model, opt, loop, ctx)
        with open(Path(cfg.out) / "batches.csv") as f:
            losses[compiled] = [float(r["loss"]) for r in csv.DictReader(f)]
    eager, comp = losses[False], losses[True]
    assert len(eager) == len(comp) >= 5
    assert comp == pytest.approx(eager, rel=3e-2)  # bf16 keeps 8 bits of mantissa: ~0.4% per rounding
    assert comp != eager
