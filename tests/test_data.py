import pytest
import torch

from esacl import RunConfig, UserError
from esacl.data import load_benchmark


def digits(**changes):
    return load_benchmark(RunConfig(**changes), torch.device("cpu"))


def test_split_digits_is_five_disjoint_two_class_tasks():
    bench = digits()
    assert bench.n_tasks == 5 and bench.input_shape == (1, 8, 8) and bench.n_classes == 10
    seen = set()
    for task in bench.tasks:
        assert len(task.classes) == 2 and not seen & set(task.classes)
        seen |= set(task.classes)
        assert set(task.y_train.tolist()) == set(task.classes) == set(task.y_test.tolist())
        assert task.x_train.shape[1:] == (1, 8, 8) and task.x_train.dtype == torch.float32
    assert seen == set(range(10))
    assert sum(len(t.y_train) for t in bench.tasks) + sum(len(t.y_test) for t in bench.tasks) == 1797


def test_the_split_is_stratified_fixed_and_normalised():
    bench = digits()
    x_train = torch.cat([t.x_train for t in bench.tasks])
    assert abs(x_train.mean().item()) < 1e-4 and abs(x_train.std().item() - 1) < 1e-3
    y_train = torch.cat([t.y_train for t in bench.tasks])
    y_test = torch.cat([t.y_test for t in bench.tasks])
    share = torch.bincount(y_test, minlength=10) / (torch.bincount(y_train, minlength=10) + torch.bincount(y_test, minlength=10))
    assert ((share - 0.25).abs() < 0.01).all()
    assert torch.equal(digits(seed=3).tasks[0].x_test.sum(), digits(seed=3).tasks[0].x_test.sum())
    other = digits(seed=1)
    assert sorted(torch.cat([t.y_test for t in other.tasks]).tolist()) == sorted(y_test.tolist())


def test_class_order_is_fixed_per_seed():
    assert digits(seed=7).class_order == digits(seed=7).class_order
    assert digits(seed=7).class_order != digits(seed=8).class_order
    assert digits(seed=7, class_order="natural").class_order == list(range(10))
    assert digits(class_order="natural").tasks[1].classes == [2, 3]


def test_n_tasks_cuts_the_stream_and_is_bounded():
    assert digits(n_tasks=2).n_tasks == 2
    with pytest.raises(UserError, match="'n_tasks' must be at most 5 for split_digits"):
        digits(n_tasks=6)
