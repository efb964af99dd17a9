"""The run record: what a run depends on, resolved once and written into its folder.

Every entry point resolves its config into a package *recipe* once (``episodes.recipe``, ``longtail.recipe``) and
writes the record, ``OUT/recipe.json`` (strict JSON), before training:

.. code-block:: text

    {"format": "fewshot-sla/run/1",
     "kind": "fewshot" | "longtail",          # the package that wrote it
     "config": {...},                         # the resolved config (the one config.yaml shows)
     "recipe": {...},                         # what was derived from config + data: class lists, file digests,
                                              # normalisation statistics, episode shapes, schedule, ...
     "identity": {"method": {...}, "data": {...}},  # what defines the method and its data (grouping, W&B group)
     "group": "cfg-0123456789",               # group_id(identity)
     "package_version": "0.1.0",              # what produced it (fewshot_sla.utils.provenance): the version,
     "git_commit": "..." | null,              # the commit only when run from this project's own checkout,
     "python": ..., "torch": ..., "numpy": ..., "cpu": ..., "cuda_device": ... | null}

Everything that reads a run reads this record, never the data folder's current state: ``--resume`` and
``--test-only`` (:func:`check_resume`, the recorded splits and statistics), the predictors (``load_run``) and
``sla-report`` (the kind, identity and group, also copied into ``metrics.json``; how a kind is tabled lives in its
package's code, :mod:`fewshot_sla.report.spec`). The core knows no package's config schema: a recipe passes the
keys that may change (:func:`check_resume`'s ``free``) and the keys that do not define a method
(:func:`identity`'s ``ignore``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .config import ConfigError
from .utils import DataError, json_dumps, provenance, read_json, write_json

__all__ = [
    "RECORD_FILE", "FORMAT", "RUN_KEYS", "canonical", "identity", "group_id", "make_record", "write_record",
    "read_record", "config_diff", "check_resume",
]

RECORD_FILE = "recipe.json"
FORMAT = "fewshot-sla/run/1"

#: Config fields of the engine and the logger (:class:`fewshot_sla.engine.RunSpec`, W&B) that say where and how a run
#: executes, not what it computes. ``amp``, ``channels_last`` and ``compile`` change the numerics in the last bits,
#: not the method: they do not split a group, but a resumed run may not change them (:func:`check_resume`).
RUN_KEYS: frozenset[str] = frozenset(
    {"seed", "out", "device", "amp", "channels_last", "compile", "compile_mode", "resume", "stop_after", "num_threads",
     "progress", "wandb", "checkpoint_minutes", "overwrite", "test_only", "allow_unfinished"}
)
#: Of :data:`RUN_KEYS`, those a resumed or re-tested run may change (bookkeeping only).
FREE_RUN_KEYS: frozenset[str] = frozenset(
    {"out", "device", "resume", "stop_after", "num_threads", "progress", "wandb", "compile_mode", "checkpoint_minutes",
     "overwrite", "test_only", "allow_unfinished"}
)


def canonical(obj: Any) -> str:
    """Canonical JSON (sorted keys, tuples as lists): equal for equal records in every process and Python."""
    return json_dumps(obj, sort_keys=True)


def identity(config: Mapping[str, Any], ignore: Iterable[str], data: Mapping[str, Any]) -> dict[str, Any]:
    """What defines a run's method and its data: ``{"method": config minus RUN_KEYS and ignore, "data": data}``.

    Args:
        config: the resolved config.
        ignore: the package's keys that do not define the method (paths, bookkeeping, re-test flags).
        data: the data identity from the recipe (data set name, class-list and file digests): never a path.
    """
    skip = RUN_KEYS | set(ignore)
    method = {k: v for k, v in config.items() if k not in skip}
    return {"method": method, "data": dict(data)}


def group_id(ident: Mapping[str, Any], prefix: str = "cfg") -> str:
    """The short stable name of an :func:`identity`: the W&B group and ``sla-report``'s grouping key."""
    return f"{prefix}-{hashlib.sha1(canonical(ident).encode()).hexdigest()[:10]}"


