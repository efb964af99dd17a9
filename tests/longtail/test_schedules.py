"""longtail.schedules: LDAM-DRW's LR and DRW plan, and its scaling to short runs."""

from __future__ import annotations

import pytest

from longtail.schedules import LTSchedule, drw_active, ldam_lr, scale_epochs


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
