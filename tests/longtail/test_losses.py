"""longtail.losses: every loss against a hand computation, DRW weights, SLA composition, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from fewshot_sla import SLAClassifier, joint_labels
from longtail.losses import (
    LOSSES,
    NormedLinear,
    cb_weights,
    drw_weights,
    head_for,
    ldam_margins,
    make_loss,
)

COUNTS = [5000, 500, 50]


def _logits(b=6, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g, dtype=torch.float64), torch.randint(0, c, (b,), generator=g)


def _ce_loop(z, y, w=None):
    """Weighted mean of -log softmax, by hand (PyTorch's weighted mean divides by the targets' weights)."""
    num = den = 0.0
    for i in range(len(y)):
        row = z[i].tolist()
        lse = math.log(sum(math.exp(v) for v in row))
        wi = 1.0 if w is None else float(w[y[i]])
        num += wi * (lse - row[int(y[i])])
        den += wi
    return num / den


def test_ce_and_weighted_ce():
    z, y = _logits()
    assert make_loss("ce", COUNTS)(z, y).item() == pytest.approx(_ce_loop(z, y))
    w = torch.tensor([0.2, 1.0, 3.0])
    assert make_loss("ce", COUNTS, weight=w)(z, y).item() == pytest.approx(_ce_loop(z, y, w))


def test_focal_by_hand_and_gamma_zero_is_ce():
    z, y = _logits()
    assert make_loss("focal", COUNTS, gamma=0.0)(z, y).item() == pytest.approx(_ce_loop(z, y))
    for gamma in (1.0, 2.0):
        expect = 0.0
        for i in range(len(y)):
            p = torch.softmax(z[i], 0)[y[i]].item()
            expect += (1 - p) ** gamma * -math.log(p)
        assert make_loss("focal", COUNTS, gamma=gamma)(z, y).item() == pytest.approx(expect / len(y))
    assert make_loss("focal", COUNTS).gamma == 1.0  # LDAM-DRW's focal baseline
    w = torch.tensor([0.5, 2.0, 4.0])
    loss = make_loss("focal", COUNTS, gamma=0.0, weight=w)
    expect = sum(float(w[y[i]]) * (torch.logsumexp(z[i], 0) - z[i, y[i]]).item() for i in range(len(y))) / len(y)
    assert loss(z, y).item() == pytest.approx(expect)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        make_loss("focal", COUNTS, gamma=-1)


def test_cb_weights_known_counts():
    beta = 0.9999
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    expect = [r / sum(raw) * 3 for r in raw]
    w = cb_weights(COUNTS, beta)
    np.testing.assert_allclose(w.numpy(), expect, rtol=1e-6)
    assert w.sum().item() == pytest.approx(3.0)
    # CIFAR-10-LT-100 weights, rarest class heaviest; beta = 0 (DRW before its epoch) gives ones.
    w10 = drw_weights([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
    assert w10.sum().item() == pytest.approx(10.0, rel=1e-6) and torch.all(w10[1:] > w10[:-1])
    assert torch.equal(cb_weights(COUNTS, 0.0), torch.ones(3))
    z, y = _logits()
    assert make_loss("cb", COUNTS)(z, y).item() == pytest.approx(_ce_loop(z, y, expect))
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 1\)"):
        cb_weights(COUNTS, 1.0)


def test_ldam_margins_exact_and_loss():
    m = ldam_margins(COUNTS)
    # n^-1/4: 5000 -> 0.11892, 500 -> 0.21147, 50 -> 0.37606; scaled so the max is 0.5.
    expect = [0.5 * (n / 50) ** -0.25 for n in COUNTS]
    np.testing.assert_allclose(m.numpy(), expect, rtol=1e-6)
    np.testing.assert_allclose(m.numpy(), [0.158114, 0.281171, 0.5], atol=1e-6)
    z, y = _logits()
    z = torch.tanh(z)  # cosine-like logits
    adj = z.clone()
    for i in range(len(y)):
        adj[i, y[i]] -= expect[int(y[i])]
    loss = make_loss("ldam", COUNTS)
    assert loss.s == 30 and loss.max_m == 0.5
    assert loss(z, y).item() == pytest.approx(_ce_loop(30 * adj, y), rel=1e-5)
    assert make_loss("ldam", COUNTS, max_m=0.3, s=10)(z, y).item() == pytest.approx(
        _ce_loop(10 * (z - torch.nn.functional.one_hot(y, 3) * torch.tensor(expect, dtype=z.dtype)[y, None] * 0.6), y),
        rel=1e-5,
    )


def test_balanced_softmax_and_logit_adjusted_shifts():
    z, y = _logits()
    log_n = torch.log(torch.tensor(COUNTS, dtype=torch.float64))
    assert make_loss("balanced-softmax", COUNTS)(z, y).item() == pytest.approx(_ce_loop(z + log_n, y), rel=1e-6)
    log_prior = log_n - math.log(sum(COUNTS))
    for tau in (1.0, 0.5):
        got = make_loss("logit-adjusted", COUNTS, tau=tau)(z, y).item()
        assert got == pytest.approx(_ce_loop(z + tau * log_prior, y), rel=1e-6)
    # tau = 1: the prior differs from log n by a constant, so the two losses coincide.
    assert make_loss("logit-adjusted", COUNTS)(z, y).item() == pytest.approx(
        make_loss("balanced-softmax", COUNTS)(z, y).item(), rel=1e-6
    )


@pytest.mark.parametrize("name", list(LOSSES))
def test_set_weight_drw_switch(name):
    z, y = _logits(b=12)
    loss = make_loss(name, COUNTS)
    before = loss(z, y).item()
    loss.set_weight(drw_weights(COUNTS))
    after = loss(z, y).item()
    if name == "cb":  # its built-in weights are the DRW weights already
        assert after == pytest.approx(before)
    else:
        assert np.isfinite(after) and after != pytest.approx(before)
    loss.set_weight(torch.ones(3))
    plain = make_loss(name, COUNTS, **({"weight": torch.ones(3)}))
    assert loss(z, y).item() == pytest.approx(plain(z, y).item())
    with pytest.raises(ValueError, match=r"weight must have 3 entries, got shape \(4,\)"):
        loss.set_weight(torch.ones(4))


@pytest.mark.parametrize("name", list(LOSSES))
def test_sla_composition_uses_joint_counts(name):
    m = 4
    joint = np.repeat(COUNTS, m)
    z, y = _logits(b=8, c=3 * m, seed=1)
    a = make_loss(name, COUNTS, m=m)
    b = make_loss(name, joint)  # the same loss built directly on the N*M joint counts
    assert a(z, y).item() == pytest.approx(b(z, y).item(), rel=1e-6)
    assert torch.equal(a.counts, torch.tensor(joint, dtype=torch.float32))
    # (N,) weights are repeated over the M transforms.
    a.set_weight(drw_weights(COUNTS))
    b.set_weight(drw_weights(COUNTS).repeat_interleave(m))
    assert a(z, y).item() == pytest.approx(b(z, y).item(), rel=1e-6)


def test_ldam_joint_margins_follow_class():
    loss = make_loss("ldam", COUNTS, m=4)
    np.testing.assert_allclose(loss.margins.view(3, 4).numpy(), ldam_margins(COUNTS).view(3, 1).expand(3, 4).numpy())


def test_errors():
    with pytest.raises(
        ValueError,
        match=r"unknown loss 'lda'; choose one of \['ce', 'focal', 'cb', 'ldam', 'balanced-softmax', 'logit-adj",
    ):
        make_loss("lda", COUNTS)
    loss = make_loss("ce", [10] * 10, m=4)
    with pytest.raises(
        ValueError, match=r"loss built for 10 classes \(x M=4 = 40 joint classes\) but logits have 12 columns"
    ):
        loss(torch.randn(2, 12), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"loss built for 3 classes but logits have 4 columns"):
        make_loss("ldam", COUNTS)(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\)"):
        make_loss("ce", COUNTS)(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] have 0 training images"):
        make_loss("balanced-softmax", [5, 0, 2])
    with pytest.raises(ValueError, match="bad keyword argument for loss 'ce'"):
        make_loss("ce", COUNTS, gamma=2)
    with pytest.raises(ValueError, match="positive integer"):
        make_loss("ce", COUNTS, m=0)


def test_normed_linear_and_head_for():
    head = NormedLinear(16, 5)
    x = torch.randn(7, 16)
    out = head(x)
    assert out.shape == (7, 5) and out.abs().max() <= 1 + 1e-6
    expect = torch.stack(
        [torch.stack([torch.cosine_similarity(x[i], head.weight[j], 0) for j in range(5)]) for i in range(7)]
    )
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(head(3 * x), out)  # scale invariant
    assert head_for("ldam") is NormedLinear
    assert all(head_for(n) is nn.Linear for n in LOSSES if n != "ldam")
    with pytest.raises(ValueError, match="unknown loss"):
        head_for("nope")


def test_with_sla_classifier_end_to_end():
    """An SLA joint head with an LDAM criterion built on joint counts: one training step runs and learns."""

    class Flat(nn.Module):
        out_dim = 3 * 8 * 8

        def forward(self, x):
            return x.flatten(1)

    torch.manual_seed(0)
    model = SLAClassifier(
        Flat(), 3, transform="rotation", criterion=make_loss("ldam", COUNTS, m=4), head=head_for("ldam")
    )
    assert isinstance(model.joint_head, NormedLinear)
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    out = model(x, y)
    assert out["joint_logits"].shape == (24, 12) and torch.equal(out["y_joint"], joint_labels(y, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    first = out["loss"].item()
    for _ in range(20):
        opt.zero_grad()
        loss = model(x, y)["loss"]
        loss.backward()
        opt.step()
    assert loss.item() < first
