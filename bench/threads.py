#!/usr/bin/env python
"""CPU thread count and OpenMP wait policy, on an idle machine and with one busy process beside the run.

    python bench/threads.py [--budget 20] [--demo-timeout 90] [--conditions idle busy]

Each cell is a fresh process (OpenMP reads its settings when torch loads), timed on three workloads:

* ResNet-32 step: one SGD step of a CIFAR ResNet-32 (baseline, batch 64, 32x32 RGB); median of 3 after a warm-up;
* Conv4 episode step: one Adam step of a rotation-SLA ProtoNet on a 5-way 1-shot 15-query 28x28 grey episode
  (an N*M = 20-way episode); median of 5 after a warm-up;
* demo: ``sla-demo --epochs 5 --methods baseline sla`` then ``python -m episodes.demo --episodes 100
  --test-episodes 100`` (the two halves of ``make demo``, shortened), wall time of both processes.

A step that has not finished its timed repeats within ``--budget`` seconds reports the median of those it finished
(a warm-up alone over the budget is reported as ``>``); a demo over ``--demo-timeout`` seconds as ``>``.
Settings (rows): 1 thread; every core (torch's default) with OpenMP's default wait policy (torch imported before
fewshot_sla, so that nothing sets ``OMP_WAIT_POLICY``); every core with ``OMP_WAIT_POLICY=PASSIVE``; and auto
(``--num-threads 0``, what every entry point does now). "busy" starts one ``python -c "while True: pass"`` process
beside the run for the condition's cells. The column "others" is how many other processes were running when the
condition started (:func:`fewshot_sla.threads.other_running`): on a shared machine "idle" is what it was.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _time_steps(step, repeats: int, budget: float) -> tuple[float, bool]:
    """Median seconds per ``step()`` over ``repeats`` timed calls after one warm-up; (seconds, complete)."""
    start = time.perf_counter()
    step()
    warm = time.perf_counter() - start
    if warm > budget:
        return warm, False
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget:
            break
    return statistics.median(times), len(times) == repeats


def worker(args: argparse.Namespace) -> None:
    """One cell: set the threads as the setting says, time the two steps, print JSON."""
    if args.torch_first:
        import torch  # noqa: F401  # loaded before fewshot_sla: OMP_WAIT_POLICY stays what the environment says
    import fewshot_sla  # noqa: F401  # otherwise first: it sets OMP_WAIT_POLICY=PASSIVE where it is unset

    # isort: split

    import torch

    from episodes.protonet import ProtoNet
    from episodes.task import EpisodeTask
    from fewshot_sla import SLAClassifier
    from fewshot_sla.nets import Conv4, resnet32
    from fewshot_sla.threads import apply_threads

    choice = apply_threads(args.threads)
    torch.manual_seed(0)
    out = {"threads": torch.get_num_threads(), "reason": choice.reason,
           "wait": os.environ.get("OMP_WAIT_POLICY", "(OpenMP default)")}

    model = SLAClassifier(resnet32(), 10, "none")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))

    def resnet_step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x, y)["loss"].backward()
        opt.step()

    out["resnet32"] = _time_steps(resnet_step, 3, args.budget)

    task = EpisodeTask(ProtoNet(Conv4(1, 28)), "rotation", 5, 1, 15)
    opt2 = torch.optim.Adam(task.parameters(), lr=1e-3)
    ep = torch.randn(5 * 16, 1, 28, 28)

    def episode_step() -> None:
        opt2.zero_grad(set_to_none=True)
        task(ep)["loss"].backward()
        opt2.step()

    out["conv4"] = _time_steps(episode_step, 5, args.budget)
    print(json.dumps(out))


def _demo(threads: int, torch_first: bool, env: dict[str, str], timeout: float) -> tuple[float, bool]:
    """Wall seconds of the shortened demo (both halves) in fresh processes; (seconds, finished)."""
    pre = "import torch; " if torch_first else ""
    with tempfile.TemporaryDirectory() as out:
        cmds = [
            f"{pre}from fewshot_sla.demo import main; main(['--out', {out!r}, '--epochs', '5', '--methods', "
            f"'baseline', 'sla', '--wandb', 'disabled', '--num-threads', '{threads}'])",
            f"{pre}from episodes.demo import main; main(['--episodes', '100', '--test-episodes', '100', "
            f"'--out', {out + '/fewshot'!r}, '--num-threads', '{threads}'])",
        ]
        start = time.perf_counter()
        for c in cmds:
            left = timeout - (time.perf_counter() - start)
            try:
                subprocess.run([sys.executable, "-c", c], env=env, cwd=ROOT, check=True, timeout=max(1.0, left),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                return timeout, False
        return time.perf_counter() - start, True


#: (row label, --num-threads, import torch before fewshot_sla, OMP_WAIT_POLICY or None to leave it to the package)
SETTINGS = [
    ("1 thread", 1, False, None),
    ("every core, OpenMP default wait", -1, True, None),
    ("every core, OMP_WAIT_POLICY=PASSIVE", -1, False, "PASSIVE"),
    ("auto (--num-threads 0, the default)", 0, False, None),
]


def _fmt(v: tuple[float, bool]) -> str:
    return f"{v[0]:.3f}" if v[1] else f">{v[0]:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=20.0, help="seconds per step measurement (default 20)")
    ap.add_argument("--demo-timeout", type=float, default=90.0, help="seconds for the shortened demo (default 90)")
    ap.add_argument("--conditions", nargs="+", choices=("idle", "busy"), default=["idle", "busy"])
    ap.add_argument("--no-demo", action="store_true", help="skip the demo column")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--torch-first", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    from fewshot_sla.threads import cores_available, other_running
    from fewshot_sla.tracking import format_table

    cores = cores_available()
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"CPU: {model}, {cores} cores available; torch's default: one thread per core")
    rows = []
    for cond in args.conditions:
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if cond == "busy" else None
        try:
            time.sleep(1.0 if burner else 0.0)
            others = other_running()
            for label, threads, torch_first, wait in SETTINGS:
                n = cores if threads < 0 else threads
                env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
                env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
                env["WANDB_MODE"] = "disabled"
                if wait:
                    env["OMP_WAIT_POLICY"] = wait
                cmd = [sys.executable, __file__, "--worker", "--threads", str(n), "--budget", str(args.budget)]
                res = json.loads(subprocess.run(cmd + (["--torch-first"] if torch_first else []), env=env,
                                                check=True, capture_output=True, text=True).stdout)
                row = {"machine": cond, "others": others, "setting": label, "threads": res["threads"],
                       "OMP_WAIT_POLICY": res["wait"], "ResNet-32 step s": _fmt(res["resnet32"]),
                       "Conv4 episode s": _fmt(res["conv4"])}
                if not args.no_demo:
                    row["demo s"] = _fmt(_demo(n, torch_first, env, args.demo_timeout))
                rows.append(row)
                print(f"  {cond}: {label}: {row}", file=sys.stderr, flush=True)
        finally:
            if burner is not None:
                burner.kill()
                burner.wait()
    print(format_table(rows))


if __name__ == "__main__":
    main()
