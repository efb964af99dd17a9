"""Safe reading of data and checkpoint files, shared by ``episodes`` and ``longtail``.

One implementation of each file-level job the two packages need:

- :func:`safe_load_pickle`: unpickles with an allowlist that builds only containers and numpy arrays, so a
  crafted data file (a pickle whose ``__reduce__`` calls ``os.system``, say) is refused instead of run.
- :func:`read_cifar`: torchvision's python-format CIFAR-10 / CIFAR-100 pickles, with every layout check, as
  :class:`CifarArrays` (CIFAR-100: fine and coarse labels).
- :func:`decode_images`: JPEG / PNG files -> one uint8 ``(N, C, H, W)`` array, decoded by a thread pool.
- :func:`cached_decode` (with :func:`default_cache_dir`, :func:`files_digest`, :func:`read_cached`):
  :func:`decode_images` once, then the array from an uncompressed ``.npz`` beside the data (both packages' image
  folders).
- :func:`normalize`: uint8 batch -> float32 ``(x/255 - mean) / std`` on the batch's device.
- :func:`load_checkpoint` / :func:`save_checkpoint`: ``torch.load(weights_only=True)`` with clear errors, and an
  atomic ``torch.save``.

Every failure that a user's file causes raises :class:`fewshot_sla.utils.DataError` naming the file and the fix.
This module imports neither ``episodes`` nor ``longtail``; they import it.
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import os
import pickle
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from fewshot_sla.progress import progress_bar
from fewshot_sla.utils import DataError, atomic_torch_save

__all__ = [
    "IMAGE_SUFFIXES",
    "channel_stats",
    "class_folders",
    "image_files",
    "safe_load_pickle",
    "str_keys",
    "describe",
    "CIFAR_DATASETS",
    "CifarArrays",
    "read_cifar",
    "IMAGE_MODES",
    "decode_images",
    "CACHE_FOLDER",
    "default_cache_dir",
    "cache_contents",
    "cache_note",
    "resolve_cache_dir",
    "files_digest",
    "read_cached",
    "cached_decode",
    "normalize",
    "load_checkpoint",
    "save_checkpoint",
]


# --------------------------------------------------------------------------------------------------------------------
# Pickles
# --------------------------------------------------------------------------------------------------------------------

# The globals pickled numpy arrays and containers need (numpy 1.x and 2.x module names, protocols 2 to 5), and nothing
# else: every other global a pickle can name is a callable the unpickler would run. Names are matched as written in
# the file, before Python 2 names are mapped, hence both ``__builtin__`` and ``builtins``.
_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
        ("collections", "OrderedDict"),
        # sets and bytearrays in protocol-2 pickles (protocol 4+ has opcodes for them and names no global)
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("__builtin__", "set"),
        ("__builtin__", "frozenset"),
        ("__builtin__", "bytearray"),
    }
)


#: The image files every loader and predictor reads (suffix compared case-insensitively): the one rule of the project.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def class_folders(d: str | Path) -> list[Path]:
    """The class folders of ``d``: its non-hidden sub-folders (symbolic links to folders count; hidden ones such as
    ``.fewshot_sla_cache`` do not), sorted by name. The one class-folder lister of every loader and predictor."""
    return sorted((Path(e.path) for e in os.scandir(d) if e.is_dir() and not e.name.startswith(".")),
                  key=lambda p: p.name)


def image_files(d: str | Path) -> list[Path]:
    """The images directly inside ``d``: non-hidden files with a suffix of :data:`IMAGE_SUFFIXES`, sorted by name."""
    return sorted(
        (Path(e.path) for e in os.scandir(d)
         if e.is_file() and not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name,
    )


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside :data:`_PICKLE_GLOBALS`; raised before that global is even imported."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class _DataUnpickler(pickle.Unpickler):
    """Builds only containers and numpy arrays: data files need nothing else, and a bad file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        # Name it as Python 3 does (protocols 0-2 write __builtin__.eval for builtins.eval): the mapping is a lookup
        # in pickle's own tables, nothing is imported.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        raise _RefusedGlobal(_compat_pickle.IMPORT_MAPPING.get(module, module), name)


