"""``python -m lab.budget RUN_DIR... --out DIR``: SLA's gain against the training budget (epochs).

    python -m lab.budget docs/runs/longtail_cpu_protocol docs/runs/longtail_cpu_budget --out report/budget

Each run is a baseline (``transform none``, no ``sd``) or an SLA+SD run (a transform and ``sd``); the two are
paired by (curve, loss, epochs, seed), and the paired gain is SLA+SD's ``test/acc_distilled`` minus the baseline's
``test/acc``, in points. A *curve* is the runs whose identities (the one ``sla-report`` groups by:
:func:`fewshot_sla.runs.identity`, without ``RUN_KEYS`` and :data:`longtail.reporting.GROUP_IGNORE`, older records
read with :data:`~longtail.reporting.LEGACY_DEFAULTS`) agree on everything but ``epochs``, the seed and the method
keys ``loss``, ``drw``, ``transform``, ``sd``: runs with another schedule (batch size, lr, warm-up, data) form a
curve of their own, labelled by the keys that differ, and are never averaged in. Unfinished and unpaired runs are
skipped with a note. Writes ``DIR/budget.md`` (one table per curve and loss, one row per budget),
``DIR/budget.json`` (the same numbers) and ``DIR/gain_vs_epochs.png``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fewshot_sla.report import ReportError, Run, flat_identity, load_runs, mean_std
from fewshot_sla.runs import canonical
from fewshot_sla.tracking import format_table
from fewshot_sla.utils import write_json
from longtail.reporting import LEGACY_DEFAULTS, REPORT

__all__ = ["CURVE_FREE", "collect", "summarise", "write_budget", "main"]

#: Identity keys that vary inside one curve: the budget and the keys that name a method in ``sla-report``'s long-tail
#: table (``loss``, ``drw``, ``transform``, ``sd``); the seed is never in an identity.
CURVE_FREE: tuple[str, ...] = ("epochs", *REPORT["name_keys"])
#: A row's accuracies, ``(name, role, metrics key)``: SD, SI and AG are the SLA+SD run's three predictions.
SIDES: tuple[tuple[str, str, str], ...] = (
    ("baseline", "baseline", "test/acc"), ("sla_sd", "slasd", "test/acc_distilled"),
    ("sla_si", "slasd", "test/acc"), ("sla_ag", "slasd", "test/acc_agg"),
)


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _loss(method: dict[str, Any]) -> str:
    """The loss a table is about, e.g. ``ce`` or ``ldam+drw`` (the name keys besides transform and sd)."""
    keys = [k for k in REPORT["name_keys"] if k not in ("transform", "sd")]
    return "+".join(k if method.get(k) is True else _fmt(method.get(k)) for k in keys if method.get(k) is not False)


def _role(method: dict[str, Any]) -> str | None:
    if method.get("transform") == "none" and not method.get("sd"):
        return "baseline"
    if method.get("transform") not in (None, "none") and method.get("sd"):
        return "slasd"
    return None


def collect(runs: Sequence[Run], same_data: dict[str, str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Pair the finished baseline and SLA+SD runs.

    Args:
        runs: from :func:`fewshot_sla.report.load_runs`.
        same_data: ``data.*`` identity values to read as another (``{given ID: measured digest}``), for records
            whose data identity names the same folder differently.

    Returns:
        ``({"curves": {curve key: {"values": shared identity, "pairs": {(loss, epochs, seed): {role: Run}}}}},
        notes)``; the notes say which runs were skipped and why.

    Raises:
        ReportError: two runs with the same curve, loss, epochs, seed and role (the message names both folders).
    """
    alias = same_data or {}
    curves: dict[str, Any] = {}
    notes: list[str] = []
    for r in runs:
        if r.identity is None or r.spec is None or r.spec.get("kind") != "longtail":
            notes.append(f"`{r.path}`: skipped, not a tabled long-tail run ({r.status or 'another kind'})")
            continue
        if "test/acc" not in r.metrics:
            notes.append(f"`{r.path}`: skipped (no test/acc): {r.status or 'unfinished'}")
            continue
        method = dict(r.identity["method"])
        method.update({k: v for k, v in LEGACY_DEFAULTS.items() if k not in method})  # older records
        role = _role(method)
        if role is None:
            notes.append(f"`{r.path}`: skipped, neither a baseline (transform none, no sd) nor SLA+SD "
                         f"(transform {_fmt(method.get('transform'))}, sd {_fmt(method.get('sd'))})")
            continue
        flat = flat_identity({"method": method, "data": r.identity["data"]})
        values = {k: alias.get(v, v) if k.startswith("data.") and isinstance(v, str) else v
                  for k, v in flat.items() if k not in CURVE_FREE}
        curve = curves.setdefault(canonical(values), {"values": values, "pairs": {}})
        slot = curve["pairs"].setdefault((_loss(method), int(method["epochs"]), r.seed), {})
        if role in slot:
            raise ReportError(
                f"two {role} runs of loss {_loss(method)}, {method['epochs']} epochs, seed {r.seed} with one "
                f"schedule: {slot[role].path} and {r.path} (a copy of the same run?); give only one of them"
            )
        slot[role] = r
    for curve in curves.values():
        for (loss, epochs, seed), slot in curve["pairs"].items():
            if len(slot) == 1:
                (role, r), = slot.items()
                notes.append(f"`{r.path}`: skipped, a {role} run without its pair ({loss}, {epochs} epochs, "
                             f"seed {seed})")
    return {"curves": curves}, notes


