"""``--learner pretrain``: a classifier over the training classes (with or without SLA), then a head on frozen
features at val/test. End to end on tiny image folders: it trains through the engine (its loss is the one in
effect), resumes exactly, its embed-once test equals a per-episode oracle with the same head, and the predictor
loads it; the heads' values by hand."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from episodes import load_run
from episodes.config import FewShotConfig
from episodes.evaluate import evaluate_episodes
from episodes.pretrain import NCM_SCALE, PretrainTask, logreg_logits, ncm_logits
from episodes.recipe import Recipe, build_task, episode_splits, episodic, load_splits_for, resolve
from episodes.train import run
from fewshot_sla import checkpoint, runs
from fewshot_sla.utils import read_json


def _folder(root: Path, classes: int = 10, per_class: int = 6, size: int = 16, seed: int = 0) -> Path:
    """Classes that differ in colour (learnable in a few steps), noisy."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        base = rng.integers(0, 256, 3)
        (root / f"c{c:02d}").mkdir(parents=True)
        for i in range(per_class):
            a = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / f"c{c:02d}" / f"{i}.png")
    return root


def _cfg(data: Path, out: Path, **kw) -> FewShotConfig:
    base = dict(dataset="imagefolder", data_root=str(data), class_split=(0.6, 0.2, 0.2), image_size=16,
                learner="pretrain", ways=2, shots=1, queries=2, pretrain_epochs=3, batch_size=8, val_every_epochs=1,
                val_episodes=3, test_episodes=8, augment_padding=2, lr=0.01, wandb="disabled", num_threads=1,
                out=str(out))
    return FewShotConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_ncm_and_logreg_heads_by_hand():
    sf = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    sy = torch.tensor([0, 1, 1])
    qf = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    # class means of the unit vectors: c0 = (1, 0), c1 = mean((0, 1), (1, 1)/sqrt 2), then normalised
    c1 = torch.tensor([0.5 * (1 / math.sqrt(2)), 0.5 * (1 + 1 / math.sqrt(2))])
    c1 = c1 / c1.norm()
    want = NCM_SCALE * torch.tensor([[1.0, float(c1[0])], [0.0, float(c1[1])]])
    assert torch.allclose(ncm_logits(sf, sy, qf, 2), want, atol=1e-6)
    from sklearn.linear_model import LogisticRegression

    ref = LogisticRegression(C=1.0, max_iter=1000).fit(F.normalize(sf, dim=-1).double().numpy(), sy.numpy())
    got = logreg_logits(sf, sy, qf, 2)
    d = ref.decision_function(F.normalize(qf, dim=-1).double().numpy())
    assert torch.allclose(got[:, 1] - got[:, 0], torch.from_numpy(d).float(), atol=1e-5)
    sy3 = torch.tensor([0, 1, 2])
    assert logreg_logits(sf, sy3, qf, 3).shape == (2, 3)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory.mktemp("pretrain") / "data")


def test_pretrain_trains_through_the_engine_and_its_loss_is_in_effect(data, tmp_path):
    plain = run(_cfg(data, tmp_path / "plain", transform="none"))
    sla = run(_cfg(data, tmp_path / "sla", transform="rotation"))
    sd = run(_cfg(data, tmp_path / "sd", transform="rotation", sd=True))
    hist = {k: [r["train/loss"] for r in read_json(tmp_path / k / "metrics.json")["history"] if "train/loss" in r]
            for k in ("plain", "sla", "sd")}
    assert len(hist["plain"]) == 3  # one row per epoch
    # the first epoch's loss: cross-entropy over C_train = 6 classes starts near log 6, over the 24 joint classes
    # near log 24, and SLA+SD adds the distilled head's terms
    assert hist["plain"][0] < hist["sla"][0] < hist["sd"][0]
    assert abs(hist["sla"][0] - math.log(24)) < 1.0 and abs(hist["plain"][0] - math.log(6)) < 1.0
    for m in (plain, sla, sd):
        assert 0.0 <= m["test/acc"] <= 1.0 and m["test/episodes"] == 8
    assert plain["test/acc"] == plain["test/acc_single"]  # M = 1: one prediction
    rec = runs.read_record(tmp_path / "sla")
    assert rec["config"]["learner"] == "pretrain" and rec["recipe"]["m"] == 4


def test_pretrain_resumes_exactly(data, tmp_path):
    whole = run(_cfg(data, tmp_path / "whole", transform="rotation"))
    half = _cfg(data, tmp_path / "half", transform="rotation", stop_after=2)
    assert run(half) == {"episodes_done": 2}
    resumed = run(dataclasses.replace(half, stop_after=0, resume=True))
    assert resumed["test/acc"] == whole["test/acc"] and resumed["val/best_acc"] == whole["val/best_acc"]
    a = checkpoint.load(tmp_path / "whole" / "checkpoint.pt")["model"]
    b = checkpoint.load(tmp_path / "half" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("head", ["ncm", "logreg"])
def test_embed_once_equals_the_per_episode_oracle(data, tmp_path, head):
    cfg = _cfg(data, tmp_path / "r", transform="rotation", test_head=head)
    loaded = load_splits_for(cfg)
    recipe = resolve(cfg, loaded)
    splits = episode_splits(recipe, loaded)
    torch.manual_seed(0)
    task = build_task(recipe)
    assert isinstance(task, PretrainTask)
    ep = episodic(task)
    kw = dict(normalize=recipe.normalize)
    once = evaluate_episodes(ep, splits["test"], 2, 1, 2, 12, 5, "cpu", strategy="embed_once", **kw)
    oracle = evaluate_episodes(ep, splits["test"], 2, 1, 2, 12, 5, "cpu", strategy="per_episode", **kw)
    assert once["acc_agg"] == oracle["acc_agg"] and once["acc_single"] == oracle["acc_single"]


def test_the_predictor_loads_a_pretrain_run(data, tmp_path):
    out = tmp_path / "p"
    run(_cfg(data, out, transform="rotation", pretrain_epochs=1))
    pred = load_run(out)
    x = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (5, 3, 16, 16), dtype=np.uint8))
    probs = pred.predict(x[:3], ["a", "b", "b"], x[3:])
    assert probs.shape == (2, 2) and torch.allclose(probs.sum(1), torch.ones(2))
    assert isinstance(Recipe.from_record(runs.read_record(out)).train_classes, int)


def test_pretrain_config_errors(data, tmp_path):
    with pytest.raises(ValueError, match="--sd distils"):
        run(_cfg(data, tmp_path / "e", transform="none", sd=True))
    with pytest.raises(ValueError, match="--batch-size 100 is larger than the training split"):
        run(_cfg(data, tmp_path / "e2", batch_size=100))
