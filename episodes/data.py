"""Few-shot data sets held in memory as uint8 tensors; an episode is a gather.

Implemented: Omniglot (Lake et al. 2015) from the layout torchvision's downloader extracts,
``omniglot-py/images_{background,evaluation}/<Alphabet>/characterNN/*.png``, with the Vinyals et
al. (2016) class split (1028 / 172 / 423 characters) that this package carries as data
(``episodes/splits/omniglot_vinyals.json``). Images are resized to 28x28 (antialiased) and stored
with the ink bright (255) on a dark (0) background, the inverse of the files.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fewshot_sla.utils import DataError

__all__ = [
    "DATASETS",
    "SPLITS",
    "FewShotData",
    "load_fewshot",
    "load_omniglot",
    "DATASET_STATS",
    "to_float",
    "omniglot_split",
]

DATASETS = ("omniglot", "mini-imagenet", "cifar-fs", "fc100")
SPLITS = ("train", "val", "test")
DEFAULT_SIZE = {"omniglot": 28, "mini-imagenet": 84, "cifar-fs": 32, "fc100": 32}
#: mean and std per channel on the [0, 1] scale (Omniglot: measured on the Vinyals train split at 28x28).
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "omniglot": ((0.0817,), (0.2364,)),
    "mini-imagenet": ((0.4730, 0.4490, 0.4033), (0.2774, 0.2683, 0.2819)),
    "cifar-fs": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fc100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_SPLIT_FILE = Path(__file__).resolve().parent / "splits" / "omniglot_vinyals.json"


@dataclass
class FewShotData:
    """One split in memory."""

    images: Tensor  # uint8 (N, C, H, W)
    labels: Tensor  # int64 (N,), 0..C-1 contiguous
    class_names: list[str]  # name of each class, e.g. "images_background/Armenian/character01"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def to_float(images: Tensor, dataset: str) -> Tensor:
    """Normalise a uint8 batch ``(B, C, H, W)`` to float with the data set's mean and std."""
    mean, std = DATASET_STATS[dataset]
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


def omniglot_split(split: str) -> list[tuple[str, str, int]]:
    """The Vinyals split's classes as ``(images_part, alphabet, character_number)``, sorted."""
    spec = json.loads(_SPLIT_FILE.read_text())["splits"][split]
    return sorted(
        (f"images_{part}", a, n) for part, alphabets in spec.items() for a, ns in alphabets.items() for n in ns
    )


def _omniglot_root(root: Path) -> Path:
    for cand in (root / "omniglot-py", root):
        if (cand / "images_background").is_dir() or (cand / "images_evaluation").is_dir():
            return cand
    raise DataError(
        f"Omniglot not found under {str(root)!r}: expected {root / 'omniglot-py'}/images_background/ and "
        "images_evaluation/ (the layout torchvision.datasets.Omniglot(root, download=True) extracts); "
        'download it with `python -c "import torchvision; torchvision.datasets.Omniglot(ROOT, background=True, '
        'download=True); torchvision.datasets.Omniglot(ROOT, background=False, download=True)"`'
    )


def _read_png(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("L")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.LANCZOS)
            return 255 - np.asarray(im, dtype=np.uint8)  # ink bright
    except OSError as e:
        raise DataError(f"cannot read Omniglot image {path}: {e}; re-extract the data set") from None


def load_omniglot(root: str | Path, split: str = "train", image_size: int = 28, progress: bool = True) -> FewShotData:
    """Omniglot's Vinyals split ``split`` as uint8 ``(N, 1, size, size)``, 20 images per class."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    base = _omniglot_root(Path(root).expanduser())
    classes = omniglot_split(split)
    paths: list[Path] = []
    labels: list[int] = []
    for c, (part, alphabet, n) in enumerate(classes):
        d = base / part / alphabet / f"character{n:02d}"
        files = sorted(d.glob("*.png")) if d.is_dir() else []
        if not files:
            raise DataError(
                f"Omniglot class folder {d} is missing or empty; the data under {base} is incomplete: "
                "re-download or re-extract it"
            )
        paths += files
        labels += [c] * len(files)
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=8) as pool:
        imgs = list(
            tqdm(
                pool.map(lambda p: _read_png(p, image_size), paths),
                total=len(paths),
                desc=f"omniglot {split}",
                disable=not progress,
                leave=False,
                mininterval=1,
            )
        )
    images = torch.from_numpy(np.stack(imgs)).unsqueeze(1)
    names = [f"{p}/{a}/character{n:02d}" for p, a, n in classes]
    return FewShotData(images, torch.tensor(labels, dtype=torch.int64), names)


def load_fewshot(
    dataset: str, root: str | Path, split: str, image_size: int | None = None, download: bool = False
) -> FewShotData:
    """Load split ``split`` of ``dataset`` into memory (see the module docstring)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    size = image_size or DEFAULT_SIZE[dataset]
    if dataset == "omniglot":
        if download:
            import torchvision

            for bg in (True, False):
                try:
                    torchvision.datasets.Omniglot(str(root), background=bg, download=True)
                except Exception as e:  # offline, or a server error
                    raise DataError(
                        f"downloading Omniglot into {root} failed ({e}); download it elsewhere and "
                        "copy omniglot-py/ there"
                    ) from None
        return load_omniglot(root, split, size)
    raise ValueError(f"the {dataset} loader is not implemented yet in this version; only omniglot is")
