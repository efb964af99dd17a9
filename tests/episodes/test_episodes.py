"""Episode sampler, SLA episode wrapper and ProtoNet against plain loops; Omniglot on the real data."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from episodes import EpisodeSampler, ProtoNet, SLAEpisode, class_index, episode_labels, prototypes, split_episode
from episodes.data import load_fewshot, omniglot_split
from episodes.train import FewShotConfig, main, run
from fewshot_sla.utils import read_json
from tests.launch import torchrun

LABELS = np.repeat(np.arange(10), [5, 6, 7, 8, 9, 10, 11, 12, 13, 14])


def test_episode_layout_and_counts():
    s = EpisodeSampler(LABELS, ways=4, shots=2, queries=3, episodes=7, seed=1)
    eps = list(s)
    assert len(eps) == 7 and all(e.dtype == torch.int64 and len(e) == 4 * 5 for e in eps)
    for e_idx, e in enumerate(eps):
        y = LABELS[e.numpy()]
        support, query = y[:8].reshape(4, 2), y[8:].reshape(4, 3)
        assert (support == support[:, :1]).all() and (query == query[:, :1]).all()  # class-major
        assert (support[:, 0] == query[:, 0]).all() and len(set(support[:, 0])) == 4  # same, distinct classes
        assert (support[:, 0] == s.episode_classes(e_idx)).all()
        assert len(set(e.tolist())) == 20  # support and query disjoint, no repeats


def test_sampler_deterministic_and_set_epoch():
    a = [e.tolist() for e in EpisodeSampler(LABELS, 3, 1, 2, 5, seed=0)]
    b = EpisodeSampler(LABELS, 3, 1, 2, 5, seed=0)
    assert [e.tolist() for e in b] == a
    assert b.episode(3).tolist() == a[3]  # independent of iteration history
    b.set_epoch(1)
    assert [e.tolist() for e in b] != a
    assert [e.tolist() for e in EpisodeSampler(LABELS, 3, 1, 2, 5, seed=1)] != a


@pytest.mark.parametrize("ways", [2, 4])  # 2: rejection of repeated classes; 4 (4*4 > 10 classes): random keys
def test_sampler_is_uniform(ways):
    """Classes, items, and which item is the support: all uniform (counts within 5 standard deviations)."""
    labels = np.repeat(np.arange(10), 5)  # 10 classes x 5 items
    s = EpisodeSampler(labels, ways, 1, 2, 4000, seed=3)
    eps = np.stack([e.numpy() for e in s])  # (4000, 3*ways)
    cls_counts = np.bincount(labels[eps[:, :ways]].reshape(-1), minlength=10)
    support_counts = np.bincount(eps[:, :ways].reshape(-1), minlength=50)
    query_counts = np.bincount(eps[:, ways:].reshape(-1), minlength=50)
    expected = ((cls_counts, 4000 * ways, 0.1), (support_counts, 4000 * ways, 0.02), (query_counts, 8000 * ways, 0.02))
    for counts, n, p in expected:
        assert np.abs(counts - n * p).max() < 5 * np.sqrt(n * p * (1 - p))
    first = labels[eps[:, 0]]  # the first way is any class, not e.g. always the smallest
    assert len(set(first.tolist())) == 10


def test_sampler_chunks_are_independent_of_access_order():
    s = EpisodeSampler(LABELS, 3, 1, 2, 200, seed=5)
    forward = [s.episode(e).tolist() for e in range(200)]
    backward = [s.episode(e).tolist() for e in reversed(range(200))][::-1]
    assert forward == backward and len({tuple(e) for e in forward}) == 200


def test_sampler_as_batch_sampler():
    ds = TensorDataset(torch.arange(len(LABELS)), torch.from_numpy(LABELS))
    s = EpisodeSampler(LABELS, 2, 1, 1, 3)
    batches = list(DataLoader(ds, batch_sampler=s))
    assert [b[0].tolist() for b in batches] == [e.tolist() for e in s]


def test_sampler_errors():
    with pytest.raises(ValueError, match="ways=11 but the split has only 10 classes"):
        EpisodeSampler(LABELS, 11, 1, 1, 1)
    with pytest.raises(ValueError, match="shots \\+ queries = 6 but class 0 has only 5 items"):
        EpisodeSampler(LABELS, 2, 1, 5, 1)
    with pytest.raises(ValueError, match="shots must be >= 1"):
        EpisodeSampler(LABELS, 2, 0, 5, 1)


def test_class_index_and_labels():
    idx = class_index([2, 0, 2, 1])
    assert [i.tolist() for i in idx] == [[1], [3], [0, 2]]
    sy, qy = episode_labels(3, 2, 1)
    assert sy.tolist() == [0, 0, 1, 1, 2, 2] and qy.tolist() == [0, 1, 2]
    x = torch.arange(9)
    assert [t.tolist() for t in split_episode(x, 3, 2, 1)] == [[0, 1, 2, 3, 4, 5], [6, 7, 8]]


def test_prototypes_and_protonet_against_loop():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(6, 4, generator=g)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    loop = torch.stack([f[y == c].mean(0) for c in range(3)])
    torch.testing.assert_close(prototypes(f, y, 3), loop)
    net = ProtoNet(torch.nn.Flatten())
    q = torch.randn(2, 4, generator=g)
    logits = net(f, y, q)
    for i in range(2):
        for c in range(3):
            assert logits[i, c].item() == pytest.approx(-((q[i] - loop[c]) ** 2).sum().item(), rel=1e-5)


def test_sla_episode_against_loop():
    sla = SLAEpisode("rotation")
    sx, qx = torch.randn(4, 1, 5, 5), torch.randn(2, 1, 5, 5)
    sy, qy = torch.tensor([0, 0, 1, 1]), torch.tensor([1, 0])
    ex = sla.expand(sx, sy, qx, qy)
    assert sla.ways_joint(2) == 8 and ex[0].shape == (16, 1, 5, 5) and ex[2].shape == (8, 1, 5, 5)
    for b in range(4):
        for j in range(4):
            assert torch.equal(ex[0][b * 4 + j], torch.rot90(sx[b], j, dims=(-2, -1)))
            assert ex[1][b * 4 + j] == sy[b] * 4 + j
    assert ex[3].tolist() == [4, 5, 6, 7, 0, 1, 2, 3]
    z = torch.randn(8, 8)
    agg = sla.aggregate(z)
    for q in range(2):
        for c in range(2):
            assert agg[q, c].item() == pytest.approx(sum(z[q * 4 + j, c * 4 + j].item() for j in range(4)) / 4)
    assert torch.equal(sla.single(z), z[::4, ::4])


def test_sla_episode_refuses_global_class_ids():
    """learn2learn's TaskDataset without RemapLabels hands over global ids: 5-way [3, 7, 12, 20, 41] used to give joint
    labels up to 167 for a 20-way joint episode."""
    sla = SLAEpisode("rotation")
    sx, qx = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)
    ids = torch.tensor([3, 7, 12, 20, 41])
    with pytest.raises(ValueError) as e:
        sla.expand(sx, ids, qx, ids)
    assert str(e.value) == (
        "SLAEpisode: support labels must be episode-local 0..4 for this 5-way episode, got the class ids "
        "[3, 7, 12, 20, 41]; remap them to 0..N-1 first: learn2learn's RemapLabels among the task transforms, or "
        "torch.unique(support_y, return_inverse=True) (query labels: torch.searchsorted on its classes)"
    )
    with pytest.raises(ValueError, match=r"support labels must be episode-local 0\.\.1 for this 2-way episode"):
        sla.expand(sx[:2], torch.tensor([0, 2]), qx)  # a class missing from 0..N-1
    with pytest.raises(ValueError, match=r"^SLAEpisode: query labels must be among the support's episode-local "
                                         r"labels 0\.\.1, got 2; remap"):
        sla.expand(sx[:2], torch.tensor([0, 1]), qx[:2], torch.tensor([1, 2]))
    # the fix the message names gives the episode-local labels, and then the joint labels stay below N*M
    classes, sy = torch.unique(ids, return_inverse=True)
    qy = torch.searchsorted(classes, ids.flip(0))
    _, sy_j, _, qy_j = sla.expand(sx, sy, qx, qy)
    assert sy_j.max().item() == 19 and qy_j[:4].tolist() == [16, 17, 18, 19]


def test_protonet_with_sla_learns_a_toy_episode():
    """ProtoNet on the N*M-way episode separates rotated copies of two toy patterns."""
    torch.manual_seed(0)
    base = torch.zeros(2, 1, 6, 6)
    base[0, 0, 0, :3] = 1
    base[1, 0, 3:, 5] = 1
    sla = SLAEpisode("rotation")
    sx, sy, qx, qy = sla.expand(base, torch.tensor([0, 1]), base + 0.05 * torch.randn(2, 1, 6, 6), torch.tensor([0, 1]))
    logits = ProtoNet(torch.nn.Flatten())(sx, sy, qx, ways=8)
    assert (logits.argmax(1) == qy).all()


def test_vinyals_split_package_data_matches_shared(shared_data):
    for split, n in (("train", 1028), ("val", 172), ("test", 423)):
        ours = omniglot_split(split)
        assert len(ours) == n
        ref = json.loads((shared_data / "omniglot" / "vinyals" / f"{split}.json").read_text())
        expected = sorted(
            (f"images_{p}", a, int(c.replace("character", "")))
            for p, al in ref.items()
            for a, cs in al.items()
            for c in cs
        )
        assert ours == expected


@pytest.mark.slow
@pytest.mark.realdata
def test_omniglot_loader_real(omniglot_root):
    d = load_fewshot("omniglot", omniglot_root, "val")
    assert d.images.shape == (172 * 20, 1, 28, 28) and d.images.dtype == torch.uint8
    assert d.num_classes == 172 and d.labels.bincount().tolist() == [20] * 172
    from PIL import Image

    first = sorted((omniglot_root / "omniglot-py" / d.class_names[0]).glob("*.png"))[0]
    direct = 255 - np.asarray(Image.open(first).convert("L").resize((28, 28), Image.Resampling.LANCZOS))
    assert np.array_equal(d.images[0, 0].numpy(), direct)


def test_bad_input_errors(tmp_path, capsys):
    assert main(["--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--wandb", "disabled"]) == 2
    assert "Omniglot not found" in capsys.readouterr().err
    assert main(["--learner", "maml", "--test-ways", "20", "--out", str(tmp_path / "o"), "--wandb", "disabled"]) == 2
    assert "fixed 5-way head: --test-ways must equal --ways" in capsys.readouterr().err
    for argv in (["--learner", "snail"], ["--backbone", "vit"]):
        with pytest.raises(SystemExit) as e:
            main(argv + ["--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "invalid choice" in err and "protonet" in err + "conv4" and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.realdata
def test_colour_permutation_on_omniglot_is_a_clear_error(omniglot_root, tmp_path, capsys):
    rc = main(
        ["--data-root", str(omniglot_root), "--transform", "color_perm", "--out", str(tmp_path), "--wandb", "disabled"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "3-channel" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("stop", [2, 4])  # before and after the learning-rate milestone at step 3
def test_tiny_end_to_end_and_resume_through_a_milestone(omniglot_root, tmp_path, stop):
    kw = dict(data_root=str(omniglot_root), train_episodes=6, val_every=3, val_episodes=2, test_episodes=4,
              queries=2, checkpoint_every=5, lr_milestones=(3,), lr_gamma=0.1, wandb="disabled", num_threads=1)
    a = run(FewShotConfig(out=str(tmp_path / "a"), **kw))
    for k in ("test/acc_single", "test/acc_single_ci95", "test/acc_agg", "test/acc_agg_ci95", "val/best_acc"):
        assert 0.0 <= a[k] <= 1.0
    assert len(a["test/per_class_acc"]) == 423
    part = run(FewShotConfig(out=str(tmp_path / "b"), stop_after=stop, **kw))
    assert part == {"episodes_done": stop}
    b = run(FewShotConfig(out=str(tmp_path / "b"), resume=True, **kw))
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    ma, mb = (read_json(tmp_path / r / "metrics.json") for r in ("a", "b"))
    assert ma["history"] == mb["history"] and [r["lr"] for r in ma["history"]] == [1e-3, 1e-4]
    assert mb["config"]["resume"] is True
    # one row per training episode, written as produced; none duplicated by the resume
    rows_a = (tmp_path / "a" / "train_episodes.csv").read_text().splitlines()
    assert rows_a == (tmp_path / "b" / "train_episodes.csv").read_text().splitlines() and len(rows_a) == 7
    # the checkpoint carries no per-episode rows
    st = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert "episode_rows" not in st and len(st["history"]) == 2
    # test_episodes.csv holds the per-episode accuracies the metrics are the mean of
    test_rows = np.loadtxt(tmp_path / "a" / "test_episodes.csv", delimiter=",", skiprows=1)
    assert test_rows.shape == (4, 3) and test_rows[:, 2].mean() == pytest.approx(a["test/acc_agg"])


def test_fewshot_demo_tiny():
    from episodes.demo import run as demo_run

    rows = demo_run(episodes=3, test_episodes=4)
    assert [r["method"] for r in rows] == ["Baseline", "SLA+SI", "SLA+AG"]
    assert all(0.0 <= r["5-way 1-shot acc"] <= 1.0 and r["ci95"] >= 0 for r in rows)


def test_learning_rate_schedules():
    from episodes.recipe import lr_at

    step = FewShotConfig(lr=1.0, lr_step=10, lr_gamma=0.5)
    assert [lr_at(step, s) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    ms = FewShotConfig(lr=0.1, lr_milestones=(20, 40, 50), lr_factors=(0.06, 0.012, 0.0024))
    assert [lr_at(ms, s) for s in (0, 19, 20, 40, 59)] == pytest.approx([0.1, 0.1, 0.006, 0.0012, 0.00024])
    gamma = FewShotConfig(lr=1.0, lr_milestones=(5, 8), lr_gamma=0.1)
    assert [lr_at(gamma, s) for s in (4, 5, 8)] == pytest.approx([1.0, 0.1, 0.01])


def test_shipped_configs_are_valid():
    """Every YAML recipe under episodes/configs/ parses into FewShotConfig and passes its checks."""
    from pathlib import Path

    from episodes.recipe import check_config
    from fewshot_sla.config import parse_config

    configs = Path(__file__).resolve().parents[2] / "episodes" / "configs"
    files = sorted(configs.rglob("*.yaml"))
    assert len(files) >= 5
    for f in files:
        cfg = parse_config(FewShotConfig, ["--config", str(f)])
        check_config(cfg)
        if "mini-imagenet" in f.parts:
            assert (cfg.dataset, cfg.backbone, cfg.transform, cfg.test_episodes) == (
                "mini-imagenet", "resnet12", "rotation", 1000
            )


def test_lr_factors_must_match_milestones(tmp_path, capsys):
    rc = main(["--lr-milestones", "10", "20", "--lr-factors", "0.1", "--out", str(tmp_path), "--wandb", "disabled"])
    assert rc == 2 and "--lr-factors has 1 values but --lr-milestones has 2" in capsys.readouterr().err


def _tiny(**kw):
    base = dict(train_episodes=2, val_every=2, val_episodes=2, test_episodes=3, queries=2, wandb="disabled",
                num_threads=1, checkpoint_every=1)
    base.update(kw)
    return FewShotConfig(**base)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize(
    "learner, backbone, transform",
    [("r2d2", "conv4", "rotation"), ("protonet", "resnet12", "rotation2"), ("fomaml", "conv4", "rotation"),
     ("anil", "conv4", "none"), ("svm", "conv4", "rotation")],
)
def test_tiny_runs_of_each_learner(omniglot_root, tmp_path, learner, backbone, transform):
    if learner == "svm":
        pytest.importorskip("qpth")
    m = run(_tiny(data_root=str(omniglot_root), learner=learner, backbone=backbone, transform=transform,
                  meta_batch=2, out=str(tmp_path)))
    assert 0.0 <= m["test/acc"] <= 1.0
    if transform == "none":  # M = 1: the aggregation code and the single-copy code must agree
        assert m["test/acc_single"] == m["test/acc_agg"]
    rows = read_json(tmp_path / "metrics.json")
    assert rows["config"]["learner"] == learner and rows["test/episodes"] == 3 and "git_commit" in rows


@pytest.mark.slow
def test_tiny_run_on_mini_imagenet_pkl_with_colour_permutations(tmp_path):
    """The 3-channel path end to end on a format-exact mini-ImageNet cache (84x84 RGB, real class ids)."""
    import csv
    import pickle
    from pathlib import Path

    split_dir = Path(__file__).resolve().parents[2] / "episodes" / "splits" / "mini_imagenet"
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        with open(split_dir / f"{split}.csv") as f:
            wnids = sorted({r["label"] for r in csv.DictReader(f)})
        per = 4
        x = rng.integers(0, 256, (per * len(wnids), 84, 84, 3), dtype=np.uint8)
        cache = {"image_data": x, "class_dict": {w: list(range(per * i, per * i + per)) for i, w in enumerate(wnids)}}
        with open(tmp_path / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump(cache, f, protocol=4)
    kw = dict(dataset="mini-imagenet", data_root=str(tmp_path), transform="color_perm3", image_size=32,
              augment=True, train_episodes=4, val_every=4)
    m = run(_tiny(out=str(tmp_path / "out"), **kw))
    assert 0.0 <= m["test/acc_agg"] <= 1.0 and len(m["test/per_class_acc"]) == 20
    # augmentation draws are a function of (seed, episode): an interrupted, resumed run ends the same
    assert run(_tiny(out=str(tmp_path / "r"), stop_after=2, **kw)) == {"episodes_done": 2}
    resumed = run(_tiny(out=str(tmp_path / "r"), resume=True, **kw))
    assert json.dumps(resumed, sort_keys=True) == json.dumps(m, sort_keys=True)  # NaN-aware: unseen classes


def _mini_imagenet_pkls(root, per=2):
    """learn2learn's mini-ImageNet cache files with the real classes, ``per`` random 84x84 images each."""
    import csv
    import pickle
    from pathlib import Path

    split_dir = Path(__file__).resolve().parents[2] / "episodes" / "splits" / "mini_imagenet"
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        with open(split_dir / f"{split}.csv") as f:
            wnids = sorted({r["label"] for r in csv.DictReader(f)})
        x = rng.integers(0, 256, (per * len(wnids), 84, 84, 3), dtype=np.uint8)
        cache = {"image_data": x, "class_dict": {w: list(range(per * i, per * i + per)) for i, w in enumerate(wnids)}}
        with open(root / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump(cache, f, protocol=4)


@pytest.mark.parametrize(
    "flags, line",
    [
        (["--test-ways", "20"], "the val split has 16 classes but --test-ways 20 asks for 20-way val episodes; use "
                                "--test-ways <= 16"),
        (["--ways", "20"], "the val split has 16 classes but --ways 20 asks for 20-way val episodes; use --ways <= 16 "
                           "(or set --test-ways for the val and test episodes alone)"),
        (["--test-queries", "2"], "class 'n01855672' of the val split has 2 images but val episodes need --shots + "
                                  "--test-queries = 1 + 2 = 3; lower them to a sum <= 2"),
    ],
)
def test_too_small_split_names_the_option_given(tmp_path, capsys, flags, line):
    """--test-ways 10 on a 6-class split used to be reported as '--ways <= 6'."""
    _mini_imagenet_pkls(tmp_path)
    argv = ["--dataset", "mini-imagenet", "--data-root", str(tmp_path), "--image-size", "16", "--shots", "1",
            "--queries", "1", "--wandb", "disabled", "--num-threads", "1", "--out", str(tmp_path / "out"), *flags]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {line}"


def test_omniglot_background_scheme():
    """Lake's background/evaluation split: train and val from background alphabets, test = all of evaluation."""
    tr, va, te = (omniglot_split(s, "background") for s in ("train", "val", "test"))
    assert (len(tr), len(va), len(te)) == (792, 172, 659) and len(set(tr) | set(va) | set(te)) == 1623
    assert {c[0] for c in tr + va} == {"images_background"} and {c[0] for c in te} == {"images_evaluation"}
    assert va == omniglot_split("val", "vinyals")  # the same 5 validation alphabets in both schemes
    assert len({c[1] for c in te}) == 20
    with pytest.raises(ValueError, match="unknown Omniglot split scheme 'lake'; choose one of vinyals, background"):
        omniglot_split("train", "lake")


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.dist
def test_two_process_meta_batch_equals_one_process(omniglot_root, tmp_path):
    """A meta-batch of 2 episodes split across 2 gloo processes takes the optimiser steps of one process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    args = ["-m", "episodes.train", "--data-root", str(omniglot_root), "--train-episodes", "3", "--meta-batch", "2",
            "--val-every", "3", "--val-episodes", "2", "--test-episodes", "2", "--queries", "2", "--device", "cpu",
            "--num-threads", "1", "--wandb", "disabled", "--checkpoint-every", "3"]
    for name, launcher in (("one", [sys.executable]),
                           ("two", torchrun(2))):
        res = subprocess.run([*launcher, *args, "--out", str(tmp_path / name)], env=env, capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
    one, two = (torch.load(tmp_path / n / "checkpoint.pt", weights_only=True)["model"] for n in ("one", "two"))
    params = [k for k in one if "running" not in k and "num_batches" not in k]
    assert params and all(torch.allclose(one[k], two[k], atol=1e-5) for k in params)
    assert read_json(tmp_path / "two" / "metrics.json")["world_size"] == 2


def test_negative_val_every_is_a_clear_error(tmp_path, capsys):
    rc = main(["--val-every", "-1", "--out", str(tmp_path), "--wandb", "disabled"])
    assert rc == 2 and "--val-every must be >= 1, or 0" in capsys.readouterr().err


@pytest.mark.realdata
def test_val_every_zero_validates_once_after_the_last_step(omniglot_root, tmp_path):
    m = run(_tiny(data_root=str(omniglot_root), train_episodes=3, val_every=0, out=str(tmp_path)))
    hist = read_json(tmp_path / "metrics.json")["history"]
    assert [r["step"] for r in hist] == [3] and "val/acc_agg" in hist[0]  # one row, validated at the end
    assert m["val/best_acc"] == hist[0]["val/acc_agg"]
