"""longtail.schedules: LDAM-DRW's LR and DRW plan, and its scaling to short runs."""

from __future__ import annotations

import pytest

from longtail.schedules import LTSchedule, cosine_lr, drw_active, ldam_lr, lr_at, scale_epochs


def _ldam_adjust_learning_rate(epoch, lr=0.1):
    """LDAM-DRW's cifar_train.adjust_learning_rate, transcribed (the oracle)."""
    epoch = epoch + 1
    if epoch <= 5:
        return lr * epoch / 5
    if epoch > 180:
        return lr * 0.0001
    if epoch > 160:
        return lr * 0.01
    return lr


def test_ldam_lr_matches_reference_every_epoch():
    for e in range(200):
        assert ldam_lr(e) == pytest.approx(_ldam_adjust_learning_rate(e), rel=1e-12), e
        assert ldam_lr(e, base_lr=0.2) == pytest.approx(_ldam_adjust_learning_rate(e, 0.2), rel=1e-12)


def test_ldam_lr_landmarks():
    assert [ldam_lr(e) for e in (0, 1, 4)] == pytest.approx([0.02, 0.04, 0.1])
    assert ldam_lr(159) == 0.1
    assert ldam_lr(160) == pytest.approx(1e-3) and ldam_lr(179) == pytest.approx(1e-3)
    assert ldam_lr(180) == pytest.approx(1e-5) and ldam_lr(199) == pytest.approx(1e-5)  # x0.01 twice
    assert ldam_lr(0.5) == pytest.approx(0.03)  # fractional epochs: per-step warm-up
    assert ldam_lr(3, warmup=0) == 0.1
    assert ldam_lr(50, milestones=(10, 20, 30), gamma=0.1) == pytest.approx(1e-4)


def test_ldam_lr_errors():
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        ldam_lr(-1)
    with pytest.raises(ValueError, match="milestones must be increasing"):
        ldam_lr(1, milestones=(180, 160))


def test_drw_active_matches_ldam_index():
    for e in range(200):
        assert drw_active(e) == (e // 160 == 1)  # LDAM-DRW: betas[epoch // 160]
    assert drw_active(3, 3) and not drw_active(2, 3)
    assert not drw_active(10**6, None)


def test_scale_epochs():
    assert scale_epochs(200) == LTSchedule(epochs=200, warmup=5, milestones=(160, 180), drw_epoch=160)
    s20 = scale_epochs(20)
    assert s20 == LTSchedule(epochs=20, warmup=1, milestones=(16, 18), drw_epoch=16)
    assert s20.lr(0) == pytest.approx(0.1) and s20.lr(15) == 0.1
    assert s20.lr(16) == pytest.approx(1e-3) and s20.lr(18) == pytest.approx(1e-5)
    assert not s20.drw(15) and s20.drw(16)
    assert scale_epochs(100) == LTSchedule(epochs=100, warmup=3, milestones=(80, 90), drw_epoch=80)  # 2.5 -> 3
    assert scale_epochs(10).milestones == (8, 9)
    for t in range(3, 400):
        s = scale_epochs(t)
        assert 1 <= s.warmup and 0 < s.milestones[0] < s.milestones[1] < t and 0 < s.drw_epoch < t
        if t >= 10:
            assert s.drw_epoch == s.milestones[0]
    assert scale_epochs(3) == LTSchedule(epochs=3, warmup=1, milestones=(1, 2), drw_epoch=2)
    s400 = scale_epochs(400)
    assert s400 == LTSchedule(epochs=400, warmup=10, milestones=(320, 360), drw_epoch=320)
    with pytest.raises(ValueError, match="total_epochs must be a positive integer"):
        scale_epochs(0)


@pytest.mark.parametrize("epochs", [5, 30, 200])
def test_per_epoch_warmup_is_the_old_schedule_exactly(epochs):
    """warmup="epoch" (every run before per-step warm-up) gives the per-epoch functions bit for bit."""
    plan = scale_epochs(epochs)
    for e in range(epochs):
        for b in (0, 7):
            assert lr_at("ldam", "epoch", plan, 0.1, e, b, 10) == plan.lr(e, 0.1)
            assert lr_at("cosine", "epoch", plan, 0.1, e, b, 10) == cosine_lr(e, epochs, 0.1, plan.warmup)


def test_per_step_warmup_ramps_over_the_steps_then_follows_the_schedule():
    plan, b = scale_epochs(200), 4  # warm-up 5 epochs = 20 steps
    ramp = [lr_at("ldam", "step", plan, 0.1, s // b, s % b, b) for s in range(20)]
    assert ramp == pytest.approx([0.1 * (s + 1) / 20 for s in range(20)], rel=1e-12)
    for e in range(5, 200):  # after the warm-up: LDAM-DRW's per-epoch steps, whatever the step
        assert {lr_at("ldam", "step", plan, 0.1, e, i, b) for i in range(b)} == {plan.lr(e, 0.1)}
    # the cosine: continuous through the end of the warm-up and down towards 0 within each epoch
    cos = [lr_at("cosine", "step", plan, 0.1, e, i, b) for e in (5, 199) for i in range(b)]
    assert cos[0] == 0.1 and cos[:4] == sorted(cos[:4], reverse=True) and 0 < cos[-1] < cos[-2] < 1e-5


def test_a_one_epoch_warmup_is_no_warmup_per_epoch_but_is_one_per_step():
    """What results.md's 30-epoch runs did: scale_epochs(30)'s warm-up is 1 epoch, so per epoch the first epoch
    already trains at the full lr; per step it ramps over the first epoch's steps."""
    plan = scale_epochs(30)
    assert plan.warmup == 1
    assert lr_at("cosine", "epoch", plan, 0.1, 0, 0, 194) == 0.1
    assert lr_at("cosine", "step", plan, 0.1, 0, 0, 194) == pytest.approx(0.1 / 194)
    assert lr_at("cosine", "step", plan, 0.1, 0, 193, 194) == pytest.approx(0.1)


def test_lr_at_errors():
    plan = scale_epochs(10)
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lr_at("step", "step", plan, 0.1, 0, 0, 1)
    with pytest.raises(ValueError, match="0 <= batch < batches_per_epoch"):
        lr_at("ldam", "step", plan, 0.1, 0, 3, 3)
