"""Shared fixtures. Real data comes from ../shared/data (see its README); tests that need it skip
with a clear reason when it is absent, so a user's clone without it still passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FEWSHOT_SLA_SHARED_DATA", ROOT.parent / "shared" / "data"))
# Materialized layouts live in a git-ignored folder of the checkout (idempotent, about 20 s once).
DATA_CACHE = Path(os.environ.get("FEWSHOT_SLA_DATA_CACHE", ROOT / ".data"))

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def _materialize(part: str) -> Path:
    if not (SHARED_DATA / "materialize.py").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared/data); these tests need it")
    DATA_CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(SHARED_DATA / "materialize.py"), str(DATA_CACHE), "--only", part],
                   check=True, capture_output=True)
    return DATA_CACHE


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` itself (npz files, split CSVs)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared/data); these tests need it")
    return SHARED_DATA


@pytest.fixture(scope="session")
def omniglot_root() -> Path:
    """A folder holding ``omniglot-py/images_{background,evaluation}/...`` (real Omniglot)."""
    return _materialize("omniglot")


@pytest.fixture(scope="session")
def cifar10_imagefolder() -> Path:
    """The real CIFAR-10 (JPEG copy) as an ImageFolder tree: ``.../cifar10-jpeg/{train,test}/<class>/``."""
    return _materialize("cifar10") / "cifar10-jpeg"


@pytest.fixture(scope="session")
def tiny_imagenet_root() -> Path:
    """A folder holding ``tiny-imagenet-200/{wnids.txt,words.txt,train/<wnid>/images/*.JPEG}`` (real Tiny ImageNet
    photographs, 128 per class, no ``val/``)."""
    return _materialize("tiny-imagenet")
