"""R2D2's ridge head against the primal closed form and a per-class loop; ResNet-12 shapes; the
gradient-based learners (MAML, FOMAML, Meta-SGD, ANIL) adapt, with and without SLA, and match
hand-computed inner updates and outer gradients on a linear model."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from episodes import Conv4, ProtoNet, SLAEpisode
from episodes.backbones import BACKBONES, ResNet12, make_backbone
from episodes.maml import ALGORITHMS, MAMLLearner
from episodes.r2d2 import R2D2, ridge_head


def mlp(in_dim: int, hidden: int = 16) -> nn.Sequential:
    net = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, hidden), nn.ReLU())
    net.out_dim = hidden  # type: ignore[assignment]
    return net


def toy_episode(ways=3, shots=5, queries=5, side=4, seed=0):
    """Gaussian clusters as ``(B, 1, side, side)`` images: support, support labels, query, query labels."""
    g = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(ways, side * side, generator=g)

    def draw(k):
        y = torch.arange(ways).repeat_interleave(k)
        x = centers[y] + 0.5 * torch.randn(ways * k, side * side, generator=g)
        return x.view(-1, 1, side, side), y

    return (*draw(shots), *draw(queries))


# --- R2D2 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("s,d", [(10, 20), (30, 5)])
def test_ridge_head_equals_primal_closed_form(s, d):
    g = torch.Generator().manual_seed(0)
    x, xq = torch.randn(s, d, generator=g, dtype=torch.float64), torch.randn(7, d, generator=g, dtype=torch.float64)
    y = torch.arange(s) % 4
    lam = 0.7
    onehot = F.one_hot(y, 4).double()
    w_primal = torch.linalg.solve(x.T @ x + lam * torch.eye(d, dtype=torch.float64), x.T @ onehot)  # (D, N)
    torch.testing.assert_close(ridge_head(x, y, xq, 4, lam), xq @ w_primal)


def test_ridge_head_against_per_class_loop_and_batched():
    g = torch.Generator().manual_seed(1)
    x, xq = (
        torch.randn(3, 6, 12, generator=g, dtype=torch.float64),
        torch.randn(3, 5, 12, generator=g, dtype=torch.float64),
    )
    y = torch.tensor([[0, 0, 1, 1, 2, 2], [2, 1, 0, 2, 1, 0], [0, 1, 2, 0, 1, 2]])
    lam = torch.tensor(2.0, dtype=torch.float64)
    out = ridge_head(x, y, xq, 3, lam)
    assert out.shape == (3, 5, 3)
    for b in range(3):
        gram = x[b] @ x[b].T + lam * torch.eye(6, dtype=torch.float64)
        for c in range(3):
            w_c = x[b].T @ torch.linalg.solve(gram, (y[b] == c).double())  # (D,)
            torch.testing.assert_close(out[b, :, c], xq[b] @ w_c)


def test_ridge_head_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="disagree"):
        ridge_head(torch.randn(4, 3), torch.zeros(5, dtype=torch.long), torch.randn(2, 3), 2, 1.0)


def test_r2d2_shape_and_gradients():
    torch.manual_seed(0)
    sx, sy, qx, qy = toy_episode()
    model = R2D2(mlp(16), init_lambda=1.0, init_scale=2.0)
    z = model(sx, sy, qx)  # ways inferred
    assert z.shape == (15, 3)
    torch.testing.assert_close(model.lam, torch.tensor(1.0))
    F.cross_entropy(z, qy).backward()
    for p in [*model.encoder.parameters(), model.log_lambda, model.log_alpha, model.beta]:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_r2d2_with_sla_and_same_signature_as_protonet():
    sx, sy, qx, qy = toy_episode(side=6)
    sla = SLAEpisode("rotation")
    sx, sy, qx, qy = sla.expand(sx, sy, qx, qy)
    for model in (R2D2(mlp(36)), ProtoNet(mlp(36))):
        z = model(sx, sy, qx, ways=sla.ways_joint(3))
        assert z.shape == (15 * 4, 12) and sla.aggregate(z).shape == (15, 3)


@pytest.mark.parametrize("learner", [ProtoNet, R2D2])
def test_head_from_features_is_the_forward_after_the_encoder(learner):
    """``learner(sx, sy, qx, ways) == head_from_features(encoder(sx), sy, encoder(qx), ways)`` (what
    episodes.evaluate relies on), gradients included; ``ways`` inferred as in forward."""
    torch.manual_seed(0)
    sx, sy, qx, _ = toy_episode()
    model = learner(mlp(16)) if learner is ProtoNet else learner(mlp(16), init_lambda=0.3, init_bias=0.2)
    z = model(sx, sy, qx, ways=4)
    h = model.head_from_features(model.encoder(sx), sy, model.encoder(qx), ways=4)
    assert z.shape == h.shape == (15, 4)
    torch.testing.assert_close(z, h)
    torch.testing.assert_close(model(sx, sy, qx), model.head_from_features(model.encoder(sx), sy, model.encoder(qx)))
    h.sum().backward()
    assert all(p.grad is not None for p in model.encoder.parameters())


# --- backbones -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [28, 32, 84])
@pytest.mark.parametrize("channels", [1, 3])
def test_resnet12_output_is_640_for_any_size(size, channels):
    net = ResNet12(channels).eval()
    with torch.no_grad():
        assert net(torch.randn(2, channels, size, size)).shape == (2, 640)
    assert net.out_dim == 640


def test_resnet12_narrow_dropout_and_gradient():
    net = ResNet12(3, channels=(8, 8, 16, 16), drop_rate=0.1)
    out = net(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 16) and net.out_dim == 16
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="4 block widths"):
        ResNet12(3, channels=(8, 16))


def test_make_backbone():
    assert BACKBONES == ("conv4", "resnet12", "torchvision:resnet18")
    c4 = make_backbone("conv4", 1, 28)
    assert isinstance(c4, Conv4) and c4.out_dim == 64
    assert make_backbone("conv4", 3, 84).out_dim == 1600
    r = make_backbone("resnet12", 3, 84)
    assert isinstance(r, ResNet12) and r.out_dim == 640
    assert make_backbone("conv4", 3, 64).out_dim == 1024
    tv = make_backbone("torchvision:resnet18", 3, 64)
    assert tv.out_dim == 512 and tv(torch.zeros(2, 3, 64, 64)).shape == (2, 512)
    with pytest.raises(ValueError, match="conv4, resnet12"):
        make_backbone("resnet18", 3, 84)


# --- MAML family ---------------------------------------------------------------------------------


def test_import_does_not_pull_learn2learn():
    code = "import sys, episodes, episodes.maml, episodes.r2d2, episodes.backbones; print('learn2learn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_installed_module_imports_learn2learn():
    """learn2learn is interop only (an extra): no module of the installed packages imports it."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"^\s*(import learn2learn|from learn2learn)", re.M)
    hits = [str(p.relative_to(root)) for pkg in ("fewshot_sla", "episodes", "longtail")
            for p in (root / pkg).rglob("*.py") if pattern.search(p.read_text())]
    assert hits == []


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_learners_train_without_learn2learn(monkeypatch, algorithm):
    """Every variant builds, meta-trains a step and evaluates with learn2learn unimportable."""
    monkeypatch.setitem(sys.modules, "learn2learn", None)  # makes `import learn2learn` fail
    torch.manual_seed(0)
    sx, sy, qx, qy = toy_episode()
    learner = MAMLLearner(mlp(16), 3, algorithm, inner_lr=0.3)
    F.cross_entropy(learner(sx, sy, qx), qy).backward()
    assert all(p.grad is not None for p in learner.parameters())
    with torch.no_grad():
        assert learner.eval()(sx, sy, qx).shape == (15, 3)