def safe_load_pickle(path: str | Path, what: str, fix: str, encoding: str = "latin1") -> Any:
    """Unpickle a data file, building only containers (dict, list, tuple, set), scalars, strings and numpy arrays.

    Args:
        path: the pickle file.
        what: what the file is, for messages (``"CIFAR-100 file"``, ``"mini-ImageNet cache file"``).
        fix: what the user should do when the file is bad (``"delete it and download it again"``).
        encoding: how Python-2 ``str`` objects are decoded. ``"latin1"`` (the default) is what numpy needs to
            rebuild arrays pickled by Python 2, as the CIFAR files were.

    Returns:
        The unpickled object.

    Raises:
        DataError: the file is missing, truncated or not a pickle, or it names any global outside the numpy /
            container allowlist (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...). Such a global is
            refused before it is imported, so nothing in the file is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"the {what} {path} does not exist; {fix}")
    try:
        with open(path, "rb") as f:
            return _DataUnpickler(f, encoding=encoding).load()
    except _RefusedGlobal as e:
        raise DataError(
            f"refused to load the {what} {path}: it refers to a {e.qualname} object, which no data file holds (only "
            f"containers and numpy arrays are allowed); it was NOT executed. The file is damaged or was crafted to run "
            f"code when loaded: do not open it with pickle elsewhere; {fix}"
        ) from None
    except Exception as e:  # a damaged pickle fails in many ways (EOFError, UnpicklingError, ValueError, ...)
        raise DataError(
            f"cannot read the {what} {path} ({type(e).__name__}: {e}): it is corrupt or truncated; {fix}"
        ) from None


def str_keys(d: dict) -> dict[Any, Any]:
    """``d`` with ``bytes`` keys decoded as latin1 (pickles written from Python 3 ``bytes`` keep them as bytes)."""
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def describe(a: Any) -> str:
    """A short description of a value for error messages: ``"a uint8 array of shape (4, 3072)"``, ``"a list"``."""
    if isinstance(a, np.ndarray):
        return f"a {a.dtype} array of shape {tuple(a.shape)}"
    return f"a {type(a).__name__}"


# --------------------------------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------------------------------

CIFAR_DATASETS = ("cifar10", "cifar100")


@dataclass(frozen=True)
class _CifarLayout:
    name: str  # "CIFAR-10", for messages
    folder: str  # what torchvision extracts under ROOT
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str  # the fine labels for CIFAR-100
    names_key: str
    num_classes: int
    url: str
    torchvision_class: str


_CIFAR = {
    "cifar10": _CifarLayout(
        "CIFAR-10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
        10,
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "CIFAR10",
    ),
    "cifar100": _CifarLayout(
        "CIFAR-100",
        "cifar-100-python",
        ("train",),
        ("test",),
        "meta",
        "fine_labels",
        "fine_label_names",
        100,
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "CIFAR100",
    ),
}
_CIFAR100_COARSE = ("coarse_labels", "coarse_label_names", 20)


@dataclass
class CifarArrays:
    """CIFAR-10 or CIFAR-100 in memory, in the files' order.

    Attributes:
        train_x: ``(50000, 3, 32, 32)`` uint8 (R, G, B planes).
        train_y: ``(50000,)`` int64 labels (CIFAR-100: the fine labels, 0..99).
        test_x: ``(10000, 3, 32, 32)`` uint8.
        test_y: ``(10000,)`` int64.
        class_names: the 10 (100 fine) class names, index = label.
        train_coarse: CIFAR-100 only: ``(50000,)`` int64 superclass labels 0..19; None for CIFAR-10.
        test_coarse: CIFAR-100 only: ``(10000,)`` int64; None for CIFAR-10.
        coarse_names: CIFAR-100 only: the 20 superclass names; None for CIFAR-10.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: list[str]
    train_coarse: np.ndarray | None = None
    test_coarse: np.ndarray | None = None
    coarse_names: list[str] | None = None


def _cifar_dir(root: Path, dataset: str) -> Path:
    """The folder holding the CIFAR files: ``root/<folder>``, or ``root`` itself when it is that folder."""
    lay = _CIFAR[dataset]
    expected = [*lay.train, *lay.test, lay.meta]
    base = root / lay.folder
    if not base.is_dir() and all((root / f).is_file() for f in expected):
        base = root  # pointed at the cifar-10-batches-py / cifar-100-python folder itself
    missing = [f for f in expected if not (base / f).is_file()]
    if missing:
        raise DataError(
            f"{root} is not a {dataset} layout: expected {root / lay.folder}/{{{', '.join(expected)}}} (the python "
            f"version of {lay.name}, {lay.url}, extracted: torchvision's format), missing {missing}. Pass the folder "
            f'that contains {lay.folder}/, or fetch it with download=True or `python -c "import torchvision; '
            f'torchvision.datasets.{lay.torchvision_class}(ROOT, download=True)"`'
        )
    return base


