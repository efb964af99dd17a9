"""N-way K-shot Q-query episodes as index tensors (pure index bookkeeping, no data loading).

Layout of one episode (``ways * (shots + queries)`` indices): the support set first, class-major
(``ways x shots``), then the query set, class-major (``ways x queries``). Episode ``e`` of epoch ``t``
depends only on ``(seed, t, e)``, so sampling is deterministic, independent of iteration history,
and a resumed run sees exactly the episodes an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["class_index", "EpisodeSampler", "episode_labels", "split_episode"]


def class_index(labels: Sequence[int] | np.ndarray | Tensor) -> list[np.ndarray]:
    """Indices of each class: ``out[c]`` = positions of label ``c`` (labels ``0..C-1``)."""
    y = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels, dtype=np.int64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array of class indices, got shape {y.shape}")
    if y.min() < 0:
        raise ValueError("labels must be >= 0")
    order = np.argsort(y, kind="stable")
    bounds = np.cumsum(np.bincount(y))
    return list(np.split(order, bounds[:-1]))


def episode_labels(ways: int, shots: int, queries: int) -> tuple[Tensor, Tensor]:
    """Episode-local labels ``0..ways-1``: ``(ways*shots,)`` support and ``(ways*queries,)`` query, class-major."""
    return torch.arange(ways).repeat_interleave(shots), torch.arange(ways).repeat_interleave(queries)


def split_episode(x: Tensor, ways: int, shots: int, queries: int) -> tuple[Tensor, Tensor]:
    """Split a gathered episode batch ``(ways*(shots+queries), ...)`` into support and query."""
    n = ways * shots
    if x.shape[0] != ways * (shots + queries):
        raise ValueError(
            f"episode batch has {x.shape[0]} items, expected ways*(shots+queries) = {ways * (shots + queries)}"
        )
    return x[:n], x[n:]


class EpisodeSampler:
    """Iterable of episodes, each an int64 index tensor (support then query, class-major).

    Args:
        labels: ``(N,)`` class of every item, ``0..C-1``.
        ways, shots, queries: ``N``-way ``K``-shot with ``Q`` queries per class.
        episodes: episodes per epoch (the length).
        seed: base seed; episode ``e`` of epoch ``t`` uses ``numpy.random.default_rng((seed, t, e))``.

    Usable as ``DataLoader(dataset, batch_sampler=sampler)``; call :meth:`set_epoch` per epoch.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | Tensor,
        ways: int,
        shots: int,
        queries: int,
        episodes: int,
        seed: int = 0,
    ) -> None:
        for name, v in (("ways", ways), ("shots", shots), ("episodes", episodes)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if int(queries) < 0:
            raise ValueError(f"queries must be >= 0, got {queries}")
        self.by_class = class_index(labels)
        sizes = np.array([len(c) for c in self.by_class])
        present = np.flatnonzero(sizes)
        if ways > len(present):
            raise ValueError(
                f"ways={ways} but the split has only {len(present)} classes; use --ways <= "
                f"{len(present)} (or a split with more classes)"
            )
        need = shots + queries
        smallest = int(present[np.argmin(sizes[present])])
        if sizes[smallest] < need:
            raise ValueError(
                f"shots + queries = {need} but class {smallest} has only {sizes[smallest]} items; "
                f"use shots + queries <= {sizes[smallest]}"
            )
        self.classes = present
        self.ways, self.shots, self.queries, self.episodes = int(ways), int(shots), int(queries), int(episodes)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.episodes

    def episode(self, e: int) -> Tensor:
        """The indices of episode ``e`` of the current epoch."""
        rng = np.random.default_rng((self.seed, self.epoch, int(e)))
        chosen = rng.choice(self.classes, self.ways, replace=False)
        k = self.shots + self.queries
        picks = np.stack([self.by_class[c][rng.choice(len(self.by_class[c]), k, replace=False)] for c in chosen])
        return torch.from_numpy(
            np.concatenate([picks[:, : self.shots].reshape(-1), picks[:, self.shots :].reshape(-1)])
        )

    def episode_classes(self, e: int) -> np.ndarray:
        """The (global) classes of episode ``e``, in episode-label order."""
        rng = np.random.default_rng((self.seed, self.epoch, int(e)))
        return rng.choice(self.classes, self.ways, replace=False)

    def __iter__(self) -> Iterator[Tensor]:
        for e in range(self.episodes):
            yield self.episode(e)
