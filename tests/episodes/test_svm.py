"""MetaOptNet-SVM head: the QP solution against an independent solver, its constraints, gradients, SLA."""

import numpy as np
import pytest
import torch

pytest.importorskip("qpth")

from episodes import SLAEpisode  # noqa: E402
from episodes.svm import MetaOptSVM, svm_head  # noqa: E402


def _dual_by_scipy(fs, y, ways, c, ridge):
    """The same dual solved by SciPy's SLSQP (an independent solver): alpha (S, ways)."""
    from scipy.optimize import minimize

    s = len(y)
    onehot = np.eye(ways)[y]
    p = np.kron(fs @ fs.T, np.eye(ways)) + ridge * np.eye(s * ways)
    q = -onehot.reshape(-1)
    res = minimize(
        lambda z: 0.5 * z @ p @ z + q @ z,
        np.zeros(s * ways),
        jac=lambda z: p @ z + q,
        constraints=[
            {"type": "ineq", "fun": lambda z: c * onehot.reshape(-1) - z},
            {"type": "eq", "fun": lambda z: z.reshape(s, ways).sum(1)},
        ],
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 500},
    )
    assert res.success
    return res.x.reshape(s, ways)


def test_svm_head_matches_an_independent_qp_solver():
    g = torch.Generator().manual_seed(0)
    fs, fq = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    alpha = _dual_by_scipy(fs.numpy(), y.numpy(), 3, 0.1, 1.0)
    expected = fq.numpy() @ fs.numpy().T @ alpha
    got = svm_head(fs, y, fq, 3, c=0.1, ridge=1.0, max_iter=50)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    # the dual constraints hold: alpha_i^k <= C [k == y_i] and sum_k alpha_i^k = 0
    assert (alpha <= 0.1 * np.eye(3)[y.numpy()] + 1e-6).all() and np.abs(alpha.sum(1)).max() < 1e-6


def test_svm_separates_clusters_and_has_gradients():
    torch.manual_seed(0)
    centres = 3 * torch.eye(4)[:3]
    sy = torch.arange(3).repeat_interleave(5)
    qy = torch.arange(3).repeat_interleave(4)
    sx, qx = centres[sy] + 0.3 * torch.randn(15, 4), centres[qy] + 0.3 * torch.randn(12, 4)
    enc = torch.nn.Linear(4, 8)
    model = MetaOptSVM(enc)
    logits = model(sx, sy, qx)
    assert logits.shape == (12, 3) and logits.dtype == torch.float32
    torch.nn.functional.cross_entropy(logits, qy).backward()
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0 and model.scale.grad is not None
    with torch.no_grad():
        fixed = MetaOptSVM(torch.nn.Identity())(sx, sy, qx)
    assert (fixed.argmax(1) == qy).all()


