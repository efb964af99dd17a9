"""Seeds of independent random streams: one hash for every stream of the library.

A stream is named by a key of non-negative integers (``(seed, epoch, rank)``, ``(seed, episode)``) and, where
two streams of one run share a key, a name. :func:`stream_seed` is the only seed hash: the engine's batch streams,
the few-shot augmentation, the long-tail augmentation and the long-tail samplers all draw from it. This module
imports only NumPy, so ``import longtail.samplers`` does not load the training engine.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["stream_seed"]


def stream_seed(*key: int, name: str = "") -> int:
    """A 63-bit seed for the random stream named by ``key``, e.g. ``(seed, epoch, rank)`` or ``(seed, episode)``.

    Streams of different keys are independent (NumPy's ``SeedSequence`` hashes the whole key), unlike
    ``seed + epoch``, where seed ``s + 1`` replays seed ``s`` shifted by one epoch. ``SeedSequence``
    zero-pads its entropy, so ``(s, e)`` and ``(s, e, 0)`` are one stream: streams that share a key in one
    run get distinct ``name`` s (the name's CRC-32 is hashed in as one more key word), e.g. long tail's
    sampler permutation ``(seed, epoch, name="sampler")`` beside its augmentation ``(seed, epoch, rank)``.

    Args:
        key: the stream's coordinates, each ``>= 0``.
        name: tells apart streams that share a key (empty: no name word).

    Returns:
        ``SeedSequence(key [+ crc32(name)]).generate_state(2, uint64)[0] >> 1``: an int in ``[0, 2**63)`` for
        ``torch.Generator.manual_seed``.

    Raises:
        ValueError: a key part is negative (``SeedSequence`` takes non-negative entropy only).
    """
    if any(k < 0 for k in key):
        raise ValueError(f"stream_seed: key parts must be >= 0, got {key}")
    words = [*key, zlib.crc32(name.encode())] if name else list(key)
    return int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0] >> np.uint64(1))
