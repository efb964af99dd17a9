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

__all__ = ["svm_head", "svm_dual_batched", "svm_logits_batched", "svm_chunks", "svm_episode_bytes", "MetaOptSVM"]


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


def _project_simplex(v: Tensor, total: float) -> Tensor:
    """Each row of ``v`` ``(..., w)`` projected onto ``{t >= 0, sum t = total}`` (sort-based, exact zeros off the
    support)."""
    u = v.sort(-1, descending=True).values
    excess = u.cumsum(-1) - total
    rank = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    last = ((u - excess / rank) > 0).sum(-1, keepdim=True) - 1  # the support's size - 1 (>= 0: u_1 > u_1 - total)
    theta = excess.gather(-1, last) / (last + 1).to(v.dtype)
    return (v - theta).clamp(min=0)


def _padded_indices(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Flat indices of each row's True entries, first, padded to the longest row: ``(E, n) -> (E, P), (E, P)``
    (index, valid)."""
    count = mask.sum(1)
    width = int(count.max()) if mask.shape[0] else 0
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, :width]
    return order, torch.arange(width, device=mask.device) < count[:, None]


def _class_lists(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per episode and class, the samples where ``mask`` ``(E, S, w)`` holds, padded: indices ``(E, w, b)``, valid
    ``(E, w, b)`` and valid pairs ``(E, w, b, b)``."""
    e, s, w = mask.shape
    idx, valid = _padded_indices(mask.transpose(1, 2).reshape(e * w, s))
    idx, valid = idx.view(e, w, -1), valid.view(e, w, -1)
    return idx, valid, valid[..., :, None] & valid[..., None, :]


def _class_blocks(mat: Tensor, idx: Tensor, pairs: Tensor) -> tuple[Tensor, Tensor]:
    """The principal blocks ``mat[idx_k, idx_k]`` ``(E, w, b, b)`` of each class (padding: identity), their
    Cholesky factors and their inverses (padding: zero)."""
    e = mat.shape[0]
    blocks = mat[torch.arange(e, device=mat.device)[:, None, None, None], idx[..., :, None], idx[..., None, :]]
    eye = torch.eye(idx.shape[-1], dtype=mat.dtype, device=mat.device)
    chol = torch.linalg.cholesky(torch.where(pairs, blocks, eye))
    return chol, torch.where(pairs, torch.cholesky_inverse(chol), 0.0)


def _embed_sum(blocks: Tensor, idx: Tensor, s: int) -> Tensor:
    """``sum_k E_k blocks_k E_k^T``: the classes' ``(b, b)`` blocks added into one ``(S, S)`` matrix per episode."""
    e = blocks.shape[0]
    flat = (idx[..., :, None] * s + idx[..., None, :]).reshape(e, -1)
    return torch.zeros(e, s * s, dtype=blocks.dtype, device=blocks.device).scatter_add_(
        1, flat, blocks.reshape(e, -1)).view(e, s, s)


def _block_solve(chol: Tensor, rhs: Tensor, valid: Tensor) -> Tensor:
    """Each class's block solve ``(E, w, b, b), (E, w, b) -> (E, w, b)``, zero on padding."""
    return torch.where(valid, torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1), 0.0)


def _pinned_face(kt: Tensor, g: Tensor, g0: Tensor, tau: Tensor, onehot: Tensor, c: float) -> Tensor:
    """The dual's minimiser with the entries outside the supports (``tau == 0``, "pinned") held at their bounds
    ``C [k == y_i]`` and the rest free, through the bounds' multipliers ``mu``.

    Stationarity ``K~ alpha_k = e_k - nu - mu_k`` gives ``alpha = G (e - nu - mu)`` with ``G = K~^-1``; the
    equality constraint fixes ``nu = (1 - sum_k mu_k) / ways``, and the pinned entries ``(i, k)`` give
    ``N mu = (G (e - 1/ways))_B - C [k == y_i]`` with ``N = blockdiag_k(G_{B_k B_k}) - Q G Q^T / ways`` (``B_k``
    the pinned samples of class ``k``, ``Q`` the map from a pinned entry to its sample). Woodbury with the
    capacitance ``ways K~ - sum_k E_k G_{B_k B_k}^-1 E_k^T`` (``S x S``) solves it in
    ``O(S^3 + sum_k |B_k|^3)``: cheap when few entries per class are pinned.
    """
    e, s, w = onehot.shape
    idx, valid, pairs = _class_lists(tau == 0)
    if idx.shape[-1] == 0:
        return g0
    chol, inv = _class_blocks(g, idx, pairs)
    cap = torch.linalg.cholesky(w * kt - _embed_sum(inv, idx, s))
    rhs = torch.where(valid, (g0 - c * onehot).transpose(1, 2).gather(2, idx), 0.0)  # (E, w, b)
    v = _block_solve(chol, rhs, valid)
    qv = torch.zeros(e, s, dtype=g.dtype, device=g.device).scatter_add_(1, idx.reshape(e, -1), v.reshape(e, -1))
    u = torch.cholesky_solve(qv.unsqueeze(-1), cap).squeeze(-1)
    mu = v + _block_solve(chol, torch.where(valid, u.gather(1, idx.reshape(e, -1)).view_as(v), 0.0), valid)
    mu = torch.zeros(e, w, s, dtype=g.dtype, device=g.device).scatter_add_(2, idx, mu).transpose(1, 2)
    return g0 + g @ (mu.sum(-1, keepdim=True) / w - mu)


