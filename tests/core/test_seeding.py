"""fewshot_sla.seeding: the one seed hash, its exact values, and that the long-tail samplers load no engine."""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from fewshot_sla import engine
from fewshot_sla.seeding import stream_seed

ROOT = Path(__file__).resolve().parents[2]

# Values of the engine's stream_seed before it moved here (commit 83dd288), written out: every batch stream of a
# committed run is seeded with them, so they must not move.
PINNED = [
    ((0,), "", 7896617691693857887),
    ((3, 4), "", 8142286996972879346),
    ((5, 170), "sampler", 7152608183974987467),
    ((2**40, 3, 1), "", 2291050255947190326),
    ((7,), "x", 1744020730667144549),
]


@pytest.mark.parametrize("key,name,value", PINNED)
def test_stream_seed_values_are_pinned(key, name, value):
    assert stream_seed(*key, name=name) == value
    words = [*key, zlib.crc32(name.encode())] if name else list(key)  # the formula, from NumPy's SeedSequence
    assert value == int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0]) >> 1


def test_one_seed_hash_for_engine_and_samplers():
    import longtail.samplers as samplers

    assert engine.stream_seed is stream_seed and samplers.stream_seed is stream_seed
    assert samplers.epoch_seed(5, 170) == stream_seed(5, 170, name="sampler") == PINNED[2][2]


@pytest.mark.parametrize("module", ["longtail", "longtail.samplers", "fewshot_sla.seeding"])
def test_importing_the_long_tail_package_does_not_load_the_engine(module):
    code = f"import sys, {module}; assert 'fewshot_sla.engine' not in sys.modules, sorted(sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""},
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
