#!/usr/bin/env python
"""Episode speed, two tables.

* ``sampling``: our EpisodeSampler + uint8 gather against learn2learn's TaskDataset (NWays, KShots,
  LoadData, RemapLabels) on the same Omniglot tensors, and sampling time as a share of a ProtoNet
  (Conv4) training step, baseline and SLA (rotation, M=4).
* ``eval``: testing on 10,000 episodes with the test split embedded once (:mod:`episodes.evaluate`)
  against the time of embedding the test split once (target: at most 1.5x; MetaOptNet-SVM: its heads at
  most 2x), per learner (ProtoNet, R2D2, MetaOptNet-SVM on Conv4, SLA rotation) and episode shape
  (``--eval-ways`` x ``--eval-shots``, 15 queries); the per-episode path (one encoder pass per episode) is
  timed on ``--baseline-episodes`` episodes and scaled to the same count, and its accuracies on those
  episodes are compared with the embed-once ones (they must be equal).

    python bench/episodes.py [--tables sampling eval] [--episodes 300] [--threads 2] [--ways 5 20] [--shots 1]
        [--queries 15] [--eval-episodes 10000] [--eval-learners protonet r2d2 svm] [--svm-episodes 1000]
        [--baseline-episodes 100] [--eval-ways 5] [--eval-shots 1]

Uses the real Omniglot (Vinyals train split, 1028 classes x 20, and test split, 423 x 20; 28x28) from .data/
(unpacked from ../shared/data by the tests or by ``python ../shared/data/materialize.py .data --only omniglot``);
falls back to random uint8 images of the same shape and says so. On a CPU shared with other jobs use
``--threads 1``: with more threads than free cores the tiny per-episode heads spend their time waiting for threads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from episodes import Conv4, EpisodeSampler, MetaOptSVM, ProtoNet, SLAEpisode, episode_labels, split_episode  # noqa: E402
from episodes.data import FewShotData, gather, load_fewshot, to_float  # noqa: E402
from episodes.evaluate import embed_split, evaluate_episodes  # noqa: E402
from episodes.r2d2 import R2D2  # noqa: E402
from episodes.task import EpisodeTask  # noqa: E402
from fewshot_sla.tracking import format_table  # noqa: E402

#: Classes of the Vinyals splits (20 images each), for the random stand-in.
SPLIT_CLASSES = {"train": 1028, "test": 423}


def omniglot(split: str = "train") -> tuple[torch.Tensor, torch.Tensor, str]:
    root = ROOT / ".data"
    if (root / "omniglot-py").is_dir():
        d = load_fewshot("omniglot", root, split)
        return d.images, d.labels, f"real Omniglot, Vinyals {split} split"
    g = torch.Generator().manual_seed(0)
    n = SPLIT_CLASSES[split]
    images = torch.randint(0, 256, (n * 20, 1, 28, 28), dtype=torch.uint8, generator=g)
    return images, torch.arange(n).repeat_interleave(20), f"random uint8 (Omniglot not unpacked), {split} split shape"


def per_episode(fn, n: int) -> float:
    """Mean seconds of ``fn()`` over ``n`` calls after 3 warm-up calls (the mean, not the median: our
    sampler draws 64 episodes at once, so single calls are cheap and every 64th one pays for the chunk)."""
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def measure(images: torch.Tensor, labels: torch.Tensor, ways: int, shots: int, queries: int, n: int) -> dict:
    """One table row: sampling an episode (ours, ours with torch indexing, learn2learn) and a ProtoNet step."""
    sampler = EpisodeSampler(labels, ways, shots, queries, 10**9, seed=0)
    counter = iter(range(10**9))

    def ours() -> torch.Tensor:
        return gather(images, sampler.episode(next(counter)))  # what the training loop does

    def ours_torch_index() -> torch.Tensor:
        return images[sampler.episode(next(counter))]

    t_ours = per_episode(ours, n)
    t_ours_torch = per_episode(ours_torch_index, n)
    t_l2l = float("nan")
    try:
        import learn2learn as l2l

        ds = l2l.data.MetaDataset(torch.utils.data.TensorDataset(images, labels))
        tasks = l2l.data.TaskDataset(
            ds,
            task_transforms=[
                l2l.data.transforms.NWays(ds, ways),
                l2l.data.transforms.KShots(ds, shots + queries),
                l2l.data.transforms.LoadData(ds),
                l2l.data.transforms.RemapLabels(ds),
            ],
            num_tasks=-1,
        )
        t_l2l = per_episode(tasks.sample, max(n // 10, 20))
    except ImportError:
        print("learn2learn is not installed: its column is NaN (scripts/build_learn2learn.sh installs it)")

    # One ProtoNet training step on the episode (baseline and SLA), to put sampling in proportion.
    sy, qy = episode_labels(ways, shots, queries)
    steps = {}
    for tf in ("none", "rotation"):
        torch.manual_seed(0)
        sla = SLAEpisode(tf)
        model = ProtoNet(Conv4(1, 28))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(sla: SLAEpisode = sla, model: ProtoNet = model, opt: torch.optim.Optimizer = opt) -> None:
            x = to_float(ours(), "omniglot")
            sx, qx = split_episode(x, ways, shots, queries)
            sx, sy_j, qx, qy_j = sla.expand(sx, sy, qx, qy)
            loss = F.cross_entropy(model(sx, sy_j, qx, ways=sla.ways_joint(ways)), qy_j)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[tf] = per_episode(step, max(n // 10, 20))
    return {
        "episode": f"{ways}-way {shots}-shot {queries}-query",
        "ours ms": t_ours * 1e3,
        "ours episodes/s": 1 / t_ours,
        "ours, torch gather ms": t_ours_torch * 1e3,
        "l2l TaskDataset ms": t_l2l * 1e3,
        "speed-up vs l2l": t_l2l / t_ours,
        "ProtoNet step ms": steps["none"] * 1e3,
        "share of step": t_ours / steps["none"],
        "SLA step ms": steps["rotation"] * 1e3,
        "share of SLA step": t_ours / steps["rotation"],
    }


def measure_eval(images: torch.Tensor, labels: torch.Tensor, learner: str, transform: str, episodes: int,
                 timed_episodes: int, baseline_episodes: int, ways: int = 5, shots: int = 1, queries: int = 15) -> dict:
    """One row of the eval table: embedding the split once, ``timed_episodes`` embed-once episodes (scaled to
    ``episodes`` if fewer), and the per-episode path on ``baseline_episodes`` (scaled), with their accuracies."""
    data = FewShotData(images, labels, [str(c) for c in range(int(labels.max()) + 1)])
    torch.manual_seed(0)
    net = {"protonet": ProtoNet, "r2d2": R2D2, "svm": MetaOptSVM}[learner](Conv4(1, 28))
    task = EpisodeTask(net, transform, ways, shots, queries)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return to_float(x, "omniglot")

    t0 = time.perf_counter()
    feats = embed_split(task, images, "cpu", normalize=norm)
    t_embed = time.perf_counter() - t0
    t0 = time.perf_counter()  # the rest of evaluate_episodes: sampling, gathering features, heads, scoring
    once = evaluate_episodes(task, data, ways, shots, queries, timed_episodes, 0, "cpu", normalize=norm,
                             features=feats)
    t_heads = (time.perf_counter() - t0) * episodes / timed_episodes
    t0 = time.perf_counter()
    per = evaluate_episodes(task, data, ways, shots, queries, baseline_episodes, 0, "cpu", normalize=norm,
                            strategy="per_episode")
    t_per = (time.perf_counter() - t0) * episodes / baseline_episodes
    k = min(baseline_episodes, timed_episodes)  # episode e depends on (seed, e) only: the first k are the same
    same = per["acc_agg"][:k] == once["acc_agg"][:k] and per["acc_single"][:k] == once["acc_single"][:k]
    return {
        "learner": learner,
        "episode": f"{ways}-way {shots}-shot",
        "SLA": f"{transform} (M={task.m})",
        "copies embedded": len(images) * task.m,
        "embed split s": t_embed,
        "episodes timed": timed_episodes,
        f"{episodes} heads s": t_heads,
        "heads / embed": t_heads / t_embed,
        f"{episodes} embed-once s": t_embed + t_heads,
        "x embed": (t_embed + t_heads) / t_embed,
        f"per-episode path s (from {baseline_episodes})": t_per,
        "speed-up": t_per / (t_embed + t_heads),
        f"same acc on {k}": "yes" if same else "NO",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=300, help="timed episodes per row")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ways", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--queries", type=int, default=15)
    ap.add_argument("--tables", nargs="+", choices=["sampling", "eval"], default=["sampling", "eval"])
    ap.add_argument("--eval-episodes", type=int, default=10_000, help="test episodes of the eval table")
    ap.add_argument("--eval-learners", nargs="+", choices=["protonet", "r2d2", "svm"],
                    default=["protonet", "r2d2", "svm"])
    ap.add_argument("--eval-transform", default="rotation", help="SLA transform of the eval table")
    ap.add_argument("--svm-episodes", type=int, default=1000,
                    help="svm: episodes timed (its QP dominates; scaled to --eval-episodes)")
    ap.add_argument("--baseline-episodes", type=int, default=100, help="episodes timed on the per-episode path")
    ap.add_argument("--eval-ways", type=int, nargs="+", default=[5], help="eval table: ways of the test episodes")
    ap.add_argument("--eval-shots", type=int, nargs="+", default=[1], help="eval table: shots of the test episodes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if "sampling" in args.tables:
        images, labels, source = omniglot()
        print(f"\n### Omniglot tensors: {tuple(images.shape)} uint8, {source}; {args.episodes} timed episodes, "
              f"mean per episode, CPU {args.threads} threads, torch {torch.__version__}\n")
        rows = [measure(images, labels, ways, args.shots, args.queries, args.episodes) for ways in args.ways]
        print(format_table(rows))
    if "eval" in args.tables:
        images, labels, source = omniglot("test")
        print(f"\n### Test evaluation, 15-query, Conv4: {args.eval_episodes} episodes with the test "
              f"split embedded once vs embedding it once (target <= 1.5x); {tuple(images.shape)} uint8, {source}; "
              f"CPU {args.threads} threads, torch {torch.__version__}\n")
        rows = []
        for ways in args.eval_ways:
            for shots in args.eval_shots:
                for learner in args.eval_learners:
                    timed = min(args.eval_episodes, args.svm_episodes) if learner == "svm" else args.eval_episodes
                    rows.append(measure_eval(images, labels, learner, args.eval_transform, args.eval_episodes, timed,
                                             args.baseline_episodes, ways, shots))
                    print(format_table(rows[-1:]), flush=True)  # each row as it comes (the whole table below)
        print()
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