def _label_names(meta: dict, path: Path, key: str, n: int, what: str, fix: str) -> list[str]:
    v = meta.get(key)
    if not isinstance(v, (list, tuple)) or len(v) != n:
        found = "no such entry" if v is None else f"{describe(v)}" + (f" of {len(v)}" if hasattr(v, "__len__") else "")
        raise DataError(f"{what} {path} has no list of {n} {key!r} (found {found}); {fix}")
    return [s.decode("latin1") if isinstance(s, bytes) else str(s) for s in v]


def _labels(entry: dict, path: Path, key: str, n_images: int, n_classes: int, what: str, fix: str) -> np.ndarray:
    v = entry.get(key)
    try:
        y = np.asarray(v, dtype=np.int64).reshape(-1) if v is not None else None
    except (TypeError, ValueError):
        y = None
    if y is None or len(y) != n_images or y.min() < 0 or y.max() >= n_classes:  # n_images > 0: checked by the caller
        raise DataError(
            f"{what} {path}: {key!r} should be {n_images} labels in 0..{n_classes - 1} (one per image of 'data'), "
            f"found {'no such entry' if v is None else describe(v)}; {fix}"
        )
    return y


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    # one file (CIFAR-100's train or test): keep the view, np.concatenate would copy it
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def read_cifar(root: str | Path, dataset: Literal["cifar10", "cifar100"]) -> CifarArrays:
    """Read torchvision's python-format CIFAR pickles: ``root/cifar-10-batches-py/`` or ``root/cifar-100-python/``.

    ``root`` may also be that folder itself. The files are read with :func:`safe_load_pickle`, so a crafted file
    cannot run code. Checked: every file is present; each batch is a dict with ``data`` a uint8 ``(n, 3072)`` array
    and ``n`` labels in range (CIFAR-100: fine 0..99 and coarse 0..19); the meta file lists 10 class names
    (CIFAR-100: 100 fine and 20 coarse names). Keys may be ``str`` or ``bytes``.

    Args:
        root: the data folder.
        dataset: ``"cifar10"`` or ``"cifar100"``.

    Returns:
        :class:`CifarArrays`: images ``(N, 3, 32, 32)`` uint8, int64 labels, class names (and CIFAR-100's coarse
        labels and names), train batches concatenated in file order.

    Raises:
        ValueError: ``dataset`` is not one of :data:`CIFAR_DATASETS`.
        DataError: a file is missing, corrupt, refused, or not in this layout; the message names it and the fix.
    """
    if dataset not in _CIFAR:
        raise ValueError(f"unknown CIFAR dataset {dataset!r}; choose one of {list(CIFAR_DATASETS)}")
    lay = _CIFAR[dataset]
    root = Path(root)
    base = _cifar_dir(root, dataset)
    fix = f"delete {base} and download {lay.name} again (download=True, or {lay.url})"
    what = f"{lay.name} file"

    def load_dict(name: str) -> tuple[Path, dict]:
        path = base / name
        obj = safe_load_pickle(path, what, fix)
        if not isinstance(obj, dict):
            raise DataError(f"{what} {path} should hold a dict, found {describe(obj)}; {fix}")
        return path, str_keys(obj)

    meta_path, meta = load_dict(lay.meta)
    names = _label_names(meta, meta_path, lay.names_key, lay.num_classes, what, fix)
    coarse_names = None
    if dataset == "cifar100":
        coarse_names = _label_names(meta, meta_path, _CIFAR100_COARSE[1], _CIFAR100_COARSE[2], what, fix)

    def read(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        xs, ys, cs = [], [], []
        for name in files:
            path, entry = load_dict(name)
            x = entry.get("data")
            if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or not len(x):
                raise DataError(
                    f"{what} {path}: 'data' should be a uint8 array (N, 3072), found "
                    f"{'no such entry' if x is None else describe(x)}; {fix}"
                )
            ys.append(_labels(entry, path, lay.label_key, len(x), lay.num_classes, what, fix))
            if dataset == "cifar100":
                cs.append(_labels(entry, path, _CIFAR100_COARSE[0], len(x), _CIFAR100_COARSE[2], what, fix))
            xs.append(x.reshape(-1, 3, 32, 32))  # each row: the R, G, B planes of 32x32, row-major
        return _cat(xs), _cat(ys), (_cat(cs) if cs else None)

    train_x, train_y, train_c = read(lay.train)
    test_x, test_y, test_c = read(lay.test)
    return CifarArrays(train_x, train_y, test_x, test_y, names, train_c, test_c, coarse_names)


# --------------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------------

IMAGE_MODES = ("RGB", "L")
_JPEG_SUFFIXES = (".jpg", ".jpeg")


def _decode_error(path: Path, e: Exception, what: str, fix: str) -> DataError:
    return DataError(f"cannot decode {what} {path} ({type(e).__name__}: {e}); {fix}")


def _decode_pil(path: Path, mode: str, size: int | None, what: str, fix: str) -> np.ndarray:
    """One file with PIL -> ``(C, H, W)`` uint8 in ``mode``, resized to ``size x size`` (antialiased) if given."""
    from PIL import Image

    try:
        with Image.open(path) as f:
            im = f.convert(mode)
        if size is not None and im.size != (size, size):
            # LANCZOS for grey (Omniglot's strokes), BILINEAR for RGB: the filters the loaders always used, so the
            # pixels (and results) stay the same. PIL widens both filters when shrinking, i.e. antialiases.
            resample = Image.Resampling.LANCZOS if mode == "L" else Image.Resampling.BILINEAR
            im = im.resize((size, size), resample)
        a = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # UnidentifiedImageError, truncated file, missing file, decompression bomb, ...
        raise _decode_error(path, e, what, fix) from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _decode_torchvision(path: Path, what: str, fix: str) -> np.ndarray:
    """One file -> ``(3, H, W)`` uint8 with torchvision's decoder; PIL as the fallback for files it cannot read."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        return decode_image(torch.from_numpy(np.fromfile(path, dtype=np.uint8)), mode=ImageReadMode.RGB).numpy()
    except Exception:  # an odd file (CMYK JPEG, palette quirks): PIL names the error if it cannot read it either
        return _decode_pil(path, "RGB", None, what, fix)


def _decode_chunk(paths: list[Path], mode: str, size: int | None, what: str, fix: str) -> list[np.ndarray]:
    if mode == "RGB" and size is None:
        # torchvision's decoders, which the long-tail loader always used (its cached arrays stay valid)
        if all(p.suffix.lower() in _JPEG_SUFFIXES for p in paths):
            from torchvision.io import ImageReadMode, decode_jpeg

            try:  # one batched call: about 2x faster than PIL image by image
                data = [torch.from_numpy(np.fromfile(p, dtype=np.uint8)) for p in paths]
                return [t.numpy() for t in decode_jpeg(data, mode=ImageReadMode.RGB)]
            except Exception:  # find (and name) the bad file below
                pass
        return [_decode_torchvision(p, what, fix) for p in paths]
    # PIL for grey conversion and resizing: its L conversion and filters are what the few-shot loaders always used
    return [_decode_pil(p, mode, size, what, fix) for p in paths]


def decode_images(
    paths: Sequence[str | Path],
    mode: Literal["RGB", "L"] = "RGB",
    size: int | None = None,
    progress: bool = True,
    desc: str = "",
    workers: int | None = None,
    invert: bool = False,
    what: str = "image",
    fix: str = "replace or delete the file",
    chunk: int = 512,
) -> np.ndarray:
    """Decode image files (JPEG, PNG, anything PIL reads) into one uint8 array, with a thread pool.

    Decoding: with ``mode="RGB"`` and no ``size``, torchvision's decoders (a batched ``decode_jpeg`` call per chunk
    of JPEGs, ``decode_image`` per file otherwise, PIL for files they reject); otherwise PIL: ``convert(mode)``,
    then, if ``size`` is given and the image is not ``size x size``, an antialiased resize (LANCZOS for ``"L"``,
    BILINEAR for ``"RGB"``). The decoders release the GIL, so threads run in parallel.

    Args:
        paths: the files, in the order wanted.
        mode: ``"RGB"`` (3 channels) or ``"L"`` (1 grey channel).
        size: resize every image to ``size x size``; None keeps the files' size (which must then be the same).
        progress: show a progress bar (:func:`fewshot_sla.progress.progress_bar`: plain lines in a log).
        desc: the bar's label.
        workers: decoding threads (default ``min(8, cpu count)``).
        invert: return ``255 - x`` (after resizing): e.g. Omniglot's dark ink becomes bright on a dark background.
        what: what the files are, for the error naming a bad one (``"Omniglot image"``).
        fix: what to do about a bad file, for that error.
        chunk: files per task (and per batched JPEG call).

    Returns:
        ``(len(paths), C, H, W)`` uint8, ``C`` = 3 for RGB and 1 for L; ``H = W = size`` if ``size`` is given.

    Raises:
        ValueError: a bad ``mode``, ``size`` or ``workers``, or no paths without a ``size``.
        DataError: a file cannot be decoded (the message names it), or, without ``size``, the images differ in size.
    """
    if mode not in IMAGE_MODES:
        raise ValueError(f"decode_images: mode must be one of {list(IMAGE_MODES)}, got {mode!r}")
    if size is not None and (int(size) != size or size < 1):
        raise ValueError(f"decode_images: size must be a positive integer or None, got {size!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"decode_images: workers must be >= 1, got {workers!r}")
    files = [Path(p) for p in paths]
    channels = 3 if mode == "RGB" else 1
    if not files:
        if size is None:
            raise ValueError("decode_images: no image paths given (and no size, so the array's shape is unknown)")
        return np.empty((0, channels, size, size), dtype=np.uint8)
    n_workers = workers or min(8, os.cpu_count() or 1)
    # Small sets: at least one chunk per thread, so that they all work.
    step = max(1, min(chunk, -(-len(files) // n_workers)))
    chunks = [files[i : i + step] for i in range(0, len(files), step)]
    out: np.ndarray | None = None  # allocated from the first image's shape: one full-size copy, never two
    pool = ThreadPoolExecutor(max_workers=n_workers)
    try:
        with progress_bar(total=len(files), desc=desc, unit="img", enabled=progress, leave=False,
                          mininterval=0.5) as bar:
            i = 0
            for decoded in pool.map(lambda c: _decode_chunk(c, mode, size, what, fix), chunks):  # in order
                for a in decoded:
                    if out is None:
                        out = np.empty((len(files), *a.shape), dtype=np.uint8)
                    elif a.shape != out.shape[1:]:
                        raise DataError(
                            f"images of different sizes: {files[0]} is {out.shape[2:]} but {files[i]} is "
                            f"{a.shape[1:]}; resize the files to one size"
                        )
                    out[i] = a
                    i += 1
                bar.update(len(decoded))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after an error, do not decode the rest
    assert out is not None  # files is not empty
    if invert:
        np.subtract(255, out, out=out)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Decoded-image cache
# --------------------------------------------------------------------------------------------------------------------

#: The folder name :func:`default_cache_dir` uses under a data root (hidden, so no loader takes it for a class).
CACHE_FOLDER = ".fewshot_sla_cache"


def cache_contents(root: str | Path) -> set[str]:
    """The file names in ``root``'s decoded-image cache (empty without one); nothing is created."""
    d = Path(root).expanduser() / CACHE_FOLDER
    return {f.name for f in d.iterdir()} if d.is_dir() else set()


