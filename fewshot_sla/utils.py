"""Small shared helpers: seeding, device, the eval-mode switch, git commit, atomic files, strict JSON.

:func:`write_json` writes standard JSON that any parser accepts: NaN and +-inf (Python floats,
NumPy scalars and arrays, torch tensors, at any depth) become ``null``, since the ``NaN`` /
``Infinity`` literals Python emits by default are not JSON and strict parsers (``jq``, browsers,
``JSON.parse``, W&B's web view) reject the whole file. Python-side dicts keep their NaN; only the
file holds ``null`` (read back as ``None``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "DataError",
    "seed_everything",
    "resolve_device",
    "eval_mode",
    "inference_batches",
    "git_commit",
    "project_checkout",
    "cpu_name",
    "provenance",
    "atomic_torch_save",
    "atomic_write_text",
    "json_dumps",
    "write_json",
    "read_json",
]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the library's own sampling uses local generators)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return dev


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` (and all its submodules) in eval mode, then restore each one's own mode.

    The one eval-mode switch of the library (the engine's evaluation, the regimes' ``predict``). Restoring per
    submodule, not ``module.train(prev)``, keeps deliberate mixes intact, e.g. a frozen BatchNorm left in eval
    mode inside a model that trains.
    """
    before = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, was_training in before:
            m.training = was_training


def inference_batches(n: int, size: int) -> list[slice]:
    """Slices of at most ``size`` rows (``size`` >= 2) covering ``n`` rows, never a lone last row: a trailing batch
    of 1 joins the batch before it. On CPU PyTorch sends a batch of 1 to another convolution kernel, whose sums
    run in another order, so an image scored alone differs in the last bits from the same image in a batch;
    the test evaluation and the predictors batch with this, and agree exactly."""
    size = max(2, int(size))
    bounds = list(range(0, n, size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def project_checkout(path: str | Path | None = None) -> Path | None:
    """The root of this project's own source checkout when the package runs from one, else None.

    The package runs from its checkout when the folder above ``fewshot_sla/`` holds this project's
    ``pyproject.toml`` (name ``fewshot-sla``) and is a git work tree's top level; a wheel installed into a
    virtual environment that sits inside some other git repository is not a checkout of this project.
    """
    pkg = Path(path) if path else Path(__file__).resolve().parent
    root = pkg.parent
    pyproject = root / "pyproject.toml"
    try:
        if not (root / ".git").exists() or 'name = "fewshot-sla"' not in pyproject.read_text():
            return None
    except OSError:
        return None
    return root


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of this project's checkout holding the package (with ``-dirty``), or None when the package
    does not run from its own checkout (:func:`project_checkout`: an installed wheel) or git is unavailable."""
    root = project_checkout(path)
    if root is None:
        return None
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance() -> dict[str, Any]:
    """What produced a run, for its record: the package version, the git commit (only from this project's own
    checkout), the versions of Python, torch and numpy, and the hardware (CPU model, CUDA device if any)."""
    from . import __version__

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "package_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu": cpu_name(),
        "cuda_device": cuda,
    }


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)  # atomic on POSIX: a crash leaves the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temporary file and ``os.replace``."""
    _atomic(Path(path), lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write text through a temporary file and ``os.replace``."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _jsonable(o: Any) -> Any:
    """A copy of ``o`` made of JSON types only; non-finite floats become None (``null``)."""
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, torch.Tensor):
        return _jsonable(o.detach().cpu().tolist())
    if isinstance(o, (bool, np.bool_)):  # before the number checks: bool is an int subclass
        return bool(o)
    if isinstance(o, (np.floating, float)):
        return _finite_or_none(float(o))
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, Path):
        return str(o)
    return o


def json_dumps(obj: Any, indent: int | None = None, sort_keys: bool = False) -> str:
    """Strict JSON text of ``obj``: NaN and +-inf become ``null`` (also inside NumPy arrays and
    torch tensors); NumPy scalars, tensors and paths become plain JSON values.

    Raises:
        TypeError: when a value has no JSON form (e.g. an arbitrary object).
    """
    return json.dumps(_jsonable(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)


def write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` atomically as strict JSON (:func:`json_dumps`, indented); NaN/inf as ``null``."""
    atomic_write_text(json_dumps(obj, indent=2) + "\n", path)


def read_json(path: str | Path) -> Any:
    """Parse a JSON file (``null`` comes back as None)."""
    return json.loads(Path(path).read_text())


class DataError(ValueError):
    """A data folder or file that is missing, incomplete or corrupt; the message says which and how to fix it."""
