"""``sla-fewshot``'s config: the only defaults, one comment per field (``--help`` shows them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["FewShotConfig", "config_options", "MODES"]

#: Prediction modes of a trained run (:mod:`episodes.predict`): SLA+AG (logits averaged over the M transformed
#: copies) and SLA+SI (the identity copy).
MODES = ("aggregated", "single")

#: the data sets of :data:`episodes.datasets.LOADERS` (a test checks both agree)
#: the learners of :data:`episodes.recipe.LEARNERS`
LearnerName = Literal["protonet", "r2d2", "svm", "maml", "fomaml", "metasgd", "anil", "pretrain"]
DatasetName = Literal["omniglot", "mini-imagenet", "cifar-fs", "fc100", "tiny-imagenet", "imagefolder"]


@dataclass
class FewShotConfig:
    """Episodic few-shot training with SLA."""

    dataset: DatasetName = "omniglot"  # data set
    data_root: str = "data"  # folder holding the data set (see docs/usage.md for each layout)
    omniglot_split: Literal["vinyals", "background"] = "vinyals"  # omniglot: 1028/172/423 or Lake: 792/172/659
    download: bool = False  # download the data set when missing (omniglot, cifar-fs, fc100; needs a network)
    class_split: tuple[float, ...] = ()  # imagefolder, flat DIR/<class>/: train val test fractions of the classes
    split_seed: int = 0  # imagefolder, flat layout: seed of the class split (the same split for every --seed)
    channels: int = 0  # imagefolder: 1 (grey) or 3 (RGB); 0 = detected from the files
    class_rotations: bool = False  # add the 90/180/270-degree rotations of every training class as new classes
    image_size: int = 0  # image side (0 = the data set's default: omniglot 28, cifar 32, mini-imagenet 84)
    backbone: Literal["conv4", "resnet12", "torchvision:resnet18"] = "conv4"  # backbone
    init: str = ""  # encoder weights to start from: a local state-dict file (e.g. torchvision's, with its backbone)
    learner: LearnerName = "protonet"  # svm: MetaOptNet; pretrain: classifier + head; maml family + SLA: see usage.md
    pretrain_epochs: int = 30  # pretrain: epochs over the training classes' images (crop + flip; lr steps in epochs)
    batch_size: int = 64  # pretrain: images per optimiser step (split across torchrun processes)
    val_every_epochs: int = 5  # pretrain: validate on val episodes every N epochs (0 = only after the last)
    test_head: Literal["ncm", "logreg"] = "ncm"  # pretrain: head on L2-normalised frozen features (nearest mean; RFS)
    sd: bool = False  # pretrain with SLA: also train a C_train-way head distilled from the aggregated teacher (SLA+SD)
    distance: Literal["sqeuclidean", "euclidean"] = "euclidean"  # protonet: minus the plain or squared distance
    encode: Literal["joint", "separate"] = "separate"  # training: support and query in 2 encoder calls, or 1
    inner_lr: float = 0.4  # maml family: inner-loop learning rate (Omniglot 0.4, mini-ImageNet 0.01)
    inner_steps: int = 1  # maml family: inner-loop steps in meta-training
    test_inner_steps: int = 3  # maml family: inner-loop steps at validation and test
    ways: int = 5  # classes per training episode
    shots: int = 1  # support images per class
    queries: int = 15  # query images per class
    test_ways: int = 0  # classes per val/test episode (0 = ways)
    test_shots: int = 0  # support images per class at val/test (0 = shots)
    test_queries: int = 0  # query images per class at val/test (0 = queries)
    transform: str = "rotation"  # SLA transformation family; none = the baseline
    augment: bool = False  # training episodes: random crop (zero padding) and horizontal flip, per image
    augment_padding: int = 8  # crop padding in pixels (MetaOptNet on mini-ImageNet: 8)
    augment_flip: bool = True  # with augment: also flip horizontally (keep off for handwriting)
    train_episodes: int = 2000  # optimiser steps of meta-training (each sees meta_batch episodes)
    val_episodes: int = 100  # episodes per validation
    val_every: int = 500  # validate every N steps (0 = only after the last step)
    test_episodes: int = 0  # test episodes (mean acc. with 95% CI); 0 = auto: 10000 protonet/r2d2/svm, 600 maml family
    meta_batch: int = 1  # episodes per optimiser step (gradients averaged; split across torchrun processes)
    optimizer: Literal["adam", "sgd"] = "adam"  # (sgd: momentum, Nesterov)
    lr: float = 1e-3  # learning rate
    momentum: float = 0.9  # sgd momentum
    lr_step: int = 0  # multiply the lr by lr_gamma every N optimiser steps (0 = constant)
    lr_milestones: tuple[int, ...] = ()  # multiply the lr by lr_gamma at each of these steps (overrides lr_step)
    lr_factors: tuple[float, ...] = ()  # with lr_milestones: lr = lr * lr_factors[i] from milestone i on
    lr_gamma: float = 0.5  # lr decay factor
    weight_decay: float = 0.0  # weight decay
    seed: int = 0  # seed of episodes and init
    out: str = "runs/fewshot"  # output folder
    wandb: Literal["offline", "online", "disabled"] = "offline"  # W&B mode
    resume: bool = False  # continue from OUT/checkpoint.pt
    amp: bool = False  # bf16 autocast (CUDA; CPU with native bf16: ~1.6x faster on AVX512-BF16)
    channels_last: bool = False  # channels-last memory format
    device: str = "auto"  # auto, cpu, cuda, ...
    num_threads: int = 0  # torch CPU threads (0 = auto: the cores other processes leave free)
    checkpoint_every: int = 100  # write OUT/checkpoint.pt every N steps
    checkpoint_minutes: float = 5.0  # also write it when this many minutes passed since the last (0 = off)
    overwrite: bool = False  # start a new run in an --out holding another run (its outputs are deleted first)
    test_only: bool = False  # evaluate OUT's best checkpoint on the test split without training
    allow_unfinished: bool = False  # --test-only of a run whose training has not finished (metrics say finished: false)
    stop_after: int = 0  # stop after this many steps of this invocation (to test --resume; 0 = never)


def config_options(cfg: FewShotConfig) -> dict[str, Any]:
    """The data set options of ``cfg`` (:attr:`episodes.datasets.DatasetEntry.options`) to pass to
    :func:`episodes.datasets.load_data`: those the data set takes, and any other a user set (which it refuses,
    naming the flag)."""
    from .datasets import LOADERS

    default = FewShotConfig()
    keys = sorted({k for e in LOADERS.values() for k in e.options})
    taken = LOADERS[cfg.dataset].options if cfg.dataset in LOADERS else ()
    return {k: getattr(cfg, k) for k in keys if k in taken or getattr(cfg, k) != getattr(default, k)}
