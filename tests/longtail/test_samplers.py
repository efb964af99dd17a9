"""longtail.samplers: pure class probabilities, empirical frequencies, per-(seed, epoch) streams, DDP sharding."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from fewshot_sla.engine import stream_seed
from longtail.samplers import SAMPLERS, class_probabilities, epoch_seed, make_sampler

COUNTS = [900, 90, 10]
LABELS = np.repeat(np.arange(3), COUNTS)[np.random.RandomState(0).permutation(1000)]


def test_class_probabilities_exact():
    n = np.array([100.0, 25.0, 4.0, 0.0])
    np.testing.assert_allclose(class_probabilities("instance", n), n / 129)
    np.testing.assert_allclose(class_probabilities("class-balanced", n), [1 / 3, 1 / 3, 1 / 3, 0])
    np.testing.assert_allclose(class_probabilities("sqrt", n), [10 / 17, 5 / 17, 2 / 17, 0])
    for t, T in [(0, 200), (50, 200), (200, 200), (300, 200), (3, 10)]:
        a = min(t / T, 1.0)
        expect = (1 - a) * n / 129 + a * np.array([1, 1, 1, 0]) / 3
        np.testing.assert_allclose(class_probabilities("progressive", n, t, T), expect)
    np.testing.assert_allclose(class_probabilities("progressive", n, 0, 10), class_probabilities("instance", n))
    np.testing.assert_allclose(class_probabilities("progressive", n, 10, 10), class_probabilities("class-balanced", n))
    for name in SAMPLERS:
        assert class_probabilities(name, n, 7, 20).sum() == pytest.approx(1.0)


def test_unknown_and_bad_inputs():
    with pytest.raises(
        ValueError,
        match=r"unknown sampler 'balanced'; choose one of \['instance', 'class-balanced', 'sqrt', 'progressive'\]",
    ):
        make_sampler("balanced", LABELS)
    with pytest.raises(ValueError, match="unknown sampler"):
        class_probabilities("x", [1, 2])
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        make_sampler("instance", LABELS, rank=2, world_size=2)
    with pytest.raises(ValueError, match="non-negative integer class indices"):
        make_sampler("sqrt", [0.5, 1.0])
    with pytest.raises(ValueError, match="positive sum"):
        class_probabilities("sqrt", [0, 0])
    with pytest.raises(ValueError, match=r"seed and epoch must be >= 0 .* got seed=-1, epoch=0"):
        make_sampler("instance", LABELS, seed=-1)
    with pytest.raises(ValueError, match=r"got seed=0, epoch=-2"):
        make_sampler("instance", LABELS).set_epoch(-2)


def test_epoch_seed_formula():
    for seed, epoch in [(0, 0), (1, 0), (0, 1), (5, 170), (2**40, 3)]:
        words = [seed, epoch, zlib.crc32(b"sampler")]
        expect = int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0]) >> 1
        assert epoch_seed(seed, epoch) == expect
    assert epoch_seed(1, 0) != epoch_seed(0, 1)  # seed + epoch would make these equal
    # SeedSequence zero-pads its key, so without the name the permutation of (s, e) would replay the
    # augmentation stream (s, e, rank=0) of the same run
    assert stream_seed(3, 4) == stream_seed(3, 4, 0)
    assert epoch_seed(3, 4) != stream_seed(3, 4, 0)


def test_instance_is_a_permutation_sharded_like_distributed_sampler():
    s = make_sampler("instance", LABELS, seed=5)
    for epoch in range(3):
        s.set_epoch(epoch)
        idx = list(s)
        assert sorted(idx) == list(range(1000)) and len(s) == 1000
        g = torch.Generator()
        g.manual_seed(epoch_seed(5, epoch))
        assert idx == torch.randperm(1000, generator=g).tolist()  # the stream is documented, not incidental
    # With W ranks: DistributedSampler's padding and sharding rule (pad with the head, take rank::W) applied to
    # our permutation, and the same per-rank length. (The permutations differ: it seeds with seed + epoch.)
    ds = list(range(1003))
    full = make_sampler("instance", np.zeros(1003, dtype=int), seed=5)
    for epoch in (0, 3):
        perm = full.epoch_indices(epoch).tolist()
        padded = perm + perm[: 4 * 251 - 1003]
        for rank in range(4):
            mine = make_sampler("instance", np.zeros(1003, dtype=int), seed=5, rank=rank, world_size=4)
            mine.set_epoch(epoch)
            ref = DistributedSampler(ds, num_replicas=4, rank=rank, shuffle=True, seed=5)
            assert list(mine) == padded[rank::4]
            assert len(mine) == len(ref) == 251


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_seeding_and_epochs(name):
    a, b = make_sampler(name, LABELS, seed=1), make_sampler(name, LABELS, seed=1)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    b.set_epoch(5)
    assert list(a) != list(b)
    assert list(make_sampler(name, LABELS, seed=2)) != list(make_sampler(name, LABELS, seed=1))
    first = list(a)
    assert list(a) == first  # re-iterating an epoch repeats it
    assert len(first) == len(a) == 1000 and all(0 <= i < 1000 for i in first)


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("world_size", [1, 3])
def test_ranks_partition_the_padded_draw(name, world_size):
    n = len(LABELS)
    shares = []
    for rank in range(world_size):
        s = make_sampler(name, LABELS, seed=3, rank=rank, world_size=world_size)
        s.set_epoch(2)
        shares.append(s.epoch_indices())
        assert len(s) == -(-n // world_size) == len(shares[-1])
    full = make_sampler(name, LABELS, seed=3)
    full.set_epoch(2)
    draw = full.epoch_indices()
    padded = torch.cat([draw, draw[: world_size * len(shares[0]) - n]])
    inter = torch.stack(shares, 1).reshape(-1)  # position p belongs to rank p % W
    assert torch.equal(inter, padded)


def test_empirical_class_frequencies():
    n = len(LABELS)
    for name in SAMPLERS:
        for epoch, T in [(0, 10), (5, 10), (10, 10)]:
            hits = np.zeros(3)
            for rep in range(20):  # 20 independent draws at this point of the schedule
                s = make_sampler(name, LABELS, seed=1000 * rep, num_epochs=T)
                s.set_epoch(epoch)
                hits += np.bincount(LABELS[s.epoch_indices().numpy()], minlength=3)
            freq = hits / (20 * n)
            expect = class_probabilities(name, COUNTS, epoch, T)
            np.testing.assert_allclose(freq, expect, atol=0.01, err_msg=f"{name} epoch {epoch}")


def test_images_uniform_within_class():
    s = make_sampler("class-balanced", LABELS, seed=0)
    draws = np.concatenate([(s.set_epoch(e), s.epoch_indices().numpy())[1] for e in range(30)])
    rare = np.flatnonzero(LABELS == 2)  # 10 images drawn about 30 * 1000 / 3 = 10,000 times
    per_image = np.array([(draws == i).sum() for i in rare])
    assert per_image.sum() == (LABELS[draws] == 2).sum()
    assert per_image.min() > 0.85 * per_image.mean() and per_image.max() < 1.15 * per_image.mean()


def test_dataloader_integration():
    from torch.utils.data import DataLoader, TensorDataset

    ds = TensorDataset(torch.arange(1000), torch.from_numpy(LABELS))
    s = make_sampler("sqrt", LABELS, seed=0)
    s.set_epoch(1)
    got = torch.cat([x for x, _ in DataLoader(ds, batch_size=128, sampler=s)])
    assert got.tolist() == list(s)


def _perms(seed, epochs=range(10), n=50):
    s = make_sampler("instance", np.zeros(n, dtype=int), seed=seed)
    out = set()
    for e in epochs:
        s.set_epoch(e)
        out.add(tuple(s.epoch_indices().tolist()))
    return out


@pytest.mark.parametrize("seed", [0, 1, 7, 123])
def test_neighbouring_seeds_share_no_epoch_stream(seed):
    """Seed s+1 must not replay seed s shifted by an epoch (the old ``seed + epoch`` stream did)."""
    a, b = _perms(seed), _perms(seed + 1)
    assert len(a) == len(b) == 10 and not a & b


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_epoch_draw_is_a_pure_function_of_seed_and_epoch(name):
    a = make_sampler(name, LABELS, seed=11, num_epochs=10)
    b = make_sampler(name, LABELS, seed=11, num_epochs=10)
    ref = {e: a.epoch_indices(e).tolist() for e in range(6)}
    for e in [5, 0, 3, 3, 1, 5, 2, 4, 0]:  # back and forth, repeats: no state carried between epochs
        b.set_epoch(e)
        assert list(b) == ref[e] == b.epoch_indices().tolist()
    assert a.epoch == 0  # epoch_indices(e) does not move the sampler's own epoch
    assert ref[0] != ref[1]


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("n", [999, 1000])
def test_ddp_shares_disjoint_and_cover_the_draw(name, n):
    labels = LABELS[:n]
    w = 4
    draw = make_sampler(name, labels, seed=2).epoch_indices(7)
    shares = [make_sampler(name, labels, seed=2, rank=r, world_size=w).epoch_indices(7) for r in range(w)]
    positions = [list(range(r, w * len(shares[0]), w)) for r in range(w)]  # rank r owns draw positions r::W
    assert all(not set(positions[r]) & set(positions[q]) for r in range(w) for q in range(r))
    covered = sorted(p for ps in positions for p in ps)
    assert covered[:n] == list(range(n)) and len(covered) - n == (-n) % w  # all of the draw + the pad only
    padded = torch.cat([draw, draw[: (-n) % w]])
    for r in range(w):
        assert torch.equal(shares[r], padded[positions[r]])
    if name == "instance":  # as images: every image exactly once across ranks, apart from the padding's repeats
        counts = np.bincount(torch.cat(shares).numpy(), minlength=n)
        assert counts.min() == 1 and counts.sum() - n == (-n) % w


@pytest.mark.parametrize("world", [1, 2, 3])
def test_global_indices_hold_every_ranks_share(world):
    labels = np.repeat(np.arange(3), [7, 4, 2])  # 13 images: padded to a multiple of the world size
    shares = [make_sampler("sqrt", labels, 5, 10, r, world).epoch_indices(2) for r in range(world)]
    full = make_sampler("sqrt", labels, 5, 10, 0, world).global_indices(2)
    assert len(full) == world * len(shares[0]) and all(torch.equal(full[r::world], s) for r, s in enumerate(shares))
    assert torch.equal(full[:13], make_sampler("sqrt", labels, 5, 10).global_indices(2))  # the draw of one process
