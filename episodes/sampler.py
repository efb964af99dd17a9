"""N-way K-shot Q-query episodes as index tensors (pure index bookkeeping, no data loading).

Layout of one episode (``ways * (shots + queries)`` indices): the support set first, class-major
(``ways x shots``), then the query set, class-major (``ways x queries``). Episode ``e`` of epoch ``t``
depends only on ``(seed, t, e)``, so sampling is deterministic, independent of iteration history,
and a resumed run sees exactly the episodes an uninterrupted one would.

Episodes are drawn :data:`CHUNK` at a time with array operations (one generator per chunk,
``numpy.random.default_rng((seed, epoch, chunk))``): the classes of an episode are a uniformly random
set of ``ways`` distinct classes in random order, and the ``shots + queries`` items of each class a
uniformly random ordered sample without replacement (a vectorised partial Fisher-Yates shuffle), so
which items are support and which are query is random too. See ``bench/episodes.py`` for the speed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["CHUNK", "class_index", "EpisodeSampler", "episode_labels", "split_episode"]


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


#: Episodes drawn together from one generator (amortises the generator and the array operations).
CHUNK = 64


class EpisodeSampler:
    """Iterable of episodes, each an int64 index tensor (support then query, class-major).

    Args:
        labels: ``(N,)`` class of every item, ``0..C-1``.
        ways, shots, queries: ``N``-way ``K``-shot with ``Q`` queries per class.
        episodes: episodes per epoch (the length).
        seed: base seed; episodes ``CHUNK*c .. CHUNK*c + CHUNK-1`` of epoch ``t`` come from
            ``numpy.random.default_rng((seed, t, c))``.

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
        # A padded (classes present, largest class) table of item indices, for one gather per chunk.
        self._sizes = sizes[present]
        self._table = np.zeros((len(present), int(self._sizes.max())), dtype=np.int64)
        for row, c in enumerate(present):
            self._table[row, : sizes[c]] = self.by_class[c]
        self._cache: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.episodes

    def _distinct_classes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``(n, ways)`` rows of distinct positions in ``self.classes``, each a uniform random ordered draw."""
        p, w = len(self.classes), self.ways
        if w * w > p:  # many collisions expected: random keys, argsort
            return np.argsort(rng.random((n, p)), axis=1)[:, :w]
        rows = rng.integers(0, p, (n, w))
        while True:  # redraw whole rows that repeat a class: uniform over ordered distinct tuples
            srt = np.sort(rows, axis=1)
            dup = (srt[:, 1:] == srt[:, :-1]).any(axis=1)
            if not dup.any():
                return rows
            rows[dup] = rng.integers(0, p, (int(dup.sum()), w))

    def _chunk(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """Episodes ``CHUNK*chunk ..`` of the current epoch: ``(CHUNK, ways*(shots+queries))`` indices
        and ``(CHUNK, ways)`` classes. The last chunk is cached (sequential access draws each once)."""
        key = (self.epoch, chunk)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        rng = np.random.default_rng((self.seed, self.epoch, chunk))
        w, k = self.ways, self.shots + self.queries
        rows = self._distinct_classes(rng, CHUNK)  # (CHUNK, w) rows of the table
        sizes = self._sizes[rows].reshape(-1)  # (CHUNK*w,)
        # Partial Fisher-Yates on every (episode, class) row at once: after step t, perm[:, :t+1] is a
        # uniformly random ordered sample of t+1 distinct positions in [0, size).
        r = np.arange(CHUNK * w)
        perm = np.broadcast_to(np.arange(self._table.shape[1]), (CHUNK * w, self._table.shape[1])).copy()
        u = rng.random((k, CHUNK * w))
        for t in range(k):
            j = t + (u[t] * (sizes - t)).astype(np.int64)
            perm[r, t], perm[r, j] = perm[r, j], perm[r, t]
        items = self._table[rows.reshape(-1)[:, None], perm[:, :k]].reshape(CHUNK, w, k)
        idx = np.concatenate(
            [items[:, :, : self.shots].reshape(CHUNK, -1), items[:, :, self.shots :].reshape(CHUNK, -1)], axis=1
        )
        classes = self.classes[rows]
        self._cache = (key, idx, classes)
        return idx, classes

    def episode(self, e: int) -> Tensor:
        """The indices of episode ``e`` of the current epoch."""
        idx, _ = self._chunk(int(e) // CHUNK)
        return torch.from_numpy(idx[int(e) % CHUNK].copy())

    def episode_classes(self, e: int) -> np.ndarray:
        """The (global) classes of episode ``e``, in episode-label order."""
        _, classes = self._chunk(int(e) // CHUNK)
        return classes[int(e) % CHUNK].copy()

    def __iter__(self) -> Iterator[Tensor]:
        for e in range(self.episodes):
            yield self.episode(e)
