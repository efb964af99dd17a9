"""The MAML family on ``torch.func`` against learn2learn 0.2.0's ``MAML`` / ``MetaSGD`` (clone, adapt) on fixed
episodes: the same query loss and the same outer gradient for every parameter (Meta-SGD: the learned rates' too),
Conv4 with transductive BatchNorm, with and without SLA, two inner steps.

Tolerance: ``TOL`` below (absolute and relative 1e-6). On the CPU with torch 2.14.1 the two agree to the bit
(max |difference| 0.0); the tolerance only leaves room for another summation order in other builds.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from episodes import Conv4, SLAEpisode
from episodes.maml import ALGORITHMS, MAMLLearner

l2l = pytest.importorskip("learn2learn")
pytestmark = pytest.mark.l2l

TOL = {"atol": 1e-6, "rtol": 1e-6}
WAYS, SHOTS, QUERIES, STEPS, INNER_LR = 5, 1, 3, 2, 0.4


def fixed_episode(transform: str, seed: int = 0):
    """A 5-way 1-shot episode of 28x28 images (expanded by SLA unless ``transform == "none"``)."""
    g = torch.Generator().manual_seed(seed)
    sx, qx = torch.rand(WAYS * SHOTS, 1, 28, 28, generator=g), torch.rand(WAYS * QUERIES, 1, 28, 28, generator=g)
    sy, qy = torch.arange(WAYS).repeat_interleave(SHOTS), torch.arange(WAYS).repeat_interleave(QUERIES)
    sla = SLAEpisode(transform)
    return (*sla.expand(sx, sy, qx, qy), sla.ways_joint(WAYS))


def learn2learn_query_loss(ours: MAMLLearner, sx, sy, qx, qy):
    """The reference: learn2learn wrapped around deep copies of ``ours``' networks, as this project used it
    before (``allow_unused``/``allow_nograd`` for MAML); returns ``(query loss, {state_dict key: parameter})``."""
    net = copy.deepcopy(ours.learner.module)
    features = copy.deepcopy(ours.features)
    if ours.algorithm == "metasgd":
        lrs = copy.deepcopy(ours.learner.lrs)
        learner = l2l.algorithms.MetaSGD(net, lr=INNER_LR, first_order=ours.first_order, lrs=lrs)
    else:
        learner = l2l.algorithms.MAML(net, lr=INNER_LR, first_order=ours.first_order, allow_unused=True,
                                      allow_nograd=True)
    clone = learner.clone()
    inputs = sx if features is None else features(sx)
    for _ in range(STEPS):
        clone.adapt(F.cross_entropy(clone(inputs), sy))
    loss = F.cross_entropy(clone(qx if features is None else features(qx)), qy)
    params = {} if features is None else {f"features.{k}": p for k, p in features.named_parameters()}
    params.update({f"learner.{k}": p for k, p in learner.named_parameters()})
    return loss, params


@pytest.mark.parametrize("transform", ["none", "rotation"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_query_loss_and_outer_gradients_equal_learn2learns(algorithm, transform):
    sx, sy, qx, qy, ways = fixed_episode(transform)
    torch.manual_seed(0)
    ours = MAMLLearner(Conv4(1, 28), ways, algorithm, inner_lr=INNER_LR, inner_steps=STEPS)
    assert all(m.running_mean is None for m in ours.encoder.modules() if isinstance(m, nn.BatchNorm2d))  # transductive
    if algorithm == "metasgd":  # distinct learned rates, so that a mix-up of their order would show
        with torch.no_grad():
            for r in ours.learner.lrs:
                r.uniform_(0.2, 0.6, generator=torch.Generator().manual_seed(r.numel()))
    ref_loss, ref_params = learn2learn_query_loss(ours, sx, sy, qx, qy)
    loss = F.cross_entropy(ours(sx, sy, qx, ways), qy)
    torch.testing.assert_close(loss, ref_loss, **TOL)

    params = dict(ours.named_parameters())
    assert list(params) == list(ref_params)  # same names: learn2learn-era checkpoints load
    grads = torch.autograd.grad(loss, list(params.values()))
    ref_grads = torch.autograd.grad(ref_loss, list(ref_params.values()))
    for name, g, r in zip(params, grads, ref_grads):
        torch.testing.assert_close(g, r, **TOL, msg=lambda m, name=name: f"{name}: {m}")
    if algorithm == "metasgd":
        assert any(n.startswith("learner.lrs.") for n in params)


def test_first_and_second_order_differ_as_in_learn2learn():
    """A check that the parity test can fail: FOMAML's outer gradient is not MAML's (reference: learn2learn's)."""
    sx, sy, qx, qy, ways = fixed_episode("none")
    torch.manual_seed(0)
    maml = MAMLLearner(Conv4(1, 28), ways, "maml", inner_lr=INNER_LR, inner_steps=STEPS)
    fomaml = MAMLLearner(Conv4(1, 28), ways, "fomaml", inner_lr=INNER_LR, inner_steps=STEPS)
    fomaml.load_state_dict(maml.state_dict())
    ref_loss, ref_params = learn2learn_query_loss(maml, sx, sy, qx, qy)
    ref = torch.autograd.grad(ref_loss, list(ref_params.values()))
    got = torch.autograd.grad(F.cross_entropy(fomaml(sx, sy, qx), qy), list(fomaml.parameters()))
    assert max((g - r).abs().max().item() for g, r in zip(got, ref)) > 1e-4


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_evaluation_logits_equal_learn2learns(algorithm):
    """Evaluation (eval mode, no_grad, 3 test steps, first order) gives learn2learn's first-order logits."""
    sx, sy, qx, _, ways = fixed_episode("rotation", seed=1)
    torch.manual_seed(1)
    ours = MAMLLearner(Conv4(1, 28), ways, algorithm, inner_lr=INNER_LR, inner_steps=1, test_inner_steps=3).eval()
    net, features = copy.deepcopy(ours.learner.module), copy.deepcopy(ours.features)
    if algorithm == "metasgd":
        clone = l2l.algorithms.MetaSGD(net, first_order=True, lrs=copy.deepcopy(ours.learner.lrs)).clone()
    else:
        clone = l2l.algorithms.MAML(net, lr=INNER_LR, first_order=True, allow_unused=True, allow_nograd=True).clone()
    inputs = sx if features is None else features(sx)
    for _ in range(3):
        clone.adapt(F.cross_entropy(clone(inputs), sy))
    with torch.no_grad():
        want = clone(qx if features is None else features(qx))
        got = ours(sx, sy, qx)
    assert not got.requires_grad
    torch.testing.assert_close(got, want, **TOL)
