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
