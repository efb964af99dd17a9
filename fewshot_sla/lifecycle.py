"""A run's life in its folder, the same for every entry point (``sla-fewshot``, ``sla-longtail``).

* a new run in a folder holding another run is refused (:func:`check_new_run`) unless ``--overwrite``, which clears
  the old run's files first (:func:`clear_run`);
* ``--resume`` with only ``--out`` continues a run from its record (:func:`resume_argv`: the recorded
  ``config.yaml`` is read, flags given beside it still override);
* checkpoints carry the hash of the record they were written under (:func:`record_hash`, :func:`folder_hash`) and
  loading one whose hash differs from the folder's record is refused (:func:`check_checkpoint`);
* ``--test-only`` of an unfinished run is refused unless ``--allow-unfinished`` (:func:`check_finished`);
* the number of processes (and whether BatchNorm is synchronised) is recorded, and a change on resume is refused
  where it changes what is trained (:func:`processes`, :func:`check_processes`);
* a class folder holding the same files as another (a renamed copy or a link, in another split or the same one) is
  refused (:func:`check_distinct_classes`), so no test image is a training image;
* SIGINT / SIGTERM stop :func:`fewshot_sla.engine.fit` at a safe point (:class:`Interrupted`; :func:`stop_message`).
"""

from __future__ import annotations

import filecmp
import hashlib
import shutil
import signal
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import ConfigError, resume_argv  # noqa: F401  # resume_argv lives beside parse_config, which it feeds
from .io import files_digest
from .runs import RECORD_FILE, canonical
from .utils import DataError, read_json

__all__ = [
    "OUTPUT_FILES", "Interrupted", "record_hash", "folder_hash", "check_checkpoint", "run_files", "check_new_run",
    "clear_run", "resume_argv", "check_finished", "processes", "check_processes", "stop_message", "interrupted_message",
    "exit_code",
    "check_distinct_classes",
]

#: The files a run writes besides its record and config (``--overwrite`` deletes them, and every ``*.csv``).
OUTPUT_FILES: tuple[str, ...] = ("best.pt", "checkpoint.pt", "metrics.json", "summary.md", "history.jsonl")


class Interrupted(Exception):
    """Training stopped at a safe point on a signal; the checkpoint of the last unit is written."""

    def __init__(self, signum: int, unit: int, units: int, unit_name: str, checkpoint: Path | None) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} after {unit_name} {unit}")
        self.signum, self.unit, self.units, self.unit_name, self.checkpoint = signum, unit, units, unit_name, checkpoint


def record_hash(record: Mapping[str, Any]) -> str:
    """A short hash of a record's ``config``, ``recipe`` and ``identity`` (what the weights are weights of)."""
    keys = {k: record.get(k) for k in ("config", "recipe", "identity")}
    return hashlib.sha1(canonical(keys).encode()).hexdigest()[:16]


def folder_hash(out: str | Path) -> str | None:
    """:func:`record_hash` of ``OUT/recipe.json`` as it is on disk (None when the folder has no readable record)."""
    path = Path(out) / RECORD_FILE
    try:
        rec = read_json(path)
    except (OSError, ValueError):
        return None
    return record_hash(rec) if isinstance(rec, dict) else None


def check_checkpoint(state: Mapping[str, Any], path: str | Path, out: str | Path | None = None) -> None:
    """Refuse a checkpoint written under another record than ``OUT/recipe.json`` (``out`` defaults to the
    checkpoint's folder). A checkpoint without a hash (written before checkpoints carried one) is accepted.

    Raises:
        DataError: naming both files and the way out.
    """
    saved = state.get("record")
    folder = Path(out) if out is not None else Path(path).parent
    now = folder_hash(folder)
    if saved is None or now is None or saved == now:
        return
    raise DataError(
        f"{path} holds weights of another run than the record {folder / RECORD_FILE} (record hash {saved}, the "
        f"folder's is {now}): the folder mixes files of two runs; train this run again there with --overwrite, "
        "or put the checkpoint back beside its own recipe.json"
    )


def run_files(out: str | Path) -> list[str]:
    """The output files of a run present in ``out`` (:data:`OUTPUT_FILES`, then the CSVs)."""
    out = Path(out)
    if not out.is_dir():
        return []
    return [n for n in OUTPUT_FILES if (out / n).is_file()] + sorted(p.name for p in out.glob("*.csv"))


def _finished_metrics(out: Path) -> bool:
    try:
        m = read_json(out / "metrics.json")
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and m.get("finished") is not False and any(k.startswith("test/") for k in m)


def check_new_run(out: str | Path, resume: bool, overwrite: bool, command: str, clear: bool = True) -> None:
    """Before a new run writes its record into ``out``: refuse a folder holding another run, or, with
    ``overwrite``, clear that run's files (:func:`clear_run`; only when ``clear``: on rank 0).

    A new run is one that does not continue a checkpoint. With ``resume`` (and no checkpoint to continue), a folder
    holding only a record (a run stopped before its first checkpoint) starts again; any output of a run refuses.

    Raises:
        ConfigError: naming the folder, what it holds, and the two ways out (``--resume``, ``--overwrite``).
    """
    out = Path(out)
    found = run_files(out) + ([RECORD_FILE] if (out / RECORD_FILE).is_file() and not resume else [])
    if not found:
        return
    if overwrite:
        if clear:  # one process of a process group clears
            clear_run(out)
        return
    what = "a finished run" if _finished_metrics(out) else "another run"
    how = (f"continue it with `{command} --out {out} --resume`" if (out / "checkpoint.pt").is_file()
           else "it has no checkpoint.pt to continue")
    raise ConfigError(
        f"{out} holds {what} ({', '.join(found)}); {how}, or start again there with --overwrite (deletes "
        f"{', '.join(n for n in found if n != RECORD_FILE)}), or pick another --out"
    )


