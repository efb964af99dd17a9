"""Each transform against a plain per-image loop, identity first, the layout x_aug[b*M + j] = T_j(x[b])."""

import itertools

import pytest
import torch

from fewshot_sla import TRANSFORMS, ColorPermutation, Rotation, expand, get_transform

X = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)


def loop_rotation(img, k):
    # rotate counter-clockwise by hand: out[i, j] = img[j, W-1-i] for one quarter turn
    out = img
    for _ in range(k):
        h, w = out.shape[-2:]
        out = torch.stack([torch.stack([out[..., jj, w - 1 - ii] for jj in range(h)], -1) for ii in range(w)], -2)
    return out


@pytest.mark.parametrize("name,expected_m", [("none", 1), ("rotation", 4), ("rotation2", 2), ("color_perm", 6),
                                             ("color_perm3", 3), ("rotation_color_perm", 24)])
def test_m_and_identity_first(name, expected_m):
    t = TRANSFORMS[name]
    assert t.m == expected_m
    out = t(X)
    assert out.shape == (2 * expected_m, 3, 4, 4)
    for b in range(2):
        assert torch.equal(out[b * expected_m], X[b])


def test_rotation_matches_loop_and_counter_clockwise():
    out = TRANSFORMS["rotation"](X)
    for b, k in itertools.product(range(2), range(4)):
        assert torch.equal(out[b * 4 + k], loop_rotation(X[b], k))
    # counter-clockwise: the top-right corner moves to the top-left
    img = torch.zeros(1, 1, 3, 3)
    img[0, 0, 0, 2] = 1
    assert TRANSFORMS["rotation"](img)[1, 0, 0, 0] == 1


def test_rotation2_is_0_and_180():
    out = TRANSFORMS["rotation2"](X)
    assert torch.equal(out[1], X[0].flip(-1).flip(-2))
    assert torch.equal(out[3], X[1].flip(-1).flip(-2))


def test_color_perm_orders():
    out = TRANSFORMS["color_perm"](X)
    orders = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    for b, (j, p) in itertools.product(range(2), enumerate(orders)):
        for c in range(3):
            assert torch.equal(out[b * 6 + j, c], X[b, p[c]])
    out3 = TRANSFORMS["color_perm3"](X)
    for j, p in enumerate([(0, 1, 2), (1, 2, 0), (2, 0, 1)]):
        assert torch.equal(out3[3 + j], X[1, list(p)])


def test_product_is_rotation_major():
    out = TRANSFORMS["rotation_color_perm"](X)
    orders = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    for b, r, c in itertools.product(range(2), range(4), range(6)):
        expected = loop_rotation(X[b, list(orders[c])], r)
        assert torch.equal(out[b * 24 + 6 * r + c], expected)


def test_select_one_transform_per_image():
    t = TRANSFORMS["rotation"]
    out = t.select(X, [3, 1])
    assert torch.equal(out[0], loop_rotation(X[0], 3))
    assert torch.equal(out[1], loop_rotation(X[1], 1))


def test_non_square_rotation_error():
    with pytest.raises(ValueError, match="square images, got 4x6.*rotation2"):
        TRANSFORMS["rotation"](torch.zeros(1, 3, 4, 6))
    assert TRANSFORMS["rotation2"](torch.zeros(1, 3, 4, 6)).shape == (2, 3, 4, 6)


def test_color_perm_needs_three_channels():
    with pytest.raises(ValueError, match="3-channel.*got 1 channel"):
        TRANSFORMS["color_perm"](torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="3-channel"):
        TRANSFORMS["rotation_color_perm"](torch.zeros(2, 1, 28, 28))


def test_unknown_transform_lists_known():
    with pytest.raises(ValueError, match="unknown transform 'rotate'.*color_perm.*rotation"):
        get_transform("rotate")
    with pytest.raises(ValueError, match="unknown transform"):
        expand(X, torch.tensor([0, 1]), "flip")


def test_bad_batches():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        TRANSFORMS["rotation"](torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="identity"):
        Rotation((1, 2))
    with pytest.raises(ValueError, match="identity"):
        ColorPermutation(((1, 0, 2),))


# --- colour permutations of normalised images ------------------------------------------------
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def _norm(x):
    return (x - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)


