"""Optional parts of the package and the extra that installs each.

The core needs torch, torchvision, numpy, PyYAML, tqdm and Pillow. Everything else is an extra of
``pip install 'fewshot-sla[EXTRA]'``: a run that needs a missing one stops before it loads any data, with one
line naming the extra (:func:`require`), never a traceback and never half a run.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtra", "require", "available"]

#: module -> (extra, what needs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "wandb": ("wandb", "logging to Weights & Biases"),
    "qpth": ("svm", "the MetaOptNet-SVM learner's differentiable QP solver"),
    "matplotlib": ("plots", "plots"),
    "sklearn": ("sklearn", "the logistic-regression test head and the digits demo"),
    "learn2learn": ("l2l", "learn2learn interop"),
    "submitit": ("grid", "sla-grid's launchers"),
}


class MissingExtra(ImportError):
    """An optional package that a requested feature needs is not installed."""


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, what: str | None = None) -> ModuleType:
    """``import module``, or a :class:`MissingExtra` whose message names the extra that installs it.

    Args:
        module: the top-level module (a key of :data:`EXTRAS`).
        what: what the user asked for that needs it (default: :data:`EXTRAS`' description).
    """
    extra, default_what = EXTRAS.get(module, (module, module))
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(
            f"{what or default_what} needs the optional package {module!r}, which is not installed: "
            f"pip install 'fewshot-sla[{extra}]'"
        ) from e
