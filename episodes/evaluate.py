"""Scoring an episodic learner on many test episodes, embedding every image once where the learner allows it.

ProtoNet, R2D2 and MetaOptNet-SVM with the encoder in eval mode (BatchNorm on running statistics, dropout off)
give an image the same features in every episode; only their head (prototypes, ridge solve, QP) depends on the
episode. So the *embed-once* path runs the encoder over the ``M`` transformed copies of every image of the split
once, in batches (:func:`embed_split`), and scores each episode by gathering its features in exactly the layout the
per-episode path builds -- support expanded then query expanded, row ``b*M + j`` = ``encoder(T_j(x[b]))`` (the
core's ``x_aug[b*M + j]``) -- and running ``learner.head_from_features`` on them. 10,000 episodes then cost about
one encoder pass over the split plus 10,000 small heads, instead of 10,000 encoder passes (``bench/episodes.py``:
ProtoNet and R2D2 take about 1.1x the time of embedding the Omniglot test split). MetaOptNet-SVM's head is a QP per
episode (about 75 ms on one CPU core for 5-way 1-shot with rotation, 400 dual variables), which then dominates; the
QPs stay one per episode because qpth stops a batch only when all of it has converged, which would change the logits.

Exactness: the two paths give bit-identical logits, hence the same predictions and accuracies, when the encoder
gives a sample the same output in any batch. On CPU this holds for every batch of at least 2 rows (PyTorch sends a
batch of 1 to another convolution kernel, whose sums run in another order), so :func:`embed_split` never forms a
batch of 1; ``tests/episodes/test_evaluate.py`` checks the equality per learner with and without SLA. On CUDA,
cuDNN may pick a different convolution algorithm for another batch shape, so features can differ in the last
float bits; a prediction then changes only where a query's two best logits tie to within that noise.

The MAML family (MAML, FOMAML, Meta-SGD, ANIL) adapts per episode and uses the query batch's BatchNorm
statistics, so its features depend on the episode: it always takes the per-episode path
(:meth:`episodes.task.EpisodeTask.predict`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import Tensor, nn

from fewshot_sla import joint_labels
from fewshot_sla.progress import progress_bar

from .datasets import FewShotData, gather
from .sampler import EpisodeSampler, episode_labels
from .task import EpisodeTask

__all__ = [
    "HEAD_BATCH_BYTES", "STRATEGIES", "FeatureHead", "can_embed_once", "choose_strategy", "embed_split",
    "episode_logits", "evaluate_episodes",
]

#: The most bytes of gathered features per call of ``head_from_features_batch`` (20-way 5-shot 15-query SLA
#: episodes of 1024-d float32 features take 6.5 MB each, so 39 episodes a call instead of 256).
HEAD_BATCH_BYTES = 256 * 2**20

#: ``auto``: embed once when that runs fewer images through the encoder than the episodes would (below, with a few
#: validation episodes, the per-episode path is cheaper); both paths give the same logits.
STRATEGIES: tuple[str, ...] = ("auto", "embed_once", "per_episode")


class FeatureHead(Protocol):
    """A learner the embed-once path can use (ProtoNet, R2D2, MetaOptSVM): an encoder, then a head of features
    with ``learner(sx, sy, qx, ways) == head_from_features(encoder(sx), sy, encoder(qx), ways)``."""

    encoder: nn.Module

    def head_from_features(
        self, support_f: Tensor, support_y: Tensor, query_f: Tensor, ways: int | None = None
    ) -> Tensor: ...


def can_embed_once(task: EpisodeTask) -> bool:
    """Whether ``task``'s learner is an encoder followed by a head of features (``head_from_features``)."""
    learner = task.learner
    return callable(getattr(learner, "head_from_features", None)) and isinstance(
        getattr(learner, "encoder", None), nn.Module
    )


def choose_strategy(task: EpisodeTask, images: int, episodes: int, ways: int, shots: int, queries: int,
                    strategy: str = "auto") -> str:
    """``"embed_once"`` or ``"per_episode"`` for ``strategy`` (one of :data:`STRATEGIES`).

    ``auto`` embeds once when the learner allows it and the episodes hold at least as many images
    (``episodes * ways * (shots + queries)``) as the split (``images``): the cheaper of two equal answers.

    Raises:
        ValueError: an unknown strategy, or ``embed_once`` for a learner without ``head_from_features``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown evaluation strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "per_episode":
        return strategy
    if not can_embed_once(task):
        if strategy == "embed_once":
            raise ValueError(
                f"strategy='embed_once' needs a learner with head_from_features (protonet, r2d2, svm); "
                f"{type(task.learner).__name__} adapts to each episode, so its features depend on the episode: "
                "use strategy='per_episode' (or 'auto', which picks it)"
            )
        return "per_episode"
    if strategy == "embed_once":
        return strategy
    return "embed_once" if episodes * ways * (shots + queries) >= images else "per_episode"


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode inside the block, the previous mode restored after (as :meth:`EpisodeTask.predict` does)."""
    prev = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(prev)


