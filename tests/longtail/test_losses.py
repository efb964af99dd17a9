"""longtail.losses: every loss against a hand computation, the DRW schedule, state_dicts, SLA composition, errors."""

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
    vs_adjustments,
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
def test_drw_switches_at_its_epoch(name):
    z, y = _logits(b=12)
    loss = make_loss(name, COUNTS, drw_epoch=3)
    weighted = make_loss(name, COUNTS, weight=drw_weights(COUNTS))  # what DRW should switch to
    before = make_loss(name, COUNTS)(z, y).item()
    for e in [0, 2, 3, 10, 2, 3]:  # back and forth: the weight is a function of the epoch only
        loss.set_epoch(e)
        assert loss.drw_on == (e >= 3)
        assert loss(z, y).item() == pytest.approx(weighted(z, y).item() if e >= 3 else before)
    if name == "cb":  # its own weights are the DRW weights already
        assert weighted(z, y).item() == pytest.approx(before)
    else:
        assert np.isfinite(before) and weighted(z, y).item() != pytest.approx(before)
    with pytest.raises(ValueError, match=r"weight must have 3 entries, got shape \(4,\)"):
        make_loss(name, COUNTS, weight=torch.ones(4))


@pytest.mark.parametrize("name", list(LOSSES))
def test_sla_composition_uses_joint_counts(name):
    m = 4
    joint = np.repeat(COUNTS, m)
    z, y = _logits(b=8, c=3 * m, seed=1)
    a = make_loss(name, COUNTS, m=m)
    b = make_loss(name, joint)  # the same loss built directly on the N*M joint counts
    assert a(z, y).item() == pytest.approx(b(z, y).item(), rel=1e-6)
    assert torch.equal(a.counts, torch.tensor(joint, dtype=torch.float32))
    # DRW on the joint head: the (N,) DRW weights repeated over the M transforms, i.e. those of the joint counts.
    a = make_loss(name, COUNTS, m=m, drw_epoch=1)
    b = make_loss(name, joint, weight=drw_weights(joint))
    a.set_epoch(1)
    torch.testing.assert_close(a.weight, drw_weights(COUNTS).repeat_interleave(m))
    torch.testing.assert_close(a.weight, drw_weights(joint))
    assert a(z, y).item() == pytest.approx(b(z, y).item(), rel=1e-6)
    # A user's (N,) weight is repeated too.
    w = torch.tensor([0.5, 1.0, 2.0])
    c = make_loss(name, COUNTS, m=m, weight=w)
    assert torch.equal(c.weight, w.repeat_interleave(m))
    assert c(z, y).item() == pytest.approx(make_loss(name, joint, weight=w.repeat_interleave(m))(z, y).item())


@pytest.mark.parametrize("m", [1, 2])
def test_cb_weights_in_effect_every_epoch_with_and_without_drw(m):
    z, y = _logits(b=10, c=3 * m, seed=2)
    expect_w = cb_weights(COUNTS).repeat_interleave(m)
    expect = _ce_loop(z, y, expect_w)
    for drw_epoch in (None, 4):
        loss = make_loss("cb", COUNTS, m, drw_epoch=drw_epoch)
        for e in [0, 1, 3, 4, 5, 170, 0]:
            loss.set_epoch(e)
            torch.testing.assert_close(loss.weight, expect_w)
            assert loss(z, y).item() == pytest.approx(expect, rel=1e-6), (drw_epoch, e)
    # DRW with its own beta replaces the CB weights from its epoch on (and only then).
    loss = make_loss("cb", COUNTS, m, drw_epoch=4, drw_beta=0.999)
    loss.set_epoch(3)
    assert loss(z, y).item() == pytest.approx(expect, rel=1e-6)
    loss.set_epoch(4)
    assert loss(z, y).item() == pytest.approx(_ce_loop(z, y, cb_weights(COUNTS, 0.999).repeat_interleave(m)), rel=1e-6)


