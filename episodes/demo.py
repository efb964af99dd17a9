"""The few-shot half of ``make demo``: ProtoNet on held-out digit classes, baseline vs SLA.

scikit-learn's 8x8 digits (no download): meta-train on digits 0-4, test 5-way 1-shot episodes on
the unseen digits 5-9, with and without rotation SLA; prints mean accuracy with 95% CI.

    python -m episodes.demo [--episodes 300] [--test-episodes 300] [--num-threads N]

Prints one line per phase on stderr (meta-training and testing, baseline then SLA) and the table at the end.
"""

from __future__ import annotations

import argparse
import sys

# numpy, torch and the modules that use them are imported inside run(): --help answers without loading them.


def run(
    episodes: int = 300, test_episodes: int = 300, seed: int = 0, out: str = "runs/demo/fewshot", num_threads: int = 0
) -> list[dict[str, float | str]]:
    """Meta-train ProtoNet without and with rotation SLA, test both; one row per prediction mode.

    ``num_threads``: torch CPU threads, 0 = auto (:func:`fewshot_sla.threads.apply_threads`, decided once).
    """
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    from fewshot_sla import engine
    from fewshot_sla.metrics import mean_ci95
    from fewshot_sla.nets import SmallCNN
    from fewshot_sla.threads import apply_threads

    from .protonet import ProtoNet
    from .sampler import EpisodeSampler
    from .task import EpisodeTask

    threads = apply_threads(num_threads)
    print(f"few-shot demo: {threads.threads} CPU thread(s) ({threads.reason})", file=sys.stderr, flush=True)

    d = load_digits()
    x = torch.from_numpy((d.images / 16.0 - 0.3).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    train, test = y < 5, y >= 5
    xtr, ytr, xte, yte = x[train], y[train], x[test], y[test] - 5
    rows: list[dict[str, float | str]] = []
    for tf in ("none", "rotation"):
        name = "baseline" if tf == "none" else f"SLA ({tf})"
        print(f"few-shot demo: meta-training {name}, {episodes} episodes", file=sys.stderr, flush=True)
        ctx = engine.setup(engine.RunSpec(f"{out}/{tf}", seed=seed, progress=False, num_threads=threads.threads))
        task = EpisodeTask(ProtoNet(SmallCNN()), tf, 5, 1, 5)
        sampler = EpisodeSampler(ytr, 5, 1, 5, episodes, seed=seed)

        def batches(e: int, s: EpisodeSampler = sampler) -> list[tuple[torch.Tensor]]:
            return [(xtr[s.episode(e)],)]

        loop = engine.Loop(units=episodes, batches=batches, lr=lambda e: 1e-3, unit_name="step", checkpoint_every=0)
        engine.fit(task, torch.optim.Adam(task.parameters(), lr=1e-3), loop, ctx)
        print(f"few-shot demo: testing {name}, {test_episodes} episodes", file=sys.stderr, flush=True)
        si, ag = [], []
        for idx in EpisodeSampler(yte, 5, 1, 15, test_episodes, seed=seed + 1):
            p = task.predict(xte[idx], 5, 1, 15)
            si.append((p["single"].argmax(1) == p["y"]).float().mean().item())
            ag.append((p["aggregated"].argmax(1) == p["y"]).float().mean().item())
        for name, accs in ((("Baseline", si),) if tf == "none" else (("SLA+SI", si), ("SLA+AG", ag))):
            m, ci = mean_ci95(accs)
            rows.append({"method": name, "5-way 1-shot acc": m, "ci95": ci})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m episodes.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=300, help="meta-training episodes per model (default: 300)")
    ap.add_argument("--test-episodes", type=int, default=300, help="test episodes per model (default: 300)")
    ap.add_argument("--seed", type=int, default=0, help="seed of init and episodes (default: 0)")
    ap.add_argument("--out", default="runs/demo/fewshot", help="output folder (default: runs/demo/fewshot)")
    ap.add_argument("--num-threads", type=int, default=0,
                    help="torch CPU threads; 0 = auto: the cores other processes leave free (default: 0)")
    args = ap.parse_args(argv)
    if args.num_threads < 0:
        ap.error(f"--num-threads must be >= 0 (0 = auto), got {args.num_threads}")
    rows = run(args.episodes, args.test_episodes, args.seed, args.out, args.num_threads)
    from fewshot_sla.tracking import format_table

    print(f"\nFew-shot digits: ProtoNet meta-trained on digits 0-4 ({args.episodes} episodes), "
          f"tested on unseen digits 5-9 ({args.test_episodes} episodes, 15 queries per class)\n")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
