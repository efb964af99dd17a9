#!/usr/bin/env python
"""MetaOptNet-SVM evaluation solvers on a trained model's features: the batched solver of this tree against the one
of an earlier revision (``--before``, read with ``git show REV:episodes/svm.py``), on the same SLA (rotation)
episodes, with the time of embedding the test split for scale.

Embeds 20 test images of each of the first 40 test classes (x 4 rotations) with the run's encoder (``best.pt``),
draws 15-query episodes of each shape from them, times both solvers (1 thread) and compares their SLA+AG
predictions; "x embed" scales the embedding time to the whole test split.

    python bench/svm_trained.py RUN_DIR --data-root DATA [--before 17851ce]

(docs/performance.md: RUN_DIR = the Tiny ImageNet SVM + rotation run of scripts/results_tiny_imagenet_cpu.sh.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import episodes.svm as new  # noqa: E402
from episodes import Conv4, SLAEpisode  # noqa: E402
from episodes.data import load_fewshot, to_float  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished svm + rotation run (recipe.json, best.pt), Conv4 at 64 px")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--before", default="17851ce", help="the revision whose episodes/svm.py is the 'before' solver")
    args = ap.parse_args()
    torch.set_num_threads(1)
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.before}:episodes/svm.py"], check=True,
                         capture_output=True, text=True).stdout
    old: dict = {}
    exec(compile(src.replace("from .protonet import MetricLearner", "MetricLearner = object"), "before", "exec"), old)
    ck = torch.load(args.run / "best.pt", map_location="cpu", weights_only=False)
    rec = json.loads((args.run / "recipe.json").read_text())["recipe"]
    stats = (tuple(rec["stats"]["mean"]), tuple(rec["stats"]["std"]))
    enc = Conv4(3, 64)
    enc.load_state_dict({k[16:]: v for k, v in ck["model"].items() if k.startswith("learner.encoder.")})
    enc.eval()
    d = load_fewshot("tiny-imagenet", args.data_root, "test")
    sla = SLAEpisode("rotation")
    idx = torch.cat([torch.nonzero(d.labels == c)[:20, 0] for c in range(40)])
    t0 = time.perf_counter()
    with torch.no_grad():
        x = to_float(d.images[idx], "tiny-imagenet", stats)
        f = torch.cat([enc(sla.transform(x[i:i + 128]).contiguous()) for i in range(0, len(x), 128)])
    f = f.reshape(40, 20, 4, -1)
    t_embed = (time.perf_counter() - t0) * len(d.images) / len(idx)
    print(f"embed {len(d.images)} x 4 copies (scaled from {len(idx)}): {t_embed:.1f} s; "
          f"mean K_ii {(f[:, :, 0] ** 2).sum(-1).mean():.0f}")

    def episodes(ways: int, shots: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        s, q = [], []
        for _ in range(n):
            cls = torch.randperm(40, generator=g)[:ways]
            img = torch.stack([torch.randperm(20, generator=g)[:shots + 15] for _ in range(ways)])
            fe = f[cls[:, None], img]
            s.append(fe[:, :shots].reshape(-1, f.shape[-1]))
            q.append(fe[:, shots:].reshape(-1, f.shape[-1]))
        sy = (torch.arange(ways).repeat_interleave(shots)[:, None] * 4 + torch.arange(4)).reshape(-1)
        return torch.stack(s), sy, torch.stack(q)

    for ways, shots, n_new, n_old in [(5, 1, 200, 50), (5, 5, 200, 40), (20, 1, 50, 10), (20, 5, 20, 2)]:
        fs, sy, fq = episodes(ways, shots, n_new)
        t0 = time.perf_counter()
        zn = new.svm_logits_batched(fs, sy, fq, ways * 4)
        tn = (time.perf_counter() - t0) / n_new
        t0 = time.perf_counter()
        zo = old["svm_logits_batched"](fs[:n_old], sy, fq[:n_old], ways * 4)
        to = (time.perf_counter() - t0) / n_old

        def agg(z: torch.Tensor, ways: int = ways) -> torch.Tensor:
            return z.view(z.shape[0], -1, 4, ways, 4).diagonal(dim1=2, dim2=4).mean(-1)

        same = torch.equal(agg(zn[:n_old]).argmax(-1), agg(zo).argmax(-1))
        print(f"{ways}-way {shots}-shot SLA (S={len(sy)}, {ways * 4} joint classes): new {tn * 1e3:.1f} ms/ep "
              f"({n_new} eps), old {to * 1e3:.1f} ms/ep ({n_old} eps), speed-up {to / tn:.1f}x; 10,000 heads new "
              f"{tn * 1e4:.0f} s = {tn * 1e4 / t_embed:.2f} x embed, old {to * 1e4 / t_embed:.2f} x embed; same AG "
              f"predictions {same}, max |logit diff| {(zn[:n_old] - zo).abs().max().item():.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