def make_record(
    kind: str, config: Mapping[str, Any], recipe: Mapping[str, Any], ident: Mapping[str, Any]
) -> dict[str, Any]:
    """A run record (see the module docstring): facts only; strict-JSON-able or a TypeError."""
    rec = {
        "format": FORMAT, "kind": kind, "config": dict(config), "recipe": dict(recipe), "identity": dict(ident),
        "group": group_id(ident), **provenance(),
    }
    json_dumps(rec)  # fail here, not half-way through writing
    return rec


def write_record(out: str | Path, record: Mapping[str, Any]) -> Path:
    """Write ``OUT/recipe.json`` atomically (strict JSON)."""
    path = Path(out) / RECORD_FILE
    write_json(dict(record), path)
    return path


def read_record(
    out: str | Path, kind: str | None = None, what: str = "this", legacy: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read ``OUT/recipe.json``.

    Args:
        out: the run folder.
        kind: the package that must have written it (None = any).
        what: what needs it, for the message (e.g. ``"--test-only"``).
        legacy: the package's config keys added after runs were recorded, with the value that gives an old run's
            behaviour (its ``reporting.LEGACY_DEFAULTS``): a record that lacks one is read with that value, so a
            run recorded by an earlier version resumes, re-tests and predicts as it ran (listed under
            ``"legacy_filled"``).

    Raises:
        DataError: no record, not a record of this format, or of another kind; the message says what to do.
    """
    path = Path(out) / RECORD_FILE
    if not path.is_file():
        raise DataError(
            f"{what} reads the run record {path}, which does not exist: {Path(out)} is not a run folder of this "
            "version (runs write recipe.json before training); train the run again with this version, or point "
            "--out at a run folder that has one"
        )
    try:
        rec = read_json(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not readable JSON ({e}); the run record is damaged: train the run again") from None
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        got = rec.get("format") if isinstance(rec, dict) else type(rec).__name__
        raise DataError(f"{path} is not a run record of this version (format {got!r}, expected {FORMAT!r}); "
                        "train the run again with this version")
    if kind is not None and rec.get("kind") != kind:
        raise DataError(f"{path} records a {rec.get('kind')!r} run, not a {kind!r} one; point --out at a {kind} run")
    if legacy:
        config = rec.get("config", {})
        rec["legacy_filled"] = sorted(k for k in legacy if k not in config)
        rec["config"] = {**{k: legacy[k] for k in rec["legacy_filled"]}, **config}
    return rec


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], free: Iterable[str] = ()) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for every key outside ``free`` whose value differs (a missing key counts as None), in the
    order of ``new`` then ``old``; values are compared as canonical JSON (so a tuple equals a list)."""
    skip = set(free)
    keys = [k for k in dict.fromkeys([*new, *old]) if k not in skip]
    return [(k, old.get(k), new.get(k)) for k in keys if canonical(old.get(k)) != canonical(new.get(k))]


def check_resume(
    record: Mapping[str, Any], config: Mapping[str, Any], free: Iterable[str], what: str = "--resume"
) -> None:
    """Refuse to continue (or re-test) a run under a config whose training keys differ from the recorded one.

    Args:
        record: the run's record (:func:`read_record`).
        config: the config asked for now.
        free: the package's keys that may change besides :data:`FREE_RUN_KEYS` (test-time settings, paths).
        what: the flag, for the message.

    Raises:
        ConfigError: naming every key that differs, with both values, and the fix.
    """
    diff = config_diff(record.get("config", {}), config, FREE_RUN_KEYS | set(free))
    if diff:
        changes = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, a, b in diff)
        raise ConfigError(
            f"{what}: the run in {config.get('out')} was trained with another config ({changes}); continue it with "
            f"its own settings (--out {config.get('out')} --resume with no --config, changing only bookkeeping "
            "such as --device or --stop-after), or start a new run in another --out"
        )


def _show(v: Any) -> str:
    s = canonical(v)
    return s if len(s) <= 60 else s[:57] + "..."
