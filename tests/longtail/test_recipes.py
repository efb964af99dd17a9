"""The shipped long-tail recipes (longtail/configs/*.yaml): each parses, holds the LDAM-DRW protocol and its
loss's weight decay, and that weight decay is the one sla-longtail's optimiser trains with (baseline and
SLA+SD, which the command line adds with ``--transform rotation --sd``)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fewshot_sla import engine as eng
from fewshot_sla.config import parse_config
from longtail import benchmark
from longtail.config import LTConfig
from longtail.data import LTData, class_counts

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "longtail" / "configs").glob("*.yaml"))
# file stem's loss part -> (loss, drw, weight decay): see each file's comment for the source of the value
EXPECTED = {
    "ce": ("ce", False, 2e-4),
    "ldam_drw": ("ldam", True, 2e-4),
    "logit_adjusted": ("logit-adjusted", False, 2e-4),
    "vs": ("vs", False, 2e-4),
}
PROTOCOL = dict(dataset="cifar10", profile="exp", subset_seed=0, sampler="instance", transform="none", sd=False,
                epochs=200, schedule="ldam", warmup="epoch", batch_size=128, lr=0.1, momentum=0.9, backbone="resnet32")
NAME = re.compile(r"^cifar10_ir(?P<ratio>\d+)_(?P<loss>[a-z_]+)$")


def test_every_recipe_is_there():
    assert sorted(p.stem for p in RECIPES) == sorted(f"cifar10_ir{r}_{k}" for r in (100, 10) for k in EXPECTED)


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_fields(path):
    cfg = parse_config(LTConfig, ["--config", str(path)])
    m = NAME.match(path.stem)
    assert m, f"{path.name}: expected cifar10_ir<ratio>_<loss>.yaml"
    loss, drw, wd = EXPECTED[m["loss"]]
    assert {k: getattr(cfg, k) for k in PROTOCOL} == PROTOCOL
    assert (cfg.imbalance_ratio, cfg.loss, cfg.drw, cfg.weight_decay) == (float(m["ratio"]), loss, drw, wd)
    assert cfg.out == f"runs/longtail/{path.stem}"
    text = path.read_text()
    assert "--transform rotation --sd" in text and "Weight decay" in text  # SLA+SD and the value's source


def fake_data(n_classes: int = 10) -> LTData:
    """A few blank images per class with CIFAR-10-LT-100's class order (the optimiser does not look at them)."""
    counts = [max(1, c // 500) for c in class_counts(5000, n_classes, 100.0, "exp")]
    labels = torch.repeat_interleave(torch.arange(n_classes), torch.tensor(counts))
    return LTData(torch.zeros(len(labels), 3, 32, 32, dtype=torch.uint8), labels,
                  torch.zeros(n_classes, 3, 32, 32, dtype=torch.uint8), torch.arange(n_classes),
                  [f"c{i}" for i in range(n_classes)], counts)


@pytest.mark.parametrize("sla", [False, True], ids=["baseline", "sla_sd"])
@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_weight_decay_in_effect(path, sla, tmp_path, monkeypatch):
    """benchmark.run builds the optimiser; catch it where run hands it to the engine and read its param group."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    seen: dict[str, object] = {}

    def fit(model, optimizer, loop, ctx, logger=None, config=None):
        seen.update(model=model, optimizer=optimizer)
        return eng.FitResult(0, False, [], {})

    monkeypatch.setattr("longtail.recipe.load_data", lambda cfg, progress: fake_data())  # run imports it when called
    monkeypatch.setattr(eng, "fit", fit)
    argv = ["--config", str(path)] + (["--transform", "rotation", "--sd"] if sla else [])
    cfg = parse_config(LTConfig, argv)
    assert benchmark.run(replace(cfg, out=str(tmp_path), device="cpu", wandb="disabled")) == {"epochs_done": 0}
    opt, model = seen["optimizer"], seen["model"]
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert group["weight_decay"] == cfg.weight_decay == EXPECTED[NAME.match(path.stem)["loss"]][2]
    assert (group["lr"], group["momentum"]) == (0.1, 0.9)
    # every parameter is decayed, the SD head's included
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters()}
    assert (model.m, model.distill) == ((4, True) if sla else (1, False))
