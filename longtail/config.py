"""``sla-longtail``'s config: the only defaults, one comment per field (``--help`` shows them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["LTConfig"]


@dataclass
class LTConfig:
    """Long-tailed CIFAR with SLA (LDAM-DRW protocol)."""

    dataset: Literal["cifar10", "cifar100", "imagefolder"] = "cifar10"  # imagefolder: DIR/{train,test}/<class>/
    data_root: str = "data"  # folder holding cifar-10-batches-py / cifar-100-python, or an ImageFolder tree
    download: bool = False  # download CIFAR with torchvision when missing (needs a network)
    imbalance_ratio: float = 100.0  # n_max / n_min of the training classes
    profile: Literal["exp", "step"] = "exp"  # imbalance profile
    norm_stats: Literal["data", "cifar"] = "data"  # normalise with the data's statistics, or CIFAR's (older runs)
    subset_seed: int = 0  # seed of the long-tailed subset (0 = LDAM-DRW's subsets; --seed leaves it alone)
    loss: Literal["ce", "focal", "cb", "ldam", "balanced-softmax", "logit-adjusted", "vs"] = "ce"  # imbalance loss
    sampler: Literal["instance", "class-balanced", "sqrt", "progressive"] = "instance"  # training sampler
    vs_gamma: float = 0.2  # vs loss: multiplicative adjustment (n_c / n_max)^gamma (Kini et al. 2021)
    vs_tau: float = 1.2  # vs loss: additive adjustment tau * log(prior)
    drw: bool = False  # deferred re-weighting (class-balanced weights from the DRW epoch on)
    transform: str = "none"  # SLA transformation family; none = the baseline
    sd: bool = False  # add the self-distillation head (SLA+SD)
    temperature: float = 1.0  # self-distillation temperature
    epochs: int = 200  # training epochs (LDAM-DRW: 200; milestones, warm-up and DRW scale with it)
    schedule: Literal["ldam", "cosine"] = "ldam"  # lr: LDAM-DRW's steps (x0.01 at 80% and 90%) or warm-up + cosine
    warmup: Literal["step", "epoch"] = "step"  # lr warm-up per optimiser step, or per epoch (older runs: epoch)
    batch_size: int = 128  # global batch (all processes together) before SLA's M copies
    drop_last: bool = False  # drop an epoch's last partial batch (static shapes, e.g. for CUDA graphs)
    lr: float = 0.1  # base learning rate (SGD)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 2e-4  # SGD weight decay
    sam_rho: float = 0.0  # SAM's radius (Foret et al.: 0.05; Rangwani et al. 2022, LDAM-DRW on CIFAR-LT: 0.8); 0 = SGD
    backbone: Literal["resnet20", "resnet32", "resnet56"] = "resnet32"  # CIFAR ResNet
    seed: int = 0  # seed of init, sampler and augmentation (not of the subset: see subset_seed)
    out: str = "runs/longtail"  # output folder
    wandb: Literal["offline", "online", "disabled"] = "offline"  # W&B mode
    resume: bool = False  # continue from OUT/checkpoint.pt (--out RUN --resume alone reads RUN/config.yaml)
    overwrite: bool = False  # start a new run in an --out holding another run (its outputs are deleted first)
    test_only: bool = False  # test OUT/checkpoint.pt of the recorded run again without training
    allow_unfinished: bool = False  # --test-only of a run whose training has not finished (metrics say finished: false)
    checkpoint_minutes: float = 5.0  # also write OUT/checkpoint.pt when this many minutes passed (0 = off)
    amp: bool = False  # bf16 autocast (CUDA; CPU with native bf16: ~1.6x faster on AVX512-BF16)
    channels_last: bool = False  # channels-last memory format
    compile: bool = False  # torch.compile the training step (CUDA)
    # torch.compile's mode with --compile (reduce-overhead: CUDA graphs; speed only, not what is computed)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    sync_bn: bool = False  # under torchrun: BatchNorm statistics of the global batch (torch's SyncBatchNorm: CUDA)
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    num_threads: int = 0  # torch CPU threads (0 = auto: the cores other processes leave free)
    limit_train: int = 0  # keep about N long-tailed training images, class proportions kept (tiny runs; 0 = all)
    limit_test: int = 0  # evaluate on N test images (stratified by order; 0 = all)
    eval_every: int = 0  # evaluate on the test set every N epochs (0 = only at the end)
    eval_batch: int = 0  # test inputs per forward pass, SLA's M copies counted (0: CPU 100, CUDA 1000); speed only
    stop_after: int = 0  # stop after this many epochs of this invocation (to test --resume; 0 = never)
    grid_loss: tuple[str, ...] = ()  # grid mode: losses to run
    grid_transform: tuple[str, ...] = ()  # grid mode: transforms to run (none = baseline)
