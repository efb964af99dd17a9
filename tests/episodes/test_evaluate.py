"""episodes.evaluate: embedding a split once gives exactly the per-episode logits and accuracies (ProtoNet, R2D2,
MetaOptNet-SVM, with and without SLA); the MAML family keeps the per-episode path; ``sla-fewshot --test-only``
re-tests a finished run; ``--test-episodes 0`` resolves per learner and is recorded."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from torch import nn

from episodes import MetaOptSVM, ProtoNet
from episodes.config import FewShotConfig
from episodes.data import FewShotData, to_float
from episodes.evaluate import choose_strategy, embed_split, episode_logits, evaluate_episodes
from episodes.r2d2 import R2D2
from episodes.recipe import AUTO_TEST_EPISODES, check_config, resolve_test_episodes
from episodes.task import EpisodeTask
from episodes.train import main, run
from fewshot_sla.nets import Conv4
from fewshot_sla.utils import read_json

WAYS, SHOTS, QUERIES, EPISODES = 3, 1, 2, 8


def _norm(x: torch.Tensor) -> torch.Tensor:
    return to_float(x, "omniglot")


@pytest.fixture(scope="module")
def data() -> FewShotData:
    """10 classes x 5 random 28x28 uint8 images (shapes of Omniglot, content irrelevant: equality is the point)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8, generator=g)
    return FewShotData(images, torch.arange(10).repeat_interleave(5), [f"c{i}" for i in range(10)])


def _task(learner: str, transform: str) -> EpisodeTask:
    torch.manual_seed(0)
    encoder = Conv4(1, 28)
    for m in encoder.modules():  # eval-mode BatchNorm that is not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    if learner == "svm":
        pytest.importorskip("qpth")
        net: nn.Module = MetaOptSVM(encoder)
    else:
        net = ProtoNet(encoder) if learner == "protonet" else R2D2(encoder, init_lambda=0.5, init_bias=0.1)
    return EpisodeTask(net, transform, WAYS, SHOTS, QUERIES)


@pytest.mark.parametrize("transform", ["none", "rotation"])
@pytest.mark.parametrize("learner", ["protonet", "r2d2", "svm"])
def test_embed_once_equals_per_episode_exactly(data, learner, transform):
    task = _task(learner, transform)
    task.train()  # the evaluator switches to eval mode itself and restores the mode
    kw = dict(normalize=_norm)
    per = list(episode_logits(task, data, WAYS, SHOTS, QUERIES, EPISODES, 7, "cpu", strategy="per_episode", **kw))
    # batch_size 3: one image (M = 4) or a pair (M = 1, never a single row) per encoder call, many chunks
    once = list(episode_logits(task, data, WAYS, SHOTS, QUERIES, EPISODES, 7, "cpu", strategy="embed_once",
                               batch_size=3, **kw))
    assert len(per) == len(once) == EPISODES and task.training
    for (e, ag_p, si_p, y_p), (e2, ag_o, si_o, y_o) in zip(per, once):
        assert e == e2 and torch.equal(y_p, y_o)
        assert torch.equal(ag_p, ag_o) and torch.equal(si_p, si_o), f"episode {e}: logits differ"
        assert torch.equal(ag_p.argmax(1), ag_o.argmax(1))  # the same predictions, hence accuracies
    ref, res = (evaluate_episodes(task, data, WAYS, SHOTS, QUERIES, EPISODES, 7, "cpu", strategy=s, **kw)
                for s in ("per_episode", "embed_once"))
    assert len(ref["acc_agg"]) == EPISODES and 0.0 <= min(ref["acc_agg"]) <= max(ref["acc_agg"]) <= 1.0
    assert res["acc_single"] == ref["acc_single"] and res["acc_agg"] == ref["acc_agg"]
    np.testing.assert_array_equal(res["per_class"], ref["per_class"])  # NaN where a class never came up
    if transform == "none":  # M = 1: SLA+AG and SLA+SI are the same logits
        assert ref["acc_single"] == ref["acc_agg"]


