"""Gradient-based episodic learners (MAML, first-order MAML, Meta-SGD, ANIL) on ``torch.func``.

* MAML: Finn, Abbeel & Levine, ICML 2017 -- the whole network is adapted to the support set by a
  few gradient steps, and the query loss of the adapted parameters is back-propagated through them
  (second order). FOMAML drops the second-order term.
* Meta-SGD: Li, Zhou, Chen & Li, 2017 -- as MAML with a meta-learned learning rate per parameter
  entry (initialised to ``inner_lr``).
* ANIL: Raghu, Raghu, Bengio & Vinyals, ICLR 2020 -- only the linear head is adapted; the encoder's
  features are computed once per set and the encoder is learned in the outer loop only.

The inner loop is the plain function :func:`inner_loop` (``torch.func.functional_call`` on a dict of
parameters and ``torch.autograd.grad``); :class:`MAMLLearner` is a thin module around it. Only torch is
needed. ``tests/episodes/test_maml_l2l_parity.py`` checks that query losses and outer gradients equal
learn2learn 0.2.0's ``MAML`` / ``MetaSGD`` on fixed episodes, and checkpoints written when these learners
were built on learn2learn load unchanged (same ``state_dict`` keys).

With SLA the learner simply sees ``N*M`` classes: construct it with ``ways = sla.ways_joint(N)``
(``N*M``) and feed it the expanded episode of :class:`episodes.SLAEpisode`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["ALGORITHMS", "AdaptedNetwork", "inner_loop", "use_batch_statistics", "MAMLLearner"]

ALGORITHMS = ("maml", "fomaml", "metasgd", "anil")


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


def inner_loop(
    net: nn.Module,
    params: Mapping[str, Tensor],
    inputs: Tensor,
    labels: Tensor,
    lr: float | Mapping[str, Tensor],
    steps: int,
    first_order: bool = False,
) -> dict[str, Tensor]:
    """``steps`` gradient steps ``p <- p - lr * dCE(net(inputs; params), labels)/dp``; the adapted parameters.

    Args:
        net: the network; its own parameters are not used, ``params`` replace them
            (``torch.func.functional_call``; buffers such as BatchNorm's running statistics are the net's).
        params: name (as in ``net.named_parameters()``) -> tensor. Entries that do not require grad
            (frozen) and entries the loss does not depend on are carried over unchanged.
        inputs: ``(S, ...)`` support inputs of ``net``.
        labels: ``(S,)`` class indices.
        lr: one learning rate, or one tensor per parameter name shaped like it (Meta-SGD).
        steps: number of steps (0 returns ``params``).
        first_order: drop the second-order term: the gradients are constants for the outer gradient
            (FOMAML); otherwise the graph is kept so that the outer gradient flows through them.

    Returns:
        name -> adapted tensor, functions of ``params`` (and of ``lr`` when it holds tensors).
    """
    out = dict(params)
    for _ in range(steps):
        loss = F.cross_entropy(functional_call(net, out, (inputs,)), labels)
        names = [n for n, p in out.items() if p.requires_grad]
        grads = torch.autograd.grad(
            loss, [out[n] for n in names], create_graph=not first_order, allow_unused=True
        )
        for n, g in zip(names, grads):
            if g is not None:
                out[n] = out[n] - (lr[n] if isinstance(lr, Mapping) else lr) * g
    return out


@dataclass
class AdaptedNetwork:
    """A network with adapted parameters: ``adapted(x) = functional_call(module, params, (x,))``.

    ``params`` are functions of the learner's parameters (the outer gradient flows through them).
    """

    module: nn.Module
    params: dict[str, Tensor]

    def __call__(self, x: Tensor) -> Tensor:
        return functional_call(self.module, self.params, (x,))


class _Adaptable(nn.Module):
    """Holds the adapted part of the network (``module``) and, for Meta-SGD, one learned rate per parameter
    entry (``lrs``, in the order of ``module.named_parameters()``). The attribute names give the
    ``state_dict`` keys (``learner.module.*``, ``learner.lrs.*``) that checkpoints have always had."""

    def __init__(self, module: nn.Module, meta_lr: float | None = None) -> None:
        super().__init__()
        self.module = module
        self.lrs: nn.ParameterList | None = None
        if meta_lr is not None:
            self.lrs = nn.ParameterList([nn.Parameter(torch.full_like(p, meta_lr)) for p in module.parameters()])

    def step_sizes(self, lr: float) -> float | dict[str, Tensor]:
        if self.lrs is None:
            return lr
        return {n: r for (n, _), r in zip(self.module.named_parameters(), self.lrs)}


class MAMLLearner(nn.Module):
    """``forward(support_x, support_y, query_x, ways=None) -> (Q, ways)``: query logits of the network
    adapted to the support set by ``inner_steps`` gradient steps on the support cross-entropy.

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
        self.ways, self.algorithm = int(ways), algorithm
        self.inner_lr, self.inner_steps, self.test_inner_steps = float(inner_lr), int(inner_steps), test_inner_steps
        self.first_order = algorithm == "fomaml" if first_order is None else bool(first_order)
        if transductive_bn:
            use_batch_statistics(encoder)
        head = nn.Linear(int(d), self.ways)
        # ANIL: the encoder sits outside the adapted part and runs once per set.
        self.features: nn.Module | None = encoder if algorithm == "anil" else None
        adapted = head if algorithm == "anil" else nn.Sequential(encoder, head)
        self.learner = _Adaptable(adapted, self.inner_lr if algorithm == "metasgd" else None)

    @property
    def encoder(self) -> nn.Module:
        return self.features if self.features is not None else cast(nn.Sequential, self.learner.module)[0]

    @property
    def head(self) -> nn.Linear:
        net = self.learner.module
        return cast(nn.Linear, net if self.features is not None else cast(nn.Sequential, net)[1])

    def steps(self) -> int:
        """Inner-loop steps in the current mode."""
        if self.training or self.test_inner_steps is None:
            return self.inner_steps
        return int(self.test_inner_steps)

    def adapt(
        self, support_x: Tensor, support_y: Tensor, steps: int | None = None, first_order: bool | None = None
    ) -> AdaptedNetwork:
        """The network after ``steps`` steps on ``CE(net(support_x), support_y)`` (:func:`inner_loop`).

        The result's parameters are functions of this learner's (the outer gradient flows through them).
        It maps images to logits, except for ANIL, where it is the head alone and maps encoder features
        to logits.
        """
        if support_y.numel() and (int(support_y.min()) < 0 or int(support_y.max()) >= self.ways):
            raise ValueError(
                f"MAMLLearner: support labels must lie in [0, {self.ways}), got [{int(support_y.min())}, "
                f"{int(support_y.max())}]; with SLA construct the learner with ways = N*M"
            )
        steps = self.steps() if steps is None else steps
        first_order = self.first_order if first_order is None else first_order
        inputs = support_x if self.features is None else self.features(support_x)
        net = self.learner.module
        with torch.enable_grad():
            params = inner_loop(net, dict(net.named_parameters()), inputs, support_y,
                                self.learner.step_sizes(self.inner_lr), steps, first_order)
        return AdaptedNetwork(net, params)

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None) -> Tensor:
        if ways is not None and int(ways) != self.ways:
            raise ValueError(
                f"MAMLLearner has a {self.ways}-way head but forward got ways={ways}; construct it with the "
                "episode's ways (with SLA: ways = N*M = SLAEpisode.ways_joint(N))"
            )
        # Without an outer gradient (evaluation under no_grad) second-order graphs are useless.
        adapted = self.adapt(support_x, support_y, first_order=self.first_order or not torch.is_grad_enabled())
        return adapted(query_x if self.features is None else self.features(query_x))
