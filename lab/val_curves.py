"""Validation curves of few-shot runs in one plot (docs/results.md): val accuracy (SLA+AG where the run has SLA)
against the training units (steps or epochs) of each run's ``history.jsonl``, one line per run.

    python -m lab.val_curves RUN_DIR... --out curves.png [--title TEXT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def curve(run: Path) -> tuple[str, list[float], list[float]]:
    """``(unit, x, val accuracy in %)`` of a run folder's ``history.jsonl`` (unit ``epoch`` or ``step``)."""
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "val/acc_agg" in r or "val/acc" in r]
    if not rows:
        raise ValueError(f"{run}/history.jsonl holds no validation accuracy")
    unit = "epoch" if "epoch" in rows[0] else "step"
    x = [float(r[unit]) for r in rows]
    y = [100 * float(r.get("val/acc_agg", r.get("val/acc"))) for r in rows]
    return unit, x, y


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.val_curves", description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR")
    ap.add_argument("--out", required=True, help="the PNG to write")
    ap.add_argument("--title", default="validation accuracy (5-way 1-shot)")
    args = ap.parse_args(argv)
    from matplotlib.figure import Figure

    curves = {}
    for r in map(Path, args.runs):
        try:
            curves[r.name] = curve(r)
        except (OSError, ValueError) as e:
            print(f"skipped {r}: {e}", file=sys.stderr)
    units = sorted({u for u, _, _ in curves.values()})
    fig = Figure(figsize=(5.2 * len(units), 3.8))
    axes = fig.subplots(1, len(units), squeeze=False)[0]
    for ax, unit in zip(axes, units):
        for name, (u, x, y) in sorted(curves.items()):
            if u == unit:
                ax.plot(x, y, marker="o", ms=3, label=name)
        ax.set_xlabel(f"training {unit}s")
        ax.set_ylabel("val accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(args.title)
    fig.savefig(args.out, dpi=120, bbox_inches="tight")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
