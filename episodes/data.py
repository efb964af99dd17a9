"""The few-shot data sets (kept for imports written before :mod:`episodes.datasets`, one module per data set).

Everything here is :mod:`episodes.datasets`' (see it for the layouts); :func:`load_splits` and
:func:`dataset_stats` read a whole :class:`~episodes.config.FewShotConfig` for one-off scripts: a run reads its data
through :mod:`episodes.recipe`, which records the splits and statistics.
"""

from __future__ import annotations

from typing import Any

from .config import config_options
from .datasets import (
    DATASET_STATS,
    DATASETS,
    DEFAULT_SIZE,
    FC100_SUPERCLASSES,
    IMAGE_EXTENSIONS,
    LOADERS,
    OMNIGLOT_SCHEMES,
    SPLITS,
    FewShotData,
    LoadRequest,
    Stats,
    cifar_fs_split,
    class_digest,
    episode_shapes,
    gather,
    image_stats,
    imagefolder_classes,
    load_cifar_fs,
    load_data,
    load_fc100,
    load_fewshot,
    load_imagefolder,
    load_mini_imagenet,
    load_omniglot,
    omniglot_split,
    rotate_classes,
    split_classes,
    to_float,
)

__all__ = [
    "DATASET_STATS", "DATASETS", "DEFAULT_SIZE", "FC100_SUPERCLASSES", "IMAGE_EXTENSIONS", "LOADERS",
    "OMNIGLOT_SCHEMES", "SPLITS", "FewShotData", "LoadRequest", "Stats", "cifar_fs_split", "class_digest",
    "episode_shapes", "gather", "image_stats", "imagefolder_classes", "load_cifar_fs", "load_data", "load_fc100",
    "load_fewshot", "load_imagefolder", "load_mini_imagenet", "load_omniglot", "omniglot_split", "rotate_classes",
    "split_classes", "to_float", "load_splits", "dataset_stats",
]


def load_splits(cfg: Any) -> dict[str, FewShotData]:
    """The train, val and test splits a :class:`episodes.config.FewShotConfig` asks for, with ``cfg.class_rotations``
    applied to the train split (:func:`rotate_classes`; val and test are unchanged)."""
    shapes = episode_shapes(cfg.ways, cfg.shots, cfg.queries, cfg.test_ways, cfg.test_shots, cfg.test_queries)
    splits = load_data(cfg.dataset, cfg.data_root, image_size=cfg.image_size, download=cfg.download,
                       options=config_options(cfg), shapes=shapes, class_rotations=cfg.class_rotations)
    if cfg.class_rotations:
        splits["train"] = rotate_classes(splits["train"])
    return splits


def dataset_stats(cfg: Any, train: FewShotData) -> Stats:
    """The ``(mean, std)`` a run normalises with: ``train.stats`` when the loader measured them (an image folder),
    else the data set's fixed :data:`DATASET_STATS`, else measured on ``train`` (:func:`image_stats`)."""
    if train.stats is not None:
        return train.stats
    if cfg.dataset in DATASET_STATS:
        return DATASET_STATS[cfg.dataset]
    return image_stats(train.images)
