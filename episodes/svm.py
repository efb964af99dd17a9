"""MetaOptNet-SVM: a differentiable multi-class (Crammer-Singer) SVM head solved as a quadratic
program per episode (Lee, Maji, Ravichandran & Soatto, "Meta-Learning with Differentiable Convex
Optimization", CVPR 2019), through qpth's batched interior-point solver (Amos & Kolter 2017).

The dual, for support features ``x_i`` with labels ``y_i`` and dual variables ``alpha_i^k``
(``S`` x ``ways``), written as qpth's ``min 1/2 z^T P z + q^T z  s.t.  G z <= h, A z = b`` with
``z[i*ways + k] = alpha_i^k``::

    P = kron(X X^T, I_ways) + ridge * I        q = -onehot(y)
    G = I,  h = C * onehot(y)                  (alpha_i^k <= C [k == y_i])
    A = kron(I_S, 1^T_ways),  b = 0            (sum_k alpha_i^k = 0)

and the query logits are ``sum_i alpha_i^k <x_q, x_i>``, scaled by a learned factor. ``ridge`` (1 in
MetaOptNet's code) keeps ``P`` positive definite for the solver. qpth is imported where the head is
used (learn2learn's install brings it; else ``pip install qpth``).

**Training** (gradients needed) solves through qpth, whose implicit gradients flow into the features. **Evaluation**
(no gradient) solves many episodes' QPs at once with :func:`svm_dual_batched`, a primal-dual interior-point method
(Mehrotra's predictor-corrector) that uses the problem's structure: with the dual variables ordered class-major,
``P + D`` (``D`` the diagonal barrier term of an iteration) is block-diagonal with ``ways`` blocks
``K + ridge I + D_k`` of size ``S x S``, and the equality constraint couples the blocks through an ``S x S`` Schur
complement ``sum_k (K + ridge I + D_k)^-1``; one Newton step costs ``O(ways S^3)`` instead of qpth's
``O((ways S)^3)``. Each episode iterates until its own residuals and duality gap fall below ``tol`` (1e-11; float64),
so its solution does not depend on the other episodes of the batch, and it agrees with qpth run to convergence to
the solvers' tolerance (tests/episodes/test_svm.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .protonet import MetricLearner

__all__ = ["svm_head", "svm_dual_batched", "svm_logits_batched", "MetaOptSVM"]


def _qp_function(max_iter: int) -> Any:
    try:
        from qpth.qp import QPFunction
    except ImportError as e:
        raise ImportError(f"the svm learner needs qpth (MetaOptNet's QP solver): `pip install qpth` ({e})") from e
    return QPFunction(verbose=-1, maxIter=max_iter)


def svm_head(
    support_f: Tensor,
    support_y: Tensor,
    query_f: Tensor,
    ways: int,
    c: float = 0.1,
    ridge: float = 1.0,
    max_iter: int = 15,
) -> Tensor:
    """Crammer-Singer SVM logits of the queries, ``(S, D), (S,), (Q, D) -> (Q, ways)``.

    Solved in float64 (the interior-point steps are ill-conditioned in float32); differentiable in the
    features through qpth's implicit gradients.

    Args:
        support_f, support_y, query_f: support features and labels (``[0, ways)``), query features.
        ways: number of classes.
        c: the SVM's box constraint ``C`` (MetaOptNet: 0.1).
        ridge: added to the dual's quadratic term for positive definiteness (MetaOptNet: 1).
        max_iter: interior-point iterations (MetaOptNet: 15 in training, 3 at test in some runs).
    """
    if support_f.dim() != 2 or query_f.dim() != 2 or support_y.shape != support_f.shape[:1]:
        raise ValueError(
            f"svm_head: expected (S, D) support features, (S,) labels and (Q, D) query features, got "
            f"{tuple(support_f.shape)}, {tuple(support_y.shape)}, {tuple(query_f.shape)}"
        )
    if not c > 0:
        raise ValueError(f"svm_head: C must be > 0, got {c}")
    s = support_f.shape[0]
    fs, fq = support_f.double(), query_f.double()
    onehot = F.one_hot(support_y, ways).double().reshape(1, -1)  # (1, S*ways)
    kw: dict[str, Any] = {"dtype": fs.dtype, "device": fs.device}
    eye_n = torch.eye(s * ways, **kw)
    p = (torch.kron(fs @ fs.t(), torch.eye(ways, **kw)) + ridge * eye_n).unsqueeze(0)
    a = torch.kron(torch.eye(s, **kw), torch.ones(1, ways, **kw))  # (S, S*ways): sum over k of alpha_i^k
    b = torch.zeros(1, s, **kw)
    z = _qp_function(max_iter)(p, -onehot, eye_n.unsqueeze(0), c * onehot, a.unsqueeze(0), b)
    alpha = z.reshape(s, ways)
    return ((fq @ fs.t()) @ alpha).to(query_f.dtype)


def svm_dual_batched(
    gram: Tensor, support_y: Tensor, ways: int, c: float = 0.1, ridge: float = 1.0, max_iter: int = 60,
    tol: float = 1e-11,
) -> Tensor:
    """The Crammer-Singer dual of many episodes at once (the QP of :func:`svm_head`), solved to ``tol``.

    Args:
        gram: ``(E, S, S)`` Gram matrices ``X X^T`` of the episodes' support features.
        support_y: ``(S,)`` labels shared by every episode, or ``(E, S)``, in ``[0, ways)``.
        ways: number of classes.
        c, ridge: as :func:`svm_head`.
        max_iter: the most interior-point iterations (the method converges in about 10-25).
        tol: stop an episode when its primal, dual and equality residuals and its duality gap ``sum s * lam`` are
            below it (the objective is then within about ``tol`` of the optimum).

    Returns:
        ``alpha`` ``(E, S, ways)`` in float64: ``alpha_i^k <= C [k == y_i]``, ``sum_k alpha_i^k = 0``.

    Raises:
        ValueError: bad shapes or ``C <= 0``; RuntimeError: an episode that did not converge in ``max_iter``.
    """
    if gram.dim() != 3 or gram.shape[1] != gram.shape[2]:
        raise ValueError(f"svm_dual_batched: gram must be (E, S, S), got {tuple(gram.shape)}")
    if not c > 0:
        raise ValueError(f"svm_dual_batched: C must be > 0, got {c}")
    e, s = gram.shape[0], gram.shape[1]
    kw: dict[str, Any] = {"dtype": torch.float64, "device": gram.device}
    k = gram.to(torch.float64) + ridge * torch.eye(s, **kw)  # (E, S, S)
    y = support_y.expand(e, s) if support_y.dim() == 1 else support_y
    onehot = F.one_hot(y, ways).to(torch.float64).transpose(1, 2)  # (E, w, S): class-major z[k, i] = alpha_i^k
    q, h = -onehot, c * onehot
    z = torch.zeros(e, ways, s, **kw)
    sl = torch.ones(e, ways, s, **kw)  # slack h - z
    lam = torch.ones(e, ways, s, **kw)  # inequality multipliers
    nu = torch.zeros(e, s, **kw)  # equality multipliers
    n = ways * s
    active = torch.ones(e, dtype=torch.bool, device=gram.device)

    def pz(v: Tensor) -> Tensor:  # (P v)[k, i] = sum_j K_ij v[k, j]
        return torch.einsum("eij,ekj->eki", k, v)

    def step_to_boundary(x: Tensor, dx: Tensor) -> Tensor:  # the largest a <= 1 with x + a dx >= 0, per episode
        ratio = torch.where(dx < 0, -x / dx, torch.full_like(x, float("inf")))
        return ratio.flatten(1).min(1).values.clamp(max=1.0)

    for _ in range(max_iter):
        r_d = pz(z) + q + lam + nu.unsqueeze(1)
        r_e = z.sum(1)
        r_p = z + sl - h
        gap = (sl * lam).flatten(1).sum(1)
        mu = gap / n
        worst = torch.stack([r_d.abs().flatten(1).max(1).values, r_e.abs().max(1).values,
                             r_p.abs().flatten(1).max(1).values, gap], 1).max(1).values
        active = active & (worst > tol)
        if not active.any():
            break
        blocks = k.unsqueeze(1).repeat(1, ways, 1, 1)  # (E, w, S, S): K + ridge I + D_k
        blocks.diagonal(dim1=-2, dim2=-1).add_(lam / sl)
        h_inv = torch.cholesky_inverse(torch.linalg.cholesky(blocks))  # the blocks' inverses, used as matrices
        schur = torch.linalg.cholesky(h_inv.sum(1))  # (E, S, S)

        def newton(r_c: Tensor, r_d: Tensor = r_d, r_e: Tensor = r_e, r_p: Tensor = r_p, lam: Tensor = lam,
                   sl: Tensor = sl, h_inv: Tensor = h_inv,
                   schur: Tensor = schur) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            """The Newton direction for the complementarity residual ``r_c`` (``s * lam`` minus its target)."""
            g = -r_d + (r_c - lam * r_p) / sl
            hg = (h_inv @ g.unsqueeze(-1)).squeeze(-1)  # (E, w, S)
            dnu = torch.cholesky_solve((hg.sum(1) + r_e).unsqueeze(-1), schur).squeeze(-1)  # (E, S)
            dz = hg - (h_inv @ dnu[:, None, :, None]).squeeze(-1)
            ds = -r_p - dz
            dlam = (-r_c - lam * ds) / sl
            return dz, ds, dlam, dnu

        _, ds_a, dlam_a, _ = newton(sl * lam)  # the affine (predictor) direction
        a_aff = torch.minimum(step_to_boundary(sl, ds_a), step_to_boundary(lam, dlam_a))
        mu_aff = ((sl + a_aff[:, None, None] * ds_a) * (lam + a_aff[:, None, None] * dlam_a)).flatten(1).sum(1) / n
        sigma = (mu_aff / mu).clamp(0.0, 1.0) ** 3
        dz, ds, dlam, dnu = newton(sl * lam + ds_a * dlam_a - (sigma * mu)[:, None, None])
        a = 0.99 * torch.minimum(step_to_boundary(sl, ds), step_to_boundary(lam, dlam))
        a = torch.where(active, a.clamp(max=1.0), torch.zeros_like(a))  # converged episodes stay where they are
        z, sl = z + a[:, None, None] * dz, sl + a[:, None, None] * ds
        lam, nu = lam + a[:, None, None] * dlam, nu + a[:, None] * dnu
    else:
        if active.any():
            raise RuntimeError(
                f"svm_dual_batched: {int(active.sum())} of {e} episodes did not converge in {max_iter} iterations "
                f"(tol {tol}); raise max_iter"
            )
    return z.transpose(1, 2)


def svm_logits_batched(
    support_f: Tensor, support_y: Tensor, query_f: Tensor, ways: int, c: float = 0.1, ridge: float = 1.0,
) -> Tensor:
    """Crammer-Singer SVM logits of many episodes: ``(E, S, D), (S,), (E, Q, D) -> (E, Q, ways)`` (no gradient;
    :func:`svm_dual_batched`), in ``query_f``'s dtype."""
    fs, fq = support_f.double(), query_f.double()
    alpha = svm_dual_batched(fs @ fs.transpose(1, 2), support_y, ways, c, ridge)
    return ((fq @ fs.transpose(1, 2)) @ alpha).to(query_f.dtype)


