"""Typed configs: dataclass defaults, overridden by a YAML file, then by ``--key value`` flags.

Each script defines one ``@dataclass`` whose fields hold the only defaults (with a comment per
field). :func:`parse_config` builds the command line from it:

* ``--config FILE.yaml`` loads overrides (an unknown key is a one-line error naming the closest known key);
  instead of a file, the name of a recipe shipped inside the package (``--config tiny-imagenet/gpu_protonet_5w1s_sla``
  or ``--config longtail/cifar10_ir100_ldam_drw``), see :func:`find_recipe`;
* ``--some-field VALUE`` (or ``--some_field``) overrides one field; ``--flag`` / ``--no-flag``
  for booleans;
* :func:`save_config` writes the resolved config beside the results (``OUT/config.yaml``).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.resources
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "ConfigError",
    "parse_config",
    "resume_argv",
    "load_config",
    "config_from_dict",
    "save_config",
    "to_dict",
    "find_recipe",
    "recipe_names",
    "unknown_keys_message",
]

C = TypeVar("C")


class ConfigError(ValueError):
    """A config file or flag that does not fit the config dataclass."""


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """``(type, optional)`` with ``X | None`` unwrapped."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(name: str, tp: Any, value: Any) -> Any:
    base, optional = _base_type(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional or value is None:
            return None
    origin = typing.get_origin(base)
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            s = str(value).lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if base in (int, float, str):
            if base is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return base(value)
        if origin in (list, tuple) or base in (list, tuple):
            (item,) = typing.get_args(base)[:1] or (str,)
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            items = [_coerce(name, item, v) for v in value]
            return tuple(items) if (origin or base) is tuple else items
        if typing.get_origin(base) is typing.Literal:
            choices = typing.get_args(base)
            if value not in choices:
                raise ConfigError(f"config key {name!r}: {value!r} is not one of {', '.join(map(str, choices))}")
            return value
    except ConfigError:
        raise
    except (TypeError, ValueError):
        raise ConfigError(f"config key {name!r}: cannot read {value!r} as {getattr(base, '__name__', base)}") from None
    return value


def unknown_keys_message(unknown: Sequence[str], known: Sequence[str], source: str) -> str:
    """One line for keys of a config file that the config does not have, with the closest known key of each
    (``difflib``): "unknown config key 'meta_bacth' in FILE; did you mean 'meta_batch'?"."""

    def closest(key: str) -> str | None:
        match = difflib.get_close_matches(str(key).replace("-", "_"), list(known), n=1, cutoff=0.6)
        return match[0] if match else None

    see = "--help lists the keys (its options, with _ for -)"
    if len(unknown) == 1:
        near = closest(unknown[0])
        return f"unknown config key {unknown[0]!r} in {source}; " + (f"did you mean {near!r}?" if near else see)
    parts = [f"{k!r}" + (f" (did you mean {near!r}?)" if (near := closest(k)) else "") for k in unknown]
    return f"unknown config keys {', '.join(parts)} in {source}; {see}"


def config_from_dict(cls: type[C], values: dict[str, Any], base: C | None = None, source: str = "config") -> C:
    """Return ``base`` (or the defaults of ``cls``) with ``values`` applied; unknown keys raise."""
    types_ = _field_types(cls)
    known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = [k for k in values if k.replace("-", "_") not in types_]
    if unknown:
        raise ConfigError(unknown_keys_message(unknown, known, source))
    current = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)} if base is not None else {}  # type: ignore[arg-type]
    current.update({k.replace("-", "_"): _coerce(k, types_[k.replace("-", "_")], v) for k, v in values.items()})
    return cls(**current)


def recipe_names(package: str) -> list[str]:
    """The recipes shipped in ``package``'s ``configs/`` folder, as names for ``--config`` (sorted)."""
    root = importlib.resources.files(package).joinpath("configs")
    names: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".yaml"):
                names.append(prefix + child.name[: -len(".yaml")])

    if root.is_dir():
        walk(root, "")
    return sorted(names)