def _raw_batch():
    # distinct channel means, as in real photos, so a permutation without stats is visibly off
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 3, 5, 5, generator=g)


def _expand_then_normalise(raw, t, y):
    """The reference: transform the raw images, then normalise each copy."""
    xa, yj = expand(raw, y, t)
    return _norm(xa), yj


@pytest.mark.parametrize(
    "build",
    [
        lambda: get_transform("color_perm", stats=(CIFAR_MEAN, CIFAR_STD)),
        lambda: ColorPermutation(mean=CIFAR_MEAN, std=CIFAR_STD),
        lambda: TRANSFORMS["color_perm3"].with_stats(CIFAR_MEAN, CIFAR_STD),
        lambda: get_transform("rotation_color_perm", stats=(CIFAR_MEAN, CIFAR_STD)),
        lambda: TRANSFORMS["rotation_color_perm"].with_stats(torch.tensor(CIFAR_MEAN), torch.tensor(CIFAR_STD)),
    ],
    ids=["get_transform", "ColorPermutation", "with_stats", "product_get_transform", "product_tensor_stats"],
)
def test_color_perm_with_stats_commutes_with_normalisation(build):
    t = build()
    raw, y = _raw_batch(), torch.tensor([0, 2, 1])
    xa, yj = expand(_norm(raw), y, t)  # what the pipelines do: normalise, then expand
    ref, yref = _expand_then_normalise(raw, t.name, y)  # permute the raw channels, then normalise
    torch.testing.assert_close(xa, ref, atol=1e-6, rtol=1e-6)
    assert torch.equal(yj, yref)
    # select() goes through the same apply()
    j = [t.m - 1, 1, 0]
    ref_sel = _norm(TRANSFORMS[t.name].select(raw, j))
    torch.testing.assert_close(t.select(_norm(raw), j), ref_sel, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["color_perm", "rotation_color_perm"])
def test_color_perm_without_stats_leaks_the_permutation(name):
    """Without stats the normalised, permuted channels are off (the check above can fail)."""
    raw, y = _raw_batch(), torch.tensor([0, 2, 1])
    xa, _ = expand(_norm(raw), y, name)
    ref, _ = _expand_then_normalise(raw, name, y)
    assert not torch.allclose(xa, ref, atol=1e-3)
    # the error is the channel-offset leak: up to ~0.2 std on CIFAR statistics
    assert (xa - ref).abs().max() > 0.1


def test_with_stats_returns_new_objects_and_rotation_ignores_stats():
    registered = TRANSFORMS["rotation_color_perm"]
    t = registered.with_stats(CIFAR_MEAN, CIFAR_STD)
    assert t is not registered and t.name == registered.name and t.m == 24
    assert registered.inner.stats is None  # the registry is untouched
    assert t.inner.stats == (CIFAR_MEAN, CIFAR_STD)
    rot = TRANSFORMS["rotation"]
    assert rot.with_stats(CIFAR_MEAN, CIFAR_STD) is rot
    assert get_transform("none", stats=(CIFAR_MEAN, CIFAR_STD)) is TRANSFORMS["none"]
    assert get_transform(t) is t  # a Transform passes through unchanged
    assert "mean=" in repr(t.inner)


def test_stats_errors():
    with pytest.raises(ValueError, match="both mean and std"):
        ColorPermutation(mean=CIFAR_MEAN)
    with pytest.raises(ValueError, match="std must be > 0"):
        ColorPermutation(mean=CIFAR_MEAN, std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="3 values"):
        ColorPermutation(mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="stats must be a pair"):
        get_transform("color_perm", stats=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="reorder the channels"):
        ColorPermutation(((0, 1, 2), (0, 0, 1)))


def test_regimes_accept_a_transform_with_stats():
    from fewshot_sla import DataAugmentation, MultiTask, SLAClassifier
    from fewshot_sla.nets import MLP

    t = get_transform("rotation_color_perm", stats=(CIFAR_MEAN, CIFAR_STD))
    raw = _raw_batch()
    for cls in (SLAClassifier, DataAugmentation, MultiTask):
        model = cls(MLP((3, 5, 5), hidden=8, depth=1), 3, transform=t)
        assert model.transform is t and model.m == 24
        out = model(_norm(raw), torch.tensor([0, 1, 2]))
        assert torch.isfinite(out["loss"])