def _points(v: Any) -> float:
    """A metrics.json accuracy in [0, 1] as points (rounded off float noise); null or missing: NaN."""
    return round(100 * float(v), 6) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


def _stats(values: list[float]) -> dict[str, Any]:
    mean, std, _ = mean_std(values)
    return {"mean": mean, "std": std, "values": values}


def summarise(collected: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per curve: its label (the identity keys that differ between curves), the shared values, and per
    loss one row per budget (seeds, each side's accuracy and the paired gains, in points: mean, sample std with
    ddof=1 (NaN with one seed) and the per-seed values)."""
    curves = list(collected["curves"].values())
    keys = list(dict.fromkeys(k for c in curves for k in c["values"]))
    differ = [k for k in keys if len({canonical(c["values"].get(k, "\0unset")) for c in curves}) > 1]
    out = []
    for c in curves:
        by_loss: dict[str, list[dict[str, Any]]] = {}
        done = sorted((k, s) for k, s in c["pairs"].items() if len(s) == 2)
        for loss, epochs in dict.fromkeys((k[0], k[1]) for k, _ in done):
            slots = [(k[2], s) for k, s in done if k[:2] == (loss, epochs)]
            row: dict[str, Any] = {"epochs": epochs, "seeds": [seed for seed, _ in slots],
                                   "folders": [[str(s["baseline"].path), str(s["slasd"].path)] for _, s in slots]}
            for name, role, key in SIDES:
                row[name] = _stats([_points(s[role].metrics.get(key)) for _, s in slots])
            for name in ("sla_sd", "sla_si", "sla_ag"):
                gains = [round(a - b, 6) for a, b in zip(row[name]["values"], row["baseline"]["values"])]
                row["gain_" + name[4:]] = _stats(gains)
            by_loss.setdefault(loss, []).append(row)
        label = " ".join(f"{k}={_fmt(c['values'].get(k, '(unset)'))}" for k in differ)
        out.append({"label": label, "values": c["values"], "losses": by_loss})
    return out


def _ms(s: dict[str, Any], sign: str = "") -> str:
    std = "n/a" if s["std"] != s["std"] else f"{s['std']:.2f}"
    return f"{s['mean']:{sign}.2f} +- {std}"


def _tables(curves: list[dict[str, Any]]) -> str:
    parts = []
    for c in curves:
        for loss, rows in c["losses"].items():
            table = format_table([{
                "epochs": str(r["epochs"]), "seeds": ",".join(map(str, r["seeds"])),
                "baseline": _ms(r["baseline"]), "SLA+SD": _ms(r["sla_sd"]), "SLA+SI": _ms(r["sla_si"]),
                "SLA+AG": _ms(r["sla_ag"]), "gain SD - baseline": _ms(r["gain_sd"], "+"),
                "per-seed gains": ", ".join(f"{g:+.2f}" for g in r["gain_sd"]["values"]),
            } for r in rows], ["epochs", "seeds", "baseline", "SLA+SD", "SLA+SI", "SLA+AG", "gain SD - baseline",
                               "per-seed gains"])
            parts.append(f"## {loss}" + (f" ({c['label']})" if c["label"] else "") + "\n\n" + table)
    return "\n\n".join(parts)


def plot(curves: list[dict[str, Any]], path: str | Path) -> Path:
    """The paired SLA+SD gain (points) against epochs (log scale, a tick at each budget): one line per curve and
    loss, the mean with error bars of the seeds' sample std, each seed a dot, and a zero line."""
    try:
        from matplotlib.figure import Figure  # a bare Figure: Agg, no pyplot state
        from matplotlib.ticker import FixedLocator, NullLocator
    except ImportError:
        raise ReportError("the plot needs matplotlib, which is not installed: pip install matplotlib") from None
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    lines = [(f"{loss} {c['label']}".strip(), rows) for c in curves for loss, rows in c["losses"].items()]
    budgets = sorted({r["epochs"] for _, rows in lines for r in rows})
    for i, (label, rows) in enumerate(lines):
        dodge = 1.025 ** (i - (len(lines) - 1) / 2)  # lines side by side at a shared budget (log axis)
        x = [r["epochs"] * dodge for r in rows]
        means, stds = [r["gain_sd"]["mean"] for r in rows], [r["gain_sd"]["std"] for r in rows]
        ax.errorbar(x, means, yerr=[0.0 if s != s else s for s in stds], color=f"C{i % 10}", marker="o",
                    capsize=4, linewidth=1.5, label=f"{label} (mean +- std over seeds)")
        sx = [r["epochs"] * dodge for r in rows for _ in r["gain_sd"]["values"]]
        sy = [g for r in rows for g in r["gain_sd"]["values"]]
        ax.scatter(sx, sy, s=16, facecolors="none", edgecolors=f"C{i % 10}", alpha=0.8)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(budgets))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(b) for b in budgets])
    ax.set_xlabel("training epochs (log scale)")
    ax.set_ylabel("SLA+SD - baseline test accuracy (points)")
    ax.set_title("SLA+SD's paired gain against the training budget (circles: single seeds)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def write_budget(dirs: Sequence[str | Path], out_dir: str | Path, same_data: dict[str, str] | None = None,
                 command: str | None = None) -> dict[str, Any]:
    """Write ``budget.md``, ``budget.json`` and ``gain_vs_epochs.png`` into ``out_dir``; returns the JSON content.

    Raises:
        ReportError: a bad run folder (see :func:`fewshot_sla.report.load_runs`), a duplicate run, or no pair.
    """
    out = Path(out_dir)
    collected, notes = collect(load_runs(dirs), same_data)
    curves = summarise(collected)
    if not any(c["losses"] for c in curves):
        raise ReportError(f"no finished baseline / SLA+SD pair in {', '.join(map(str, dirs))}: " + "; ".join(notes))
    command = command or "python -m lab.budget " + shlex.join([*map(str, dirs), "--out", str(out_dir)])
    if len(curves) > 1:
        notes.append("runs of different schedules form separate curves, labelled by the keys that differ; if "
                     "they differ only by a data.files naming one folder twice, --same-data GIVEN=DIGEST joins them")
    notes += [f"data identity {a!r} read as {b!r} (--same-data)" for a, b in (same_data or {}).items()]
    out.mkdir(parents=True, exist_ok=True)
    plot(curves, out / "gain_vs_epochs.png")
    tables = _tables(curves)
    lines = ["# SLA's gain against the training budget", "", f"Made by `{command}`", "", tables, "",
             "Test accuracy in %, mean +- sample std (ddof=1) over the paired seeds (n/a with one seed). SLA+SD: "
             "`test/acc_distilled`, SLA+SI: `test/acc`, SLA+AG: `test/acc_agg` of the SLA+SD run; the gain is "
             "SLA+SD minus the baseline's `test/acc` of the same seed, in points.", "",
             "![gain against epochs](gain_vs_epochs.png)"]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    (out / "budget.md").write_text("\n".join(lines) + "\n")
    result = {"command": command, "curves": curves, "notes": notes}
    write_json(result, out / "budget.json")
    print(tables)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m lab.budget RUN_DIR... --out DIR``; returns the exit status (0, or 2 on a bad input)."""
    parser = argparse.ArgumentParser(prog="python -m lab.budget", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders, or folders searched for them")
    parser.add_argument("--out", default="budget", help="output folder (default: ./budget)")
    parser.add_argument("--same-data", action="append", default=[], metavar="GIVEN=DIGEST",
                        help="read the data identity GIVEN (e.g. an --image-folder-id of upgraded records) as "
                             "DIGEST: both name one folder (repeatable)")
    args = parser.parse_args(argv)
    bad = [s for s in args.same_data if s.count("=") != 1]
    if bad:
        parser.error(f"--same-data takes GIVEN=DIGEST, not {bad[0]!r}")
    same = dict(s.split("=") for s in args.same_data)
    command = "python -m lab.budget " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        write_budget(args.runs, args.out, same, command)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
