"""Gradient-based episodic learners (MAML, first-order MAML, Meta-SGD, ANIL) through learn2learn.

* MAML: Finn, Abbeel & Levine, ICML 2017 -- the whole network is adapted to the support set by a
  few gradient steps, and the query loss of the adapted copy is back-propagated through them
  (second order). FOMAML drops the second-order term.
* Meta-SGD: Li, Zhou, Chen & Li, 2017 -- as MAML with a meta-learned learning rate per parameter
  entry (initialised to ``inner_lr``).
* ANIL: Raghu, Raghu, Bengio & Vinyals, ICLR 2020 -- only the linear head is adapted; the encoder's
  features are computed once per episode and the encoder is learned in the outer loop only.

learn2learn is imported where a learner is built, never when this module is imported; without it a
:class:`Learn2LearnMissing` error names the install command (``scripts/build_learn2learn.sh``).

With SLA the learner simply sees ``N*M`` classes: construct it with ``ways = sla.ways_joint(N)``
(``N*M``) and feed it the expanded episode of :class:`episodes.SLAEpisode`.
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ALGORITHMS", "Learn2LearnMissing", "import_learn2learn", "use_batch_statistics", "MAMLLearner"]

ALGORITHMS = ("maml", "fomaml", "metasgd", "anil")


class Learn2LearnMissing(ImportError):
    """learn2learn is needed (gradient-based learners) but not installed."""


def import_learn2learn() -> ModuleType:
    """``import learn2learn``, or a :class:`Learn2LearnMissing` error that says how to install it."""
    try:
        import learn2learn
    except ImportError as e:
        raise Learn2LearnMissing(
            "the gradient-based learners (maml, fomaml, metasgd, anil) need learn2learn 0.2.0, which is not "
            "installed: run `scripts/build_learn2learn.sh .venv/bin/python` (plain `pip install learn2learn` "
            f"fails to build on Python >= 3.11); import error: {e}"
        ) from e
    return learn2learn


def use_batch_statistics(module: nn.Module) -> nn.Module:
    """Make every BatchNorm layer of ``module`` normalise with the statistics of the current batch, in
    training and evaluation alike (running statistics removed), as the MAML reference implementation
    does; returns ``module`` (changed in place)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
            m.num_batches_tracked = None
    return module