def _free_face(kt: Tensor, tau: Tensor, onehot: Tensor, c: float) -> Tensor:
    """The same minimiser through the free entries: for each class ``k`` with free samples ``F_k`` (``tau > 0``),
    ``alpha_k = const_k - E_k K~_{F_k F_k}^-1 E_k^T nu``, and ``sum_k alpha_k = 0`` gives the ``S x S`` system
    ``(sum_k E_k K~_{F_k F_k}^-1 E_k^T) nu = sum_k const_k``: ``O(S^3 + sum_k |F_k|^3)``, cheap when few samples
    are free per class (every sample is free in at least one class, so the system is positive definite)."""
    e, s, w = onehot.shape
    free = tau > 0
    idx, valid, pairs = _class_lists(free)
    chol, inv = _class_blocks(kt, idx, pairs)
    fixed = torch.where(free, 0.0, c * onehot)  # pinned entries at their bounds
    rhs = torch.where(valid, (onehot - kt @ fixed).transpose(1, 2).gather(2, idx), 0.0)
    const = fixed.transpose(1, 2).scatter_add(2, idx, _block_solve(chol, rhs, valid))  # (E, w, S)
    nu = torch.cholesky_solve(const.sum(1).unsqueeze(-1), torch.linalg.cholesky(_embed_sum(inv, idx, s)))
    nu_f = torch.where(valid, nu.squeeze(-1).gather(1, idx.reshape(e, -1)).view_as(rhs), 0.0)
    return const.scatter_add(2, idx, -_block_solve(chol, nu_f, valid)).transpose(1, 2)


def _face_targets(kt: Tensor, g: Tensor, g0: Tensor, onehot: Tensor, tau: Tensor, c: float, max_bytes: int) -> Tensor:
    """Each episode's minimiser on its current pieces, by the cheaper of the two ways (its largest class block,
    pinned or free); episodes are grouped by block size (sorted, a new group where the size grows by half) and
    each group is split so that its padded blocks stay within ``max_bytes``."""
    e, s, w = onehot.shape
    pinned = (tau == 0).sum(1)  # (E, w)
    b_pin, b_free = pinned.max(1).values, (s - pinned).max(1).values
    size = torch.minimum(b_pin, b_free)
    order = torch.argsort(size)
    sizes = size[order].tolist()
    target = torch.empty_like(onehot)
    lo = 0
    while lo < len(sizes):
        hi = lo + 1
        while (hi < len(sizes) and sizes[hi] <= 1.5 * sizes[lo] + 16
               and (hi - lo + 1) * 40 * w * sizes[hi] ** 2 <= max_bytes):
            hi += 1
        sel = order[lo:hi]
        pins = b_pin[sel] <= b_free[sel]
        if pins.any():
            ps = sel[pins]
            target[ps] = _pinned_face(kt[ps], g[ps], g0[ps], tau[ps], onehot[ps], c)
        if not pins.all():
            fs = sel[~pins]
            target[fs] = _free_face(kt[fs], tau[fs], onehot[fs], c)
        lo = hi
    return target


