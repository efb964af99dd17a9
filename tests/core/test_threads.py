"""The thread policy: its decisions as a pure function, OMP_WAIT_POLICY before torch, every CLI's --num-threads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fewshot_sla.config import parse_config
from fewshot_sla.threads import apply_threads, choose_threads

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "requested, cores, others, processes, env, threads, reason",
    [
        (3, 2, 5, 1, "7", 3, "--num-threads"),  # an explicit count wins over the machine and the environment
        (1, 64, 0, 4, None, 1, "--num-threads"),
        (0, 2, 0, 1, None, 2, "auto"),  # idle: every core
        (0, 2, 1, 1, None, 1, "auto"),  # one busy process beside the run on 2 cores: 1 thread
        (0, 2, 5, 1, None, 1, "auto"),  # more busy processes than cores: still 1
        (0, 16, 3, 1, None, 13, "auto"),
        (0, 16, 0, 4, None, 4, "auto"),  # 4 processes of one run (torchrun): a share each
        (0, 16, 4, 4, None, 3, "auto"),  # (16 - 4) // 4
        (0, 2, 0, 4, None, 1, "auto"),  # more processes than cores: 1 each
        (0, 16, 0, 1, "3", 3, "OMP_NUM_THREADS"),  # the user's environment under auto
        (0, 16, 0, 1, "5,2", 5, "OMP_NUM_THREADS"),  # OpenMP's nested list: the outer level
        (0, 4, 0, 1, " ", 4, "auto"),  # set but empty: as if unset
    ],
)
def test_choose_threads(requested, cores, others, processes, env, threads, reason):
    choice = choose_threads(requested, cores, others, processes, env)
    assert choice.threads == threads
    assert choice.reason.startswith(reason)


def test_choose_threads_refuses_bad_values():
    with pytest.raises(ValueError, match=r"--num-threads must be >= 0 \(0 = auto\), got -1"):
        choose_threads(-1, 2, 0)
    with pytest.raises(ValueError, match="OMP_NUM_THREADS='two' is not a positive integer"):
        choose_threads(0, 2, 0, omp_num_threads="two")


def test_apply_threads_sets_torch():
    before = torch.get_num_threads()
    try:
        assert apply_threads(1).threads == 1 and torch.get_num_threads() == 1
        assert apply_threads(2).threads == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def _env(**kw: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(kw)
    return env


@pytest.mark.parametrize(
    "code, env, expected",
    [
        # each package sets it before torch loads OpenMP (on first use of a name that needs torch)
        ("import episodes; episodes.SLAEpisode", {}, "PASSIVE torch-after"),
        ("import longtail; longtail.make_loss", {}, "PASSIVE torch-after"),
        ("import fewshot_sla; fewshot_sla.expand", {}, "PASSIVE torch-after"),
        ("from fewshot_sla.sla import expand", {}, "PASSIVE torch-after"),
        ("import episodes.sla_episode", {}, "PASSIVE torch-after"),
        ("import longtail.losses", {}, "PASSIVE torch-after"),
        # the user's setting stays
        ("import fewshot_sla; fewshot_sla.expand", {"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE torch-after"),
        ("import torch, fewshot_sla", {}, "None torch-before"),  # too late to matter: left alone
    ],
)
def test_wait_policy_set_before_torch(code, env, expected):
    # a meta-path hook records whether OMP_WAIT_POLICY was set when torch was first imported
    probe = (
        "import os, sys\n"
        "class Probe:\n"
        "    seen = None\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' and Probe.seen is None:\n"
        "            Probe.seen = os.environ.get('OMP_WAIT_POLICY')\n"
        "        return None\n"
        "sys.meta_path.insert(0, Probe())\n"
        f"{code}\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), 'torch-after' if Probe.seen else 'torch-before')\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=_env(**env), capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[-2] == expected


@pytest.mark.parametrize("module", ["episodes.config:FewShotConfig", "longtail.config:LTConfig",
                                    "fewshot_sla.demo:DemoConfig"])
def test_config_clis_take_num_threads(module):
    """sla-fewshot, sla-longtail and sla-demo: --num-threads, default 0 = auto."""
    mod, cls = module.split(":")
    config = getattr(__import__(mod, fromlist=[cls]), cls)
    assert config().num_threads == 0
    assert parse_config(config, ["--num-threads", "3"]).num_threads == 3


@pytest.mark.parametrize("module", ["episodes.cli_predict", "longtail.cli_predict"])
def test_predictors_take_num_threads(module):
    parser = __import__(module, fromlist=["_parser"])._parser()
    episodic = module == "episodes.cli_predict"
    args = ["--run", "R", "--support", "S", "--query", "Q"] if episodic else ["--run", "R", "x"]
    assert parser.parse_args(args).num_threads == 0
    assert parser.parse_args([*args, "--num-threads", "2"]).num_threads == 2


@pytest.mark.parametrize("module", ["episodes.cli_predict", "longtail.cli_predict"])
def test_predictors_refuse_negative_threads(module, tmp_path, capsys):
    main = __import__(module, fromlist=["main"]).main
    episodic = module == "episodes.cli_predict"
    args = ["--support", str(tmp_path), "--query", str(tmp_path)] if episodic else [str(tmp_path)]
    assert main(["--run", str(tmp_path), *args, "--num-threads", "-2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --num-threads must be >= 0 (0 = auto), got -2"]


def test_episodes_demo_num_threads_and_progress(tmp_path, capsys):
    from episodes.demo import main

    before = torch.get_num_threads()
    try:
        assert main(["--episodes", "2", "--test-episodes", "2", "--num-threads", "2", "--out", str(tmp_path)]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "few-shot demo: 2 CPU thread(s) (--num-threads)",
        "few-shot demo: meta-training baseline, 2 episodes",
        "few-shot demo: testing baseline, 2 episodes",
        "few-shot demo: meta-training SLA (rotation), 2 episodes",
        "few-shot demo: testing SLA (rotation), 2 episodes",
    ]
    assert "| SLA+AG" in captured.out
    with pytest.raises(SystemExit):
        main(["--num-threads", "-1"])
