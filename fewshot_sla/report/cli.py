"""``sla-report RUN_DIR... [--out DIR]``: one Markdown report (tables and plots) from finished runs.

    sla-report runs/c10_ce runs/c10_ldam_sla --out report     # two run folders
    sla-report runs/grid                                      # every run below a grid's folder

A shell over :func:`fewshot_sla.report.write_report`: the exit status is 0, or 2 with one line on stderr for a run
folder the report cannot use (a missing folder, a damaged metrics.json, two runs of one group with the same seed).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from .spec import ReportError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``sla-report RUN_DIR... [--out DIR]``; returns the exit status (0, or 2 on a bad run folder)."""
    parser = argparse.ArgumentParser(
        prog="sla-report",
        description="One Markdown report (tables over seeds, per-class and few-shot plots) from sla-longtail "
        "and sla-fewshot run folders.",
    )
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="run folders (holding metrics.json), or folders searched recursively for them",
    )
    parser.add_argument("--out", default="report", help="report folder (default: ./report)")
    args = parser.parse_args(argv)
    from .document import write_report  # numpy and torch: after the command line is parsed, so --help is quick

    command = "sla-report " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        path = write_report(args.runs, args.out, command=command)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path.read_text().split("\n## Runs")[0].rstrip())
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
