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
(no gradient) solves many episodes' QPs at once with :func:`svm_dual_batched`, exactly, by a primal-dual active-set
method: guess which bounds ``alpha_i^k <= C [k == y_i]`` are active, solve the equality-constrained QP with those
entries at their bounds, update the guess from the solution's signs (entries past their bound, bounds with negative
multipliers), until the guess stands (usually 2-12 iterations). Each equality-constrained solve uses the structure:
with ``G = (K + ridge I)^-1`` (one ``S x S`` inverse per episode), it reduces to one small block per class (the
class's pinned samples, or its free ones, whichever are fewer) and one ``S x S`` system that couples the classes
(Woodbury or a Schur complement), ``O(S^3 + ways b^3)`` instead of the interior-point method's ``O(ways S^3)`` per
iteration. The structured interior-point method (Mehrotra's predictor-corrector, ``ways`` blocks ``K + ridge I +
D_k`` and an ``S x S`` Schur complement) stays as the fallback for an episode the active-set method does not finish.
Episodes go through in chunks sized from the free memory, each episode stops on its own, so its solution does not
depend on the other episodes of the batch or on the chunking; it agrees with qpth run to convergence to qpth's
tolerance (tests/episodes/test_svm.py).
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


def _padded_indices(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Flat indices of each row's True entries, first, padded to the longest row: ``(E, n) -> (E, P), (E, P)``
    (index, valid)."""
    count = mask.sum(1)
    width = int(count.max()) if mask.shape[0] else 0
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, :width]
    return order, torch.arange(width, device=mask.device) < count[:, None]


def _class_lists(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per episode and class, the samples where ``mask`` ``(E, S, w)`` holds, first and padded: indices and valid
    ``(E, w, b)``."""
    e, s, w = mask.shape
    idx, valid = _padded_indices(mask.transpose(1, 2).reshape(e * w, s))
    return idx.view(e, w, -1), valid.view(e, w, -1)


def _class_blocks(mat: Tensor, idx: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """The principal blocks ``mat[idx_k, idx_k]`` ``(E, w, b, b)`` of each class (padding: identity), their
    Cholesky factors and their inverses (padding: zero). The valid rows come first, so a padded block is
    ``diag(A, I)`` and its factor and inverse are block-diagonal too."""
    e = mat.shape[0]
    blocks = mat[torch.arange(e, device=mat.device)[:, None, None, None], idx[..., :, None], idx[..., None, :]]
    blocks.masked_fill_(~(valid[..., :, None] & valid[..., None, :]), 0.0)
    blocks.diagonal(dim1=-2, dim2=-1).masked_fill_(~valid, 1.0)
    chol = torch.linalg.cholesky(blocks)
    inv = torch.cholesky_inverse(chol)
    inv.diagonal(dim1=-2, dim2=-1).masked_fill_(~valid, 0.0)
    return chol, inv


def _embed_sum(blocks: Tensor, idx: Tensor, s: int) -> Tensor:
    """``sum_k E_k blocks_k E_k^T``: the classes' ``(b, b)`` blocks added into one ``(S, S)`` matrix per episode."""
    e = blocks.shape[0]
    flat = (idx[..., :, None] * s + idx[..., None, :]).reshape(e, -1)
    return torch.zeros(e, s * s, dtype=blocks.dtype, device=blocks.device).scatter_add_(
        1, flat, blocks.reshape(e, -1)).view(e, s, s)


def _block_solve(chol: Tensor, rhs: Tensor, valid: Tensor) -> Tensor:
    """Each class's block solve ``(E, w, b, b), (E, w, b) -> (E, w, b)``, zero on padding."""
    return torch.where(valid, torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1), 0.0)


def _pinned_face(kt: Tensor, g: Tensor, g0: Tensor, pinned: Tensor, onehot: Tensor, c: float) -> Tensor:
    """The dual's minimiser with the ``pinned`` entries ``(E, S, w)`` held at their bounds ``C [k == y_i]`` and the
    rest free (an equality-constrained QP), through the bounds' multipliers ``mu``.

    Stationarity ``K~ alpha_k = e_k - nu - mu_k`` gives ``alpha = G (e - nu - mu)`` with ``G = K~^-1``; the
    equality constraint fixes ``nu = (1 - sum_k mu_k) / ways``, and the pinned entries ``(i, k)`` give
    ``N mu = (G (e - 1/ways))_B - C [k == y_i]`` with ``N = blockdiag_k(G_{B_k B_k}) - Q G Q^T / ways`` (``B_k``
    the pinned samples of class ``k``, ``Q`` the map from a pinned entry to its sample). Woodbury with the
    capacitance ``ways K~ - sum_k E_k G_{B_k B_k}^-1 E_k^T`` (``S x S``) solves it in
    ``O(S^3 + sum_k |B_k|^3)``: cheap when few entries per class are pinned.
    """
    e, s, w = onehot.shape
    idx, valid = _class_lists(pinned)
    if idx.shape[-1] == 0:
        return g0
    chol, inv = _class_blocks(g, idx, valid)
    cap = torch.linalg.cholesky(w * kt - _embed_sum(inv, idx, s))
    flat = idx.reshape(e, -1)
    bound = c * onehot

    def solve(rhs: Tensor) -> Tensor:  # N^-1 rhs, (E, w, b)
        v = _block_solve(chol, rhs, valid)
        qv = torch.zeros(e, s, dtype=g.dtype, device=g.device).scatter_add_(1, flat, v.reshape(e, -1))
        u = torch.cholesky_solve(qv.unsqueeze(-1), cap).squeeze(-1)
        return v + _block_solve(chol, torch.where(valid, u.gather(1, flat).view_as(v), 0.0), valid)

    def alpha_of(mu: Tensor) -> Tensor:  # g0 + G (sum_k mu_k / ways - mu), (E, S, w)
        mu = torch.zeros(e, w, s, dtype=g.dtype, device=g.device).scatter_add_(2, idx, mu).transpose(1, 2)
        return g0 + g @ (mu.sum(-1, keepdim=True) / w - mu)

    def excess(alpha: Tensor) -> Tensor:  # alpha - bound on the pinned entries, (E, w, b)
        return torch.where(valid, (alpha - bound).transpose(1, 2).gather(2, idx), 0.0)

    mu = solve(excess(g0))  # alpha_B = g0_B - N mu
    mu = mu + solve(excess(alpha_of(mu)))  # one step of refinement: G is as ill-conditioned as K~
    return torch.where(pinned, bound, alpha_of(mu))


def _free_face(kt: Tensor, pinned: Tensor, onehot: Tensor, c: float) -> Tensor:
    """The same minimiser through the free entries: for each class ``k`` with free samples ``F_k``,
    ``alpha_k = const_k - E_k K~_{F_k F_k}^-1 E_k^T nu``, and ``sum_k alpha_k = 0`` gives the ``S x S`` system
    ``(sum_k E_k K~_{F_k F_k}^-1 E_k^T) nu = sum_k const_k``: ``O(S^3 + sum_k |F_k|^3)``, cheap when few samples
    are free per class (every sample is free in at least one class, so the system is positive definite)."""
    e, s, w = onehot.shape
    free = ~pinned
    idx, valid = _class_lists(free)
    chol, inv = _class_blocks(kt, idx, valid)
    fixed = torch.where(free, 0.0, c * onehot)  # pinned entries at their bounds
    rhs = torch.where(valid, (onehot - kt @ fixed).transpose(1, 2).gather(2, idx), 0.0)
    const = fixed.transpose(1, 2).scatter_add(2, idx, _block_solve(chol, rhs, valid))  # (E, w, S)
    nu = torch.cholesky_solve(const.sum(1).unsqueeze(-1), torch.linalg.cholesky(_embed_sum(inv, idx, s)))
    nu_f = torch.where(valid, nu.squeeze(-1).gather(1, idx.reshape(e, -1)).view_as(rhs), 0.0)
    return const.scatter_add(2, idx, -_block_solve(chol, nu_f, valid)).transpose(1, 2)


def _face_targets(
    kt: Tensor, g: Tensor, g0: Tensor, onehot: Tensor, pinned: Tensor, c: float, max_bytes: int
) -> Tensor:
    """Each episode's minimiser with its ``pinned`` entries at their bounds, by the cheaper of the two ways (its
    largest class block, pinned or free); episodes are grouped by block size (sorted, a new group where the size
    grows by half) and each group is split so that its padded blocks stay within ``max_bytes``."""
    e, s, w = onehot.shape
    per_class = pinned.sum(1)  # (E, w)
    b_pin, b_free = per_class.max(1).values, (s - per_class).max(1).values
    size = torch.minimum(b_pin, b_free)
    order = torch.argsort(size)
    sizes = size[order].tolist()
    target = torch.empty_like(onehot)
    lo = 0
    while lo < len(sizes):
        hi = lo + 1
        while (hi < len(sizes) and sizes[hi] <= 1.5 * sizes[lo] + 16
               and (hi - lo + 1) * 8 * (4 * w * sizes[hi] ** 2 + 2 * s * s) <= max_bytes):
            hi += 1
        sel = order[lo:hi]
        by_pins = b_pin[sel] <= b_free[sel]
        if by_pins.any():
            ps = sel[by_pins]
            target[ps] = _pinned_face(kt[ps], g[ps], g0[ps], pinned[ps], onehot[ps], c)
        if not by_pins.all():
            fs = sel[~by_pins]
            target[fs] = _free_face(kt[fs], pinned[fs], onehot[fs], c)
        lo = hi
    return target


def _active_set_chunk(
    k: Tensor, onehot: Tensor, c: float, ridge: float, max_iter: int, tol: float, max_bytes: int,
    pinned: Tensor | None = None, patience: int = 6,
) -> tuple[Tensor, Tensor, Tensor]:
    """The primal-dual active-set method (Hintermueller, Ito & Kunisch, SIAM J. Optim. 2002) on the dual:
    ``(E, S, S), (E, S, w) -> alpha (E, S, w), converged (E,), the last guess (E, S, w)``.

    Each iteration guesses which bounds ``alpha_i^k <= C [k == y_i]`` hold with equality ("pinned"), solves the
    dual exactly with those entries at their bounds (:func:`_face_targets`), and updates the guess from the
    solution: a pinned entry stays pinned while its bound's multiplier ``mu = e - nu - K~ alpha`` is positive, a free
    entry is pinned when it exceeds its bound. When the guess no longer changes, the solution satisfies the KKT
    conditions (to ``tol`` relative to the sizes of the terms) and is the optimum, exact up to rounding; the method
    usually gets there in 2-12 iterations. It starts from the guess ``pinned`` (None: no bound, the unconstrained
    minimiser ``G (e - 1/ways)``). The method is not monotone and can cycle (seen on
    unclustered features with ``K`` large against ``ridge``): an episode whose number of changes has not reached a
    new low in ``patience`` iterations, or that still changes after ``max_iter``, comes back unconverged. Every
    sample keeps at least one free entry: with all of its entries at their bounds, ``sum_k alpha_i^k = 0`` would be
    infeasible.
    """
    n_ep, s, w = onehot.shape
    kt = k + ridge * torch.eye(s, dtype=k.dtype, device=k.device)
    g = torch.cholesky_inverse(torch.linalg.cholesky(kt))
    g0 = g @ (onehot - 1.0 / w)
    bound = c * onehot
    # rounding: |(K~ alpha)_i| <= max_j K~_jj * C * S, and alpha's entries are at most C in size
    tol_mu = tol * (1 + c * s * kt.diagonal(dim1=1, dim2=2).amax(1))[:, None, None]
    tol_alpha = tol * c
    pinned = torch.zeros_like(onehot, dtype=torch.bool) if pinned is None else pinned
    last = pinned.clone()
    out = torch.zeros_like(onehot)
    converged = torch.zeros(n_ep, dtype=torch.bool, device=k.device)
    idx = torch.arange(n_ep, device=k.device)
    fewest = torch.full((n_ep,), s * w + 1, device=k.device)  # the fewest changes of the guess so far
    stalled = torch.zeros(n_ep, dtype=torch.long, device=k.device)  # iterations since that fell
    for _ in range(max_iter):
        alpha = _face_targets(kt, g, g0, onehot, pinned, c, max_bytes)
        grad = kt @ alpha - onehot
        free = ~pinned
        nu = -(grad * free).sum(-1, keepdim=True) / free.sum(-1, keepdim=True)
        mu = -grad - nu
        crit = torch.where(pinned, mu + tol_mu, alpha - bound - tol_alpha)  # > 0: pinned next
        new = crit > 0
        full = new.all(-1)
        if full.any():  # free the entry that least wants its bound
            new = torch.where(full.unsqueeze(-1), new & (crit != crit.amin(-1, keepdim=True)), new)
        changes = (new != pinned).flatten(1).sum(1)
        fin = changes == 0
        out[idx[fin]], converged[idx[fin]] = alpha[fin], True
        last[idx] = new
        stalled = torch.where(changes < fewest, 0, stalled + 1)
        fewest = torch.minimum(fewest, changes)
        keep = ~fin & (stalled < patience)  # a guess that keeps changing as much: cycling, left to the fallback
        if not keep.any():
            break
        idx, kt, g, g0, onehot, bound, tol_mu, pinned, fewest, stalled = (
            t[keep] for t in (idx, kt, g, g0, onehot, bound, tol_mu, new, fewest, stalled)
        )
    return out, converged, last


def _continued_active_set(
    k: Tensor, onehot: Tensor, c: float, ridge: float, max_iter: int, tol: float, max_bytes: int, factor: float = 4.0,
) -> tuple[Tensor, Tensor]:
    """:func:`_active_set_chunk` along a path of ridges, ``(E, S, S), (E, S, w) -> alpha, converged (E,)``.

    With ``K`` small against the ridge the active-set method needs a few iterations; with ``K`` large (trained
    features: ``K_ii`` in the thousands against ``ridge = 1``) it often still does, but its guesses can cycle. An
    episode where they do is solved again along a path: first with the ridge at about ``max_i K_ii / factor``, then
    with the ridge divided by ``factor`` at each stage down to ``ridge``, each stage starting from the previous
    stage's active bounds, which change little from one stage to the next. Only the last stage's solution is returned
    (an intermediate stage that does not converge still hands on its guess).
    """
    alpha, converged, _ = _active_set_chunk(k, onehot, c, ridge, max_iter, tol, max_bytes)  # often enough
    left = (~converged).nonzero().squeeze(1)
    if len(left) == 0:
        return alpha, converged
    k, onehot = k[left], onehot[left]
    ridges = [ridge]
    while ridges[-1] * factor < float(k.diagonal(dim1=1, dim2=2).amax()):
        ridges.append(ridges[-1] * factor)
    pinned = None
    for r in reversed(ridges):
        a, done, pinned = _active_set_chunk(k, onehot, c, r, max_iter, tol, max_bytes, pinned)
    alpha[left], converged[left] = a, done
    return alpha, converged


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


#: The most iterations of the interior-point fallback (it converges in about 10-25).
_IPM_ITER = 100


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
    """The Crammer-Singer dual of many episodes at once (the QP of :func:`svm_head`), solved exactly.

    Episodes are solved in chunks whose work space stays within ``max_bytes`` (:func:`svm_chunks`), each chunk by
    a primal-dual active-set method (``_active_set_chunk``: one ``S x S`` inverse per episode, then a few exact
    solves on guessed sets of active bounds, each ``O(S^3 + ways b^3)`` with ``b`` a class's pinned or free count,
    whichever is smaller); an episode it does not finish in ``max_iter`` iterations goes to the structured
    interior-point method (``_ipm_chunk``, ``O(ways S^3)`` per iteration), chunked by its own, larger, work space.
    Each episode stops on its own, so its solution does not depend on the other episodes of the batch or on the
    chunking.

    Args:
        gram: ``(E, S, S)`` Gram matrices ``X X^T`` of the episodes' support features.
        support_y: ``(S,)`` labels shared by every episode, or ``(E, S)``, in ``[0, ways)``.
        ways: number of classes.
        c, ridge: as :func:`svm_head`.
        max_iter: the most active-set iterations at a ridge (usually 2-12); the interior-point fallback takes up to
            100 (it needs about 15).
        tol: the active-set method's KKT tolerance, relative to the sizes of the terms (its solution is then exact
            up to rounding); the interior-point method stops when its residuals and duality gap are below it.
        max_bytes: the work space of one chunk; None: a quarter of the free memory of ``gram``'s device.

    Returns:
        ``alpha`` ``(E, S, ways)`` in float64: ``alpha_i^k <= C [k == y_i]``, ``sum_k alpha_i^k = 0``.

    Raises:
        ValueError: bad shapes or ``C <= 0``; RuntimeError: an episode neither method solved.
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
    if support_y.numel() and not 0 <= int(support_y.min()) <= int(support_y.max()) < ways:
        raise ValueError(
            f"svm_dual_batched: support labels must lie in [0, {ways}), got {int(support_y.min())}.."
            f"{int(support_y.max())}; pass ways = the number of (joint) classes"
        )
    budget = _memory_budget(gram.device) if max_bytes is None else max_bytes
    y = support_y.expand(e, s)
    alpha = torch.empty(e, s, ways, dtype=torch.float64, device=gram.device)
    for lo, hi in svm_chunks(e, svm_episode_bytes(s, ways, "newton"), budget):
        k = gram[lo:hi].to(torch.float64)
        onehot = F.one_hot(y[lo:hi], ways).to(torch.float64)
        a, done = _continued_active_set(k, onehot, c, ridge, max_iter, tol, budget)
        alpha[lo:hi] = a
        left = (~done).nonzero().squeeze(1)
        for a2, b2 in svm_chunks(len(left), svm_episode_bytes(s, ways, "ipm"), budget):
            sel = left[a2:b2]
            alpha[lo + sel] = _ipm_chunk(k[sel], onehot[sel], c, ridge, _IPM_ITER, tol)
    return alpha


def svm_logits_batched(
    support_f: Tensor, support_y: Tensor, query_f: Tensor, ways: int, c: float = 0.1, ridge: float = 1.0,
    max_bytes: int | None = None,
) -> Tensor:
    """Crammer-Singer SVM logits of many episodes: ``(E, S, D), (S,), (E, Q, D) -> (E, Q, ways)`` (no gradient;
    :func:`svm_dual_batched`), in ``query_f``'s dtype. Episodes go through in chunks whose float64 copies and
    solver work space stay within ``max_bytes`` (None: a quarter of the free memory of the features' device); the
    logits do not depend on the chunking."""
    e, s, d = support_f.shape
    q = query_f.shape[1]
    budget = _memory_budget(support_f.device) if max_bytes is None else max_bytes
    per_episode = 8 * ((s + q) * d + q * s + s * s + q * ways) + svm_episode_bytes(s, ways)
    out = torch.empty(e, q, ways, dtype=query_f.dtype, device=query_f.device)
    for lo, hi in svm_chunks(e, per_episode, budget):
        fs, fq = support_f[lo:hi].double(), query_f[lo:hi].double()
        y = support_y if support_y.dim() == 1 else support_y[lo:hi]
        alpha = svm_dual_batched(fs @ fs.transpose(1, 2), y, ways, c, ridge, max_bytes=budget)
        out[lo:hi] = ((fq @ fs.transpose(1, 2)) @ alpha).to(query_f.dtype)
    return out


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
