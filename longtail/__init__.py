"""Long-tailed CIFAR with SLA: data, samplers, imbalance losses and schedules, the benchmark script.

Builds on :mod:`fewshot_sla`; see ``sla-longtail --help`` (``python -m longtail.benchmark``). ``import longtail``
does not import torch: each public name's module is imported when the name is first used.
"""


import fewshot_sla  # noqa: F401  # first, before torch: it sets OMP_WAIT_POLICY (fewshot_sla.threads)
from fewshot_sla.lazy import lazy_names

#: the submodule that defines each public name, imported on first use (torch loads then, not on ``import``)
_SUBMODULES = {
    ".data": (
        "CIFAR_MEAN CIFAR_STD DATASETS FIXED_STATS PROFILES LTData augment_batch channel_stats class_counts"
        " dataset_stats limit_per_class load_cifar_pickles load_imagefolder load_longtail longtail_indices"
        " normalize"
    ),
    ".losses": (
        "LOSSES ImbalanceLoss NormedLinear VSLoss cb_weights drw_weights head_for ldam_margins make_loss"
        " vs_adjustments"
    ),
    ".predict": "LongTailPredictor load_run",
    ".samplers": "SAMPLERS LTSampler class_probabilities epoch_seed make_sampler",
    ".schedules": "SCHEDULES WARMUPS LTSchedule drw_active ldam_lr lr_at scale_epochs",
}
_LAZY = {name: module for module, names in _SUBMODULES.items() for name in names.split()}

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


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
