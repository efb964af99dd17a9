"""SLA for episodic few-shot learning: an N-way episode becomes an N*M-way episode.

Lee, Hwang & Shin (ICML 2020), Section 2.3: support and query are both transformed, every
(class, transform) pair is a class of its own (joint label ``y*M + j``), the learner is unchanged,
and at test time the query's joint logits are aggregated over transforms (SLA+AG) or read from the
identity copy (SLA+SI). The learner never knows about SLA: it just sees a bigger episode.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fewshot_sla import aggregate_logits, check_labels, expand, get_transform, single_logits
from fewshot_sla.transforms import Transform

__all__ = ["SLAEpisode", "check_episode_labels"]

_REMAP = ("remap them to 0..N-1 first: learn2learn's RemapLabels among the task transforms, or "
          "torch.unique(support_y, return_inverse=True) (query labels: torch.searchsorted on its classes)")


def check_episode_labels(support_y: Tensor, query_y: Tensor | None = None) -> None:
    """Raise a one-line ``ValueError`` unless the support labels are exactly ``0..N-1`` (each class present) and
    every query label is one of them: ``(S,)``, ``(Q,)`` integer tensors."""
    check_labels(support_y, what="SLAEpisode: support labels")
    classes = torch.unique(support_y).tolist()
    n = len(classes)
    if n and classes[-1] != n - 1:
        shown = ", ".join(map(str, classes[:8])) + (", ..." if n > 8 else "")
        raise ValueError(
            f"SLAEpisode: support labels must be episode-local 0..{n - 1} for this {n}-way episode, got the class ids "
            f"[{shown}]; {_REMAP}"
        )
    if query_y is not None:
        check_labels(query_y, what="SLAEpisode: query labels")
        if query_y.numel() and int(query_y.max()) >= n:
            raise ValueError(
                f"SLAEpisode: query labels must be among the support's episode-local labels 0..{n - 1}, got "
                f"{int(query_y.max())}; {_REMAP}"
            )


class SLAEpisode:
    """Wraps any episodic learner's inputs and outputs.

    Args:
        transform: a name in :data:`fewshot_sla.TRANSFORMS` or a Transform (``"none"`` = no SLA).

    Labels are **episode-local**: the support labels of an ``N``-way episode are exactly ``0..N-1`` and every query
    label is one of them, since the joint label ``y*M + j`` indexes the learner's ``N*M`` outputs. Global class ids
    (what learn2learn's ``TaskDataset`` hands over without its ``RemapLabels`` transform, e.g. ``[3, 7, 12, 20, 41]``)
    are refused with a ``ValueError``: remap them first, with learn2learn's ``RemapLabels`` among the task
    transforms, or ``classes, y = torch.unique(support_y, return_inverse=True)`` (and the query labels with
    ``torch.searchsorted(classes, query_y)``).

    Example::

        sla = SLAEpisode("rotation")
        sx, sy, qx, qy = sla.expand(support_x, support_y, query_x, query_y)   # N*M-way episode
        z = learner(sx, sy, qx)                                                # (Q*M, N*M)
        logits = sla.aggregate(z)                                              # (Q, N), SLA+AG
    """

    def __init__(self, transform: str | Transform = "rotation") -> None:
        self.transform = get_transform(transform)
        self.m = self.transform.m

    def ways_joint(self, ways: int) -> int:
        """``N*M``: the number of classes the learner sees."""
        return ways * self.m

    def expand(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """``(S, C, H, W), (S,), (Q, C, H, W), (Q,)`` -> ``(S*M, ...), (S*M,), (Q*M, ...), (Q*M,)``
        in the core's layout (``x_aug[b*M + j] = T_j(x[b])``, labels ``y*M + j``).

        Raises:
            ValueError: labels that are not episode-local (support exactly ``0..N-1``, query among them).
        """
        check_episode_labels(support_y, query_y)
        sx, sy = expand(support_x, support_y, self.transform)
        if query_y is None:
            return sx, sy, self.transform(query_x), None
        qx, qy = expand(query_x, query_y, self.transform)
        return sx, sy, qx, qy

    def aggregate(self, query_joint_logits: Tensor) -> Tensor:
        """SLA+AG: ``(Q*M, N*M) -> (Q, N)``."""
        return aggregate_logits(query_joint_logits, self.m)

    def single(self, query_joint_logits: Tensor) -> Tensor:
        """SLA+SI: ``(Q*M, N*M) -> (Q, N)``."""
        return single_logits(query_joint_logits, self.m)
