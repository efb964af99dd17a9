"""SLA for episodic few-shot learning: an N-way episode becomes an N*M-way episode.

Lee, Hwang & Shin (ICML 2020), Section 2.3: support and query are both transformed, every
(class, transform) pair is a class of its own (joint label ``y*M + j``), the learner is unchanged,
and at test time the query's joint logits are aggregated over transforms (SLA+AG) or read from the
identity copy (SLA+SI). The learner never knows about SLA: it just sees a bigger episode.
"""

from __future__ import annotations

from torch import Tensor

from fewshot_sla import aggregate_logits, expand, get_transform, single_logits
from fewshot_sla.transforms import Transform

__all__ = ["SLAEpisode"]


class SLAEpisode:
    """Wraps any episodic learner's inputs and outputs.

    Args:
        transform: a name in :data:`fewshot_sla.TRANSFORMS` or a Transform (``"none"`` = no SLA).

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
        in the core's layout (``x_aug[b*M + j] = T_j(x[b])``, labels ``y*M + j``)."""
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
