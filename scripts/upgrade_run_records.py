#!/usr/bin/env python
"""Give runs recorded before runs carried them the ``kind``, ``identity`` and ``group`` entries of metrics.json.

    python scripts/upgrade_run_records.py docs/runs/omniglot_cpu docs/runs/omniglot_learners_cpu
    python scripts/upgrade_run_records.py runs/photos --image-folder-id photos-2024   # runs on one image folder

``sla-report`` groups runs by the ``group`` their metrics.json carries and tables them as their ``kind``'s package
says (:mod:`fewshot_sla.report`); a metrics.json written before that is listed, not tabled. For each metrics.json in
or below the folders given, this script finds the kind from the recorded config (long tail: ``imbalance_ratio`` and
``loss``; few-shot: ``learner`` and ``ways``) and, through that package's reporting module
(``longtail.reporting`` / ``episodes.reporting``), adds the facts the recipe of this version writes:

- ``identity`` = :func:`fewshot_sla.runs.identity` of the recorded config with the package's ``LEGACY_DEFAULTS``
  filled in where the config lacks them (fields added since; their value gives the old behaviour), leaving out
  the package's ``GROUP_IGNORE``, with ``data_identity(dataset)`` as the data;
- ``group`` = :func:`fewshot_sla.runs.group_id` of it; ``kind`` = the package's kind;
- ``upgraded``: what this script filled in, so the file says it was not written by the run itself.

A metrics.json that has the entries already keeps its identity's data and gets the ``LEGACY_DEFAULTS`` its method
lacks (``--force``: its method is rebuilt from its config too). Records keep facts, not presentation: the copy of
the report spec (``"report"``) that earlier versions wrote into metrics.json and the run record ``recipe.json`` is
dropped (its ``kind`` kept). The script is idempotent: a file that would not change is not rewritten.

Skipped, with the reason: another tool's run (e.g. ``sla-demo``'s) and a run on an image folder
(``--dataset imagefolder``): the digest of the files it read was not recorded, and the folder may have changed,
so its data identity cannot be recovered. If you know that the image-folder runs given all read one folder,
``--image-folder-id ID`` records ``{"files": ID}`` as their data (noted in ``upgraded`` as given, not measured);
runs on another folder need another ID, and new runs, which record the real digest, form groups of their own --
unless the ID given is that digest: an ID given earlier (never a measured digest) is replaced by a new
``--image-folder-id``, e.g. the digest new runs measure on the same folder, so that old and new runs share groups.

Exit status: 0 when every run was upgraded or already up to date, 1 when some were skipped, 2 on a bad folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's packages, also when not installed

from fewshot_sla.report import ReportError, find_run_dirs  # noqa: E402
from fewshot_sla.runs import RECORD_FILE, canonical, group_id, identity  # noqa: E402
from fewshot_sla.utils import read_json, write_json  # noqa: E402

__all__ = ["detect_kind", "upgrade", "upgrade_record", "main"]

SCRIPT = "scripts/upgrade_run_records.py"


def detect_kind(config: dict[str, Any]) -> str | None:
    """``"longtail"``, ``"fewshot"`` or None (not a run of either package), from a recorded config."""
    if "imbalance_ratio" in config and "loss" in config:
        return "longtail"
    if "learner" in config and "ways" in config:
        return "fewshot"
    return None


def _reporting(kind: str) -> Any:
    """The package's reporting module (imported here only: the core never imports a package)."""
    if kind == "longtail":
        from longtail import reporting as lt

        return lt
    from episodes import reporting as ep

    return ep