def test_per_episode_path_matches_a_plain_loop_over_predict(data):
    """The reference path is what sla-fewshot always did: task.predict on each normalised episode."""
    from episodes.data import gather
    from episodes.sampler import EpisodeSampler

    task = _task("protonet", "rotation")
    res = evaluate_episodes(task, data, WAYS, SHOTS, QUERIES, EPISODES, 3, "cpu", normalize=_norm,
                            strategy="embed_once")
    sampler = EpisodeSampler(data.labels, WAYS, SHOTS, QUERIES, EPISODES, seed=3)
    acc, hits, seen = [], np.zeros(10), np.zeros(10)
    for e, idx in enumerate(sampler):
        out = task.predict(_norm(gather(data.images, idx)), WAYS, SHOTS, QUERIES)
        ok = out["aggregated"].argmax(1) == out["y"]
        acc.append(ok.float().mean().item())
        cls = sampler.episode_classes(e)[out["y"].numpy()]
        np.add.at(hits, cls, ok.numpy())
        np.add.at(seen, cls, 1)
    assert res["acc_agg"] == acc
    np.testing.assert_array_equal(res["per_class"], np.where(seen > 0, hits / np.maximum(seen, 1), np.nan))


def test_embed_split_layout_and_eval_mode(data):
    task = _task("protonet", "rotation")
    task.train()
    feats = embed_split(task, data.images[:6], "cpu", normalize=_norm, batch_size=8)  # chunks of 2 images
    assert feats.shape == (6, 4, 64) and task.training
    task.eval()
    with torch.no_grad():
        x = _norm(data.images[4:6])
        direct = task.learner.encoder(task.sla.transform(x)).view(2, 4, 64)  # row b*M + j = T_j(x[b])
        assert torch.equal(feats[4:6], direct)
        assert torch.equal(feats[5, 1], task.learner.encoder(torch.rot90(x, 1, dims=(-2, -1)))[1])


def test_one_embedding_serves_several_evaluations(data):
    task = _task("r2d2", "rotation")
    feats = embed_split(task, data.images, "cpu", normalize=_norm)
    for ways, shots in ((3, 1), (5, 2)):  # two episode shapes from one embedding
        fresh = evaluate_episodes(task, data, ways, shots, 2, 4, 0, "cpu", normalize=_norm, strategy="embed_once")
        reused = evaluate_episodes(task, data, ways, shots, 2, 4, 0, "cpu", normalize=_norm, features=feats)
        assert reused["acc_agg"] == fresh["acc_agg"] and reused["acc_single"] == fresh["acc_single"]
    with pytest.raises(ValueError, match="features are for the embed-once path, but strategy='per_episode'"):
        evaluate_episodes(task, data, 3, 1, 2, 4, 0, "cpu", normalize=_norm, features=feats, strategy="per_episode")
    with pytest.raises(ValueError, match=r"features of shape \(10, 4, 64\) do not belong to this split"):
        evaluate_episodes(task, data, 3, 1, 2, 4, 0, "cpu", normalize=_norm, features=feats[:10])


def test_strategy_choice_and_errors(data):
    proto = _task("protonet", "none")
    # auto: embed once when the episodes hold at least as many images as the split (50 here; 3*(1+2) per episode);
    # either way the logits are the same (test above), so this is only about cost
    assert choose_strategy(proto, 50, 5, 3, 1, 2) == "per_episode"
    assert choose_strategy(proto, 50, 6, 3, 1, 2) == "embed_once"
    assert choose_strategy(proto, 50, 1, 3, 1, 2, "embed_once") == "embed_once"
    assert choose_strategy(proto, 50, 10**4, 3, 1, 2, "per_episode") == "per_episode"
    with pytest.raises(ValueError, match="unknown evaluation strategy 'fast'; choose one of auto, embed_once"):
        choose_strategy(proto, 50, 6, 3, 1, 2, "fast")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        embed_split(proto, data.images, "cpu", normalize=_norm, batch_size=0)


