"""CIFAR-FS (Bertinetto et al. 2019) and FC100 (Oreshkin et al. 2018) from the python version of CIFAR-100,
``ROOT/cifar-100-python/{train,test,meta}`` (what ``torchvision.datasets.CIFAR100(ROOT, download=True)`` extracts),
read by :func:`fewshot_sla.io.read_cifar` (a restricted unpickler), at 32x32.

- **CIFAR-FS**: the 64 / 16 / 20 CIFAR-100 classes named in ``splits/cifar_fs.json``, 600 images each (the class's
  500 CIFAR-100 train images, then its 100 test images).
- **FC100**: the 60 / 20 / 20 CIFAR-100 classes of the superclasses in :data:`FC100_SUPERCLASSES` (12 / 4 / 4), 600
  images each, pooled as for CIFAR-FS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fewshot_sla.io import read_cifar
from fewshot_sla.utils import DataError

from .common import SPLITS_DIR, FewShotData, LoadRequest, Stats, _check_split, _class_major, _select_resized

__all__ = ["STATS", "DEFAULT_SIZE", "FC100_SUPERCLASSES", "cifar_fs_split", "load_cifar_fs", "load_fc100",
           "load_cifar_fs_split", "load_fc100_split", "download"]

_CIFAR_FS_FILE = SPLITS_DIR / "cifar_fs.json"
_CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
#: CIFAR-100's train set
STATS: Stats = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
DEFAULT_SIZE = 32
#: FC100's CIFAR-100 superclasses (coarse labels) per split (Oreshkin et al. 2018, supplementary material).
FC100_SUPERCLASSES: dict[str, tuple[int, ...]] = {
    # fish, flowers, food containers, fruit and vegetables, household electrical devices, household furniture,
    # large man-made outdoor things, large natural outdoor scenes, reptiles, trees, vehicles 1, vehicles 2
    "train": (1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19),
    # large carnivores, large omnivores and herbivores, non-insect invertebrates, small mammals
    "val": (8, 11, 13, 16),
    # aquatic mammals, insects, medium mammals, people
    "test": (0, 7, 12, 14),
}


def cifar_fs_split(split: str) -> list[str]:
    """The CIFAR-100 fine class names of CIFAR-FS's split ``split`` (Bertinetto et al. 2019), sorted."""
    _check_split(split)
    return list(json.loads(_CIFAR_FS_FILE.read_text())[split])


@dataclass
class _Cifar100:
    """CIFAR-100's train and test images pooled (as CIFAR-FS and FC100 use them)."""

    images: np.ndarray  # uint8 (60000, 3, 32, 32): the train images, then the test images
    fine: np.ndarray  # int64 (60000,)
    coarse: np.ndarray  # int64 (60000,)
    fine_names: list[str]
    coarse_names: list[str]


def _read_cifar100(root: Path) -> _Cifar100:
    c = read_cifar(root, "cifar100")  # root or root/cifar-100-python; every check, and a DataError naming the fix
    assert c.train_coarse is not None and c.test_coarse is not None and c.coarse_names is not None  # cifar100
    return _Cifar100(
        np.concatenate([c.train_x, c.test_x]),
        np.concatenate([c.train_y, c.test_y]),
        np.concatenate([c.train_coarse, c.test_coarse]),
        c.class_names,
        c.coarse_names,
    )


def _cifar100_classes(data: _Cifar100, classes: list[int], size: int) -> FewShotData:
    """The images of CIFAR-100 fine classes ``classes`` (ascending), class-major, train images before test."""
    remap = np.full(100, -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    sel = np.flatnonzero(remap[data.fine] >= 0)
    order, labels = _class_major(remap[data.fine[sel]])
    names = [data.fine_names[c] for c in classes]
    images = _select_resized(data.images, sel[order], size, channels_last=False)
    return FewShotData(images, torch.from_numpy(labels), names)


def load_cifar_fs(root: str | Path, split: str = "train", image_size: int = 32) -> FewShotData:
    """CIFAR-FS split ``split`` (Bertinetto et al. 2019) as uint8 ``(N, 3, size, size)``: 64 / 16 / 20 classes x 600.

    Classes in CIFAR-100's order (alphabetical); each class's 500 CIFAR-100 train images, then its 100 test images.
    """
    _check_split(split)
    data = _read_cifar100(Path(root).expanduser())
    wanted = cifar_fs_split(split)
    unknown = [n for n in wanted if n not in data.fine_names]
    if unknown:
        raise DataError(
            f"CIFAR-100's meta file under {root} does not name the CIFAR-FS classes {', '.join(unknown)}; it is not "
            f"CIFAR-100's: download CIFAR-100 again ({_CIFAR100_URL})"
        )
    return _cifar100_classes(data, sorted(data.fine_names.index(n) for n in wanted), image_size)


def load_fc100(root: str | Path, split: str = "train", image_size: int = 32) -> FewShotData:
    """FC100 split ``split`` (Oreshkin et al. 2018) as uint8 ``(N, 3, size, size)``: 60 / 20 / 20 classes x 600.

    The CIFAR-100 fine classes of the superclasses :data:`FC100_SUPERCLASSES` ``[split]``, in CIFAR-100's order;
    each class's 500 train images, then its 100 test images.
    """
    _check_split(split)
    data = _read_cifar100(Path(root).expanduser())
    coarse_of = np.full(100, -1, dtype=np.int64)
    coarse_of[data.fine] = data.coarse
    if (coarse_of[data.fine] != data.coarse).any() or (coarse_of < 0).any():
        raise DataError(
            f"CIFAR-100 under {root}: the fine labels do not map to one superclass each, or some of the 100 classes "
            f"have no image; the files are damaged: download CIFAR-100 again ({_CIFAR100_URL})"
        )
    classes = [c for c in range(100) if coarse_of[c] in FC100_SUPERCLASSES[split]]
    return _cifar100_classes(data, classes, image_size)


def download(root: Path) -> None:
    """Fetch CIFAR-100's python version into ``root`` with torchvision (needs a network)."""
    if all((root / "cifar-100-python" / f).is_file() for f in ("train", "test", "meta")):
        return
    import torchvision

    try:
        torchvision.datasets.CIFAR100(str(root), train=True, download=True)
    except Exception as e:  # offline, or a server error
        raise DataError(
            f"downloading CIFAR-100 into {root} failed ({e}); download {_CIFAR100_URL} elsewhere and extract it into "
            f"{root} (giving {root / 'cifar-100-python'}/{{train,test,meta}})"
        ) from None


def load_cifar_fs_split(req: LoadRequest, split: str) -> FewShotData:
    """One CIFAR-FS split (:data:`episodes.datasets.LOADERS` entry)."""
    return load_cifar_fs(req.root, split, req.image_size or DEFAULT_SIZE)


def load_fc100_split(req: LoadRequest, split: str) -> FewShotData:
    """One FC100 split (:data:`episodes.datasets.LOADERS` entry)."""
    return load_fc100(req.root, split, req.image_size or DEFAULT_SIZE)