def _newton_chunk(
    k: Tensor, onehot: Tensor, c: float, ridge: float, max_iter: int, tol: float, max_bytes: int
) -> tuple[Tensor, Tensor]:
    """Semismooth Newton on the primal of the dual: ``(E, S, S), (E, S, w) -> alpha (E, S, w), converged (E,)``.

    The dual's quadratic is ``1/2 |X^T alpha|^2 + ridge/2 |alpha|^2``; writing ``1/2 |X^T alpha|^2`` through primal
    weights ``W`` leaves a strongly concave primal whose inner minimisation is, per sample, a Euclidean projection
    onto the simplex ``tau_i = C e_{y_i} - alpha_i in {tau >= 0, sum tau = C}``:
    ``a_hat(z) = C e - proj(C e + (z - e) / ridge)`` for the scores ``z = K alpha`` (``W = X^T alpha``). That
    objective is piecewise quadratic, its pieces the supports of ``tau``. Each step solves the dual exactly on the
    current pieces (the entries outside the supports held at their bounds) -- by whichever of
    :func:`_pinned_face` and :func:`_free_face` is cheaper -- and takes it with an Armijo line search on the
    primal; once the pieces are right the step lands on the optimum, so a handful of steps usually suffice. An
    episode stops when its duality gap ``1/2 (a_hat - alpha)^T K (a_hat - alpha)`` is below ``tol`` and returns
    ``a_hat``, which is feasible by construction; one that does not converge in ``max_iter`` steps comes back
    unconverged.
    """
    n_ep, s, w = onehot.shape
    kt = k + ridge * torch.eye(s, dtype=k.dtype, device=k.device)
    g = torch.cholesky_inverse(torch.linalg.cholesky(kt))
    g0 = g @ (onehot - 1.0 / w)
    alpha = torch.zeros_like(onehot)
    z = torch.zeros_like(onehot)
    out = torch.zeros_like(onehot)
    converged = torch.zeros(n_ep, dtype=torch.bool, device=k.device)
    idx = torch.arange(n_ep, device=k.device)

    def dual_point(zt: Tensor, oh: Tensor) -> tuple[Tensor, Tensor]:
        tau = _project_simplex(c * oh + (zt - oh) / ridge, c)
        return c * oh - tau, tau

    def primal(at: Tensor, zt: Tensor, a_hat: Tensor, oh: Tensor) -> Tensor:  # 1/2 |W|^2 - sum_i psi_i(z_i)
        return (0.5 * at * zt - zt * a_hat - 0.5 * ridge * a_hat * a_hat + a_hat * oh).flatten(1).sum(1)

    oh = onehot
    for _ in range(max_iter):
        a_hat, tau = dual_point(z, oh)
        r = a_hat - alpha
        gap = 0.5 * (r * (k @ r)).flatten(1).sum(1)
        fin = gap <= tol
        out[idx[fin]], converged[idx[fin]] = a_hat[fin], True
        keep = ~fin
        if not keep.any():
            break
        if not keep.all():
            idx, k, kt, g, g0, oh, alpha, z = (t[keep] for t in (idx, k, kt, g, g0, oh, alpha, z))
            a_hat, tau, r = (t[keep] for t in (a_hat, tau, r))
        target = _face_targets(kt, g, g0, oh, tau, c, max_bytes)
        d = target - alpha
        dz = k @ d
        f0 = primal(alpha, z, a_hat, oh)
        slope = -(r * dz).flatten(1).sum(1)
        slack = 1e-13 * (1 + f0.abs())
        t = torch.ones_like(f0)
        for _ in range(40):  # Armijo backtracking, per episode
            zt = z + t[:, None, None] * dz
            ok = primal(alpha + t[:, None, None] * d, zt, dual_point(zt, oh)[0], oh) <= f0 + 1e-4 * t * slope + slack
            if ok.all():
                break
            t = torch.where(ok, t, 0.5 * t)
        alpha, z = alpha + t[:, None, None] * d, z + t[:, None, None] * dz
    return out, converged


def _ipm_chunk(k: Tensor, onehot: Tensor, c: float, ridge: float, max_iter: int, tol: float) -> Tensor:
    """The structured interior-point method (Mehrotra's predictor-corrector): ``(E, S, S), (E, S, w) -> alpha``.

    Ordered class-major, ``P + D`` (``D`` the diagonal barrier term of an iteration) is block-diagonal with ``ways``
    blocks ``K + ridge I + D_k`` of size ``S x S``, and the equality constraint couples the blocks through an
    ``S x S`` Schur complement ``sum_k (K + ridge I + D_k)^-1``: one Newton step costs ``O(ways S^3)`` and
    ``ways S^2`` memory per episode. Each episode iterates until its own residuals and duality gap fall below
    ``tol``.
    """
    e, s = k.shape[0], k.shape[1]
    ways = onehot.shape[2]
    kw: dict[str, Any] = {"dtype": k.dtype, "device": k.device}
    k = k + ridge * torch.eye(s, **kw)
    onehot = onehot.transpose(1, 2)  # (E, w, S): class-major z[k, i] = alpha_i^k
    q, h = -onehot, c * onehot
    z = torch.zeros(e, ways, s, **kw)
    sl = torch.ones(e, ways, s, **kw)  # slack h - z
    lam = torch.ones(e, ways, s, **kw)  # inequality multipliers
    nu = torch.zeros(e, s, **kw)  # equality multipliers
    n = ways * s
    active = torch.ones(e, dtype=torch.bool, device=k.device)

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


