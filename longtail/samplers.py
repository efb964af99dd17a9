"""Training-set samplers for long-tailed data: one independent random stream per (seed, epoch), DDP-aware.

* ``"instance"`` -- instance-balanced: a random permutation of all images (every image once).
* ``"class-balanced"`` -- pick a class uniformly, then an image of it uniformly (with replacement).
* ``"sqrt"`` -- square-root sampling: class probability ``∝ n_c^(1/2)`` (Mahajan et al. 2018).
* ``"progressive"`` -- progressively-balanced (Kang et al., ICLR 2020, "Decoupling Representation and
  Classifier"): ``p_c(t) = (1 - t/T) * n_c/N + (t/T) * 1/C`` at epoch ``t`` of ``T``.

Every sampler draws one epoch of ``N`` (= number of training images) indices from a local
``torch.Generator`` seeded with :func:`epoch_seed`, i.e. the library's one seed hash
``stream_seed(seed, epoch, name="sampler")`` (a ``SeedSequence`` hash, independent of the augmentation
stream ``stream_seed(seed, epoch, rank)``). Hashing the pair (rather
than seeding with ``seed + epoch``, as torch's ``DistributedSampler`` does) keeps the runs of
different seeds independent: with ``seed + epoch``, seed ``s + 1`` replays seed ``s``'s epochs
shifted by one. An epoch's indices are a pure function of ``(seed, epoch, rank, world_size)``
(:meth:`LTSampler.epoch_indices` takes the epoch, or uses the one of the last :meth:`~LTSampler.set_epoch`),
so resuming at epoch ``e`` replays exactly the draw an uninterrupted run makes there. Under DDP, every
rank makes the same draw, pads it to a multiple of ``world_size`` by repeating its head (as
``DistributedSampler`` does), and takes the disjoint share ``draw[rank::world_size]``.

The class probabilities are a pure function (:func:`class_probabilities`), tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from fewshot_sla.seeding import stream_seed

__all__ = [
    "SAMPLERS",
    "class_probabilities",
    "epoch_seed",
    "make_sampler",
    "LTSampler",
    "InstanceSampler",
    "ClassBalancedSampler",
    "SqrtSampler",
    "ProgressiveSampler",
]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s draw in run ``seed``: a hash of the pair, not ``seed + epoch``.

    :func:`fewshot_sla.seeding.stream_seed` ``(seed, epoch, name="sampler")``: NumPy's SeedSequence mixes
    its whole entropy into every output word, so the streams of ``(s, e + 1)`` and ``(s + 1, e)`` are
    unrelated, where ``seed + epoch`` makes them one and the same; the name keeps the permutation apart
    from the run's augmentation stream ``(seed, epoch, rank)``.

    Args:
        seed: the run's base seed, ``>= 0``.
        epoch: 0-based epoch, ``>= 0``.

    Returns:
        an int in ``[0, 2**63)`` for ``torch.Generator.manual_seed``.
    """
    if isinstance(seed, bool) or isinstance(epoch, bool) or int(seed) != seed or int(epoch) != epoch:
        raise ValueError(f"sampler seed and epoch must be integers, got seed={seed!r}, epoch={epoch!r}")
    if seed < 0 or epoch < 0:
        raise ValueError(
            f"sampler seed and epoch must be >= 0 (SeedSequence takes non-negative entropy), got seed={seed}, "
            f"epoch={epoch}; pass a non-negative seed and 0-based epochs"
        )
    return stream_seed(int(seed), int(epoch), name="sampler")