class MetaOptSVM(MetricLearner):
    """``forward(support_x, support_y, query_x, ways=None) -> (Q, ways)``: MetaOptNet-SVM,
    ``scale * svm_head(...)`` with a learned ``scale`` (as MetaOptNet). Same call as
    :class:`episodes.ProtoNet`, so :class:`episodes.SLAEpisode` wraps it unchanged.

    Args:
        encoder: maps images to ``(B, D)`` features.
        c, ridge, max_iter: see :func:`svm_head`.
        init_scale: initial logit scale.
    """

    def __init__(
        self, encoder: nn.Module, c: float = 0.1, ridge: float = 1.0, max_iter: int = 15, init_scale: float = 1.0
    ) -> None:
        super().__init__()
        _qp_function(max_iter)  # fail at construction, not in the first episode, when qpth is missing
        self.encoder = encoder
        self.c, self.ridge, self.max_iter = float(c), float(ridge), int(max_iter)
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))

    def head_from_features(
        self, support_f: Tensor, support_y: Tensor, query_f: Tensor, ways: int | None = None
    ) -> Tensor:
        """The head alone: ``(S, D), (S,), (Q, D) -> (Q, ways)`` logits from encoder features, so that
        ``forward(sx, sy, qx, ways) == head_from_features(encoder(sx), sy, encoder(qx), ways)``
        (:mod:`episodes.evaluate` embeds a test split once and scores every episode through it)."""
        ways = int(support_y.max()) + 1 if ways is None else ways
        if not torch.is_grad_enabled():  # evaluation: the structured solver, the same as the batched path
            return self.head_from_features_batch(support_f[None], support_y, query_f[None], ways)[0]
        return self.scale * svm_head(support_f, support_y, query_f, ways, self.c, self.ridge, self.max_iter)

    @torch.no_grad()
    def head_from_features_batch(
        self, support_f: Tensor, support_y: Tensor, query_f: Tensor, ways: int | None = None
    ) -> Tensor:
        """Many episodes' logits at once (evaluation): ``(E, S, D), (S,), (E, Q, D) -> (E, Q, ways)``, each episode
        as :meth:`head_from_features` would give it without a gradient."""
        ways = int(support_y.max()) + 1 if ways is None else ways
        return self.scale * svm_logits_batched(support_f, support_y, query_f, ways, self.c, self.ridge)
