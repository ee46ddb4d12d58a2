import numpy as np
import pytest
import torch

from esacl.config import UserError
from esacl.learners import Batch, Loss
from esacl.selection import IDS
from helpers import config


def ids(n=100, **changes):
    cfg = config(
        **dict(dict(method="esacl", epochs=5, removal_fraction=0.3, removal_every=1, removal_until=3), **changes)
    )
    selector = IDS(cfg, "cpu")
    selector.begin_task(0, torch.arange(n) % 2)
    return selector


def test_removal_schedule_is_equal_shares_up_to_the_fraction():
    assert ids().removal_counts(100) == {0: 10, 1: 10, 2: 10}
    assert sum(ids().removal_counts(101).values()) == 30  # floor(0.3 * 101)
    selector = ids(removal_every=2, removal_until=5)
    assert selector.removal_counts(100) == {1: 15, 3: 15}
    assert ids(removal_fraction=0.0).removal_counts(100) == {}


def test_elimination_removes_the_lowest_running_scores_and_records_them():
    selector = ids()
    score = torch.randperm(100).float()  # a distinct running score per example
    selector.stats["score_sum"] += score * 2
    selector.stats["score_count"] += 2
    removed = []
    for epoch in range(5):
        selector.begin_epoch(epoch)
        event = selector.end_epoch()
        if event:
            removed.append(event["removed"])
    assert removed == [10, 10, 10] and len(selector.pool()) == 70
    gone = (selector.stats["removed_epoch"] >= 0).nonzero().flatten()
    assert set(gone.tolist()) == set(score.argsort()[:30].tolist())  # the 30 lowest scores
    first = (selector.stats["removed_epoch"] == 0).nonzero().flatten()
    assert set(first.tolist()) == set(score.argsort()[:10].tolist())  # lowest first
    assert not set(selector.pool().tolist()) & set(gone.tolist())


def test_forgetting_score_removes_fewest_forgettings_and_keeps_the_never_learned():
    selector = ids(n=10, ere_score="forgetting", removal_fraction=0.5, removal_until=1)
    s = selector.stats
    s["forget_count"][:] = torch.tensor([3, 0, 1, 0, 2, 5, 0, 4, 1, 0], dtype=torch.int32)
    s["learned"][:] = True
    s["learned"][[1, 3]] = False  # never learned: never removed
    selector.begin_epoch(0)
    assert selector.end_epoch()["removed"] == 5
    gone = set((s["removed_epoch"] == 0).nonzero().flatten().tolist())
    assert gone == {6, 9, 2, 8, 4}  # zero forgettings, then one, then two


def test_forgetting_events_count_correct_to_wrong_transitions():
    selector = ids(n=4)
    batch = Batch(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]), torch.arange(4), torch.zeros(4, 1, 8, 8))
    right = torch.nn.functional.one_hot(batch.y, 10).float()
    wrong = torch.nn.functional.one_hot(1 - batch.y, 10).float()
    for logits in (right, wrong, right, wrong, wrong):
        selector.record(batch, Loss(torch.zeros(()), torch.zeros(4), logits))
    assert selector.stats["forget_count"].tolist() == [2, 2, 2, 2]
    assert selector.stats["learned"].all()