def cache_note(root: str | Path, before: set[str]) -> str:
    """What a load did with ``root``'s cache, given :func:`cache_contents` before it: ``decoded, cached in DIR``
    (it wrote files there), ``read from the cache in DIR`` (it could have), or ``""`` (no cache)."""
    after, d = cache_contents(root), Path(root).expanduser() / CACHE_FOLDER
    if after - before:
        return f"decoded, cached in {d}"
    return f"read from the cache in {d}" if after else ""


def default_cache_dir(root: str | Path) -> Path | None:
    """``root/.fewshot_sla_cache/``, created if needed, or None when it cannot be written (a read-only data set only
    costs the cache, never the run)."""
    d = Path(root) / CACHE_FOLDER
    try:
        d.mkdir(exist_ok=True)
    except OSError:
        return None
    return d if os.access(d, os.W_OK) else None


def resolve_cache_dir(cache_dir: str | Path | None | Literal[False], root: str | Path) -> Path | None:
    """Where a loader caches decoded arrays: ``None`` -> :func:`default_cache_dir` of ``root``; ``False`` -> no
    cache; a path -> that folder (created)."""
    if cache_dir is None:
        return default_cache_dir(root)
    if cache_dir is False:
        return None
    d = Path(cache_dir)
    d.mkdir(parents=True, exist_ok=True)
    return d


