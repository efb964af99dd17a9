"""Loading run folders and grouping their runs: the facts ``sla-report`` tables.

A run of ``sla-longtail`` or ``sla-fewshot`` records facts in ``RUN_DIR/metrics.json`` (and, from its start, in its
run record ``RUN_DIR/recipe.json``; see :mod:`fewshot_sla.runs`): the metrics at top level plus ``"config"``,
``"seed"``, ``"git_commit"``, its ``"kind"`` (the package that wrote it), its ``"identity"``
(``{"method": {...}, "data": {...}}``: the config without the seed, paths and bookkeeping, and the data, never a
path) and its ``"group"`` (the short name of that identity, :func:`fewshot_sla.runs.group_id`).

:func:`load_runs` reads them; the table of a kind comes from the code of the package that owns the kind
(:func:`fewshot_sla.report.spec.report_spec`), never from the run. :func:`group_runs` groups the runs by kind and
``group`` (the seeds of one method on one data set) and refuses two runs of one group with the same seed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runs import RECORD_FILE, canonical
from .spec import ReportError, ReportSpec, report_spec

__all__ = ["Group", "Run", "as_float", "find_run_dirs", "flat_identity", "fmt_value", "group_runs", "kinds",
           "load_runs"]

UPGRADE = "scripts/upgrade_run_records.py"
_FACTS = ("kind", "identity", "group")  # what a run records for the report


def as_float(v: Any) -> float:
    """A metric value as a float; null (NaN in strict JSON) and non-numbers become NaN."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return math.nan
    return float(v)