class MAMLLearner(nn.Module):
    """``forward(support_x, support_y, query_x, ways=None) -> (Q, ways)``: query logits of a copy of the
    network adapted to the support set by ``inner_steps`` gradient steps on the support cross-entropy.

    The network is ``encoder`` followed by a linear head with ``ways`` outputs. The call signature is
    :class:`episodes.ProtoNet`'s, but the head has a fixed number of outputs: **with SLA, construct
    with** ``ways = N*M`` (``SLAEpisode.ways_joint(N)``) and pass the expanded episode; ``ways`` given
    to ``forward`` must equal the head's.

    BatchNorm: by default (``transductive_bn=True``) every BatchNorm layer of the encoder uses the
    statistics of the batch it is given -- the support set during adaptation, the query set for the
    logits -- in training and evaluation alike, as in MAML's reference code (transductive; running
    statistics are removed from the encoder, in place). With ``transductive_bn=False`` BatchNorm
    behaves as usual (running statistics, updated by every forward pass in training mode, used in
    evaluation mode).

    Typical inner loops (Finn et al. 2017): Omniglot ``inner_lr=0.4``, 1 step (3 at test);
    mini-ImageNet ``inner_lr=0.01``, 5 steps (10 at test).

    Adaptation runs with gradients enabled even under ``torch.no_grad()`` (evaluation), then first
    order, since no outer gradient is needed.

    Args:
        encoder: maps images to ``(B, D)`` features; ``D`` is ``encoder.out_dim`` unless ``feat_dim``.
        ways: outputs of the head (``N``, or ``N*M`` with SLA).
        algorithm: ``"maml"`` (second order), ``"fomaml"`` (first order), ``"metasgd"`` (learned
            per-parameter inner learning rates, second order) or ``"anil"`` (only the head adapted).
        inner_lr: inner-loop learning rate (Meta-SGD: the initial value of every learned rate).
        inner_steps: inner-loop steps in training mode.
        test_inner_steps: inner-loop steps in evaluation mode (``None`` = ``inner_steps``).
        first_order: override the algorithm's default (``True`` for fomaml, ``False`` otherwise).
        feat_dim: feature size ``D`` when the encoder has no ``out_dim``.
        transductive_bn: BatchNorm on batch statistics only (see above).
    """

    def __init__(
        self,
        encoder: nn.Module,
        ways: int,
        algorithm: str = "maml",
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        test_inner_steps: int | None = None,
        first_order: bool | None = None,
        feat_dim: int | None = None,
        transductive_bn: bool = True,
    ) -> None:
        super().__init__()
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
        if int(ways) < 2:
            raise ValueError(f"MAMLLearner: ways must be >= 2, got {ways}")
        if inner_steps < 1 or (test_inner_steps is not None and test_inner_steps < 1):
            raise ValueError(f"MAMLLearner: inner steps must be >= 1, got {inner_steps}, {test_inner_steps}")
        if not inner_lr > 0:
            raise ValueError(f"MAMLLearner: inner_lr must be > 0, got {inner_lr}")
        d = feat_dim if feat_dim is not None else getattr(encoder, "out_dim", None)
        if d is None:
            raise ValueError("MAMLLearner: the encoder has no out_dim attribute; pass feat_dim=")
        l2l = import_learn2learn()
        self.ways, self.algorithm = int(ways), algorithm
        self.inner_lr, self.inner_steps, self.test_inner_steps = float(inner_lr), int(inner_steps), test_inner_steps
        self.first_order = algorithm == "fomaml" if first_order is None else bool(first_order)
        if transductive_bn:
            use_batch_statistics(encoder)
        head = nn.Linear(int(d), self.ways)
        self.features: nn.Module | None = None
        if algorithm == "anil":
            self.features = encoder
            adapted: nn.Module = head
        else:
            adapted = nn.Sequential(encoder, head)
        if algorithm == "metasgd":
            self.learner = l2l.algorithms.MetaSGD(adapted, lr=self.inner_lr, first_order=self.first_order)
        else:
            # allow_nograd: frozen parameters are simply not adapted; it also makes learn2learn raise
            # autograd errors instead of printing them.
            self.learner = l2l.algorithms.MAML(
                adapted, lr=self.inner_lr, first_order=self.first_order, allow_unused=True, allow_nograd=True
            )

    @property
    def encoder(self) -> nn.Module:
        return self.features if self.features is not None else self.learner.module[0]

    @property
    def head(self) -> nn.Linear:
        return self.learner.module if self.features is not None else self.learner.module[1]

    def steps(self) -> int:
        """Inner-loop steps in the current mode."""
        if self.training or self.test_inner_steps is None:
            return self.inner_steps
        return int(self.test_inner_steps)

    def adapt(
        self, support_x: Tensor, support_y: Tensor, steps: int | None = None, first_order: bool | None = None
    ) -> nn.Module:
        """A clone of the adapted network after ``steps`` steps on ``CE(clone(support_x), support_y)``.

        The clone is a learn2learn module whose parameters are functions of this learner's (the outer
        gradient flows through them). It maps images to logits, except for ANIL, where it is the head
        alone and maps encoder features to logits.
        """
        if support_y.numel() and (int(support_y.min()) < 0 or int(support_y.max()) >= self.ways):
            raise ValueError(
                f"MAMLLearner: support labels must lie in [0, {self.ways}), got [{int(support_y.min())}, "
                f"{int(support_y.max())}]; with SLA construct the learner with ways = N*M"
            )
        steps = self.steps() if steps is None else steps
        first_order = self.first_order if first_order is None else first_order
        inputs = support_x if self.features is None else self.features(support_x)
        with torch.enable_grad():
            clone = self.learner.clone()
            for _ in range(steps):
                clone.adapt(F.cross_entropy(clone(inputs), support_y), first_order=first_order)
        return clone

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None) -> Tensor:
        if ways is not None and int(ways) != self.ways:
            raise ValueError(
                f"MAMLLearner has a {self.ways}-way head but forward got ways={ways}; construct it with the "
                "episode's ways (with SLA: ways = N*M = SLAEpisode.ways_joint(N))"
            )
        # Without an outer gradient (evaluation under no_grad) second-order graphs are useless.
        clone = self.adapt(support_x, support_y, first_order=self.first_order or not torch.is_grad_enabled())
        return clone(query_x if self.features is None else self.features(query_x))
