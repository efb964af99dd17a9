import math

import numpy as np
import pytest

from fewshot_sla.metrics import (
    accuracy,
    balanced_accuracy,
    classification_report,
    confusion_matrix,
    mean_ci95,
    per_class_accuracy,
    shot_group_accuracy,
)

Y = [0, 0, 0, 1, 1, 2]
P = [0, 0, 1, 1, 2, 2]


def test_accuracy_and_per_class():
    assert accuracy(Y, P) == pytest.approx(4 / 6)
    np.testing.assert_allclose(per_class_accuracy(Y, P, 4)[:3], [2 / 3, 1 / 2, 1.0])
    assert math.isnan(per_class_accuracy(Y, P, 4)[3])  # class 3 absent from y_true
    assert balanced_accuracy(Y, P) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert confusion_matrix(Y, P, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_shot_groups_and_empty_is_nan():
    acc = [0.9, 0.8, 0.5, 0.1]
    counts = [500, 101, 100, 20]
    g = shot_group_accuracy(acc, counts)
    assert g["many"] == pytest.approx(0.85)
    assert g["medium"] == pytest.approx(0.3)  # 100 and 20 are medium (20..100 inclusive)
    assert math.isnan(g["few"])
    assert shot_group_accuracy([0.2], [19])["few"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="2 per-class accuracies but 3 class counts"):
        shot_group_accuracy([0.1, 0.2], [1, 2, 3])


def test_mean_ci95_hand():
    m, ci = mean_ci95([0.5, 0.7, 0.9, 0.7])
    assert m == pytest.approx(0.7)
    assert ci == pytest.approx(1.96 * np.std([0.5, 0.7, 0.9, 0.7]) / 2)
    assert mean_ci95([0.3]) == (0.3, 0.0)
    assert all(math.isnan(v) for v in mean_ci95([]))


def test_report_keys():
    r = classification_report(Y, P, 3, train_counts=[200, 50, 5], prefix="test/")
    assert set(r) == {"test/acc", "test/balanced_acc", "test/per_class_acc", "test/acc_many", "test/acc_medium",
                      "test/acc_few"}
    assert r["test/acc_few"] == pytest.approx(1.0)


def test_confusion_and_balanced_accuracy_equal_scikit_learns_without_it():
    """The core computes both without scikit-learn (an optional extra); on random labels with classes missing
    from the truth or the predictions they equal scikit-learn's."""
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 9))
        t, p = rng.integers(0, n - 1, 50), rng.integers(1, n, 50)  # class n-1 never true, class 0 never predicted
        assert (confusion_matrix(t, p, n) == sk.confusion_matrix(t, p, labels=np.arange(n))).all()
        assert balanced_accuracy(t, p) == pytest.approx(sk.balanced_accuracy_score(t, p), abs=1e-12)
