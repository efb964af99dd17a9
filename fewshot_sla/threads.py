"""How many CPU threads torch uses: one policy for every entry point (``--num-threads``).

torch's default is one intra-op thread per core. On a machine where another process keeps a core busy that
default is a trap: the OpenMP threads of one parallel region wait for each other at its end, and one of them is
often descheduled, so every small operation waits for a time slice (docs/performance.md measured a 2-core machine
with one busy process beside the run: the demo's baseline trained in 88.8 s on every core, 1.3 s on one thread).
The policy:

* ``--num-threads N`` with ``N > 0``: ``N`` threads, whatever the machine;
* ``0`` (the default, "auto"): ``OMP_NUM_THREADS`` when the user set it; otherwise the cores no other process is
  running on right now (``cores - others``, at least 1), shared between the processes of this run (torchrun's
  ``LOCAL_WORLD_SIZE``): a loaded machine gets fewer threads than cores, an idle one all of them;
* ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it: OpenMP threads that wait sleep instead of spinning, so that
  a waiting thread does not take the core from the one it waits for. OpenMP reads this variable once, when torch
  loads it: ``import fewshot_sla`` sets it when torch is not loaded yet (``episodes`` and ``longtail`` import
  ``fewshot_sla`` first); a program that imported torch before sets it itself, or keeps its own.

:func:`choose_threads` is the decision, a pure function; :func:`apply_threads` measures the machine and applies it
(:func:`fewshot_sla.engine.setup` and the predictors call it).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

__all__ = ["ThreadChoice", "choose_threads", "apply_threads", "prefer_passive_wait", "cores_available",
           "other_running"]


@dataclass(frozen=True)
class ThreadChoice:
    """A decision of :func:`choose_threads`: ``threads`` intra-op threads, and why (one line, for logs)."""

    threads: int
    reason: str


def choose_threads(requested: int, cores: int, others: int, processes: int = 1,
                   omp_num_threads: str | None = None) -> ThreadChoice:
    """The intra-op thread count for one process of a run (a pure function of its inputs).

    Args:
        requested: ``--num-threads``: > 0 is taken as given; 0 = auto.
        cores: the cores this process may run on (its CPU affinity).
        others: processes of other programs running right now (runnable, not sleeping).
        processes: processes of this run on this machine (torchrun's ``LOCAL_WORLD_SIZE``; 1 without it).
        omp_num_threads: the ``OMP_NUM_THREADS`` environment variable, None when unset.

    Returns:
        :class:`ThreadChoice`; ``threads >= 1``.

    Raises:
        ValueError: a negative ``requested``, or an ``OMP_NUM_THREADS`` that is not a positive integer under auto.
    """
    if requested < 0:
        raise ValueError(f"--num-threads must be >= 0 (0 = auto), got {requested}")
    if requested > 0:
        return ThreadChoice(int(requested), "--num-threads")
    if omp_num_threads is not None and omp_num_threads.strip():
        value = omp_num_threads.strip().split(",")[0]  # OpenMP allows a list per nesting level; the first counts
        if not value.isdigit() or int(value) < 1:
            raise ValueError(
                f"OMP_NUM_THREADS={omp_num_threads!r} is not a positive integer; set it to one (e.g. 1) or unset it"
            )
        return ThreadChoice(int(value), "OMP_NUM_THREADS")
    cores, others, processes = max(1, int(cores)), max(0, int(others)), max(1, int(processes))
    free = max(1, cores - others)
    threads = max(1, free // processes)
    per = f", {processes} processes of this run" if processes > 1 else ""
    return ThreadChoice(threads, f"auto: {cores} cores, {others} busy with other processes{per}")


def cores_available() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it, else every core)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _procs_running() -> int | None:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("procs_running"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def other_running(samples: int = 5, interval: float = 0.01) -> int:
    """Processes of other programs running now: the median of a few reads of the kernel's runnable count
    (``/proc/stat``), less this process. 0 where the OS does not tell it (not Linux)."""
    reads = []
    for i in range(samples):
        n = _procs_running()
        if n is None:
            return 0
        reads.append(n)
        if i + 1 < samples:
            time.sleep(interval)
    reads.sort()
    return max(0, reads[len(reads) // 2] - 1)  # the reading process itself is running


def prefer_passive_wait() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` where the user has not set it and torch is not loaded yet (OpenMP reads it
    when torch loads it). Returns whether it is in effect for this process."""
    if "OMP_WAIT_POLICY" in os.environ:
        return os.environ["OMP_WAIT_POLICY"].strip().upper() == "PASSIVE"
    if "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def apply_threads(requested: int = 0) -> ThreadChoice:
    """Choose the thread count for this process (:func:`choose_threads` on this machine, now) and set it in torch.

    Call it once, at the start of a run, before the model is built.
    """
    import torch

    env = os.environ
    processes = int(env.get("LOCAL_WORLD_SIZE", "1") or 1)
    measure = requested == 0 and not env.get("OMP_NUM_THREADS", "").strip()
    # this run's other processes are running too: they are not "other programs"
    others = max(0, other_running() - (processes - 1)) if measure else 0
    choice = choose_threads(requested, cores_available(), others, processes, env.get("OMP_NUM_THREADS"))
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    return choice


prefer_passive_wait()  # on import (``import fewshot_sla`` imports this module before torch)