def find_recipe(name: str | Path, package: str | None = None) -> Path:
    """The config file for ``--config name``: ``name`` itself when it is a file, else a recipe shipped in
    ``package``'s ``configs/`` folder (package data, so it is there in a wheel install too).

    A recipe is named by its path under ``configs/`` without ``.yaml`` (``tiny-imagenet/gpu_protonet_5w1s_sla``);
    a leading ``PACKAGE/`` or ``configs/`` and a trailing ``.yaml`` are accepted (``longtail/cifar10_ir100_ce``,
    ``configs/longtail/cifar10_ir100_ce.yaml``: the paths these recipes had in the source tree before).

    Raises:
        ConfigError: neither a file nor a shipped recipe; the message names both places looked in and the
            recipes that exist.
    """
    p = Path(name)
    if p.is_file():
        return p
    if package is None:
        raise ConfigError(f"config file {str(p)!r} does not exist")
    parts = [q for q in str(name).replace("\\", "/").split("/") if q]
    if parts and parts[0] == "configs":
        parts = parts[1:]
    if parts and parts[0] == package:
        parts = parts[1:]
    stem = "/".join(parts)
    stem = stem[: -len(".yaml")] if stem.endswith(".yaml") else stem
    root = importlib.resources.files(package).joinpath("configs")
    candidate = root.joinpath(*f"{stem}.yaml".split("/")) if stem else None
    if candidate is not None and candidate.is_file():
        return Path(str(candidate))
    known = recipe_names(package)
    raise ConfigError(
        f"config {str(name)!r} is neither a file nor a recipe shipped with {package} (looked for {str(p)!r} and "
        f"{package}/configs/{stem}.yaml); shipped recipes: {', '.join(known) or 'none'}"
    )


def load_config(cls: type[C], path: str | Path, base: C | None = None, package: str | None = None) -> C:
    """Apply the YAML file ``path`` (or the recipe of that name shipped in ``package``, see
    :func:`find_recipe`) to ``base`` (or the defaults)."""
    p = find_recipe(path, package)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys to values")
    return config_from_dict(cls, data, base, source=str(p))


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as a plain dict (tuples become lists, for YAML/JSON)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _help(cls: type) -> dict[str, str]:
    """Field comments from the source, for ``--help``: ``name: type = default  # comment``, or, for a field too long
    for one, the comment lines right above it."""
    import inspect

    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    above: list[str] = []
    for line in src.splitlines():
        s = line.strip()
        if s.startswith("#"):
            above.append(s.lstrip("#").strip())
            continue
        if ":" in s and "#" in s:
            out[s.split(":", 1)[0].strip()] = s.split("#", 1)[1].strip()
        elif ":" in s and above and s.split(":", 1)[0].strip().isidentifier():
            out[s.split(":", 1)[0].strip()] = " ".join(above)
        above = []
    return out


def resume_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--config OUT/config.yaml`` in front when it asks for ``--resume`` (or ``--test-only``) with
    an ``--out`` that
    holds a recorded config and names no ``--config``: a run is continued from its folder alone (the flags given
    beside it still override, and are checked against the record as always)."""
    args = list(argv)
    if not {"--resume", "--test-only"} & set(args) or any(a == "--config" or a.startswith("--config=") for a in args):
        return args
    out = None
    for i, a in enumerate(args):
        if a == "--out" and i + 1 < len(args):
            out = args[i + 1]
        elif a.startswith("--out="):
            out = a.split("=", 1)[1]
    if out is None or not (Path(out) / "config.yaml").is_file():
        return args
    return ["--config", str(Path(out) / "config.yaml"), *args]


def parse_config(
    cls: type[C],
    argv: Sequence[str] | None = None,
    description: str | None = None,
    prog: str | None = None,
    package: str | None = None,
) -> C:
    """Parse ``--config FILE`` and ``--field value`` flags into ``cls`` (flags win over the file).

    ``package``: the package whose shipped recipes ``--config NAME`` may name (:func:`find_recipe`).

    Raises:
        SystemExit: with argparse's message (and usage) for an unknown flag, or one line for a bad config file or
            value.
    """
    types_ = _field_types(cls)
    helps = _help(cls)
    ap = argparse.ArgumentParser(prog=prog, description=description or (cls.__doc__ or "").strip().split("\n")[0])
    ap.add_argument(
        "--config",
        metavar="FILE.yaml|RECIPE",
        help="YAML file overriding the defaults"
        + (f", or the name of a recipe shipped in {package}/configs/ (e.g. {recipe_names(package)[0]})"
           if package and recipe_names(package) else ""),
    )
    defaults = cls()
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        base, _ = _base_type(types_[f.name])
        flag = "--" + f.name.replace("_", "-")
        alias = ["--" + f.name] if "_" in f.name else []
        default = getattr(defaults, f.name)
        h = f"{helps.get(f.name, '')} (default: {default})".strip().replace("%", "%%")  # argparse formats help with %
        if base is bool:
            ap.add_argument(flag, *alias, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=h)
        else:
            choices = typing.get_args(base) if typing.get_origin(base) is typing.Literal else None
            nargs = "+" if typing.get_origin(base) in (list, tuple) else None
            ap.add_argument(flag, *alias, dest=f.name, default=None, help=h, choices=choices, nargs=nargs)
    ns = ap.parse_args(argv)
    cfg = defaults
    try:
        if ns.config:
            cfg = load_config(cls, ns.config, cfg, package=package)
        flags = {k: v for k, v in vars(ns).items() if k != "config" and v is not None}
        cfg = config_from_dict(cls, flags, cfg, source="command line")
    except ConfigError as e:  # one line, without the usage: the file is at fault, not the command line
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    return cfg
