"""The long-tail test evaluation: one ``predict_modes`` call per batch (the classes each ``predict(x, mode)``
gives), the batch chosen per device (``--eval-batch 0``) or by the flag, and the same predictions at any batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshot_sla import SLAClassifier, runs
from fewshot_sla.config import to_dict
from fewshot_sla.io import normalize
from fewshot_sla.nets import ResNetCIFAR
from longtail.config import LTConfig
from longtail.recipe import EVAL_BATCH, FREE_KEYS, check_config, eval_batch_size, evaluate
from longtail.reporting import GROUP_IGNORE

STATS = ((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))


@pytest.fixture(scope="module")
def sla_sd() -> SLAClassifier:
    """A fixed-seed SLA+SD ResNet-20 (rotation, M = 4) whose BatchNorm running statistics moved off their init."""
    torch.manual_seed(0)
    model = SLAClassifier(ResNetCIFAR(20), 10, "rotation", distill=True)
    model(torch.randn(16, 3, 32, 32) * 1.5 + 0.3, torch.arange(16) % 10)  # train mode: updates the running stats
    return model.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """23 uint8 test images: batches of 5 leave 3, of 11 leave a lone one (which joins the batch before it); of 2,
    a lone one too."""
    return torch.randint(0, 256, (23, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_evaluate_gives_each_modes_own_predictions(sla_sd, images):
    """What the evaluation did before predict_modes: predict(x, mode) per mode, batches of 500."""
    got = evaluate(sla_sd, images, torch.device("cpu"), STATS, batch=500)
    x = normalize(images, *STATS)
    assert list(got) == ["single", "aggregated", "distilled"]
    for mode, pred in got.items():
        assert pred.dtype == np.int64 and pred.shape == (23,)
        np.testing.assert_array_equal(pred, sla_sd.predict(x, mode).argmax(1).numpy(), err_msg=mode)
    # the three heads do not all agree on an untrained model: the test tells the modes apart
    assert not (np.array_equal(got["single"], got["aggregated"]) and np.array_equal(got["single"], got["distilled"]))


def test_the_batch_changes_no_prediction(sla_sd, images):
    """At most 8, 20, 44, 100 (auto on the CPU) and 500 inputs per pass: batches of 2 (2+...+2+3), 5 (5+5+5+5+3),
    11 (11+12), 25 and 125 images (one batch of 23) with M = 4: the same classes in every mode."""
    cpu = torch.device("cpu")
    ref = evaluate(sla_sd, images, cpu, STATS, batch=500)
    for batch in (8, 20, 44, 0):
        got = evaluate(sla_sd, images, cpu, STATS, batch=batch)
        assert list(got) == list(ref)
        for mode in ref:
            np.testing.assert_array_equal(got[mode], ref[mode], err_msg=f"batch {batch}, {mode}")


def test_evaluate_leaves_a_training_model_training(sla_sd, images):
    sla_sd.train()
    try:
        evaluate(sla_sd, images[:4], torch.device("cpu"), STATS)
        assert all(m.training for m in sla_sd.modules())
    finally:
        sla_sd.eval()


def test_eval_batch_per_device_and_by_flag():
    assert eval_batch_size(0, torch.device("cpu")) == EVAL_BATCH["cpu"] == 100
    assert eval_batch_size(0, torch.device("cuda", 1)) == EVAL_BATCH["cuda"] == 1000
    assert eval_batch_size(0, torch.device("meta")) == 500  # a device type without an entry
    assert eval_batch_size(64, torch.device("cpu")) == eval_batch_size(64, torch.device("cuda")) == 64
    # SLA's aggregated pass scores M copies of each image: M = 4 -> a quarter of the images, at least 2
    assert eval_batch_size(0, torch.device("cpu"), 4) == 25 and eval_batch_size(0, torch.device("cuda"), 4) == 250
    assert eval_batch_size(64, torch.device("cpu"), 4) == 16 and eval_batch_size(6, torch.device("cpu"), 4) == 2


@pytest.mark.parametrize("bad", [-1, 1])
def test_eval_batch_below_two_is_refused(bad):
    with pytest.raises(ValueError, match=f"--eval-batch must be 0 .* or >= 2 test images, got {bad}"):
        check_config(LTConfig(eval_batch=bad))
    check_config(LTConfig(eval_batch=2))


def test_eval_batch_is_speed_only():
    """It may change on --resume, and it does not define the method (old records, without the key, keep their
    identity and group)."""
    assert "eval_batch" in FREE_KEYS and "eval_batch" in GROUP_IGNORE
    ident = runs.identity(to_dict(LTConfig(eval_batch=64)), GROUP_IGNORE, {})
    old = {k: v for k, v in to_dict(LTConfig()).items() if k != "eval_batch"}
    assert ident == runs.identity(old, GROUP_IGNORE, {})