def _facts_in_place(source: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """``source`` without a report spec, with ``facts`` set: ``kind`` where the spec was, new keys appended."""
    new: dict[str, Any] = {}
    for k, v in source.items():
        if k == "report":
            new["kind"] = facts["kind"]
        elif k != "kind" or "report" not in source:
            new[k] = v
    new.update(facts)
    return new


def upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """A run record (``recipe.json``) without the report spec earlier versions copied into it (a new dict)."""
    return {k: v for k, v in record.items() if k != "report"}


def upgrade(metrics: dict[str, Any], image_folder_id: str | None = None, force: bool = False) -> dict[str, Any]:
    """The metrics.json content with this version's ``identity``, ``group``, ``kind`` (and ``upgraded``), without
    a copied report spec.

    Args:
        metrics: a metrics.json's content (with its ``"config"``).
        image_folder_id: the data identity to record for an image-folder run (see the module docstring).
        force: rebuild an existing identity's method from the config too.

    Returns:
        The new content (``metrics`` itself is not changed).

    Raises:
        ValueError: the run cannot be upgraded; the message says why (no config, another tool's run, an image
            folder without ``image_folder_id``).
    """
    config = metrics.get("config")
    if not isinstance(config, dict):
        raise ValueError("its metrics.json records no config")
    kind = detect_kind(config)
    if kind is None:
        raise ValueError("not a sla-longtail or sla-fewshot run (no imbalance_ratio and loss, nor learner and ways, "
                         "in its config; e.g. sla-demo's): sla-report lists it, untabled")
    mod = _reporting(kind)
    found = metrics.get("identity")
    old: dict[str, Any] = found if isinstance(found, dict) else {}
    has_old = isinstance(old.get("method"), dict) and isinstance(old.get("data"), dict)
    up = metrics.get("upgraded")
    prev: dict[str, Any] = up if isinstance(up, dict) else {}
    note = {k: v for k, v in prev.items() if k != "by"}  # what earlier upgrades filled in
    method = dict(old["method"]) if has_old and not force else identity(config, mod.GROUP_IGNORE, {})["method"]
    filled = {k: v for k, v in mod.LEGACY_DEFAULTS.items() if k not in method and k not in config}
    method.update(filled)
    if filled:
        note["legacy_defaults"] = {**note.get("legacy_defaults", {}), **filled}
    # an identity given earlier by --image-folder-id (never a measured one) may be given again, e.g. as the digest
    # that runs measure on the same folder now
    revouch = bool(image_folder_id) and "data" in prev
    if has_old and not revouch:
        data = dict(old["data"])
    else:
        dataset = str(config.get("dataset"))
        if dataset in mod.IMAGE_FOLDERS and not image_folder_id:
            raise ValueError(
                f"a --dataset {dataset} run: the digest of the files it read was not recorded and its folder "
                f"({config.get('data_root')}) may have changed since, so its data identity cannot be recovered. "
                "If you know which folder it read, give every run on that folder one --image-folder-id ID"
            )
        data = mod.data_identity(dataset, image_folder_id)
        if data:
            note["data"] = "given by --image-folder-id, not measured from the folder"
    ident = {"method": method, "data": data}
    new = _facts_in_place(metrics, {"identity": ident, "group": group_id(ident), "kind": kind})
    if note or not has_old:
        new["upgraded"] = {"by": SCRIPT, **note}
    return new


def _upgrade_file(path: Path, args: argparse.Namespace) -> str:
    """Upgrade one metrics.json or run record; returns ``upgraded``, ``unchanged`` or ``skipped`` (and says so)."""
    try:
        old = read_json(path)
        if not isinstance(old, dict):
            raise ValueError(f"it holds a {type(old).__name__}, not a JSON object")
        new = upgrade_record(old) if path.name == RECORD_FILE else upgrade(old, args.image_folder_id, args.force)
    except ValueError as e:  # json.JSONDecodeError is one
        print(f"skipped   {path}: {e}")
        return "skipped"
    if canonical(new) == canonical(old) and list(new) == list(old):
        print(f"unchanged {path}")
        return "unchanged"
    if not args.dry_run:
        write_json(new, path)
    group = f": group {new['group']}" if "group" in new else ""
    print(f"{'would upgrade' if args.dry_run else 'upgraded'}  {path}{group}")
    return "upgraded"


def main(argv: list[str] | None = None) -> int:
    """``upgrade_run_records.py RUN_DIR... [--image-folder-id ID] [--force] [--dry-run]``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=SCRIPT,
        description="Add kind, identity and group (what sla-report groups and tables by) to the metrics.json "
        "of runs recorded before runs carried them; drop the report spec earlier versions copied into records.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders, or folders holding run folders")
    parser.add_argument("--image-folder-id", default=None, metavar="ID",
                        help="record {files: ID} as the data of the --dataset imagefolder runs given (all read one "
                        "folder); without it they are skipped")
    parser.add_argument("--force", action="store_true", help="rebuild existing identities' methods from the config")
    parser.add_argument("--dry-run", action="store_true", help="say what would change; write nothing")
    args = parser.parse_args(argv)
    try:
        dirs = find_run_dirs(args.runs)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = [d / name for d in dirs for name in ("metrics.json", RECORD_FILE) if (d / name).is_file()]
    counts = {"upgraded": 0, "unchanged": 0, "skipped": 0}
    for path in files:
        counts[_upgrade_file(path, args)] += 1
    names = {"upgraded": "would upgrade"} if args.dry_run else {}
    print(", ".join(f"{n} {names.get(k, k)}" for k, n in counts.items()))
    return 1 if counts["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())
