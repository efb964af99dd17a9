"""``--init FILE``: start any learner from encoder weights in a local state-dict file (e.g. a torchvision
checkpoint with ``--backbone torchvision:resnet18``). Nothing can be downloaded here, so the files are random state
dicts saved by the tests: the weights loaded are the weights used, and a file that does not fit is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from episodes.config import FewShotConfig
from episodes.recipe import build_task, encoder_of, initialize, load_splits_for, resolve
from episodes.train import run
from fewshot_sla import checkpoint, runs
from fewshot_sla.nets import Conv4, ResNet12, load_weights, torchvision_resnet
from fewshot_sla.utils import DataError


def _folder(root: Path, classes: int = 8, per_class: int = 4, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


def _cfg(data: Path, out: Path, init: Path | str = "", **kw) -> FewShotConfig:
    base = dict(dataset="imagefolder", data_root=str(data), class_split=(0.5, 0.25, 0.25), image_size=16, ways=2,
                shots=1, queries=2, train_episodes=2, val_every=0, val_episodes=2, test_episodes=4, wandb="disabled",
                num_threads=1, out=str(out), init=str(init))
    return FewShotConfig(**{**base, **kw})  # type: ignore[arg-type]


def _saved(module: torch.nn.Module, path: Path, seed: int = 7) -> Path:
    torch.manual_seed(seed)
    for p in module.parameters():
        torch.nn.init.normal_(p)
    torch.save(module.state_dict(), path)
    return path


@pytest.mark.parametrize("learner", ["protonet", "pretrain"])
def test_the_weights_loaded_are_the_weights_used(tmp_path, learner):
    data = _folder(tmp_path / "data")
    file = _saved(Conv4(3, 16), tmp_path / "enc.pt")
    want = torch.load(file, weights_only=True)
    cfg = _cfg(data, tmp_path / "r", file, learner=learner, pretrain_epochs=1, batch_size=4)
    recipe = resolve(cfg, load_splits_for(cfg))
    task = build_task(recipe)
    assert not torch.equal(encoder_of(task).state_dict()["net.0.weight"], want["net.0.weight"])
    info = initialize(recipe, task)
    assert info is not None and info["loaded"] == len(want) and info["ignored"] == []
    got = encoder_of(task).state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    # end to end with a zero learning rate: the trained (best) weights are the file's
    run(_cfg(data, tmp_path / "zero", file, learner=learner, lr=0.0, pretrain_epochs=1, batch_size=4))
    best = checkpoint.load(tmp_path / "zero" / "best.pt")["model"]
    key = "episodes.learner.encoder.net.0.weight" if learner == "pretrain" else "learner.encoder.net.0.weight"
    assert torch.equal(best[key], want["net.0.weight"])


def test_the_record_names_the_file_by_content(tmp_path):
    data = _folder(tmp_path / "data")
    a = _saved(Conv4(3, 16), tmp_path / "a.pt")
    b = tmp_path / "elsewhere" / "b.pt"
    b.parent.mkdir()
    shutil.copy(a, b)
    ga = resolve(_cfg(data, tmp_path / "x", a), load_splits_for(_cfg(data, tmp_path / "x", a))).identity()
    gb = resolve(_cfg(data, tmp_path / "y", b), load_splits_for(_cfg(data, tmp_path / "y", b))).identity()
    assert runs.group_id(ga) == runs.group_id(gb) and ga["method"]["init"].startswith("sha1:")
    none = resolve(_cfg(data, tmp_path / "z"), load_splits_for(_cfg(data, tmp_path / "z"))).identity()
    assert runs.group_id(none) != runs.group_id(ga)


def test_a_file_that_does_not_fit_is_refused(tmp_path):
    data = _folder(tmp_path / "data")
    other = _saved(ResNet12(3), tmp_path / "resnet12.pt")
    cfg = _cfg(data, tmp_path / "r", other)
    with pytest.raises(DataError, match=r"does not fit the conv4 encoder: .* tensors are not in it"):
        run(cfg)
    grey = _saved(Conv4(1, 16), tmp_path / "grey.pt")
    with pytest.raises(DataError, match=r"another shape \(e.g. net.0.weight: \(64, 1, 3, 3\) in the file"):
        run(_cfg(data, tmp_path / "g", grey))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="not a weights-only torch file"):
        run(_cfg(data, tmp_path / "j", tmp_path / "junk.pt"))
    with pytest.raises(DataError, match="no such file"):
        run(_cfg(data, tmp_path / "n", tmp_path / "missing.pt"))


def test_a_torchvision_checkpoint_loads_into_its_backbone(tmp_path):
    import torchvision

    full = torchvision.models.resnet18(weights=None)  # what a user downloads: with its ImageNet classifier
    file = _saved(full, tmp_path / "resnet18.pth")
    net = torchvision_resnet("resnet18")
    info = load_weights(net, file)
    assert info["ignored"] == ["fc.bias", "fc.weight"]
    assert torch.equal(net.state_dict()["conv1.weight"], full.state_dict()["conv1.weight"])
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 512) and net.out_dim == 512
    # a checkpoint under "state_dict" with a DDP prefix works too
    torch.save({"state_dict": {f"module.{k}": v for k, v in full.state_dict().items()}}, tmp_path / "ddp.pt")
    assert load_weights(torchvision_resnet("resnet18"), tmp_path / "ddp.pt")["loaded"] == info["loaded"]
