"""Omniglot (Lake et al. 2015) from the layout torchvision's downloader extracts,
``omniglot-py/images_{background,evaluation}/<Alphabet>/characterNN/*.png``, with the Vinyals et al. (2016) class
split (1028 / 172 / 423 characters, ``splits/omniglot_vinyals.json``) or Lake's background / evaluation split.
Images are resized to 28x28 (antialiased) and stored with the ink bright (255) on a dark (0) background, the inverse
of the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch

from fewshot_sla.io import cached_decode, decode_images, files_digest, resolve_cache_dir
from fewshot_sla.utils import DataError

from .common import SPLITS, SPLITS_DIR, FewShotData, LoadRequest, Stats, _check_split

__all__ = ["OMNIGLOT_SCHEMES", "STATS", "DEFAULT_SIZE", "omniglot_split", "load_omniglot", "load_split", "download"]

_SPLIT_FILE = SPLITS_DIR / "omniglot_vinyals.json"
#: measured on the Vinyals train split at 28x28, ink bright
STATS: Stats = ((0.0817,), (0.2364,))
DEFAULT_SIZE = 28

OMNIGLOT_SCHEMES = ("vinyals", "background")


def omniglot_split(split: str, scheme: str = "vinyals") -> list[tuple[str, str, int]]:
    """Omniglot's classes of ``split`` as ``(images_part, alphabet, character_number)``, sorted.

    ``scheme="vinyals"``: Vinyals et al. (2016), 1028 / 172 / 423 characters (train mixes background
    and evaluation alphabets). ``scheme="background"``: Lake et al.'s background / evaluation split,
    train = the 792 characters of the 25 background alphabets outside Vinyals' validation alphabets,
    val = those 5 background alphabets (172 characters), test = all 659 characters of the 20
    evaluation alphabets; derived from the same file, so no test class is ever seen in validation.
    """
    if scheme not in OMNIGLOT_SCHEMES:
        raise ValueError(f"unknown Omniglot split scheme {scheme!r}; choose one of {', '.join(OMNIGLOT_SCHEMES)}")
    splits = json.loads(_SPLIT_FILE.read_text())["splits"]
    if scheme == "vinyals":
        parts = [(part, spec) for part, spec in splits[split].items()]
    elif split == "test":
        parts = [("evaluation", spec) for s in SPLITS for part, spec in splits[s].items() if part == "evaluation"]
    else:
        parts = [(part, spec) for part, spec in splits[split].items() if part == "background"]
    return sorted((f"images_{part}", a, n) for part, alphabets in parts for a, ns in alphabets.items() for n in ns)


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


def load_omniglot(
    root: str | Path, split: str = "train", image_size: int = 28, progress: bool = True, scheme: str = "vinyals",
    cache_dir: str | Path | None | Literal[False] = None,
) -> FewShotData:
    """Omniglot's ``split`` (of :func:`omniglot_split`'s ``scheme``) as uint8 ``(N, 1, size, size)``,
    20 images per class. Decoded once and cached (``cache_dir``: None = ``ROOT/.fewshot_sla_cache/`` where
    writable, else the user cache; False = no cache), so a run does not decode 32,460 PNGs again."""
    _check_split(split)
    base = _omniglot_root(Path(root).expanduser())
    classes = omniglot_split(split, scheme)
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
    # The files have dark ink on white; stored inverted (ink bright), as the normalisation statistics assume.
    # Decoded once: the cache's name is a digest of the split's files (names and sizes), the size and the inversion.
    digest = files_digest(f"{p.relative_to(base)}:{p.stat().st_size}" for p in paths)
    cdir = resolve_cache_dir(cache_dir, base)
    cache = cdir / f"omniglot-{split}-{digest}-s{image_size}-inv.npz" if cdir else None
    x = cached_decode(
        paths,
        cache,
        "L",
        image_size,
        decoder=decode_images,
        progress=progress,
        desc=f"omniglot {split}",
        invert=True,
        what="Omniglot image",
        fix="re-extract the data set",
    )
    images = torch.from_numpy(x)
    names = [f"{p}/{a}/character{n:02d}" for p, a, n in classes]
    return FewShotData(images, torch.tensor(labels, dtype=torch.int64), names)


def download(root: Path) -> None:
    """Fetch Omniglot's two archives into ``root`` with torchvision (needs a network)."""
    import torchvision

    for bg in (True, False):
        try:
            torchvision.datasets.Omniglot(str(root), background=bg, download=True)
        except Exception as e:  # offline, or a server error
            raise DataError(
                f"downloading Omniglot into {root} failed ({e}); download it elsewhere and copy omniglot-py/ there"
            ) from None


def load_split(req: LoadRequest, split: str) -> FewShotData:
    """One split (:data:`episodes.datasets.LOADERS` entry)."""
    scheme = str(req.options.get("omniglot_split", "vinyals"))
    return load_omniglot(req.root, split, req.image_size or DEFAULT_SIZE, req.progress, scheme)