def test_ce_weight_schedule():
    z, y = _logits(b=10)
    plain = make_loss("ce", COUNTS)
    for e in (0, 5, 200):
        plain.set_epoch(e)
        assert plain.weight is None and plain(z, y).item() == pytest.approx(_ce_loop(z, y))
    drw = make_loss("ce", COUNTS, drw_epoch=160)
    for e in (0, 159):
        drw.set_epoch(e)
        assert drw.weight is None and drw(z, y).item() == pytest.approx(_ce_loop(z, y))
    for e in (160, 199):
        drw.set_epoch(e)
        torch.testing.assert_close(drw.weight, drw_weights(COUNTS))
        assert drw(z, y).item() == pytest.approx(_ce_loop(z, y, drw_weights(COUNTS)), rel=1e-6)
    # a user weight is the base: in effect before the DRW epoch, replaced from it on
    w = torch.tensor([0.2, 1.0, 3.0])
    mixed = make_loss("ce", COUNTS, drw_epoch=2, weight=w)
    mixed.set_epoch(1)
    assert mixed(z, y).item() == pytest.approx(_ce_loop(z, y, w))
    mixed.set_epoch(2)
    assert mixed(z, y).item() == pytest.approx(_ce_loop(z, y, drw_weights(COUNTS)), rel=1e-6)


@pytest.mark.parametrize("name", list(LOSSES))
def test_state_dict_independent_of_drw_phase(name):
    loss = make_loss(name, COUNTS, m=2, drw_epoch=160)
    loss.set_epoch(0)
    pre = loss.state_dict()
    loss.set_epoch(170)
    post = loss.state_dict()
    assert list(pre) == list(post)
    assert all(torch.equal(pre[k], post[k]) for k in pre)
    fresh = make_loss(name, COUNTS, m=2, drw_epoch=160)
    fresh.load_state_dict(post, strict=True)  # the old design failed here: "Unexpected key(s): ...weight"
    z, y = _logits(b=12, c=6, seed=3)
    fresh.set_epoch(170)
    assert fresh(z, y).item() == pytest.approx(loss(z, y).item(), rel=1e-7)
    assert fresh.drw_on and fresh.weight is not None


def test_resume_inside_a_model_checkpoint():
    """A post-DRW SLA checkpoint (criterion inside the model) loads strictly into a fresh model."""

    class Flat(nn.Module):
        out_dim = 3 * 4 * 4

        def forward(self, x):
            return x.flatten(1)

    def build():
        torch.manual_seed(0)
        crit = make_loss("ldam", COUNTS, m=4, drw_epoch=160)
        return SLAClassifier(Flat(), 3, transform="rotation", criterion=crit, head=head_for("ldam"))

    model = build()
    model.criterion.set_epoch(170)
    sd = model.state_dict()
    assert not any(k.startswith("criterion.") for k in sd)
    other = build()
    other.load_state_dict(sd, strict=True)
    other.criterion.set_epoch(170)
    x, y = torch.randn(4, 3, 4, 4), torch.tensor([0, 1, 2, 0])
    assert other(x, y)["loss"].item() == pytest.approx(model(x, y)["loss"].item(), rel=1e-6)


def test_legacy_state_dict_keys_are_dropped_but_counts_checked():
    """Checkpoints from before the buffers became non-persistent still load; a mismatched one is refused."""
    loss = make_loss("ldam", COUNTS, m=2, drw_epoch=1)
    old = {
        "counts": torch.tensor(np.repeat(COUNTS, 2), dtype=torch.float32),
        "weight": drw_weights(COUNTS).repeat_interleave(2),
        "margins": ldam_margins(np.repeat(COUNTS, 2)),
    }
    loss.load_state_dict(old, strict=True)
    bad = dict(old, counts=torch.ones(6))
    with pytest.raises(RuntimeError, match="build the loss with the checkpoint's training counts"):
        loss.load_state_dict(bad, strict=True)


def test_buffers_follow_to():
    loss = make_loss("vs", COUNTS, m=2, drw_epoch=0, weight=torch.ones(3)).double()
    loss.set_epoch(0)
    for t in (loss.counts, loss.base_weight, loss.drw_weight, loss.scales, loss.offsets, loss.weight):
        assert t.dtype == torch.float64
    meta = make_loss("ldam", COUNTS, drw_epoch=0).to("meta")
    assert meta.counts.is_meta and meta.margins.is_meta and meta.drw_weight.is_meta


def test_logit_scale():
    assert make_loss("ldam", COUNTS).logit_scale == 30.0
    assert make_loss("ldam", COUNTS, s=10).logit_scale == 10.0
    for name in LOSSES:
        if name != "ldam":
            assert make_loss(name, COUNTS, m=2).logit_scale == 1.0