def files_digest(lines: Iterable[str]) -> str:
    """A short hex digest of ``lines`` (e.g. ``"cat/0001.png:5123"``, one per file): a cache key that changes when a
    file is added, removed, renamed or rewritten with another size."""
    h = hashlib.sha1()
    for line in lines:
        h.update(f"{line}\n".encode())
    return h.hexdigest()[:16]


def read_cached(
    cache: str | Path | None, n: int, channels: int | None = None, size: int | None = None
) -> np.ndarray | None:
    """The ``(n, C, H, W)`` uint8 array a :func:`cached_decode` call stored in ``cache``.

    Args:
        cache: the ``.npz`` file (None: no cache).
        n: the number of images expected.
        channels: the channel count expected (None: any).
        size: the side expected (None: any).

    Returns:
        The array, or None when the file is absent, unreadable (half-written, foreign) or of another shape.
    """
    if cache is None or not Path(cache).is_file():
        return None
    try:
        with np.load(cache) as z:  # allow_pickle=False: a cache file can only hold arrays
            x = z["images"]
    except Exception:  # a half-written or foreign file: decode again and overwrite it
        return None
    ok = x.dtype == np.uint8 and x.ndim == 4 and len(x) == n
    ok = ok and (channels is None or x.shape[1] == channels) and (size is None or x.shape[2:] == (size, size))
    return x if ok else None