@pytest.mark.parametrize(
    "algorithm, keys",
    [
        ("maml", ["learner.module.0.1.weight", "learner.module.0.1.bias", "learner.module.1.weight",
                  "learner.module.1.bias"]),
        ("metasgd", ["learner.module.0.1.weight", "learner.module.0.1.bias", "learner.module.1.weight",
                     "learner.module.1.bias", "learner.lrs.0", "learner.lrs.1", "learner.lrs.2", "learner.lrs.3"]),
        ("anil", ["features.1.weight", "features.1.bias", "learner.module.weight", "learner.module.bias"]),
    ],
)
def test_state_dict_keys_of_earlier_checkpoints(algorithm, keys):
    """The keys that checkpoints of these learners have always carried (when they were built on learn2learn's
    ``MAML``/``MetaSGD``, whose wrapped net is ``module`` and whose rates are ``lrs``), so old runs load."""
    learner = MAMLLearner(mlp(16), 3, algorithm, inner_lr=0.25)
    assert list(learner.state_dict()) == keys
    if algorithm == "metasgd":
        rates = zip(learner.learner.lrs, learner.learner.module.parameters())
        assert all(torch.equal(r, torch.full_like(p, 0.25)) for r, p in rates)


def query_loss_before_after(learner, sx, sy, qx, qy):
    before = F.cross_entropy(learner.head(learner.encoder(qx)), qy).item()
    after = F.cross_entropy(learner(sx, sy, qx), qy).item()
    return before, after


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_adaptation_lowers_query_loss(algorithm):
    torch.manual_seed(0)
    sx, sy, qx, qy = toy_episode()
    learner = MAMLLearner(mlp(16), 3, algorithm, inner_lr=0.3, inner_steps=5)
    before, after = query_loss_before_after(learner, sx, sy, qx, qy)
    assert after < 0.8 * before


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_adaptation_with_sla(algorithm):
    torch.manual_seed(0)
    sla = SLAEpisode("rotation")
    sx, sy, qx, qy = sla.expand(*toy_episode(side=6))
    learner = MAMLLearner(mlp(36, 32), sla.ways_joint(3), algorithm, inner_lr=0.3, inner_steps=5)
    before, after = query_loss_before_after(learner, sx, sy, qx, qy)
    assert after < 0.8 * before
    z = learner(sx, sy, qx, ways=sla.ways_joint(3))
    assert z.shape == (15 * 4, 12) and sla.aggregate(z).shape == (15, 3) and sla.single(z).shape == (15, 3)
    with pytest.raises(ValueError, match="ways = N\\*M"):
        learner(sx, sy, qx, ways=3)