def test_vs_by_hand():
    counts = [100, 25, 4]  # N = 129, n_max = 100
    gamma, tau = 0.5, 1.0
    delta = [1.0, 0.5, 0.2]  # (n / 100) ** 0.5
    iota = [math.log(100 / 129), math.log(25 / 129), math.log(4 / 129)]  # tau * log pi
    d, i = vs_adjustments(counts, gamma, tau)
    np.testing.assert_allclose(d.numpy(), delta, rtol=1e-6)
    np.testing.assert_allclose(i.numpy(), iota, rtol=1e-6)
    z = torch.tensor([[1.0, 2.0, -1.0], [0.5, -0.5, 0.25]], dtype=torch.float64)
    y = torch.tensor([2, 0])
    adj = [[z[r, c].item() * delta[c] + iota[c] for c in range(3)] for r in range(2)]
    # row 0: [0.745358, -0.640937, -3.673518], target 2 -> 4.651611; row 1: target 0 -> 0.134178
    expect = _ce_loop(torch.tensor(adj, dtype=torch.float64), y)
    assert expect == pytest.approx(2.3928948958, rel=1e-9)
    loss = make_loss("vs", counts, gamma=gamma, tau=tau)
    assert loss(z, y).item() == pytest.approx(expect, rel=1e-6)
    # m = 2: joint counts [100, 100, 25, 25, 4, 4]; Delta repeats per class, log pi shifts by -log 2 everywhere.
    zj = torch.tensor([[1.0, 0.0, 2.0, -1.0, -1.0, 0.5], [0.5, 0.1, -0.5, 0.3, 0.25, -0.2]], dtype=torch.float64)
    yj = torch.tensor([5, 2])
    dj = [1.0, 1.0, 0.5, 0.5, 0.2, 0.2]
    ij = [math.log(n / 258) for n in (100, 100, 25, 25, 4, 4)]
    adj2 = [[zj[r, c].item() * dj[c] + ij[c] for c in range(6)] for r in range(2)]
    expect2 = _ce_loop(torch.tensor(adj2, dtype=torch.float64), yj)
    assert expect2 == pytest.approx(3.7433911503, rel=1e-9)
    lossj = make_loss("vs", counts, m=2, gamma=gamma, tau=tau)
    assert lossj(zj, yj).item() == pytest.approx(expect2, rel=1e-6)
    np.testing.assert_allclose(lossj.scales.numpy(), dj, rtol=1e-6)


def test_vs_special_cases_and_defaults():
    z, y = _logits(b=12)
    assert make_loss("vs", COUNTS, gamma=0.0, tau=0.0)(z, y).item() == pytest.approx(_ce_loop(z, y), rel=1e-6)
    for tau in (0.5, 1.0):  # gamma = 0: the logit-adjusted loss
        assert make_loss("vs", COUNTS, gamma=0.0, tau=tau)(z, y).item() == pytest.approx(
            make_loss("logit-adjusted", COUNTS, tau=tau)(z, y).item(), rel=1e-6
        )
    loss = make_loss("vs", COUNTS)
    assert (loss.gamma, loss.tau) == (0.2, 1.2)  # the authors' CIFAR-10-LT-100 command
    assert head_for("vs") is nn.Linear
    with pytest.raises(ValueError, match="finite gamma >= 0"):
        make_loss("vs", COUNTS, gamma=-0.1)


def test_set_epoch_and_drw_epoch_errors():
    with pytest.raises(ValueError, match="drw_epoch must be a 0-based epoch"):
        make_loss("ce", COUNTS, drw_epoch=-1)
    with pytest.raises(ValueError, match="epoch must be a 0-based integer"):
        make_loss("ce", COUNTS).set_epoch(1.5)
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 1\)"):
        make_loss("ce", COUNTS, drw_epoch=5, drw_beta=1.0)
    with pytest.raises(AttributeError, match=r"make_loss\(\.\.\., drw_epoch=E\) and call loss.set_epoch"):
        make_loss("ce", COUNTS).set_weight(None)


def test_ldam_joint_margins_follow_class():
    loss = make_loss("ldam", COUNTS, m=4)
    np.testing.assert_allclose(loss.margins.view(3, 4).numpy(), ldam_margins(COUNTS).view(3, 1).expand(3, 4).numpy())


def test_errors():
    with pytest.raises(
        ValueError,
        match=r"unknown loss 'lda'; choose one of "
        r"\['ce', 'focal', 'cb', 'ldam', 'balanced-softmax', 'logit-adjusted', 'vs'\]",
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
