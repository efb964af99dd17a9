"""random_crop_flip against a per-image loop (any channel count, with and without flips)."""

import pytest
import torch
import torch.nn.functional as F

from fewshot_sla.augment import random_crop_flip


def _loop(x, seed, pad, flip):
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    coins = torch.rand(b, generator=g) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    out = []
    for i in range(b):
        img = F.pad(x[i], (pad, pad, pad, pad))[:, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out.append(img.flip(-1) if coins[i] else img)
    return torch.stack(out), coins


@pytest.mark.parametrize("channels, pad, flip", [(1, 2, False), (3, 8, True), (2, 0, True)])
def test_random_crop_flip_matches_loop(channels, pad, flip):
    x = torch.randint(0, 256, (32, channels, 10, 7), dtype=torch.uint8)
    out = random_crop_flip(x, torch.Generator().manual_seed(3), pad, flip)
    ref, coins = _loop(x, 3, pad, flip)
    assert out.dtype == torch.uint8 and torch.equal(out, ref)
    assert coins.any() == flip
    if pad == 0 and not flip:
        assert torch.equal(out, x)


def test_random_crop_flip_errors():
    with pytest.raises(ValueError, match=r"uint8 tensor \(B, C, H, W\).*torch.float32"):
        random_crop_flip(torch.zeros(1, 1, 4, 4), torch.Generator())
    with pytest.raises(TypeError, match="torch.Generator"):
        random_crop_flip(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="padding must be >= 0"):
        random_crop_flip(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), torch.Generator(), -1)
