import math

import pytest

from esacl import metrics

# After task 0: 90 on task 0. After task 1: 60 on task 0, 80 on task 1.
# After task 2: 50 on task 0, 70 on task 1, 95 on task 2.
R = [[90.0, None, None], [60.0, 80.0, None], [50.0, 70.0, 95.0]]


def test_average_accuracy_is_the_mean_of_the_last_row():
    assert metrics.average_accuracy(R) == pytest.approx((50 + 70 + 95) / 3)
    assert metrics.average_accuracy(R[:2]) == pytest.approx(70.0)


def test_learning_accuracy_is_the_diagonal_mean():
    assert metrics.learning_accuracy(R) == pytest.approx((90 + 80 + 95) / 3)


def test_forgetting_uses_the_best_past_accuracy():
    # task 0: best before the last task = max(90, 60) = 90 -> 40; task 1: 80 -> 70: 10.
    assert metrics.forgetting(R) == pytest.approx((40 + 10) / 2)
    # best-past, not first: task 0 rises to 95 after task 1, then falls to 50.
    assert metrics.forgetting([[90.0, None, None], [95.0, 80.0, None], [50.0, 80.0, 99.0]]) == pytest.approx(22.5)


def test_forgetting_per_task_averages_to_the_metric():
    R = [[90.0, None, None], [70.0, 95.0, None], [60.0, 80.0, 99.0]]
    assert metrics.forgetting_per_task(R) == [30.0, 15.0]
    assert sum(metrics.forgetting_per_task(R)) / 2 == metrics.forgetting(R)
    assert metrics.forgetting_per_task(R[:1]) == []


def test_backward_transfer_compares_final_with_just_learned():
    assert metrics.backward_transfer(R) == pytest.approx(((50 - 90) + (70 - 80)) / 2)


def test_single_task_has_no_forgetting_or_transfer():
    assert math.isnan(metrics.forgetting([[88.0]])) and math.isnan(metrics.backward_transfer([[88.0]]))


def test_mean_std_uses_the_sample_std_and_drops_nan():
    m, s = metrics.mean_std([1.0, 2.0, 3.0, math.nan])
    assert (m, s) == pytest.approx((2.0, 1.0))
    assert metrics.mean_std([4.0]) == (4.0, 0.0)
