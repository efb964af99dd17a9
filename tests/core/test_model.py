"""Regimes: SLA (SI / AG / SD), random-subset SLA, DA and MT baselines."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fewshot_sla import DataAugmentation, MultiTask, SLAClassifier, aggregate_logits, expand
from fewshot_sla.nets import MLP, ResNetCIFAR


def tiny(n=3, **kw):
    torch.manual_seed(0)
    model = SLAClassifier(MLP((3, 6, 6), hidden=16, depth=1), n, **kw)
    return model.eval()


def test_forward_outputs_and_loss_match_functions():
    model = tiny(transform="rotation")
    x, y = torch.randn(4, 3, 6, 6), torch.tensor([0, 1, 2, 1])
    out = model(x, y)
    xa, yj = expand(x, y, "rotation")
    z = model.joint_head(model.backbone(xa))
    torch.testing.assert_close(out["joint_logits"], z)
    assert torch.equal(out["y_joint"], yj)
    torch.testing.assert_close(out["loss"], F.cross_entropy(z, yj))
    torch.testing.assert_close(out["logits"], aggregate_logits(z, 4))


def test_predict_modes_agree_with_full_expansion():
    model = tiny(transform="rotation", distill=True)
    x = torch.randn(5, 3, 6, 6)
    z = model.joint_head(model.backbone(model.transform(x)))
    torch.testing.assert_close(model.predict(x, "aggregated"), aggregate_logits(z, 4))
    torch.testing.assert_close(model.predict(x, "single"), z.view(5, 4, 3, 4)[:, 0, :, 0])
    assert model.predict(x, "distilled").shape == (5, 3)
    assert model.modes() == ("single", "aggregated", "distilled")
    with pytest.raises(ValueError, match="unknown predict mode 'avg'"):
        model.predict(x, "avg")
    with pytest.raises(ValueError, match="distill=True"):
        tiny().predict(x, "distilled")


@pytest.mark.parametrize(
    "build",
    [
        lambda: SLAClassifier(ResNetCIFAR(20), 3, "none"),
        lambda: SLAClassifier(ResNetCIFAR(20), 3, "rotation"),
        lambda: SLAClassifier(ResNetCIFAR(20), 3, "rotation", distill=True),
        lambda: SLAClassifier(ResNetCIFAR(20), 3, "color_perm", distill=True),
        lambda: DataAugmentation(ResNetCIFAR(20), 3, "rotation"),
        lambda: MultiTask(ResNetCIFAR(20), 3, "rotation"),
    ],
    ids=["baseline", "SLA", "SLA+SD", "SLA+SD-color", "DA", "MT"],
)
def test_predict_modes_equal_predict_of_each_mode_exactly(build):
    """One call for every mode gives bit for bit each predict(x, mode): the same operations on the same inputs
    (SI and SD share one backbone pass, AG has its own over the M copies), on a conv net with BatchNorm running
    statistics away from their init, called in train mode (restored afterwards)."""
    torch.manual_seed(0)
    model = build()
    model(torch.randn(8, 3, 32, 32) * 2 + 0.5, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))  # move the running stats
    x = torch.randn(6, 3, 32, 32)
    got = model.predict_modes(x)
    assert model.training and all(m.training for m in model.modules())
    assert tuple(got) == model.modes()
    for mode in model.modes():
        assert torch.equal(got[mode], model.predict(x, mode)), mode
        assert got[mode].shape == (6, 3) and not got[mode].requires_grad


def test_predict_modes_reads_the_backbone_once_per_distinct_input():
    """SLA+SD: 1 + M image passes (x, then its M copies), not 1 + M + 1."""
    model = tiny(transform="rotation", distill=True)
    seen: list[int] = []
    model.backbone.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    model.predict_modes(torch.randn(5, 3, 6, 6))
    assert seen == [5, 20]


def test_sd_loss_added_and_teacher_detached_in_total():
    model = tiny(transform="rotation", distill=True, temperature=2.0)
    x, y = torch.randn(4, 3, 6, 6), torch.tensor([0, 1, 2, 1])
    out = model(x, y)
    assert out["loss"].item() == pytest.approx(
        (F.cross_entropy(out["joint_logits"], out["y_joint"]) + out["sd_loss"]).item(), rel=1e-6
    )


def test_baseline_m1_is_plain_ce():
    model = tiny(transform="none")
    x, y = torch.randn(4, 3, 6, 6), torch.tensor([0, 1, 2, 1])
    out = model(x, y)
    logits = model.joint_head(model.backbone(x))
    torch.testing.assert_close(out["loss"], F.cross_entropy(logits, y))
    torch.testing.assert_close(model.predict(x, "single"), logits)
    assert model.modes() == ("single",)


def test_subset_training_cost_and_errors():
    model = tiny(transform="rotation", subset_k=2)
    out = model(torch.randn(4, 3, 6, 6), torch.tensor([0, 1, 2, 1]))
    assert out["joint_logits"].shape == (8, 12)
    with pytest.raises(ValueError, match="subset_k must be in"):
        tiny(transform="rotation", subset_k=5)
    with pytest.raises(ValueError, match="self-distillation needs"):
        tiny(transform="rotation", subset_k=2, distill=True)


def test_labels_checked():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        tiny()(torch.randn(2, 3, 6, 6), torch.tensor([0, 3]))


def test_custom_criterion_used():
    calls = []

    def crit(z, t):
        calls.append((tuple(z.shape), tuple(t.shape)))
        return z.sum() * 0

    model = tiny(transform="rotation2", criterion=crit)
    model(torch.randn(2, 3, 6, 6), torch.tensor([0, 1]))
    assert calls == [((4, 6), (4,))]


def test_da_and_mt():
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 6, 6), torch.tensor([0, 2])
    da = DataAugmentation(MLP((3, 6, 6), 8, 1), 3, "rotation")
    out = da(x, y)
    logits = da.head(da.backbone(da.transform(x)))
    torch.testing.assert_close(out["loss"], F.cross_entropy(logits, torch.tensor([0, 0, 0, 0, 2, 2, 2, 2])))
    mt = MultiTask(MLP((3, 6, 6), 8, 1), 3, "rotation")
    out = mt(x, y)
    f = mt.backbone(mt.transform(x))
    expected = F.cross_entropy(mt.class_head(f), y.repeat_interleave(4)) + F.cross_entropy(
        mt.transform_head(f), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    )
    torch.testing.assert_close(out["loss"], expected)
    assert mt.predict(x).shape == (2, 3) and da.predict(x).shape == (2, 3)


def test_backbone_without_out_dim():
    with pytest.raises(ValueError, match="out_dim"):
        SLAClassifier(nn.Flatten(), 3)
    assert SLAClassifier(nn.Flatten(), 3, feat_dim=12).joint_head.in_features == 12


def test_resnet_cifar_shapes():
    net = ResNetCIFAR(20)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    assert sum(p.numel() for p in ResNetCIFAR(32).parameters()) == pytest.approx(464_154, rel=0.01)
    with pytest.raises(ValueError, match="6n\\+2"):
        ResNetCIFAR(21)


def test_sla_training_learns_rotations():
    """A few SGD steps lower the SLA loss (the joint head is trainable end to end)."""
    torch.manual_seed(0)
    model = SLAClassifier(MLP((1, 6, 6), 32, 1), 2, "rotation").train()
    x = torch.rand(16, 1, 6, 6)
    y = torch.randint(0, 2, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    first = None
    for _ in range(30):
        loss = model(x, y)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


# --- predict() runs in eval mode and restores the previous modes ------------------------------
def _bn_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize(
    "build,modes",
    [
        (lambda: SLAClassifier(MLP((3, 6, 6), 16, 1), 3, "rotation", distill=True),
         ("single", "aggregated", "distilled")),
        (lambda: DataAugmentation(MLP((3, 6, 6), 16, 1), 3, "rotation"), ("single",)),
        (lambda: MultiTask(MLP((3, 6, 6), 16, 1), 3, "rotation"), ("single",)),
    ],
    ids=["SLAClassifier", "DataAugmentation", "MultiTask"],
)
def test_predict_uses_eval_mode_and_restores_train_mode(build, modes):
    torch.manual_seed(0)
    model = build()
    model(torch.randn(8, 3, 6, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))  # non-trivial running stats
    model.train()
    before = _bn_buffers(model)
    assert before, "the backbone should have BatchNorm buffers"
    x = torch.randn(5, 3, 6, 6) * 3 + 1  # batch statistics far from the running ones
    in_train = {mode: model.predict(x, mode) for mode in modes}
    assert model.training and all(m.training for m in model.modules())
    for k, v in _bn_buffers(model).items():
        assert torch.equal(v, before[k]), f"predict changed {k}"
    model.eval()
    for mode in modes:
        torch.testing.assert_close(in_train[mode], model.predict(x, mode))
        assert in_train[mode].requires_grad is False
    assert not model.training  # an eval-mode model stays in eval mode


def test_predict_restores_mixed_submodule_modes():
    model = tiny(transform="rotation").train()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm1d))
    bn.eval()  # e.g. a frozen BatchNorm inside a model that trains
    model.predict(torch.randn(2, 3, 6, 6))
    assert model.training and model.joint_head.training and not bn.training


def test_predict_restores_mode_after_an_error():
    model = tiny(transform="rotation").train()
    with pytest.raises(ValueError, match="unknown predict mode"):
        model.predict(torch.randn(2, 3, 6, 6), "avg")
    assert model.training


# --- distill_scale --------------------------------------------------------------------------------
def test_distill_scale_reaches_the_kl_term_only():
    from fewshot_sla import self_distillation_loss

    seen = []

    def sd_crit(z, t):
        seen.append(z.detach().clone())
        return F.cross_entropy(z, t)

    model = tiny(transform="rotation", distill=True, temperature=2.0, distill_scale=30.0, sd_criterion=sd_crit)
    x, y = torch.randn(4, 3, 6, 6), torch.tensor([0, 1, 2, 1])
    out = model(x, y)
    assert torch.equal(seen[0], out["distilled_logits"].detach())  # the CE part gets the raw logits
    teacher = aggregate_logits(out["joint_logits"], 4)
    expected = self_distillation_loss(out["distilled_logits"], teacher, y, 2.0, scale=30.0)
    torch.testing.assert_close(out["sd_loss"], expected.detach())
    unscaled = self_distillation_loss(out["distilled_logits"], teacher, y, 2.0)
    assert not torch.allclose(out["sd_loss"], unscaled.detach())
    with pytest.raises(ValueError, match="distill_scale must be > 0"):
        tiny(distill=True, distill_scale=0.0)


def test_inference_batches_never_leave_a_lone_last_row():
    from fewshot_sla.utils import inference_batches

    def spans(n, size):
        return [(s.start, s.stop) for s in inference_batches(n, size)]

    assert spans(1000, 500) == [(0, 500), (500, 1000)]
    assert spans(1001, 500) == [(0, 500), (500, 1001)]  # the lone 1001st row joins the batch before it
    assert spans(1002, 500) == [(0, 500), (500, 1000), (1000, 1002)]
    assert spans(7, 1) == [(0, 2), (2, 4), (4, 7)]  # batches of at least 2
    assert spans(1, 500) == [(0, 1)] and spans(0, 500) == []