def clear_run(out: str | Path) -> list[str]:
    """Delete a run's output files (:func:`run_files`) from ``out``; returns their names."""
    out = Path(out)
    names = run_files(out)
    for n in names:
        p = out / n
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    return names


def check_finished(done: int | None, total: int, unit_name: str, allow: bool, command: str, out: str | Path) -> bool:
    """Whether a run to re-test (``--test-only``) finished training: ``done`` of ``total`` units (None: unknown, a
    folder without checkpoint.pt, taken as finished).

    Raises:
        ConfigError: an unfinished run without ``allow`` (``--allow-unfinished``), with what was done and the
            command that continues it.
    """
    if done is None or done >= total:
        return True
    if not allow:
        raise ConfigError(
            f"--test-only: the run in {out} is unfinished ({done} of {total} {unit_name}s trained); continue it with "
            f"`{command} --out {out} --resume`, or test its weights as they are with --allow-unfinished (metrics.json "
            'then says "finished": false)'
        )
    return False


def processes(world_size: int, sync_bn: bool = False) -> dict[str, Any]:
    """The record's ``"processes"`` entry: how many processes trained the run, and whether BatchNorm was
    synchronised between them."""
    return {"world_size": int(world_size), "sync_bn": bool(sync_bn)}


def check_processes(record: Mapping[str, Any], world_size: int, sync_bn: bool, why: str | None,
                    what: str = "--resume") -> None:
    """Refuse to continue a run under another number of processes where that changes what is trained.

    Args:
        record: the run's record (one without ``"processes"``, written before they were recorded, is accepted).
        world_size: the processes now.
        sync_bn: whether BatchNorm is synchronised now.
        why: why the process count changes training for this run (None: it does not, the change is accepted).
        what: the flag, for the message.

    Raises:
        ConfigError: naming the recorded and the present process count and why.
    """
    rec = record.get("processes")
    if not isinstance(rec, Mapping) or why is None:
        return
    was, now = (int(rec.get("world_size", 1)), bool(rec.get("sync_bn"))), (int(world_size), bool(sync_bn))
    if was != now:
        raise ConfigError(
            f"{what}: the run was trained by {was[0]} process(es){' with synchronised BatchNorm' if was[1] else ''}, "
            f"now {now[0]}{' with synchronised BatchNorm' if now[1] else ''}: {why}; continue it with "
            f"torchrun --nproc_per_node={was[0]} (or one process when it was 1)"
        )


def stop_message(stop: Interrupted, command: str, out: str | Path) -> str:
    """The one line printed when a signal stopped training."""
    where = f"checkpoint {stop.checkpoint}" if stop.checkpoint is not None else "no checkpoint (checkpoints are off)"
    return (f"stopped by {signal.Signals(stop.signum).name} after {stop.unit_name} {stop.unit} of {stop.units}; "
            f"{where}; resume with: {command} --out {out} --resume")


def interrupted_message(command: str, out: str | Path) -> str:
    """The one line printed when Ctrl-C arrived outside training's safe points (loading data, testing, or a second
    Ctrl-C)."""
    ckpt = Path(out) / "checkpoint.pt"
    last = f"the last checkpoint is {ckpt}" if ckpt.is_file() else "no checkpoint was written"
    return f"interrupted (SIGINT); {last}; resume with: {command} --out {out} --resume"


def exit_code(signum: int) -> int:
    """The shell's exit status of a process ended by ``signum`` (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)


def check_distinct_classes(folders: Iterable[tuple[Path, Sequence[Path]]]) -> None:
    """Refuse two class folders that hold the same files: a class copied (or linked) under another name into another
    split, or twice into one flat folder, would put test images into training or count one class twice.

    Folders are compared by :func:`fewshot_sla.io.files_digest` of their file names and sizes, then, only when those
    agree, by content (files of one size and the same names are common: uncompressed or noise images).

    Args:
        folders: ``(class folder, its image files in order)`` of every split.

    Raises:
        DataError: naming both folders.
    """
    seen: dict[str, list[tuple[Path, Sequence[Path]]]] = {}
    for folder, files in folders:
        if files:
            seen.setdefault(files_digest(f"{p.name}:{p.stat().st_size}" for p in files), []).append((folder, files))
    for same in seen.values():
        if len(same) < 2:
            continue
        # equal names and sizes (common: noise or uncompressed images of one size): the first file's bytes, then all
        first: dict[str, list[tuple[Path, Sequence[Path]]]] = {}
        for folder, files in same:
            first.setdefault(hashlib.sha1(Path(files[0]).read_bytes()).hexdigest(), []).append((folder, files))
        for group in first.values():
            for i, (folder, files) in enumerate(group):
                for other, other_files in group[:i]:
                    if all(filecmp.cmp(a, b, shallow=False) for a, b in zip(other_files, files)):
                        raise DataError(
                            f"class folders {other} and {folder} hold the same {len(files)} images (names, sizes, "
                            "contents): one is a copy or a link of the other, so one class would be tested on its "
                            "training images or counted twice; remove one of them"
                        )
