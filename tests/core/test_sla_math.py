"""The SLA math against plain loops and hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from fewshot_sla import (
    aggregate_logits,
    expand,
    expand_subset,
    joint_labels,
    joint_to_class_transform,
    self_distillation_loss,
    single_logits,
    sla_loss,
)


def test_joint_labels_exact():
    assert joint_labels(torch.tensor([0, 2, 1]), 4).tolist() == [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7]
    y, j = joint_to_class_transform(torch.tensor([0, 1, 2, 3, 8, 9, 10, 11]), 4)
    assert y.tolist() == [0, 0, 0, 0, 2, 2, 2, 2] and j.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]


def test_expand_layout_against_loop():
    x = torch.randn(3, 3, 5, 5)
    y = torch.tensor([4, 0, 2])
    xa, yj = expand(x, y, "rotation")
    assert xa.shape == (12, 3, 5, 5) and yj.shape == (12,)
    for b in range(3):
        for j in range(4):
            assert torch.equal(xa[b * 4 + j], torch.rot90(x[b], j, dims=(-2, -1)))
            assert yj[b * 4 + j] == y[b] * 4 + j


def loop_aggregate(z, m):
    b, n = z.shape[0] // m, z.shape[1] // m
    out = torch.zeros(b, n)
    for bb in range(b):
        for i in range(n):
            out[bb, i] = sum(z[bb * m + j, i * m + j] for j in range(m)) / m
    return out


@pytest.mark.parametrize("m", [1, 2, 4, 24])
def test_aggregate_and_single_against_loop(m):
    g = torch.Generator().manual_seed(m)
    z = torch.randn(3 * m, 5 * m, generator=g)
    torch.testing.assert_close(aggregate_logits(z, m), loop_aggregate(z, m))
    s = single_logits(z, m)
    assert s.shape == (3, 5)
    for b in range(3):
        for i in range(5):
            assert s[b, i] == z[b * m, i * m]


def test_aggregate_exact_small_value():
    # B=1, N=2, M=2: s[0,0] = (z[0,0] + z[1,1]) / 2, s[0,1] = (z[0,2] + z[1,3]) / 2
    z = torch.tensor([[1.0, 10.0, 3.0, 30.0], [100.0, 5.0, 300.0, 7.0]])
    assert aggregate_logits(z, 2).tolist() == [[3.0, 5.0]]
    assert single_logits(z, 2).tolist() == [[1.0, 3.0]]


def test_aggregate_averages_logits_not_probabilities():
    z = torch.tensor([[4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    s = aggregate_logits(z, 2)
    p_from_logits = F.softmax(s, 1)
    p_avg = (F.softmax(torch.tensor([[4.0, 0.0]]), 1) + F.softmax(torch.tensor([[0.0, 0.0]]), 1)) / 2
    torch.testing.assert_close(p_from_logits, F.softmax(torch.tensor([[2.0, 0.0]]), 1))
    assert not torch.allclose(p_from_logits, p_avg)


def test_shape_mismatch_errors():
    with pytest.raises(ValueError, match="do not match M=4"):
        aggregate_logits(torch.zeros(8, 10), 4)
    with pytest.raises(ValueError, match="do not match M=3"):
        single_logits(torch.zeros(7, 9), 3)
    with pytest.raises(ValueError, match=r"\(B\*M, N\*M\)"):
        aggregate_logits(torch.zeros(4), 2)


def test_sla_loss_m1_is_cross_entropy():
    z = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    xa, yj = expand(torch.zeros(6, 1, 2, 2), y, "none")
    assert torch.equal(yj, y)
    torch.testing.assert_close(sla_loss(z, yj), F.cross_entropy(z, y))


def test_sla_loss_is_mean_ce_over_copies_hand():
    z = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])  # B=1, N=2, M=2
    yj = joint_labels(torch.tensor([0]), 2)  # [0, 1]
    l0 = -math.log(math.exp(2) / (math.exp(2) + 3))
    l1 = -math.log(math.e / (math.e + 3))
    assert sla_loss(z, yj).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_labels_outside_range():
    with pytest.raises(ValueError, match=r"must lie in \[0, 8\), got values in \[0, 9\]"):
        sla_loss(torch.zeros(2, 8), torch.tensor([0, 9]))
    with pytest.raises(ValueError, match=r"\[0, N\)"):
        expand(torch.zeros(2, 3, 4, 4), torch.tensor([-1, 0]), "rotation")


def test_self_distillation_hand_value():
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 1])
    t = 2.0

    def sm(v):
        e = [math.exp(a / t) for a in v]
        return [a / sum(e) for a in e]

    ce = (-math.log(math.e / (math.e + 1)) - math.log(math.exp(2) / (math.exp(2) + 1))) / 2
    kl = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p, q = sm(t_row), sm(s_row)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    expected = ce + t * t * kl / 2
    loss = self_distillation_loss(student, teacher, y, temperature=t)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert teacher.grad is None and student.grad is not None  # the teacher is detached


def test_self_distillation_errors():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        self_distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), temperature=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        self_distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), temperature=-1.0)
    with pytest.raises(ValueError, match=r"both be \(B, N\)"):
        self_distillation_loss(torch.zeros(1, 2), torch.zeros(1, 3), torch.tensor([0]))


def test_expand_subset_keeps_identity_and_is_seeded():
    x = torch.randn(5, 3, 4, 4)
    y = torch.tensor([0, 1, 2, 1, 0])
    xs, yj, j = expand_subset(x, y, "rotation", 2, torch.Generator().manual_seed(3))
    assert xs.shape == (10, 3, 4, 4)
    assert j[0::2].tolist() == [0] * 5 and all(1 <= v < 4 for v in j[1::2].tolist())
    for r in range(10):
        b = r // 2
        assert torch.equal(xs[r], torch.rot90(x[b], int(j[r]), dims=(-2, -1)))
        assert yj[r] == y[b] * 4 + j[r]
    xs2, yj2, j2 = expand_subset(x, y, "rotation", 2, torch.Generator().manual_seed(3))
    assert torch.equal(j, j2) and torch.equal(xs, xs2)
    _, _, jall = expand_subset(x, y, "rotation", 4, torch.Generator().manual_seed(0))
    assert sorted(jall[:4].tolist()) == [0, 1, 2, 3]  # k = M: every transform once
    with pytest.raises(ValueError, match=r"k must be in \[1, M=4\]"):
        expand_subset(x, y, "rotation", 5)


def _kl_rows(teacher, student, k):
    """Mean over rows of KL(softmax(k*teacher) || softmax(k*student)), by hand."""
    total = 0.0
    for t_row, s_row in zip(teacher, student):
        et, es = [math.exp(k * a) for a in t_row], [math.exp(k * a) for a in s_row]
        p, q = [a / sum(et) for a in et], [a / sum(es) for a in es]
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    return total / len(teacher)


def test_self_distillation_scale_hand_value():
    student = [[0.5, -0.2, 0.1], [-0.3, 0.4, 0.0]]
    teacher = [[0.8, -0.1, 0.0], [0.1, 0.6, -0.5]]
    y = torch.tensor([0, 1])
    s, t = 30.0, 2.0
    seen = []

    def crit(z, targets):
        seen.append(z.detach().clone())
        return F.cross_entropy(z, targets)

    ce = F.cross_entropy(torch.tensor(student), y).item()
    expected = ce + t * t * _kl_rows(teacher, student, s / t)
    loss = self_distillation_loss(torch.tensor(student), torch.tensor(teacher), y, t, crit, scale=s)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert torch.equal(seen[0], torch.tensor(student))  # the supervised term sees unscaled logits
    # scale 1 is the plain Eq. (7)
    plain = self_distillation_loss(torch.tensor(student), torch.tensor(teacher), y, t)
    assert plain.item() == pytest.approx(ce + t * t * _kl_rows(teacher, student, 1 / t), rel=1e-6)
    with pytest.raises(ValueError, match="scale must be > 0"):
        self_distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), scale=0.0)


class _CosineLinear(torch.nn.Module):
    """A NormedLinear-style head: cosine of the feature and each class weight, in [-1, 1]."""

    def __init__(self, d, n, generator):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(n, d, generator=generator))

    def forward(self, f):
        return F.normalize(f, dim=1) @ F.normalize(self.weight, dim=1).t()


def _grad_norm(loss_fn, logits):
    z = logits.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(z), z)
    return g.norm().item()


def test_distill_scale_balances_kd_against_scaled_ce_for_cosine_heads():
    """With cosine logits (LDAM's s=30 inside its CE), distilling unscaled cosines gives the KD term
    a negligible gradient; distilling at the same scale puts it on the CE term's order."""
    g = torch.Generator().manual_seed(0)
    n, d, b, s_ldam = 10, 32, 64, 30.0
    head = _CosineLinear(d, n, g)
    y = torch.arange(b) % n
    w = F.normalize(head.weight.detach(), dim=1)
    with torch.no_grad():
        # a trained-looking teacher: features close to their class weight (clear argmax) ...
        teacher = head(w[y] + 0.25 * torch.randn(b, d, generator=g))
        # ... and a student that is still learning
        student = head(w[y] + 0.6 * torch.randn(b, d, generator=g))
    assert (teacher.argmax(1) == y).float().mean() > 0.9

    def ce_term(z):  # LDAM's cross-entropy without the margin: the scale is what matters here
        return F.cross_entropy(s_ldam * z, y)

    def kd_term(scale):
        return lambda z: self_distillation_loss(z, teacher, y, 1.0, lambda *_: z.sum() * 0, scale=scale)

    ce = _grad_norm(ce_term, student)
    kd30, kd1 = _grad_norm(kd_term(30.0), student), _grad_norm(kd_term(1.0), student)
    assert ce / 10 < kd30 < ce * 10, (ce, kd30)
    assert kd1 < ce / 50, (ce, kd1)
