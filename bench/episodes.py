#!/usr/bin/env python
"""Episode sampling speed: our EpisodeSampler + uint8 gather against learn2learn's TaskDataset
(NWays, KShots, LoadData, RemapLabels) on the same Omniglot tensors, and sampling time as a share
of a ProtoNet (Conv4) training step, baseline and SLA (rotation, M=4).

    python bench/episodes.py [--episodes 300] [--threads 2] [--ways 5 20] [--shots 1] [--queries 15]

Uses the real Omniglot (Vinyals train split, 1028 classes x 20, 28x28) from .data/ (unpacked from
../shared/data by the tests or by ``python ../shared/data/materialize.py .data --only omniglot``);
falls back to random uint8 images of the same shape and says so.
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

from episodes import Conv4, EpisodeSampler, ProtoNet, SLAEpisode, episode_labels, split_episode  # noqa: E402
from episodes.data import gather, load_fewshot, to_float  # noqa: E402
from fewshot_sla.tracking import format_table  # noqa: E402


def omniglot() -> tuple[torch.Tensor, torch.Tensor, str]:
    root = ROOT / ".data"
    if (root / "omniglot-py").is_dir():
        d = load_fewshot("omniglot", root, "train")
        return d.images, d.labels, "real Omniglot, Vinyals train split"
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (1028 * 20, 1, 28, 28), dtype=torch.uint8, generator=g)
    return images, torch.arange(1028).repeat_interleave(20), "random uint8 (Omniglot not unpacked)"


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=300, help="timed episodes per row")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ways", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--queries", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images, labels, source = omniglot()
    print(f"\n### Omniglot tensors: {tuple(images.shape)} uint8, {source}; {args.episodes} timed episodes, "
          f"mean per episode, CPU {args.threads} threads, torch {torch.__version__}\n")

    rows = [measure(images, labels, ways, args.shots, args.queries, args.episodes) for ways in args.ways]
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