def _write_cache(cache: Path, x: np.ndarray) -> None:
    tmp: str | None = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.", suffix=".npz")
        os.close(fd)
        np.savez(tmp, images=x)  # uncompressed: loading is a memcpy (~1 s for 60,000 32x32 images)
        os.replace(tmp, cache)  # atomic: a concurrent reader sees the old file or the whole new one
    except OSError:  # a read-only or full disk only costs the cache
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def cached_decode(
    paths: Sequence[str | Path],
    cache: str | Path | None,
    mode: Literal["RGB", "L"] = "RGB",
    size: int | None = None,
    *,
    decoder: Callable[..., np.ndarray] | None = None,
    **decode_kwargs: Any,
) -> np.ndarray:
    """:func:`decode_images` of ``paths``, read from the ``.npz`` file ``cache`` when it holds them.

    The cache file is trusted by name: its key (the file name the caller picks) must change whenever the files or the
    decoding settings change, e.g. a :func:`files_digest` of the file names and sizes, plus the mode and size. A file
    of the wrong length or shape, a damaged one or a foreign one is ignored and overwritten. Writing is atomic, and a
    disk that cannot be written only costs the cache.

    Args:
        paths: the image files, in the order wanted.
        cache: the ``.npz`` file; None = no cache (always decode).
        mode: ``"RGB"`` or ``"L"``, passed to the decoder; a cached array of another channel count is ignored.
        size: ``size x size`` resize, passed to the decoder; a cached array of another size is ignored.
        decoder: the decode function (default :func:`decode_images`), called as ``decoder(paths, mode, size, **kw)``.
            A loader passes its own module's reference so that a test can patch it there.
        **decode_kwargs: passed to the decoder (``progress``, ``desc``, ``workers``, ``what``, ``fix``, ...).

    Returns:
        ``(len(paths), C, H, W)`` uint8 (``C`` = 3 for RGB, 1 for L).
    """
    x = read_cached(cache, len(paths), 3 if mode == "RGB" else 1, size)
    if x is not None:
        return x
    x = (decoder or decode_images)(paths, mode, size, **decode_kwargs)
    if cache is not None:
        _write_cache(Path(cache), x)
    return x