def _memory_budget(device: torch.device) -> int:
    """Bytes the solver may hold at once on ``device``: a quarter of what is free now (CUDA: ``mem_get_info``;
    CPU: ``MemAvailable`` of /proc/meminfo, else 2 GiB)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 4
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 4
    except OSError:
        pass
    return 2 * 2**30


def svm_episode_bytes(s: int, ways: int, method: str = "newton") -> int:
    """Bytes of float64 work space one episode of ``S`` support samples and ``ways`` classes needs in
    :func:`svm_dual_batched`: ``"newton"`` (a few ``S x S`` matrices and ``S x ways`` arrays; its face systems are
    grouped within the budget on their own) or ``"ipm"`` (``ways`` blocks of ``S x S``, 3 times)."""
    if method == "ipm":
        return 8 * (3 * ways * s * s + 30 * ways * s)
    return 8 * (6 * s * s + 30 * ways * s)


def svm_chunks(episodes: int, per_episode: int, max_bytes: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges of episodes solved together so that each chunk's work space, ``per_episode`` bytes an
    episode, stays within ``max_bytes`` (at least one episode a chunk)."""
    size = max(1, min(episodes, max_bytes // max(per_episode, 1)))
    return [(lo, min(episodes, lo + size)) for lo in range(0, episodes, size)]


def svm_dual_batched(
    gram: Tensor, support_y: Tensor, ways: int, c: float = 0.1, ridge: float = 1.0, max_iter: int = 60,
    tol: float = 1e-11, max_bytes: int | None = None,
) -> Tensor:
    """The Crammer-Singer dual of many episodes at once (the QP of :func:`svm_head`), solved to ``tol``.

    Episodes are solved in chunks whose work space stays within ``max_bytes`` (:func:`svm_chunks`), each chunk by
    semismooth Newton on the dual's pieces (``_newton_chunk``: one ``S x S`` inverse per episode, then a few small
    exact solves); an episode it does not finish goes to the structured interior-point method (``_ipm_chunk``),
    chunked by its own, larger, work space. Every episode stops on its own duality gap, so its solution does not
    depend on the other episodes of the batch or on the chunking.

    Args:
        gram: ``(E, S, S)`` Gram matrices ``X X^T`` of the episodes' support features.
        support_y: ``(S,)`` labels shared by every episode, or ``(E, S)``, in ``[0, ways)``.
        ways: number of classes.
        c, ridge: as :func:`svm_head`.
        max_iter: the most Newton steps (usually 2-6), and the most interior-point iterations of the fallback.
        tol: stop an episode when its duality gap is below it (Newton: ``1/2 |X^T (a_hat - alpha)|^2``; the
            interior-point method: its residuals and ``sum s * lam``); the objective is then within about ``tol``
            of the optimum.
        max_bytes: the work space of one chunk; None: a quarter of the free memory of ``gram``'s device.

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
    if support_y.shape not in ((s,), (e, s)):
        raise ValueError(
            f"svm_dual_batched: support_y must be ({s},) or ({e}, {s}) for gram {tuple(gram.shape)}, "
            f"got {tuple(support_y.shape)}"
        )
    budget = _memory_budget(gram.device) if max_bytes is None else max_bytes
    y = support_y.expand(e, s)
    alpha = torch.empty(e, s, ways, dtype=torch.float64, device=gram.device)
    for lo, hi in svm_chunks(e, svm_episode_bytes(s, ways, "newton"), budget):
        k = gram[lo:hi].to(torch.float64)
        onehot = F.one_hot(y[lo:hi], ways).to(torch.float64)
        a, done = _newton_chunk(k, onehot, c, ridge, max_iter, tol, budget)
        alpha[lo:hi] = a
        left = (~done).nonzero().squeeze(1)
        for a2, b2 in svm_chunks(len(left), svm_episode_bytes(s, ways, "ipm"), budget):
            sel = left[a2:b2]
            alpha[lo + sel] = _ipm_chunk(k[sel], onehot[sel], c, ridge, max_iter, tol)
    return alpha



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