def class_probabilities(name: str, counts: Sequence[int], epoch: int = 0, num_epochs: int = 200) -> np.ndarray:
    """Probability that a draw of sampler ``name`` falls in each class.

    Args:
        name: a key of :data:`SAMPLERS`.
        counts: ``(C,)`` training images per class (classes with 0 images get probability 0).
        epoch: current epoch ``t`` (0-based; only ``"progressive"`` depends on it).
        num_epochs: ``T`` (``"progressive"``); ``t/T`` is clipped to ``[0, 1]``.

    Returns:
        ``(C,)`` float64 summing to 1: instance ``n_c/N``; class-balanced ``1/C'`` over the ``C'``
        non-empty classes; sqrt ``sqrt(n_c)/sum sqrt(n)``; progressive the ``t/T`` mix of the first two.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {list(SAMPLERS)}")
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or n.size == 0 or (n < 0).any() or n.sum() <= 0:
        raise ValueError(
            f"counts must be a non-empty list of non-negative class sizes with a positive sum, got {counts!r}"
        )
    instance = n / n.sum()
    balanced = (n > 0) / float((n > 0).sum())
    if name == "instance":
        return instance
    if name == "class-balanced":
        return balanced
    if name == "sqrt":
        r = np.sqrt(n)
        return r / r.sum()
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 for the progressive sampler, got {num_epochs}")
    a = min(max(epoch / num_epochs, 0.0), 1.0)
    return (1.0 - a) * instance + a * balanced


class LTSampler(Sampler[int]):
    """Base class: one epoch = ``N`` draws from the stream :func:`epoch_seed` ``(seed, epoch)``, split across ranks.

    Args:
        labels: ``(N,)`` integer class labels of the training set.
        seed: base seed, ``>= 0`` (every rank must pass the same one).
        num_epochs: ``T`` of the progressive schedule (ignored by the others).
        rank, world_size: this process's share under DDP (defaults: a single process).
    """

    name = ""

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | Tensor,
        seed: int = 0,
        num_epochs: int = 200,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if isinstance(labels, Tensor):
            labels = labels.detach().cpu().numpy()
        y = np.asarray(labels)
        if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise ValueError(
                f"labels must be a non-empty 1-D array of non-negative integer class indices, "
                f"got dtype {y.dtype} shape {y.shape}"
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        epoch_seed(seed, 0)  # reject a bad seed here rather than at the first epoch
        self.labels = torch.from_numpy(y.astype(np.int64))
        self.counts = np.bincount(y).tolist()
        self.seed, self.num_epochs = int(seed), int(num_epochs)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0
        self.num_samples = math.ceil(len(y) / self.world_size)  # per rank
        self.total_size = self.num_samples * self.world_size
        # Images grouped by class: class c owns by_class[offsets[c] : offsets[c] + counts[c]].
        self._by_class = torch.argsort(self.labels, stable=True)
        self._counts_t = torch.tensor(self.counts, dtype=torch.int64)
        self._offsets = torch.cumsum(self._counts_t, 0) - self._counts_t

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that iterating yields: its stream is :func:`epoch_seed` ``(seed, epoch)``."""
        epoch_seed(self.seed, epoch)
        self.epoch = int(epoch)

    def class_probabilities(self, epoch: int | None = None) -> np.ndarray:
        """``(C,)`` class probabilities of ``epoch``'s draws (default: the last :meth:`set_epoch`'s epoch)."""
        t = self.epoch if epoch is None else int(epoch)
        return class_probabilities(self.name, self.counts, t, self.num_epochs)

    def _draw(self, g: torch.Generator, epoch: int) -> Tensor:
        """Epoch ``epoch``'s ``N`` indices (all ranks), default: class ~ probabilities, image uniform in class."""
        n = len(self.labels)
        p = torch.from_numpy(self.class_probabilities(epoch))
        cls = torch.multinomial(p, n, replacement=True, generator=g)
        pos = (torch.rand(n, generator=g, dtype=torch.float64) * self._counts_t[cls]).long()
        pos = torch.minimum(pos, self._counts_t[cls] - 1)  # guard the u -> 1.0 rounding edge
        return self._by_class[self._offsets[cls] + pos]

    def global_indices(self, epoch: int | None = None) -> Tensor:
        """Every rank's indices for ``epoch`` together: ``(len(self) * world_size,)`` int64, the draw padded to a
        multiple of ``world_size``; rank ``r``'s share is ``[r::world_size]`` (:meth:`epoch_indices`).

        A pure function of ``(seed, epoch, world_size)``: a fresh generator per call and nothing
        carried over between epochs, so epochs can be replayed in any order (resume, re-iteration).
        """
        e = self.epoch if epoch is None else int(epoch)
        g = torch.Generator()
        g.manual_seed(epoch_seed(self.seed, e))
        idx = self._draw(g, e)
        pad = self.total_size - len(idx)
        if pad > 0:  # as DistributedSampler: repeat the head so every rank gets the same count
            idx = torch.cat([idx, idx.repeat(math.ceil(pad / len(idx)))[:pad]])
        return idx

    def epoch_indices(self, epoch: int | None = None) -> Tensor:
        """This rank's indices for ``epoch`` (default: the last :meth:`set_epoch`'s): ``(len(self),)`` int64, a
        pure function of ``(seed, epoch, rank, world_size)`` (see :meth:`global_indices`)."""
        return self.global_indices(epoch)[self.rank : self.total_size : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(N={len(self.labels)}, C={len(self.counts)}, seed={self.seed}, epoch={self.epoch}, "
            f"rank={self.rank}/{self.world_size})"
        )


class InstanceSampler(LTSampler):
    """Instance-balanced: a permutation of all images per epoch (the usual ``shuffle=True``)."""

    name = "instance"

    def _draw(self, g: torch.Generator, epoch: int) -> Tensor:
        return torch.randperm(len(self.labels), generator=g)


class ClassBalancedSampler(LTSampler):
    """Class-balanced: class uniform, then image uniform within the class (with replacement)."""

    name = "class-balanced"


class SqrtSampler(LTSampler):
    """Square-root sampling: class probability ``∝ sqrt(n_c)``."""

    name = "sqrt"


class ProgressiveSampler(LTSampler):
    """Progressively-balanced (Kang et al. 2020): from instance- to class-balanced over ``num_epochs``."""

    name = "progressive"


SAMPLERS: dict[str, type[LTSampler]] = {
    "instance": InstanceSampler,
    "class-balanced": ClassBalancedSampler,
    "sqrt": SqrtSampler,
    "progressive": ProgressiveSampler,
}


def make_sampler(
    name: str,
    labels: Sequence[int] | np.ndarray | Tensor,
    seed: int = 0,
    num_epochs: int = 200,
    rank: int = 0,
    world_size: int = 1,
) -> LTSampler:
    """Build the sampler ``name`` (a key of :data:`SAMPLERS`) over training ``labels``.

    Use it as ``DataLoader(..., sampler=s)`` or iterate it directly for index batches; call
    ``s.set_epoch(epoch)`` at the start of every epoch (or take ``s.epoch_indices(epoch)``). Epoch
    ``e``'s draw is seeded by :func:`epoch_seed` ``(seed, e)``.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {list(SAMPLERS)}")
    return SAMPLERS[name](labels, seed=seed, num_epochs=num_epochs, rank=rank, world_size=world_size)