def test_ddr_removes_the_stated_counts_at_the_stated_epochs_fewest_forgettings_first():
    from esacl.selection import DDR

    cfg = config(method="sparcl-er", epochs=6, removal_fraction=0.4, removal_every=2, removal_until=4)
    selector = DDR(cfg, "cpu")
    selector.begin_task(0, torch.arange(20) % 2)
    assert selector.removal_counts(20) == {1: 4, 3: 4}
    s = selector.stats
    counts = torch.tensor([5, 0, 1, 0, 2, 7, 0, 3, 1, 0, 4, 2, 6, 1, 0, 3, 2, 8, 5, 1], dtype=torch.int32)
    s["forget_count"][:] = counts
    s["learned"][:] = True
    s["learned"][[1, 3]] = False  # zero forgettings but never learned: kept
    events = []
    for epoch in range(6):
        selector.begin_epoch(epoch)
        if epoch == 2:  # fresh statistics after the first removal
            assert int(s["forget_count"].sum()) == 0 and not s["learned"].any()
            s["forget_count"][:] = counts
            s["learned"][:] = True
            s["learned"][[1, 3]] = False
        event = selector.end_epoch()
        if event:
            events.append((epoch, event["removed"]))
    assert events == [(1, 4), (3, 4)]
    first = set((s["removed_epoch"] == 1).nonzero().flatten().tolist())
    second = set((s["removed_epoch"] == 3).nonzero().flatten().tolist())
    ones, twos = {2, 8, 13, 19}, {4, 11, 16}
    assert {6, 9, 14} < first and len(first & ones) == 1  # the zero counts, then one of the single ones
    assert second == (ones - first) | (second & twos) and len(second & twos) == 1  # the other ones, then a two
    assert not {1, 3} & (first | second)


def test_ddr_breaks_ties_at_random_not_by_position():
    # Data stored class by class (as Tiny-ImageNet is) and every example always right: all tie at zero
    # forgetting events. Removal by position would take the first 750 examples: classes 0 and 1 only.
    from esacl.selection import DDR

    y = torch.arange(20).repeat_interleave(500)
    removed = {}
    for seed in (0, 1):
        cfg = config(method="sparcl-er", epochs=5, removal_fraction=0.075, removal_every=5, removal_until=5, seed=seed)
        selector = DDR(cfg, "cpu")
        selector.begin_task(0, y)
        batch = Batch(torch.zeros(len(y), 1, 8, 8), y, torch.arange(len(y)), torch.zeros(len(y), 1, 8, 8))
        right = torch.nn.functional.one_hot(y, 20).float()
        for epoch in range(5):
            selector.begin_epoch(epoch)
            selector.record(batch, Loss(torch.zeros(()), torch.zeros(len(y)), right))
            selector.end_epoch()
        removed[seed] = (selector.stats["removed_epoch"] == 4).nonzero().flatten()
        assert len(removed[seed]) == 750
        per_class = torch.bincount(y[removed[seed]], minlength=20)
        assert (per_class > 15).all() and (per_class < 60).all()  # about 37.5 of each class's 500
    assert len(set(removed[0].tolist()) & set(removed[1].tolist())) < 150  # other seeds, other examples


def test_ids_elimination_without_scores_is_refused_in_one_line():
    from esacl.method import PRESETS
    from esacl.selection import build_selector

    for changes in (dict(support_rule="random"), dict(support_fraction=1.0), dict(support_size=64)):
        with pytest.raises(UserError, match="no step scores any") as err:
            build_selector(PRESETS["esacl"], config(method="esacl", **changes), "cpu")
        assert "\n" not in str(err.value)
    build_selector(PRESETS["esacl"], config(method="esacl", support_rule="random", ere_score="forgetting"), "cpu")
    build_selector(PRESETS["esacl"], config(method="esacl", support_fraction=1.0, removal_fraction=0.0), "cpu")


def test_ids_elimination_removes_by_score_not_by_position(tiny):
    import esacl
    from esacl.rundir import load_selections

    record = esacl.run(tiny(method="esacl", epochs=3, removal_every=1, removal_until=2))
    for task in (0, 1):
        sel = load_selections(record.path, task)
        removed = np.flatnonzero(sel["removed_epoch"] >= 0)
        assert len(removed) == int(0.3 * len(sel["y"]))
        assert not np.array_equal(removed, np.arange(len(removed)))  # not an index prefix
        first = np.flatnonzero(sel["removed_epoch"] == 0)
        # the first removal takes the lowest mean scores after one epoch
        mean = sel["epoch_score"][0].astype(np.float64)
        assert mean[first].max() <= np.sort(mean)[len(first) - 1] + 1e-3