def fmt_value(v: Any) -> str:
    """A config or metric value as the report prints it (floats with ``%g``, lists as ``[a,b]``)."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(fmt_value(x) for x in v) + "]"
    return str(v)


@dataclass
class Run:
    """One run folder.

    Attributes:
        path: the run folder.
        metrics: the content of ``metrics.json`` (empty when the run never wrote one).
        config: the resolved config (``metrics["config"]``, else the run record's, else ``config.yaml``).
        identity: what defines its method and data (``metrics["identity"]``, else the run record's), or None.
        group: the name of that identity (``metrics["group"]``), or None.
        kind: the kind it records (e.g. ``"longtail"``), or None for a run that is not tabled.
        spec: the report spec of its kind, or None: then the run is listed, not tabled.
        finished: True when metrics.json holds a number of the spec's columns.
        status: why an unfinished or untabled run is not in the tables (empty for a finished run).
    """

    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]
    identity: dict[str, Any] | None
    group: str | None
    kind: str | None
    spec: ReportSpec | None
    finished: bool
    status: str = ""

    @property
    def seed(self) -> Any:
        """The run's seed (``metrics["seed"]``, else the config's), or None."""
        return self.metrics.get("seed", self.config.get("seed"))

    @property
    def git_commit(self) -> str | None:
        return self.metrics.get("git_commit")

    @property
    def class_counts(self) -> list[int] | None:
        """Training images per class (long-tail runs), or None."""
        return self.metrics.get("class_counts")


# -- finding and reading run folders ---------------------------------------------------------------------------
def _is_run(d: Path) -> bool:
    return any((d / f).is_file() for f in ("metrics.json", "config.yaml", RECORD_FILE))


def _walk(d: Path) -> list[Path]:
    if _is_run(d):
        return [d]
    out: list[Path] = []
    for sub in sorted(p for p in d.iterdir() if p.is_dir()):
        if sub.name != "wandb" and not sub.name.startswith("."):
            out += _walk(sub)
    return out


def _runs_below(p: Path) -> list[Path]:
    if not p.exists():
        raise ReportError(
            f"run folder {str(p)!r} does not exist; give the --out folder of a sla-longtail or "
            "sla-fewshot run (or a folder holding such run folders)"
        )
    if p.is_file():
        if p.name != "metrics.json":
            raise ReportError(f"{str(p)!r} is a file, not a run folder; give the folder holding metrics.json")
        p = p.parent
    runs = _walk(p)
    if not runs:
        raise ReportError(
            f"no metrics.json in or below {str(p)!r}: it is not a run folder. Give the --out folder of a "
            "sla-longtail or sla-fewshot run (or a folder holding run folders); a run writes metrics.json "
            "when it finishes"
        )
    return runs


def find_run_dirs(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Run folders in or below ``paths``, in the order given (sorted below each path), without duplicates.

    A run folder is one holding ``metrics.json``, ``config.yaml`` or ``recipe.json`` (an unfinished run
    has only the latter two); the search does not descend into a run folder (W&B keeps a copy of metrics.json
    under ``RUN/wandb/``) nor into ``wandb`` or hidden folders.

    Raises:
        ReportError: a path that does not exist, or one with no run folder in or below it.
    """
    if isinstance(paths, (str, Path)):  # one folder given bare: not its characters
        paths = [paths]
    found: list[Path] = []
    seen: set[Path] = set()
    for p in map(Path, paths):
        for r in _runs_below(p):
            if r.resolve() not in seen:
                seen.add(r.resolve())
                found.append(r)
    return found


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    # Strict JSON (nulls become NaN in the tables). Bare NaN/Infinity tokens, which older writers
    # produced, are read as floats so that those runs still report.
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReportError(
            f"{str(path)!r} is not valid JSON ({e}); the run was interrupted while writing it or the file was "
            "edited: rerun the run (with --resume) or remove its folder from the report"
        ) from None
    if not isinstance(data, dict):
        raise ReportError(f"{str(path)!r} holds a {type(data).__name__}, not a JSON object of {what}")
    return data


def _read_config_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ReportError(f"{str(path)!r} is not valid YAML ({e}); rerun the run or remove its folder") from None
    if not isinstance(data, dict):
        raise ReportError(f"{str(path)!r} does not hold a mapping of config keys; rerun the run")
    return data


def _present(source: Mapping[str, Any]) -> list[str]:
    """The facts a record holds; a record of an earlier version names its kind in the report spec it carried."""
    legacy = isinstance(source.get("report"), dict) and "kind" in source["report"]
    return [k for k in _FACTS if k in source or (k == "kind" and legacy)]


def _facts(source: Mapping[str, Any], name: str) -> tuple[dict[str, Any], str, str, ReportSpec] | str:
    """``(identity, group, kind, spec)`` of a metrics.json or run record, or why it is not tabled (a status)."""
    have = _present(source)
    if not have:
        return (
            f"not tabled: its {name} has no kind, identity and group entries (a sla-longtail or sla-fewshot run "
            f"recorded before runs carried them, or another tool's run such as sla-demo's); an old run is upgraded "
            f"by {UPGRADE} RUN_DIR"
        )
    if len(have) < len(_FACTS):
        lacks = ", ".join(k for k in _FACTS if k not in have)
        return (f"not tabled: its {name} has {', '.join(have)} but not {lacks}; the file was edited or cut: "
                f"{UPGRADE} RUN_DIR --force rewrites the entries from its config")
    ident, group = source["identity"], source["group"]
    kind = source["kind"] if "kind" in source else source["report"]["kind"]
    if not (isinstance(ident, dict) and isinstance(ident.get("method"), dict) and isinstance(ident.get("data"), dict)):
        problem = 'its "identity" is not {"method": {...}, "data": {...}}'
    elif not isinstance(group, str) or not group:
        problem = 'its "group" is not a non-empty string'
    elif not isinstance(kind, str) or not kind:
        problem = 'its "kind" is not a non-empty string'
    else:
        try:
            return dict(ident), group, kind, report_spec(kind)
        except ReportError as e:
            return f"not tabled: {e}"
    return (f"not tabled: the record in its {name} is not readable by this version ({problem}); update "
            f"fewshot-sla, or rewrite it with {UPGRADE} RUN_DIR --force")


def _unfinished_status(metrics: Mapping[str, Any], config: Mapping[str, Any], has_metrics: bool) -> str:
    if not has_metrics:
        return "unfinished: no metrics.json yet; continue it with --resume"
    for k, v in metrics.items():  # e.g. epochs_done: N, with the config's epochs as the total
        if k.endswith("_done"):
            unit = k[: -len("_done")]
            total = f" of {fmt_value(config[unit])}" if unit in config else ""
            return f"unfinished: {fmt_value(v)}{total} {unit} done; continue it with --resume"
    return "unfinished: metrics.json has none of its table's metrics; continue it with --resume"


def _load_run(d: Path) -> Run:
    mpath = d / "metrics.json"
    has_metrics = mpath.is_file()
    metrics = _read_json_object(mpath, "metrics") if has_metrics else {}
    # the run record (recipe.json) only when metrics.json holds no facts: a run still training
    rpath = d / RECORD_FILE
    record = _read_json_object(rpath, "a run record") if not _present(metrics) and rpath.is_file() else None
    config = metrics.get("config")
    if not isinstance(config, dict):
        config = record.get("config") if record is not None else None
    if not isinstance(config, dict):
        config = _read_config_yaml(d / "config.yaml") if (d / "config.yaml").is_file() else {}
    if record is not None:
        got = _facts(record, RECORD_FILE)
    elif has_metrics:
        got = _facts(metrics, "metrics.json")
    else:
        got = ("unfinished and not tabled: no metrics.json yet, and no run record (recipe.json) to group it by; "
               "continue it with --resume")
    if isinstance(got, str):
        return Run(d, metrics, dict(config), None, None, None, None, False, got)
    ident, group, kind, spec = got
    # "finished": false: weights of an unfinished run tested with --test-only --allow-unfinished
    finished = (has_metrics and metrics.get("finished") is not False
                and any(c["key"] in metrics for c in spec["columns"]))
    status = "" if finished else _unfinished_status(metrics, config, has_metrics)
    return Run(d, metrics, dict(config), ident, group, kind, spec, finished, status)


def load_runs(dirs: str | Path | Iterable[str | Path]) -> list[Run]:
    """Every run in or below ``dirs`` (see :func:`find_run_dirs`), finished or not, tabled or not.

    A run's kind, identity and group come from its metrics.json, else (a run still training) from its run record
    ``recipe.json``; its report spec from the package that owns its kind. Nothing is skipped: a run without them,
    or without metrics, comes back with ``finished=False`` and its ``status`` says why, so the report lists it.

    Raises:
        ReportError: a path that is not (and holds no) run folder, or a metrics.json that is not JSON.
    """
    return [_load_run(d) for d in find_run_dirs(dirs)]


# -- grouping ---------------------------------------------------------------------------------------------------
def flat_identity(ident: Mapping[str, Any]) -> dict[str, Any]:
    """An identity as one mapping: the method keys by name, then the data keys as ``data.<key>``."""
    return {**ident.get("method", {}), **{f"data.{k}": v for k, v in ident.get("data", {}).items()}}


_DIGEST = re.compile(r"[0-9a-f]{9,}")


def _label_value(key: str, v: Any) -> str:
    if key.startswith("data.") and isinstance(v, str) and _DIGEST.fullmatch(v):
        return v[:8]  # a file-list digest: its head tells the folders apart
    return fmt_value(v)


@dataclass
class Group:
    """The runs of one method on one data set: the same kind and ``group`` (seeds, paths, re-tests aside).

    Attributes:
        kind: the runs' kind (e.g. ``"longtail"``).
        group: the runs' ``group`` (:func:`fewshot_sla.runs.group_id` of ``identity``).
        identity: ``{"method": {...}, "data": {...}}`` of the first run.
        spec: the report spec of the kind.
        runs: every run of the group, finished or not, one per seed.
        label: the identity keys that differ between the groups of this kind with their values, e.g.
            ``lr=0.1 transform=rotation`` or ``data.files=3fa2b1c0``.
        label_keys: those keys (flattened, see :func:`flat_identity`).
        values: :func:`flat_identity` of ``identity``.
    """

    kind: str
    group: str
    identity: dict[str, Any]
    spec: ReportSpec
    runs: list[Run] = field(default_factory=list)
    label: str = ""
    label_keys: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.values = flat_identity(self.identity)

    @property
    def finished(self) -> list[Run]:
        """The finished runs (the seeds whose numbers enter the table)."""
        return [r for r in self.runs if r.finished]


def _label(same: Sequence[Group]) -> None:
    """Label the groups of one kind by the identity keys whose values differ between them."""
    keys = list(dict.fromkeys(k for g in same for k in g.values))  # config order, as the recipes write it
    missing = "\0unset"
    differ = [k for k in keys if len({canonical(g.values.get(k, missing)) for g in same}) > 1]
    if not differ:
        differ = [k for k in same[0].spec["name_keys"] if k in keys]
    for g in same:
        g.label_keys = differ
        g.label = " ".join(f"{k}={_label_value(k, g.values[k]) if k in g.values else '(unset)'}" for k in differ)
        g.label = g.label or g.kind


def _check_one_run_per_seed(g: Group) -> None:
    """A seed counts once: a second run of a group with a seed it has is a copy (or a rerun) of that seed."""
    seen: dict[str, Run] = {}
    for r in g.runs:
        if r.seed is None:
            continue
        first = seen.setdefault(canonical(r.seed), r)
        if first is not r:
            raise ReportError(
                f"{str(first.path)!r} and {str(r.path)!r} are two runs of group `{g.label}` with seed "
                f"{fmt_value(r.seed)}: a copy of a run folder (or a second run of that seed) would count as another "
                "seed. Leave one of the two folders out of the report (move the copy away)"
            )


def kinds(groups: Sequence[Group]) -> dict[str, list[Group]]:
    """The groups by kind, kinds in order of first appearance."""
    out: dict[str, list[Group]] = {}
    for g in groups:
        out.setdefault(g.kind, []).append(g)
    return out


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Group the tabled runs by kind and ``group``, in order of first appearance, and label each group by the
    identity keys whose values differ between the groups of its kind (a missing key counts as a value of its own,
    ``(unset)``), in the order the identities list them. With a single group of a kind, the label names the
    spec's ``name_keys``. Runs without a spec are not grouped.

    Raises:
        ReportError: two runs of one group with the same seed (the message names both folders).
    """
    groups: dict[tuple[str, str], Group] = {}
    for r in runs:
        if r.spec is None or r.identity is None or r.group is None or r.kind is None:
            continue
        key = (r.kind, r.group)
        if key not in groups:
            groups[key] = Group(r.kind, r.group, r.identity, r.spec)
        groups[key].runs.append(r)
    out = list(groups.values())
    for same in kinds(out).values():
        _label(same)
    for g in out:
        _check_one_run_per_seed(g)
    return out
