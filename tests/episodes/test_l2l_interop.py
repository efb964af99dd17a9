"""The "SLA with learn2learn models" example of docs/usage.md, run as it stands there: learn2learn's own
TaskDataset episodes and ``l2l.algorithms.MAML`` with :class:`episodes.SLAEpisode` around them."""

import math
import re
from pathlib import Path

import pytest

pytest.importorskip("learn2learn")
pytestmark = pytest.mark.l2l

USAGE = Path(__file__).resolve().parents[2] / "docs" / "usage.md"


def example_code() -> str:
    """The python block of the section "SLA with learn2learn models" of docs/usage.md."""
    text = USAGE.read_text()
    section = text.split("### SLA with learn2learn models", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section should hold one python block"
    return blocks[0]


def run_example(transform: str) -> dict:
    code = example_code()
    line = 'sla = SLAEpisode("rotation")'
    assert line in code
    scope: dict = {}
    exec(compile(code.replace(line, f"sla = SLAEpisode({transform!r})"), str(USAGE), "exec"), scope)
    return scope


def test_docs_example_trains_maml_with_sla_on_learn2learn_tasks():
    sla = run_example("rotation")
    plain = run_example("none")
    n, k, q = sla["N"], sla["K"], sla["Q"]
    assert sla["ways"] == n * 4 and plain["ways"] == n  # joint ways N*M
    assert sla["z"].shape == (n * q * 4, n * 4) and plain["z"].shape == (n * q, n)
    assert sorted(sla["qy"].unique().tolist()) == list(range(n * 4))  # every (class, rotation) pair is a class
    assert sla["sx"].shape == (n * k * 4, 1, 28, 28)
    assert len(sla["losses"]) == 5 and all(math.isfinite(v) for v in sla["losses"] + plain["losses"])
    assert 0.0 <= float(sla["acc"]) <= 1.0
    assert sla["losses"] != plain["losses"]  # same seed, SLA changes what is learned
    # The loss of an untrained N*M-way head starts near log(N*M), the plain one's near log(N).
    assert abs(sla["losses"][0] - math.log(n * 4)) < 1.0 and abs(plain["losses"][0] - math.log(n)) < 1.0