def test_meta_training_lowers_post_adaptation_loss():
    torch.manual_seed(0)
    sx, sy, qx, qy = toy_episode(seed=3)
    learner = MAMLLearner(mlp(16), 3, "maml", inner_lr=0.1, inner_steps=1)
    opt = torch.optim.Adam(learner.parameters(), lr=0.02)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(learner(sx, sy, qx), qy)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def linear_task():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(6, 4, generator=g),
        torch.tensor([0, 0, 1, 1, 2, 2]),
        torch.randn(5, 4, generator=g),
        torch.tensor([0, 1, 2, 0, 1]),
    )


@pytest.mark.parametrize("algorithm", ["maml", "metasgd"])
def test_inner_step_matches_hand_computed_update(algorithm):
    torch.manual_seed(0)
    sx, sy, _, _ = linear_task()
    learner = MAMLLearner(nn.Flatten(), 3, algorithm, inner_lr=0.3, feat_dim=4)
    if algorithm == "metasgd":
        with torch.no_grad():
            for lr in learner.learner.lrs:  # per-entry rates, in the order of (weight, bias)
                lr.uniform_(0.1, 0.5)
        lrs = list(learner.learner.lrs)
    else:
        lrs = [0.3, 0.3]
    w, b = learner.head.weight, learner.head.bias
    gw, gb = torch.autograd.grad(F.cross_entropy(F.linear(sx, w, b), sy), (w, b))
    adapted = learner.adapt(sx, sy)
    torch.testing.assert_close(adapted.params["1.weight"], w - lrs[0] * gw)
    torch.testing.assert_close(adapted.params["1.bias"], b - lrs[1] * gb)
    torch.testing.assert_close(adapted(sx), F.linear(sx, w - lrs[0] * gw, b - lrs[1] * gb))


def test_outer_gradient_first_and_second_order():
    torch.manual_seed(0)
    sx, sy, qx, qy = linear_task()
    a = 0.3
    maml = MAMLLearner(nn.Flatten(), 3, "maml", inner_lr=a, feat_dim=4)
    fomaml = MAMLLearner(nn.Flatten(), 3, "fomaml", inner_lr=a, feat_dim=4)
    fomaml.load_state_dict(maml.state_dict())
    w, b = maml.head.weight, maml.head.bias

    # By hand: w' = w - a * dL_s/dw; FOMAML's outer gradient is dL_q/dw' at w' (no second-order term),
    # MAML's differentiates through the inner step.
    gw, gb = torch.autograd.grad(F.cross_entropy(F.linear(sx, w, b), sy), (w, b), create_graph=True)
    w1, b1 = w - a * gw, b - a * gb
    w1_leaf, b1_leaf = w1.detach().requires_grad_(), b1.detach().requires_grad_()
    first = torch.autograd.grad(F.cross_entropy(F.linear(qx, w1_leaf, b1_leaf), qy), (w1_leaf, b1_leaf))
    second = torch.autograd.grad(F.cross_entropy(F.linear(qx, w1, b1), qy), (w, b))

    got_fo = torch.autograd.grad(F.cross_entropy(fomaml(sx, sy, qx), qy), (fomaml.head.weight, fomaml.head.bias))
    got_so = torch.autograd.grad(F.cross_entropy(maml(sx, sy, qx), qy), (w, b))
    for got, want in zip(got_fo, first):
        torch.testing.assert_close(got, want)
    for got, want in zip(got_so, second):
        torch.testing.assert_close(got, want)
    assert not torch.allclose(got_so[0], got_fo[0], atol=1e-5)  # the second-order term is really there