class _AdaptingLearner(nn.Module):
    """A stand-in for the MAML family: an encoder but no head_from_features (features depend on the episode)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Conv4(1, 28)

    def forward(self, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, ways: int) -> torch.Tensor:
        return ProtoNet(self.encoder)(sx, sy, qx, ways)


def test_maml_family_keeps_the_per_episode_path(data):
    torch.manual_seed(0)
    task = EpisodeTask(_AdaptingLearner(), "rotation", WAYS, SHOTS, QUERIES)
    assert choose_strategy(task, 50, 10**4, WAYS, SHOTS, QUERIES) == "per_episode"
    with pytest.raises(ValueError, match="needs a learner with head_from_features.*use strategy='per_episode'"):
        choose_strategy(task, 50, 10**4, WAYS, SHOTS, QUERIES, "embed_once")
    res = evaluate_episodes(task, data, WAYS, SHOTS, QUERIES, EPISODES, 1, "cpu", normalize=_norm)
    ref = evaluate_episodes(task, data, WAYS, SHOTS, QUERIES, EPISODES, 1, "cpu", normalize=_norm,
                            strategy="per_episode")
    assert res["acc_agg"] == ref["acc_agg"] and len(ref["acc_agg"]) == EPISODES


def test_maml_learner_has_no_feature_head():
    from episodes.maml import MAMLLearner

    task = EpisodeTask(MAMLLearner(Conv4(1, 28), WAYS * 4, "maml"), "rotation", WAYS, SHOTS, QUERIES)
    assert choose_strategy(task, 50, 10**4, WAYS, SHOTS, QUERIES) == "per_episode"


# --- sla-fewshot: auto test episodes, --test-only --------------------------------------------------------------


def test_auto_test_episodes_resolution():
    assert FewShotConfig().test_episodes == 0  # auto by default
    for learner in ("protonet", "r2d2", "svm"):
        assert resolve_test_episodes(FewShotConfig(learner=learner)) == 10_000
    for learner in ("maml", "fomaml", "metasgd", "anil"):
        assert resolve_test_episodes(FewShotConfig(learner=learner)) == 600
    assert resolve_test_episodes(FewShotConfig(learner="maml", test_episodes=50)) == 50
    check_config(FewShotConfig())
    with pytest.raises(ValueError, match="--test-episodes must be >= 1, or 0 for the learner's default; got -1"):
        check_config(FewShotConfig(test_episodes=-1))


def test_test_only_without_best_checkpoint_is_a_clear_error(tmp_path, capsys):
    # the data root does not exist either: the missing checkpoint is reported before any data is read
    rc = main(["--out", str(tmp_path / "run"), "--test-only", "--data-root", str(tmp_path / "nowhere"),
               "--wandb", "disabled"])
    err = capsys.readouterr().err
    assert rc == 2 and "best.pt, which does not exist" in err and "without --test-only" in err
    assert "Traceback" not in err and "Omniglot not found" not in err


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))[1:]


@pytest.mark.slow
@pytest.mark.realdata
def test_test_only_retests_a_finished_run(omniglot_root, tmp_path, monkeypatch, capsys):
    """Auto episodes are resolved once and recorded; --test-only reproduces the run's test from best.pt exactly,
    overwrites metrics.json and test_episodes.csv, and leaves the training files alone."""
    monkeypatch.setitem(AUTO_TEST_EPISODES, "protonet", 4)  # 10,000 in real life; the resolution is the point
    out = tmp_path / "run"
    trained = run(FewShotConfig(data_root=str(omniglot_root), train_episodes=2, val_every=2, val_episodes=2,
                                test_episodes=0, queries=2, wandb="disabled", num_threads=1, checkpoint_every=1,
                                out=str(out)))
    assert trained["test/episodes"] == 4 and len(_csv_rows(out / "test_episodes.csv")) == 4
    assert "test_episodes: 4" in (out / "config.yaml").read_text()  # the resolved number is recorded
    first = read_json(out / "metrics.json")
    assert first["test/episodes"] == 4 and first["config"]["test_episodes"] == 4
    kept = {n: (out / n).read_bytes() for n in ("config.yaml", "checkpoint.pt", "best.pt", "train_episodes.csv")}
    rows = _csv_rows(out / "test_episodes.csv")

    assert main(["--config", str(out / "config.yaml"), "--test-only"]) == 0
    assert "(4 episodes)" in capsys.readouterr().out
    again = read_json(out / "metrics.json")
    for k in ("test/acc", "test/acc_single", "test/acc_agg", "test/acc_agg_ci95", "val/best_acc", "test/episodes"):
        assert again[k] == first[k], k
    assert again["history"] == first["history"] and again["config"]["test_only"] is True
    assert _csv_rows(out / "test_episodes.csv") == rows

    assert main(["--config", str(out / "config.yaml"), "--test-only", "--test-episodes", "6"]) == 0
    more = read_json(out / "metrics.json")
    assert more["test/episodes"] == 6 and math.isfinite(more["test/acc"])
    rows6 = _csv_rows(out / "test_episodes.csv")
    assert len(rows6) == 6 and rows6[:4] == rows  # episode e is a function of (seed, e): the first 4 are the same
    assert {n: (out / n).read_bytes() for n in kept} == kept  # no training, no new checkpoint or config

    # the trained weights on real test characters (30 of them): embed-once == per-episode, exactly
    from episodes.data import load_fewshot
    from episodes.recipe import load_best, make_task
    from fewshot_sla import get_transform

    cfg = FewShotConfig(data_root=str(omniglot_root), queries=2)
    task = make_task(cfg, get_transform("rotation"), (1, 28, 28))
    load_best(task, out, torch.device("cpu"))
    test = load_fewshot("omniglot", omniglot_root, "test")
    keep = test.labels < 30
    sub = FewShotData(test.images[keep], test.labels[keep], test.class_names[:30])
    ref, res = (evaluate_episodes(task, sub, 5, 1, 15, 20, 0, "cpu", normalize=_norm, strategy=s)
                for s in ("per_episode", "embed_once"))
    assert res["acc_agg"] == ref["acc_agg"] and res["acc_single"] == ref["acc_single"]
    assert np.mean(ref["acc_agg"]) > 0.3  # trained for 2 steps, but far above chance (0.2): real features


def test_svm_head_batches_are_bounded_by_the_features_bytes(data, monkeypatch):
    """MetaOptNet-SVM's episodes go to its batched head in calls whose gathered features fit HEAD_BATCH_BYTES; a cap
    of one episode's features gives one call per episode and the same logits as one call for all."""
    import episodes.evaluate as ev

    task = _task("svm", "rotation")
    feats = embed_split(task, data.images, "cpu", normalize=_norm)
    kw = dict(normalize=_norm, features=feats)
    together = list(episode_logits(task, data, WAYS, SHOTS, QUERIES, EPISODES, 5, "cpu", **kw))
    calls = []
    head = task.learner.head_from_features_batch
    monkeypatch.setattr(task.learner, "head_from_features_batch",
                        lambda f, *a, **k: calls.append(len(f)) or head(f, *a, **k))
    monkeypatch.setattr(ev, "HEAD_BATCH_BYTES", WAYS * (SHOTS + QUERIES) * 4 * feats.shape[-1] * feats.element_size())
    alone = list(episode_logits(task, data, WAYS, SHOTS, QUERIES, EPISODES, 5, "cpu", **kw))
    assert calls == [1] * EPISODES
    for (_, ag_t, si_t, _), (_, ag_a, si_a, _) in zip(together, alone):
        torch.testing.assert_close(ag_a, ag_t, rtol=0, atol=1e-5)
        assert torch.equal(ag_a.argmax(1), ag_t.argmax(1)) and torch.equal(si_a.argmax(1), si_t.argmax(1))
