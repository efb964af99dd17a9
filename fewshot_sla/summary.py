"""``OUT/summary.md``: a run folder's results in words, for a person.

Written after ``metrics.json`` by both CLIs (after training and after ``--test-only``), from facts already in the
run record and the metrics; nothing reads it back. The headline is found from the metrics keys: a few-shot run has
``test/acc_single`` / ``test/acc_agg`` with their 95% confidence intervals over the test episodes, a long-tailed run
``test/main_mode`` with the accuracy of that mode and its balanced / many / medium / few-shot accuracies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .transforms import get_transform
from .utils import atomic_write_text

__all__ = ["SUMMARY_FILE", "summary_text", "write_summary"]

SUMMARY_FILE = "summary.md"

#: long-tail prediction mode -> its accuracy key in metrics.json
_MODE_KEYS = {"single": "test/acc", "aggregated": "test/acc_agg", "distilled": "test/acc_distilled"}

#: what each file a run may leave holds (any other file is listed by name)
_FILES = {
    "metrics.json": "test metrics, config, provenance and training history",
    "recipe.json": "the run record: resolved config, class lists, data digests (read by --resume / --test-only)",
    "config.yaml": "the resolved config (`--config` of a new run)",
    "history.jsonl": "one line of training and validation metrics per logged step",
    "checkpoint.pt": "the last training state (`--resume`)",
    "best.pt": "the weights of the best validation (tested by `--test-only`)",
    "test_episodes.csv": "the accuracy of each test episode (single and aggregated inference)",
    "train_episodes.csv": "the loss and accuracy of each training episode",
    "per_class_acc.png": "plot of the test accuracy of each class against its training images",
    ".csv": "table",
    ".png": "plot",
}


def _pct(v: Any) -> str:
    return "n/a" if v is None or math.isnan(float(v)) else f"{100 * float(v):.2f}%"


def _ci(metrics: Mapping[str, Any], key: str) -> str:
    return f"{_pct(metrics.get(key))} ± {_pct(metrics.get(key + '_ci95'))}"


def _headline(record: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[str]:
    if "test/main_mode" in metrics:  # long-tailed: one mode is the headline
        mode = metrics["test/main_mode"]
        rows = [f"- accuracy ({mode} prediction, the headline mode): {_pct(metrics.get(_MODE_KEYS.get(mode, '')))}"]
        rows += [f"- accuracy ({m} prediction): {_pct(metrics[k])}"
                 for m, k in _MODE_KEYS.items() if m != mode and k in metrics]
        rows.append(f"- {mode} prediction by class group: balanced {_pct(metrics.get('test/balanced_acc'))}, "
                    + ", ".join(f"{g} {_pct(metrics.get(f'test/acc_{g}'))}" for g in ("many", "medium", "few"))
                    + " (n/a: no class in that group)")
        return rows
    if "test/acc_single" in metrics:  # few-shot: mean accuracy over the test episodes with its 95% CI
        n = metrics.get("test/episodes")
        over = f" (95% CI over {n} test episodes)" if n is not None else " (95% CI over the test episodes)"
        transform = record.get("config", {}).get("transform", "none")
        if get_transform(transform).m == 1:
            return [f"- baseline: {_ci(metrics, 'test/acc')}{over}"]
        return [f"- SLA+SI (single inference): {_ci(metrics, 'test/acc_single')}{over}",
                f"- SLA+AG (aggregated inference): {_ci(metrics, 'test/acc_agg')}{over}"]
    return [f"- accuracy: {_pct(metrics.get('test/acc'))}"]


def _finished(metrics: Mapping[str, Any]) -> str:
    if metrics.get("finished", True):
        return "finished: yes (the last training unit was done before testing)"
    done = {k: v for k, v in metrics.items() if k.endswith("s_done")}
    what = ", ".join(f"{v} {k[:-5]}s" for k, v in done.items())
    return (f"finished: **no, unfinished** -- tested with `--allow-unfinished` after {what or 'part of training'}; "
            "not a finished seed")


def _files(out: Path) -> list[str]:
    rows = []
    for p in sorted(out.iterdir()):
        if p.name.startswith(".") or p.name == SUMMARY_FILE:
            continue
        if p.is_dir():
            if p.name == "wandb":
                runs = sorted(q.name for q in p.iterdir() if q.name.startswith(("offline-run-", "run-")))
                where = f"wandb/{runs[-1]}" if runs else "wandb/"
                rows.append(f"- `{where}`: the W&B run (`wandb sync {out / where}` uploads an offline run)")
            else:
                rows.append(f"- `{p.name}/`")
            continue
        what = _FILES.get(p.name) or _FILES.get(p.suffix)
        rows.append(f"- `{p.name}`" + (f": {what}" if what else ""))
    return rows


def summary_text(out: str | Path, record: Mapping[str, Any], metrics: Mapping[str, Any],
                 settings: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """The Markdown of ``OUT/summary.md``.

    Args:
        out: the run folder (its files are listed).
        record: the run record (``recipe.json``): its kind, group, data identity and provenance.
        metrics: the content of ``metrics.json`` (the test metrics and, for a re-test, this test's provenance).
        settings: the key settings of the run, in the order to show (``{"learner": "protonet", ...}``).
        data: what it ran on (``{"dataset": ..., "data root": ..., "classes": ...}``).
    """
    out = Path(out)
    kind = record.get("kind") or "run"
    lines = [f"# {kind} run `{out.name}`", "", "## What ran", ""]
    lines += [f"- {k}: `{v}`" for k, v in settings.items()]
    lines += ["", "## Data", ""]
    lines += [f"- {k}: {v}" for k, v in data.items()]
    digest = record.get("identity", {}).get("data")
    if digest:
        lines.append("- digest: " + ", ".join(f"{k} `{v}`" for k, v in digest.items()))
    lines += ["", "## Test results", ""] + _headline(record, metrics)
    lines += ["", f"- {_finished(metrics)}", "", "## Provenance", ""]
    lines.append(f"- trained by fewshot-sla {record.get('package_version', '?')}, "
                 f"git commit `{record.get('git_commit') or 'unknown (not run from a checkout)'}`")
    tested = (metrics.get("package_version"), metrics.get("git_commit"))
    if any(tested) and tested != (record.get("package_version"), record.get("git_commit")):
        lines.append(f"- tested by fewshot-sla {tested[0]}, git commit `{tested[1] or 'unknown'}`")
    if record.get("group"):
        lines.append(f"- group `{record['group']}` (runs of the same method and data share it)")
    lines += ["", "## Files", ""] + _files(out)
    return "\n".join(lines) + "\n"


def write_summary(out: str | Path, record: Mapping[str, Any], metrics: Mapping[str, Any],
                  settings: Mapping[str, Any], data: Mapping[str, Any]) -> Path:
    """Write ``OUT/summary.md`` (see :func:`summary_text`); returns its path. Presentation only: no code reads it."""
    path = Path(out) / SUMMARY_FILE
    atomic_write_text(summary_text(out, record, metrics, settings, data), path)
    return path
