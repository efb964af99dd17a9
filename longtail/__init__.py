"""Long-tailed CIFAR with SLA: data, samplers, imbalance losses and schedules, the benchmark script.

Builds on :mod:`fewshot_sla`; see ``sla-longtail --help`` (``python -m longtail.benchmark``).
"""

import fewshot_sla  # noqa: F401  # first, before torch: it sets OMP_WAIT_POLICY (fewshot_sla.threads)

from .data import (
    CIFAR_MEAN,
    CIFAR_STD,
    DATASETS,
    FIXED_STATS,
    PROFILES,
    LTData,
    augment_batch,
    channel_stats,
    class_counts,
    dataset_stats,
    limit_per_class,
    load_cifar_pickles,
    load_imagefolder,
    load_longtail,
    longtail_indices,
    normalize,
)
from .losses import (
    LOSSES,
    ImbalanceLoss,
    NormedLinear,
    VSLoss,
    cb_weights,
    drw_weights,
    head_for,
    ldam_margins,
    make_loss,
    vs_adjustments,
)
from .predict import LongTailPredictor, load_run
from .samplers import SAMPLERS, LTSampler, class_probabilities, epoch_seed, make_sampler
from .schedules import SCHEDULES, WARMUPS, LTSchedule, drw_active, ldam_lr, lr_at, scale_epochs

__all__ = [
    "CIFAR_MEAN", "CIFAR_STD", "DATASETS", "FIXED_STATS", "PROFILES", "LTData", "augment_batch", "channel_stats",
    "class_counts", "dataset_stats", "limit_per_class", "load_cifar_pickles", "load_imagefolder", "load_longtail",
    "longtail_indices", "normalize",
    "LOSSES", "ImbalanceLoss", "NormedLinear", "VSLoss", "cb_weights", "drw_weights", "head_for", "ldam_margins",
    "make_loss", "vs_adjustments",
    "SAMPLERS", "LTSampler", "class_probabilities", "epoch_seed", "make_sampler",
    "SCHEDULES", "WARMUPS", "LTSchedule", "drw_active", "ldam_lr", "lr_at", "scale_epochs",
    "LongTailPredictor", "load_run",
]
