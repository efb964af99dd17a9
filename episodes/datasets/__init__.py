"""Few-shot data sets held in memory as uint8 tensors; an episode is a gather. One module per data set, behind
:data:`LOADERS`.

Every loader takes a :class:`~episodes.datasets.common.LoadRequest` (explicit arguments: root, image size,
download, the data set's own options, the episode shapes, a run's recorded class lists) and returns the three splits
as :class:`FewShotData` (uint8 ``(N, C, H, W)``, class-major int64 labels, class names). The class splits are carried
by this package as data (``episodes/splits/``).

===============  ===========================================================================  ========
``--dataset``    module                                                                         side
===============  ===========================================================================  ========
omniglot         :mod:`~episodes.datasets.omniglot` (Vinyals or Lake split)                    28
mini-imagenet    :mod:`~episodes.datasets.mini_imagenet` (Ravi & Larochelle; pkl or jpg)        84
cifar-fs, fc100  :mod:`~episodes.datasets.cifar100` (CIFAR-100 python version)                  32
tiny-imagenet    :mod:`~episodes.datasets.tiny_imagenet` (200 classes, 128 / 32 / 40 split)      64
imagefolder      :mod:`~episodes.datasets.imagefolder` (your own images, two layouts)           28 / 84
===============  ===========================================================================  ========

Adding a data set: a module with ``load(req) -> {"train", "val", "test"}``, an entry in :data:`LOADERS` (and the
name in :class:`episodes.config.FewShotConfig`'s ``dataset`` Literal; a test checks both agree).

``class_rotations`` (:func:`rotate_classes`, Vinyals et al. 2016; Snell et al. 2017) adds the 90, 180 and 270-degree
rotations of every training class as new classes (Omniglot, Vinyals split: 1028 -> 4112), for any data set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from fewshot_sla.io import normalize

from . import cifar100, imagefolder, mini_imagenet, omniglot, tiny_imagenet
from .cifar100 import FC100_SUPERCLASSES, cifar_fs_split, load_cifar_fs, load_fc100
from .common import SPLITS, FewShotData, LoadRequest, Stats, _check_split, gather, image_stats, rotate_classes
from .imagefolder import IMAGE_EXTENSIONS, class_digest, imagefolder_classes, load_imagefolder, split_classes
from .mini_imagenet import load_mini_imagenet
from .omniglot import OMNIGLOT_SCHEMES, load_omniglot, omniglot_split

__all__ = [
    "LOADERS", "DatasetEntry", "DATASETS", "SPLITS", "DEFAULT_SIZE", "DATASET_STATS", "Stats", "FewShotData",
    "LoadRequest", "load_data", "load_fewshot", "episode_shapes", "to_float", "image_stats", "gather",
    "rotate_classes", "load_omniglot", "omniglot_split", "OMNIGLOT_SCHEMES", "load_mini_imagenet", "load_cifar_fs",
    "load_fc100", "cifar_fs_split", "FC100_SUPERCLASSES", "IMAGE_EXTENSIONS", "load_imagefolder",
    "imagefolder_classes", "split_classes", "class_digest",
]


@dataclass(frozen=True)
class DatasetEntry:
    """One data set of :data:`LOADERS`.

    Attributes:
        split: ``(LoadRequest, split) -> FewShotData`` for data sets whose splits load one at a time; None when
            the three must be listed together (:attr:`splits`).
        splits: ``LoadRequest -> {"train", "val", "test"}`` (default: :attr:`split` three times).
        default_size: the image side when ``--image-size`` is 0 (None: the loader decides, e.g. by grey or RGB).
        stats: fixed normalisation statistics; None = measured on the train split (a run records them).
        options: the config keys of the data set's own options, passed in :attr:`LoadRequest.options`.
        download: ``root -> None`` fetching it (needs a network); None = cannot be downloaded (the loader's error
            says where to get it).
        invert: whether its files are stored inverted (Omniglot's ink bright), so that predictors do the same.
    """

    split: Callable[[LoadRequest, str], FewShotData] | None
    splits: Callable[[LoadRequest], dict[str, FewShotData]] | None
    default_size: int | None
    stats: Stats | None
    options: tuple[str, ...] = ()
    download: Callable[[Path], None] | None = None
    invert: bool = False

    def load(self, req: LoadRequest) -> dict[str, FewShotData]:
        if self.splits is not None:
            return self.splits(req)
        assert self.split is not None
        return {s: self.split(req, s) for s in SPLITS}


LOADERS: dict[str, DatasetEntry] = {
    "omniglot": DatasetEntry(omniglot.load_split, None, omniglot.DEFAULT_SIZE, omniglot.STATS, ("omniglot_split",),
                             download=omniglot.download, invert=True),
    "mini-imagenet": DatasetEntry(mini_imagenet.load_split, None, mini_imagenet.DEFAULT_SIZE, mini_imagenet.STATS,
                                  download=mini_imagenet.download),
    "cifar-fs": DatasetEntry(cifar100.load_cifar_fs_split, None, cifar100.DEFAULT_SIZE, cifar100.STATS,
                             download=cifar100.download),
    "fc100": DatasetEntry(cifar100.load_fc100_split, None, cifar100.DEFAULT_SIZE, cifar100.STATS,
                          download=cifar100.download),
    "tiny-imagenet": DatasetEntry(None, tiny_imagenet.load, tiny_imagenet.DEFAULT_SIZE, None,
                                  download=tiny_imagenet.download),
    "imagefolder": DatasetEntry(None, imagefolder.load, None, None, ("channels", "class_split", "split_seed")),
}
DATASETS = tuple(LOADERS)
DEFAULT_SIZE: dict[str, int] = {k: e.default_size for k, e in LOADERS.items() if e.default_size is not None}
#: mean and std per channel on the [0, 1] scale of the data sets with fixed statistics (Omniglot: measured on the
#: Vinyals train split at 28x28; CIFAR-FS and FC100: CIFAR-100's train set). An image folder has none: its train
#: split's are measured (:func:`image_stats`) and recorded by the run.
DATASET_STATS: dict[str, Stats] = {k: e.stats for k, e in LOADERS.items() if e.stats is not None}


def _entry(dataset: str) -> DatasetEntry:
    if dataset not in LOADERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(LOADERS)}")
    return LOADERS[dataset]


def episode_shapes(
    ways: int, shots: int, queries: int, test_ways: int = 0, test_shots: int = 0, test_queries: int = 0
) -> dict[str, tuple[int, int, int]]:
    """(ways, shots, queries) of each split's episodes: val and test take the ``test_*`` values, 0 = the training
    ones. The one place this rule is written."""
    test = (test_ways or ways, test_shots or shots, test_queries or queries)
    return {"train": (ways, shots, queries), "val": test, "test": test}


def load_data(
    dataset: str,
    root: str | Path,
    *,
    image_size: int = 0,
    download: bool = False,
    progress: bool = True,
    options: Mapping[str, Any] | None = None,
    shapes: Mapping[str, tuple[int, int, int]] | None = None,
    class_rotations: bool = False,
    classes: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, FewShotData]:
    """The train, val and test splits of ``dataset`` as they are on disk (without ``class_rotations``, which the
    caller applies with :func:`rotate_classes`; the flag only lowers the ways a listed train split needs).

    Args:
        dataset: a key of :data:`LOADERS`.
        root: the folder holding the data set.
        image_size: image side; 0 = the data set's default.
        download: fetch the data set when missing (where it can be fetched; needs a network).
        progress: tqdm bars while decoding.
        options: the data set's own options, by config key; a key the data set does not take is an error naming
            the flag (e.g. ``--class-split`` for Omniglot), so pass only the options a user set.
        shapes: each split's episode shape (:func:`episode_shapes`), checked before decoding where files are listed.
        class_rotations: whether the train split will be rotated.
        classes: a run's recorded class lists (image folders read these instead of splitting again).
    """
    entry = _entry(dataset)
    opts = dict(options or {})
    _check_options(dataset, entry, opts)
    req = LoadRequest(Path(root).expanduser(), int(image_size or 0), download, progress, opts, shapes,
                      4 if class_rotations else 1, classes)
    _download(dataset, entry, req)
    return entry.load(req)


def _check_options(dataset: str, entry: DatasetEntry, opts: Mapping[str, Any]) -> None:
    foreign = [k for k in opts if k not in entry.options]
    if foreign:
        flag = "--" + foreign[0].replace("_", "-")
        takers = [n for n, e in LOADERS.items() if foreign[0] in e.options]
        raise ValueError(
            f"{flag} applies only to --dataset {' and '.join(takers)}; {dataset} has fixed splits and channels "
            f"(drop {flag})"
        )


def _download(dataset: str, entry: DatasetEntry, req: LoadRequest) -> None:
    if not req.download:
        return
    if entry.download is None:  # the user's own files
        raise ValueError(f"--download does not apply to --dataset {dataset} (the images are yours); drop --download")
    entry.download(req.root)


def load_fewshot(
    dataset: str,
    root: str | Path,
    split: str,
    image_size: int | None = None,
    download: bool = False,
    omniglot_scheme: str = "vinyals",
    channels: int = 0,
    class_split: Sequence[float] = (),
    split_seed: int = 0,
) -> FewShotData:
    """Load split ``split`` of ``dataset`` into memory (only that split where the data set allows it).

    Args:
        dataset: one of :data:`DATASETS`.
        root: the folder holding the data set (its layout: the data set's module).
        split: ``train``, ``val`` or ``test``.
        image_size: image side; ``None`` = the data set's default (28, 84, 32, 32; imagefolder: 28 grey, 84 RGB).
        download: fetch Omniglot or CIFAR-100 into ``root`` if missing. mini-ImageNet cannot be fetched
            automatically: if it is missing, the error says where to get it.
        omniglot_scheme: ``"vinyals"`` or ``"background"`` (see :func:`omniglot_split`).
        channels, class_split, split_seed: imagefolder only (see :func:`load_imagefolder`).
    """
    _check_split(split)
    entry = _entry(dataset)
    given = {"omniglot_split": omniglot_scheme, "channels": channels, "class_split": tuple(class_split),
             "split_seed": split_seed}
    defaults = {"omniglot_split": "vinyals", "channels": 0, "class_split": (), "split_seed": 0}
    opts = {k: v for k, v in given.items() if k in entry.options or v != defaults[k]}
    if entry.split is None:
        return load_data(dataset, root, image_size=image_size or 0, download=download, options=opts)[split]
    _check_options(dataset, entry, opts)
    req = LoadRequest(Path(root).expanduser(), int(image_size or 0), download, True, opts)
    _download(dataset, entry, req)
    return entry.split(req, split)


def to_float(images: Tensor, dataset: str, stats: Stats | None = None) -> Tensor:
    """Normalise a uint8 batch ``(B, C, H, W)`` to float32 on the batch's device.

    Args:
        images: raw pixels.
        dataset: the data set, whose fixed :data:`DATASET_STATS` are used when ``stats`` is None.
        stats: ``(mean, std)`` to use instead (a run's recorded statistics; required for ``imagefolder``).
    """
    if stats is None:
        if dataset in LOADERS and LOADERS[dataset].stats is None:
            raise ValueError(
                f"to_float: {dataset} has no fixed statistics; pass stats= (a run records them: "
                "episodes.recipe.Recipe.stats; or episodes.datasets.image_stats(train.images))"
            )
        if dataset not in DATASET_STATS:
            raise ValueError(f"to_float: unknown dataset {dataset!r}; choose one of {', '.join(DATASET_STATS)}")
        stats = DATASET_STATS[dataset]
    mean, std = stats
    return normalize(images, mean, std)
