"""Metrics against values worked by hand (paper eq. 17 for CS(k))."""

import numpy as np
import pytest

from facemtl.metrics import (
    accuracy, confusion_matrix, cumulative_score, group_accuracy, group_names, mae, mse, to_groups,
)


def test_mae_mse_accuracy():
    p, t = np.array([10, 20, 30, 44]), np.array([12, 20, 25, 40])
    assert mae(p, t) == pytest.approx((2 + 0 + 5 + 4) / 4)
    assert mse(p, t) == pytest.approx((4 + 0 + 25 + 16) / 4)
    assert accuracy(np.array([1, 0, 2]), np.array([1, 1, 2])) == pytest.approx(2 / 3)


def test_cumulative_score_by_hand():
    # errors 0, 1, 2.5, 5, 11
    p = np.array([30, 31, 32.5, 35, 41])
    cs = cumulative_score(p, np.full(5, 30.0))
    assert cs[0] == pytest.approx(1 / 5)
    assert cs[1] == pytest.approx(2 / 5)
    assert cs[2] == pytest.approx(2 / 5)
    assert cs[3] == pytest.approx(3 / 5)
    assert cs[5] == pytest.approx(4 / 5)
    assert cs[10] == pytest.approx(4 / 5)
    assert list(cs) == list(range(11))


def test_groups():
    edges = [0, 3, 10, 20]
    assert to_groups(np.array([0, 2, 3, 9.5, 10, 19, 20, 90]), edges).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert group_names(edges) == ["0-2", "3-9", "10-19", "20+"]
    # 2.6 rounds to 3 -> same group as 5; 19.4 rounds to 19 -> group 10-19 as 21? no: 21 is 20+.
    assert group_accuracy(np.array([2.6, 19.4]), np.array([5, 21]), edges) == pytest.approx(0.5)


def test_confusion():
    m = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    assert m.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