# --------------------------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------------------------


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and standard deviation of each channel of a uint8 ``(N, C, H, W)`` set, on the [0, 1] scale.

    Exact and deterministic: a histogram of the 256 levels per channel (integer counts, so no float sum drifts with
    the order or the number of images), then ``mean = sum_v p_v * v / 255`` and the population
    ``std = sqrt(sum_v p_v * (v / 255)^2 - mean^2)``. A channel without variation gets std 1 (normalising it then only
    subtracts its mean) rather than a division by 0. The one implementation behind every loader that measures a
    training split's statistics (few-shot image folders and Tiny ImageNet, long-tail image folders).

    Raises:
        ValueError: ``images`` is not a non-empty uint8 ``(N, C, H, W)`` tensor.
    """
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4 or not len(images):
        got = f"{images.dtype} of shape {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"channel_stats: expected a non-empty uint8 tensor (N, C, H, W), got {got}")
    x = images.detach().cpu().numpy()
    c = x.shape[1]
    hist = np.zeros((c, 256), dtype=np.int64)
    for a in range(0, len(x), chunk):  # chunked: a channel's slice is copied to be raveled, never the whole set
        for ch in range(c):
            hist[ch] += np.bincount(x[a : a + chunk, ch].ravel(), minlength=256)
    levels = np.arange(256, dtype=np.float64) / 255.0
    p = hist / hist.sum(axis=1, keepdims=True)
    mean = p @ levels
    std = np.sqrt(np.maximum(p @ levels**2 - mean**2, 0.0))
    std = np.where(std < 1e-6, 1.0, std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Raw pixels to the network's input: ``(x / 255 - mean) / std`` per channel, on ``x``'s device.

    Args:
        x: ``(B, C, H, W)`` uint8.
        mean: ``C`` channel means on the [0, 1] scale.
        std: ``C`` channel standard deviations on the [0, 1] scale.

    Returns:
        ``(B, C, H, W)`` float32.

    Raises:
        ValueError: ``x`` is not a 4-D uint8 tensor, or its channel count differs from ``len(mean)``/``len(std)``.
    """
    c = len(mean)
    if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != c or len(std) != c:
        got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(
            f"normalize: expected a uint8 tensor (B, {c}, H, W) of raw pixels (mean has {c} channels, std {len(std)}), "
            f"got {got}"
        )
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
    return (x.float().div_(255.0) - m).div_(s)


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------------


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` through a temporary file and ``os.replace``: a crash leaves the old checkpoint or the new one.

    Args:
        obj: what :func:`load_checkpoint` can read back: tensors (RNG states are uint8 tensors), dicts, lists,
            tuples, ints, floats, bools, strings and None. No numpy arrays or other objects (convert them, e.g.
            ``np.random.get_state()`` with ``.tolist()``).
        path: the checkpoint file; its folder is created.
    """
    atomic_torch_save(obj, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """``torch.load(path, map_location=..., weights_only=True)``: only tensors and plain containers are built.

    Args:
        path: a file written by :func:`save_checkpoint`.
        map_location: where tensors go (``"cpu"``, a ``torch.device``; None = where they were saved).

    Returns:
        The checkpoint dict.

    Raises:
        DataError: the file is missing, corrupt or truncated, holds something other than a dict, or holds objects
            other than tensors, containers, numbers and strings (refused, not executed).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist; check the path (or train from scratch)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise DataError(
                f"cannot read checkpoint {path} ({type(e).__name__}: {e}): it is corrupt or truncated; delete it and "
                "use an earlier checkpoint, or train again"
            ) from None
        # torch's message suggests weights_only=False, i.e. running the file's code: keep only the cause.
        glob = re.search(r"GLOBAL ([\w.]+)", str(e))
        other = re.search(r"(Unsupported [^\n]*)", str(e))
        cause = (
            f"it refers to a {glob.group(1)} object"
            if glob
            else f"it uses pickle features that weights_only loading refuses ({other.group(1) if other else e})"
        )
        raise DataError(
            f"refused to load checkpoint {path}: {cause}, and checkpoints written by this project hold only tensors, "
            "containers, numbers and strings; it was NOT executed. The file was written by other code or crafted to "
            "run code when loaded: do not load it with weights_only=False; use a checkpoint written by save_checkpoint"
        ) from None
    except Exception as e:  # not a zip / truncated archive (RuntimeError), EOFError, ...
        raise DataError(
            f"cannot read checkpoint {path} ({type(e).__name__}: {e}): it is corrupt or truncated (e.g. the disk "
            "filled up while writing it); delete it and use an earlier checkpoint, or train again"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"checkpoint {path} holds {describe(obj)}, not a dict; use a file written by save_checkpoint")
    return obj