def _chunk_bounds(n: int, per_chunk: int, m: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges of near-equal size covering ``n`` images, at most ``per_chunk`` each where possible.

    No chunk sends a single row through the encoder (one image with ``M = 1``): a batch of 1 takes another CPU
    convolution kernel and would break bit-equality with the per-episode path.
    """
    chunks = max(1, math.ceil(n / per_chunk))
    if m == 1 and n >= 2:
        chunks = min(chunks, n // 2)  # every chunk >= floor(n / chunks) >= 2 images
    return [(i * n // chunks, (i + 1) * n // chunks) for i in range(chunks)]


@torch.no_grad()
def embed_split(
    task: EpisodeTask,
    images: Tensor,
    device: torch.device | str,
    *,
    normalize: Callable[[Tensor], Tensor],
    batch_size: int = 512,
    progress: bool = False,
) -> Tensor:
    """Features of every image's ``M`` transformed copies, with the encoder in eval mode.

    Each chunk goes through what the per-episode path does to an episode: ``normalize`` on the CPU batch, to
    ``device``, SLA's transform (``x_aug[b*M + j] = T_j(x[b])``), the learner's encoder.

    Args:
        task: an :class:`EpisodeTask` whose learner has an ``encoder`` (see :func:`can_embed_once`).
        images: ``(N, C, H, W)`` raw images (uint8, as :class:`episodes.data.FewShotData` holds them), on the CPU.
        device: where the encoder runs and the features stay.
        normalize: raw batch ``(B, C, H, W)`` -> normalised float batch, the one the learner was trained with.
        batch_size: transformed copies per encoder call (``batch_size // M`` images).
        progress: a tqdm bar over the chunks.

    Returns:
        ``(N, M, D)`` features: ``out[i, j] = encoder(T_j(normalize(images[i])))``.
    """
    if batch_size < 1:
        raise ValueError(f"embed_split: batch_size must be >= 1, got {batch_size}")
    if not can_embed_once(task):
        raise ValueError(
            f"embed_split: {type(task.learner).__name__} has no encoder + head_from_features to embed with; "
            "use protonet, r2d2 or svm, or evaluate per episode"
        )
    m = task.m
    encoder = cast(FeatureHead, task.learner).encoder
    feats = []
    with _eval_mode(task):
        bounds = _chunk_bounds(len(images), max(1, batch_size // m), m)
        desc = f"embed {len(images):,} images x {m} transformations"
        for lo, hi in progress_bar(bounds, desc=desc, enabled=progress, leave=False):
            x = normalize(images[lo:hi]).to(device)
            # contiguous, as the per-episode path's torch.cat of support and query makes its batch
            f = encoder(task.sla.transform(x).contiguous())
            feats.append(f.reshape(hi - lo, m, -1))
    return torch.cat(feats)


@torch.no_grad()
def episode_logits(
    task: EpisodeTask,
    data: FewShotData,
    ways: int,
    shots: int,
    queries: int,
    episodes: int,
    seed: int,
    device: torch.device | str,
    *,
    normalize: Callable[[Tensor], Tensor],
    strategy: str = "auto",
    batch_size: int = 512,
    progress: bool = False,
    features: Tensor | None = None,
    head_batch: int = 256,
) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
    """SLA+AG and SLA+SI query logits of each test episode, in order.

    Args:
        task: the trained :class:`EpisodeTask` (switched to eval mode while this runs, its mode restored after).
        data: the split; episodes ``0..episodes-1`` of ``EpisodeSampler(data.labels, ways, shots, queries,
            episodes, seed)``.
        ways, shots, queries: the episodes' shape.
        episodes, seed: how many, and the sampler's seed.
        device: where the task lives.
        normalize: raw uint8 batch -> the learner's float input (e.g. ``lambda x: to_float(x, "omniglot")``).
        strategy: one of :data:`STRATEGIES` (see :func:`choose_strategy`).
        batch_size: transformed copies per encoder call when embedding once.
        progress: tqdm bars.
        features: :func:`embed_split` of this task (in eval mode) and ``data.images``, to reuse one embedding
            for several evaluations (episode shapes, seeds); implies the embed-once path. None: embedded here.
        head_batch: episodes per call of a learner's ``head_from_features_batch`` where it has one (MetaOptNet-SVM:
            the QPs of that many episodes solved together, in chunks sized from the free memory; each episode's
            logits are those of its own call), fewer where their gathered features would exceed
            :data:`HEAD_BATCH_BYTES`.

    Yields:
        ``(e, aggregated (Q, N), single (Q, N), y (Q,))`` with ``Q = ways * queries``, ``N = ways``, on ``device``.
    """
    sampler = EpisodeSampler(data.labels, ways, shots, queries, episodes, seed=seed)
    how = choose_strategy(task, len(data), episodes, ways, shots, queries,
                          "embed_once" if features is not None and strategy == "auto" else strategy)
    if features is not None:
        if how != "embed_once":
            raise ValueError(f"features are for the embed-once path, but strategy={strategy!r}; drop one of them")
        if features.shape[:2] != (len(data), task.m):
            raise ValueError(
                f"features of shape {tuple(features.shape)} do not belong to this split and transform: expected "
                f"({len(data)}, {task.m}, D) from embed_split(task, data.images, ...)"
            )
    with _eval_mode(task):
        if how == "per_episode":
            for e in progress_bar(range(episodes), desc="eval", enabled=progress, leave=False):
                out = task.predict(normalize(gather(data.images, sampler.episode(e))).to(device), ways, shots, queries)
                yield e, out["aggregated"], out["single"], out["y"]
            return
        feats = features if features is not None else embed_split(
            task, data.images, device, normalize=normalize, batch_size=batch_size, progress=progress
        )
        m, d = task.m, feats.shape[-1]
        sy, qy = episode_labels(ways, shots, queries)
        sy_joint, qy = joint_labels(sy, m).to(device), qy.to(device)
        n_support = ways * shots * m
        ways_joint = task.sla.ways_joint(ways)
        head = cast(FeatureHead, task.learner).head_from_features
        batch_head = getattr(task.learner, "head_from_features_batch", None)
        if batch_head is not None:  # e.g. MetaOptNet-SVM: many episodes' QPs solved together
            bar = progress_bar(total=episodes, desc="eval", enabled=progress, leave=False)
            per_episode = ways * (shots + queries) * m * d * feats.element_size()
            step = max(1, min(head_batch, HEAD_BATCH_BYTES // per_episode))  # the stacked features stay bounded
            for lo in range(0, episodes, step):
                ids = range(lo, min(episodes, lo + step))
                f = torch.stack([feats[sampler.episode(e).to(device)].reshape(-1, d) for e in ids])
                zs = batch_head(f[:, :n_support], sy_joint, f[:, n_support:], ways=ways_joint)
                for e, z in zip(ids, zs):
                    yield e, task.sla.aggregate(z), task.sla.single(z), qy
                bar.update(len(ids))
            bar.close()
            return
        for e in progress_bar(range(episodes), desc="eval", enabled=progress, leave=False):
            # (support then query) x M rows, row b*M + j = T_j of item b: what encoder(cat([sx_aug, qx_aug])) gives
            f = feats[sampler.episode(e).to(device)].reshape(-1, d)
            z = head(f[:n_support], sy_joint, f[n_support:], ways=ways_joint)
            yield e, task.sla.aggregate(z), task.sla.single(z), qy


def evaluate_episodes(
    task: EpisodeTask,
    data: FewShotData,
    ways: int,
    shots: int,
    queries: int,
    episodes: int,
    seed: int,
    device: torch.device | str,
    *,
    normalize: Callable[[Tensor], Tensor],
    progress: bool = False,
    strategy: str = "auto",
    batch_size: int = 512,
    features: Tensor | None = None,
) -> dict[str, Any]:
    """Per-episode accuracy of SLA+SI and SLA+AG, and per-class accuracy (AG), over ``episodes`` episodes.

    Embeds the split once for ProtoNet, R2D2 and MetaOptNet-SVM when that is cheaper (``strategy="auto"``), runs
    each episode through the whole task otherwise (the MAML family always); the accuracies are the same either way
    (see the module docstring). Arguments as :func:`episode_logits`.

    Returns:
        ``{"acc_single": [episodes floats], "acc_agg": [episodes floats], "per_class": (data.num_classes,) array}``;
        ``per_class[c]`` is the SLA+AG accuracy over the queries of class ``c`` in all episodes (NaN if none).
    """
    ok_si, ok_ag = [], []
    for _, aggregated, single, y in episode_logits(task, data, ways, shots, queries, episodes, seed, device,
                                                    normalize=normalize, strategy=strategy, batch_size=batch_size,
                                                    progress=progress, features=features):
        ok_si.append(single.argmax(1) == y)
        ok_ag.append(aggregated.argmax(1) == y)
    hit_si, hit_ag = torch.stack(ok_si), torch.stack(ok_ag)  # (E, Q) each: one device sync below, not one per episode
    acc_si, acc_ag = hit_si.float().mean(1).tolist(), hit_ag.float().mean(1).tolist()
    # the query labels are the same in every episode (class-major); episode_classes maps them to the split's classes
    sampler = EpisodeSampler(data.labels, ways, shots, queries, episodes, seed=seed)
    _, qy = episode_labels(ways, shots, queries)
    cls = np.stack([sampler.episode_classes(e) for e in range(episodes)])[:, qy.numpy()]  # (E, Q)
    hits = np.bincount(cls.ravel(), weights=hit_ag.cpu().numpy().ravel(), minlength=data.num_classes)
    seen = np.bincount(cls.ravel(), minlength=data.num_classes)
    with np.errstate(invalid="ignore"):
        per_class = np.where(seen > 0, hits / np.maximum(seen, 1), np.nan)
    return {"acc_single": acc_si, "acc_agg": acc_ag, "per_class": per_class}
