"""Packages whose public names load their submodule on first use (PEP 562), so that ``import`` and ``--help`` stay
quick: nothing heavy (torch) is imported until a name that needs it is touched."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    package: str, names: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: each of ``names`` (public name -> relative submodule, e.g.
    ``{"expand": ".sla"}``) is imported from its submodule on first use and kept in ``namespace`` (the package's
    ``globals()``) so later uses skip the hook; a submodule is reachable as an attribute, as after an eager import.
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name], package), name)
            namespace[name] = value
            return value
        if importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__