def test_anil_adapts_only_the_head_and_trains_the_encoder():
    torch.manual_seed(0)
    sx, sy, qx, qy = toy_episode()
    learner = MAMLLearner(mlp(16), 3, "anil", inner_lr=0.1, inner_steps=2)
    adapted = learner.adapt(sx, sy)
    assert adapted.module is learner.head and sorted(adapted.params) == ["bias", "weight"]  # the head alone
    F.cross_entropy(learner(sx, sy, qx), qy).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.encoder.parameters())


def test_eval_under_no_grad_and_transductive_batchnorm():
    torch.manual_seed(0)
    sx, sy, qx, _ = toy_episode()
    enc = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU())
    enc.out_dim = 8  # type: ignore[assignment]
    learner = MAMLLearner(enc, 3, "maml", inner_lr=0.2, inner_steps=1, test_inner_steps=3)
    assert enc[2].running_mean is None  # batch statistics only, as in MAML's reference code
    train_logits = learner(sx, sy, qx).detach()
    learner.eval()
    assert learner.steps() == 3
    learner.test_inner_steps = None
    with torch.no_grad():
        z = learner(sx, sy, qx)  # adaptation still takes gradients
    assert not z.requires_grad
    torch.testing.assert_close(z, train_logits)  # same BN statistics in eval mode


def test_maml_learner_argument_errors():
    with pytest.raises(ValueError, match="unknown algorithm"):
        MAMLLearner(mlp(16), 3, "reptile")
    with pytest.raises(ValueError, match="out_dim"):
        MAMLLearner(nn.Flatten(), 3)
    learner = MAMLLearner(mlp(16), 3)
    sx, sy, qx, _ = toy_episode(ways=4)
    with pytest.raises(ValueError, match="support labels"):
        learner(sx, sy, qx)


def test_protonet_distances_and_encodings():
    """``distance``: minus the squared or the plain Euclidean distance to the prototypes (values by hand);
    ``encode``: with BatchNorm in training mode, one encoder call over support + query (their union's statistics)
    differs from two calls, and in eval mode (running statistics) they agree."""
    from episodes.protonet import ProtoNet

    ident = torch.nn.Identity()
    sf = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    sy = torch.tensor([0, 0, 1])
    qf = torch.tensor([[1.0, 3.0]])  # prototype 0 = (1, 0): distance 3; prototype 1 = (0, 4): distance sqrt 2
    sq = ProtoNet(ident).head_from_features(sf, sy, qf, 2)
    pl = ProtoNet(ident, distance="euclidean").head_from_features(sf, sy, qf, 2)
    torch.testing.assert_close(sq, torch.tensor([[-9.0, -2.0]]))
    torch.testing.assert_close(pl, torch.tensor([[-3.0, -(2.0**0.5)]]))
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    sx, qx, y = torch.randn(4, 3), torch.randn(6, 3) + 2.0, torch.tensor([0, 0, 1, 1])
    joint, separate = ProtoNet(enc, encode="joint"), ProtoNet(enc, encode="separate")
    assert not torch.allclose(joint(sx, y, qx, 2), separate(sx, y, qx, 2))
    enc.eval()  # running statistics: two encoder calls give the one call's features, so evaluation makes one call
    by_hand = separate.head_from_features(enc(sx), y, enc(qx), 2)
    torch.testing.assert_close(separate.eval()(sx, y, qx, 2), by_hand)
    with pytest.raises(ValueError, match="distance must be one of"):
        ProtoNet(ident, distance="cosine")