def test_svm_head_from_features_is_the_forward_after_the_encoder():
    """``model(sx, sy, qx, ways) == head_from_features(encoder(sx), sy, encoder(qx), ways)`` (episodes.evaluate)."""
    torch.manual_seed(0)
    sx, qx, sy = torch.randn(6, 4), torch.randn(5, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    model = MetaOptSVM(torch.nn.Linear(4, 8), init_scale=2.0)
    with torch.no_grad():
        z = model(sx, sy, qx, ways=3)
        h = model.head_from_features(model.encoder(sx), sy, model.encoder(qx), ways=3)
        assert z.shape == h.shape == (5, 3)
        torch.testing.assert_close(z, h)
        fs, fq = model.encoder(sx), model.encoder(qx)
        torch.testing.assert_close(model(sx, sy, qx), model.head_from_features(fs, sy, fq))  # ways inferred


def test_svm_with_sla_and_errors():
    sla = SLAEpisode("rotation")
    sx, sy, qx, qy = sla.expand(torch.randn(4, 1, 5, 5), torch.tensor([0, 0, 1, 1]), torch.randn(2, 1, 5, 5),
                                torch.tensor([0, 1]))
    z = MetaOptSVM(torch.nn.Flatten())(sx, sy, qx, ways=sla.ways_joint(2))
    assert z.shape == (8, 8) and sla.aggregate(z).shape == (2, 2)
    with pytest.raises(ValueError, match="C must be > 0"):
        svm_head(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(1, 3), 2, c=0)
    with pytest.raises(ValueError, match=r"expected \(S, D\) support features"):
        svm_head(torch.zeros(2, 3), torch.tensor([0]), torch.zeros(1, 3), 2)


# --- the structured, batched solver of evaluation ---------------------------------------------------------------


def _qpth_alpha(fs, y, ways, c=0.1, ridge=1.0, iters=100):
    from qpth.qp import QPFunction

    s = len(y)
    onehot = torch.nn.functional.one_hot(y, ways).double().reshape(1, -1)
    p = torch.kron(fs @ fs.t(), torch.eye(ways, dtype=torch.float64)) + ridge * torch.eye(s * ways, dtype=torch.float64)
    a = torch.kron(torch.eye(s, dtype=torch.float64), torch.ones(1, ways, dtype=torch.float64))
    z = QPFunction(verbose=-1, maxIter=iters)(p[None], -onehot, torch.eye(s * ways, dtype=torch.float64)[None],
                                              c * onehot, a[None], torch.zeros(1, s, dtype=torch.float64))
    return z.reshape(s, ways)


def test_batched_dual_agrees_with_qpth_and_an_independent_solver():
    from episodes.svm import svm_dual_batched

    g = torch.Generator().manual_seed(1)
    fs = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    alpha = svm_dual_batched(fs @ fs.transpose(1, 2), y, 3, c=0.1, ridge=1.0)
    for e in range(3):
        np.testing.assert_allclose(alpha[e].numpy(), _qpth_alpha(fs[e], y, 3).numpy(), atol=1e-8)
        np.testing.assert_allclose(alpha[e].numpy(), _dual_by_scipy(fs[e].numpy(), y.numpy(), 3, 0.1, 1.0), atol=1e-5)
    assert (alpha <= 0.1 * torch.eye(3, dtype=torch.float64)[y] + 1e-12).all()
    assert alpha.sum(2).abs().max() < 1e-12


def test_batched_logits_do_not_depend_on_the_other_episodes_of_the_batch():
    from episodes.svm import svm_logits_batched

    g = torch.Generator().manual_seed(2)
    fs, fq = torch.randn(8, 20, 16, generator=g), torch.randn(8, 30, 16, generator=g)
    y = torch.arange(20) // 4  # 5 ways, 4 shots
    together = svm_logits_batched(fs, y, fq, 5)
    alone = torch.cat([svm_logits_batched(fs[i : i + 1], y, fq[i : i + 1], 5) for i in range(8)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-12)


def test_evaluation_with_the_batched_solver_gives_qpths_accuracies():
    """On fixed SLA episodes (M = 4: 20 joint classes, S = 20 support copies) the structured solver's logits agree
    with qpth's (MetaOptNet's 15 iterations, as training and the earlier evaluation solve) to qpth's tolerance, and
    every query's predicted class is the same."""
    from episodes.data import FewShotData
    from episodes.evaluate import evaluate_episodes
    from episodes.task import EpisodeTask
    from fewshot_sla.nets import Conv4

    torch.manual_seed(0)
    images = torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(60) // 6
    data = FewShotData(images, labels, [str(c) for c in range(10)])
    task = EpisodeTask(MetaOptSVM(Conv4(1, 28)), "rotation", 5, 1, 2)

    def norm(x):
        return x.float() / 255

    batched = evaluate_episodes(task, data, 5, 1, 2, 40, 3, "cpu", normalize=norm, strategy="embed_once")
    per = evaluate_episodes(task, data, 5, 1, 2, 40, 3, "cpu", normalize=norm, strategy="per_episode")
    assert batched["acc_agg"] == per["acc_agg"] and batched["acc_single"] == per["acc_single"]

    learner = task.learner
    sx = norm(images[:20])
    sy = torch.arange(20) // 4
    with torch.no_grad():
        f = learner.encoder(torch.cat([sx, norm(images[20:50])]))
        new = learner.head_from_features(f[:20], sy, f[20:], 5)
        old = learner.scale * svm_head(f[:20], sy, f[20:], 5, learner.c, learner.ridge, learner.max_iter)
    torch.testing.assert_close(new, old, rtol=1e-4, atol=1e-5)
    assert torch.equal(new.argmax(1), old.argmax(1))


# --- the active-set solver at SLA shapes, chunking by memory ----------------------------------------------------


def _sla_labels(ways, shots, m):
    """Joint support labels in the layout of SLA's expansion: item b = class-major, row b*M + j, label y*M + j."""
    return (torch.arange(ways).repeat_interleave(shots)[:, None] * m + torch.arange(m)).reshape(-1)


def _features(episodes, y, ways, d, scale, seed, spread=1.0):
    """Non-negative features clustered by joint class, like a ReLU network's: ``scale`` 0.3 makes ``K`` small
    against the ridge (few bounds active), 10 makes it about 2000-3000 on the diagonal, as a trained Conv4's (most
    bounds active; there the active-set method's guesses can cycle and the ridge path takes over)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(episodes, ways, d, generator=g, dtype=torch.float64)
    noise = spread * torch.randn(episodes, len(y), d, generator=g, dtype=torch.float64)
    return (centres[:, y] + noise).relu() * scale


def _kkt_violation(alpha, gram, y, ways, c=0.1, ridge=1.0):
    """The largest violation of the dual's KKT conditions by ``alpha`` (E, S, ways), scaled to the terms' sizes:
    feasibility, stationarity ``K~ alpha_k - e_k + nu + mu_k = 0`` with ``mu >= 0`` only where the bound is
    active (complementarity). An independent optimality check: for this convex QP, KKT <=> optimal."""
    onehot = torch.nn.functional.one_hot(y.expand(alpha.shape[:2]), ways).double()
    kt = gram + ridge * torch.eye(gram.shape[1], dtype=torch.float64)
    grad = kt @ alpha - onehot
    active = alpha > c * onehot - 1e-9 * c
    nu = -(grad * ~active).sum(-1) / (~active).sum(-1)
    mu = -grad - nu[..., None]
    size = 1 + c * gram.shape[1] * kt.diagonal(dim1=1, dim2=2).amax(1)[:, None, None]
    return max(
        float((alpha - c * onehot).clamp(min=0).max() / c),  # alpha_i^k <= C [k == y_i]
        float(alpha.sum(2).abs().max() / c),  # sum_k alpha_i^k = 0
        float((mu.abs() * ~active / size).max()),  # no multiplier off the active bounds
        float((-mu * active / size).clamp(min=0).max()),  # non-negative multipliers on them
    )


@pytest.mark.slow
@pytest.mark.parametrize("scale", [0.3, 10.0])
def test_batched_dual_agrees_with_qpth_at_20_joint_classes_5_shot(scale):
    """5-way 5-shot with rotation (M = 4): 20 joint classes, 100 support rows, 2000 dual variables; qpth run to
    convergence (100 iterations). Both regimes: most bounds inactive (scale 0.3) or active (10)."""
    from episodes.svm import svm_dual_batched

    y = _sla_labels(5, 5, 4)
    fs = _features(2, y, 20, 32, scale, seed=3)
    gram = fs @ fs.transpose(1, 2)
    alpha = svm_dual_batched(gram, y, 20)
    assert _kkt_violation(alpha, gram, y, 20) < 1e-9
    for e in range(2):
        np.testing.assert_allclose(alpha[e].numpy(), _qpth_alpha(fs[e], y, 20).numpy(), atol=1e-7)


@pytest.mark.parametrize("scale", [0.3, 10.0])
def test_batched_dual_is_optimal_at_80_joint_classes(scale):
    """20-way with rotation (M = 4): 80 joint classes. At 1-shot (80 rows, 6400 variables) the active-set solution
    agrees with the interior-point method's (its accuracy, about 1e-6 for a 1e-11 gap); at 5-shot (400 rows,
    32,000 variables, too large for qpth here) it satisfies the KKT conditions to rounding."""
    from episodes.svm import _ipm_chunk, svm_dual_batched

    y1 = _sla_labels(20, 1, 4)
    fs = _features(2, y1, 80, 32, scale, seed=4)
    gram = fs @ fs.transpose(1, 2)
    alpha = svm_dual_batched(gram, y1, 80)
    assert _kkt_violation(alpha, gram, y1, 80) < 1e-9
    ipm = _ipm_chunk(gram, torch.nn.functional.one_hot(y1.expand(2, -1), 80).double(), 0.1, 1.0, 60, 1e-11)
    np.testing.assert_allclose(alpha.numpy(), ipm.numpy(), atol=5e-6)
    y5 = _sla_labels(20, 5, 4)
    fs = _features(1, y5, 80, 32, scale, seed=5)
    gram = fs @ fs.transpose(1, 2)
    alpha = svm_dual_batched(gram, y5, 80)
    assert alpha.shape == (1, 400, 80) and _kkt_violation(alpha, gram, y5, 80) < 1e-9


def test_kkt_check_catches_a_wrong_solution():
    """The KKT check above fails on a feasible point that is not the optimum (and on an infeasible one)."""
    from episodes.svm import svm_dual_batched

    y = _sla_labels(5, 1, 4)
    fs = _features(1, y, 20, 16, 10.0, seed=6)
    gram = fs @ fs.transpose(1, 2)
    alpha = svm_dual_batched(gram, y, 20)
    assert _kkt_violation(alpha, gram, y, 20) < 1e-9
    assert _kkt_violation(0.5 * alpha, gram, y, 20) > 1e-6  # feasible (the set is convex and holds 0), not optimal
    assert _kkt_violation(alpha + 0.01, gram, y, 20) > 1e-6


def test_an_episode_the_active_set_method_does_not_finish_goes_to_the_interior_point_method(monkeypatch):
    import episodes.svm as svm

    y = _sla_labels(5, 1, 4)
    fs = _features(3, y, 20, 16, 10.0, seed=7)
    gram = fs @ fs.transpose(1, 2)
    exact = svm.svm_dual_batched(gram, y, 20)
    calls = []
    ipm = svm._ipm_chunk
    monkeypatch.setattr(svm, "_ipm_chunk", lambda k, *a: calls.append(len(k)) or ipm(k, *a))
    fallback = svm.svm_dual_batched(gram, y, 20, max_iter=1)  # one active-set iteration per ridge
    assert len(calls) == 1 and 1 <= calls[0] <= 3  # the episodes left over, in one chunk
    np.testing.assert_allclose(fallback.numpy(), exact.numpy(), atol=5e-6)


def test_chunks_cover_the_episodes_within_the_memory_cap():
    from episodes.svm import svm_chunks

    assert svm_chunks(10, 100, 350) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert svm_chunks(10, 100, 10**6) == [(0, 10)]
    assert svm_chunks(3, 100, 10) == [(0, 1), (1, 2), (2, 3)]  # one episode a chunk at least
    assert svm_chunks(0, 100, 10) == []


def test_chunked_logits_equal_one_batch_and_a_memory_cap_forces_chunks(monkeypatch):
    import episodes.svm as svm

    y = _sla_labels(5, 5, 4)
    fs = _features(6, y, 20, 16, 10.0, seed=8).float()
    fq = _features(6, torch.arange(40) // 2, 20, 16, 10.0, seed=8).float()
    one = svm.svm_logits_batched(fs, y, fq, 20, max_bytes=2**30)
    calls = []
    solve = svm._continued_active_set
    monkeypatch.setattr(svm, "_continued_active_set", lambda k, *a: calls.append(len(k)) or solve(k, *a))
    per_episode = 8 * (140 * 16 + 40 * 100 + 100 * 100 + 40 * 20) + svm.svm_episode_bytes(100, 20)
    chunked = svm.svm_logits_batched(fs, y, fq, 20, max_bytes=2 * per_episode)
    assert calls == [2, 2, 2]
    torch.testing.assert_close(chunked, one, rtol=0, atol=1e-5)
    assert torch.equal(chunked.argmax(2), one.argmax(2))


def test_batched_dual_refuses_bad_input_in_one_line():
    from episodes.svm import svm_dual_batched

    gram = torch.eye(4, dtype=torch.float64).expand(2, 4, 4)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), got 0..2; pass ways"):
        svm_dual_batched(gram, torch.tensor([0, 1, 2, 1]), 2)
    with pytest.raises(ValueError, match=r"support_y must be \(4,\) or \(2, 4\)"):
        svm_dual_batched(gram, torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match=r"gram must be \(E, S, S\)"):
        svm_dual_batched(gram[0], torch.tensor([0, 1, 0, 1]), 2)
