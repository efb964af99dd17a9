"""The episodic task: what the engine trains for ``sla-fewshot`` (and the few-shot demo).

One forward call takes one normalised episode ``(ways*(shots+queries), C, H, W)`` -- the support
set then the query set, class-major, as :class:`episodes.EpisodeSampler` lays it out -- expands it
into an ``N*M``-way episode with :class:`episodes.SLAEpisode` (Lee, Hwang & Shin, ICML 2020,
Section 2.3), runs the learner on it, and returns the SLA loss over the joint query logits with the
SLA+AG and SLA+SI query logits. The learner never knows about SLA.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fewshot_sla import check_labels, sla_loss
from fewshot_sla.transforms import Transform

from .sampler import episode_labels, split_episode
from .sla_episode import SLAEpisode

__all__ = ["EpisodeTask"]


class EpisodeTask(nn.Module):
    """``forward(x, ways, shots, queries) -> {"loss", "joint_logits", "logits", "logits_single", "y"}``.

    Args:
        learner: ``learner(support_x, support_y, query_x, ways) -> (Q, ways)`` (ProtoNet, R2D2,
            MetaOptNet-SVM, the MAML family built with ``ways = N*M``).
        transform: SLA's transformation family (``"none"`` = the plain learner), resolved once by the recipe.
        ways, shots, queries: the training episode's shape (the defaults of ``forward``).

    Output: ``loss`` = cross-entropy over the ``Q*M`` joint query logits ``(Q*M, N*M)``; ``logits``
    = SLA+AG ``(Q, N)``, ``logits_single`` = SLA+SI ``(Q, N)`` (both detached), ``y`` = query labels ``(Q,)``.
    """

    def __init__(self, learner: nn.Module, transform: str | Transform, ways: int, shots: int, queries: int) -> None:
        super().__init__()
        self.learner = learner
        self.sla = SLAEpisode(transform)
        self.ways, self.shots, self.queries = int(ways), int(shots), int(queries)

    @property
    def m(self) -> int:
        return self.sla.m

    def forward(
        self, x: Tensor, ways: int | None = None, shots: int | None = None, queries: int | None = None
    ) -> dict[str, Tensor]:
        w, s, q = ways or self.ways, shots or self.shots, queries if queries is not None else self.queries
        sy, qy = episode_labels(w, s, q)
        sx, qx = split_episode(x, w, s, q)
        sx, sy_j, qx, qy_j = self.sla.expand(sx, sy.to(x.device), qx, qy.to(x.device))
        z = self.learner(sx, sy_j, qx, ways=self.sla.ways_joint(w))
        assert qy_j is not None
        zd = z.detach()
        return {
            "loss": sla_loss(z, qy_j),
            "joint_logits": z,
            "logits": self.sla.aggregate(zd),
            "logits_single": self.sla.single(zd),
            "y": qy.to(x.device),
        }

    @torch.no_grad()
    def predict(self, x: Tensor, ways: int, shots: int, queries: int) -> dict[str, Tensor]:
        """Eval-mode forward (previous mode restored): SLA+AG and SLA+SI query logits of one episode."""
        prev = self.training
        self.eval()
        try:
            out = self.forward(x, ways, shots, queries)
        finally:
            self.train(prev)
        return {"aggregated": out["logits"], "single": out["logits_single"], "y": out["y"]}

    @torch.no_grad()
    def predict_support_query(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None
    ) -> dict[str, Tensor]:
        """Eval-mode SLA+AG and SLA+SI query logits for a support set with explicit labels (previous mode restored).

        :meth:`forward` and :meth:`predict` take the class-major, equal-shots layout of
        :class:`episodes.EpisodeSampler`; this takes the support set as it comes: any order and any number of
        shots per class. ProtoNet, R2D2 and MetaOptNet-SVM accept such labels as they are; the MAML
        family also needs ``ways`` to equal the ``N`` it was built for (its head has ``N*M`` outputs).
        On a class-major equal-shots episode the logits are those of :meth:`predict`.

        Args:
            support_x: normalised support images ``(S, C, H, W)``.
            support_y: ``(S,)`` integer labels in ``[0, ways)``; every class needs at least one image.
            query_x: normalised query images ``(Q, C, H, W)``.
            ways: ``N`` (default ``support_y.max() + 1``).

        Returns:
            ``{"aggregated": (Q, N) SLA+AG logits, "single": (Q, N) SLA+SI logits}``.
        """
        if support_y.numel() == 0:
            raise ValueError("predict_support_query: the support set is empty; give every class at least one image")
        w = int(support_y.max()) + 1 if ways is None else int(ways)
        check_labels(support_y, w, what="predict_support_query support labels")
        if support_y.shape[0] != support_x.shape[0]:
            raise ValueError(
                f"predict_support_query: {support_x.shape[0]} support images but {support_y.shape[0]} labels; "
                "pass one label per support image"
            )
        missing = (torch.bincount(support_y.cpu(), minlength=w) == 0).nonzero().flatten().tolist()
        if missing:
            # a class without support images would get an empty prototype / no target: scores without meaning
            raise ValueError(
                f"predict_support_query: classes {missing} of {w} have no support image; "
                "give every class at least one support image (labels 0..ways-1)"
            )
        prev = self.training
        self.eval()
        try:
            sx, sy_j, qx, _ = self.sla.expand(support_x, support_y.to(support_x.device), query_x)
            z = self.learner(sx, sy_j, qx, ways=self.sla.ways_joint(w))
        finally:
            self.train(prev)
        return {"aggregated": self.sla.aggregate(z), "single": self.sla.single(z)}
