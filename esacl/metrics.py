"""Continual-learning metrics on an accuracy matrix. Pure functions of plain lists.

`R[t][k]` is the accuracy (percent) on task k after training task t; entries with k > t are
None (not yet seen). Every function reads the last row present as "final".
"""

import math
import statistics


def _final_row(R):
    return R[-1]


def average_accuracy(R) -> float:
    """Mean accuracy over all tasks seen, after the last task."""
    row = [a for a in _final_row(R) if a is not None]
    return sum(row) / len(row)


def learning_accuracy(R) -> float:
    """Mean of the diagonal: accuracy on each task just after learning it."""
    return sum(R[t][t] for t in range(len(R))) / len(R)


def forgetting_per_task(R) -> list[float]:
    """Per old task k: its best accuracy before the last task minus its final accuracy ([] with one task)."""
    last = len(R) - 1
    return [max(R[t][k] for t in range(k, last)) - R[last][k] for k in range(last)]


def forgetting(R) -> float:
    """Mean over old tasks of (best accuracy before the last task) - (final accuracy).

    NaN with a single task (nothing can be forgotten yet).
    """
    drops = forgetting_per_task(R)
    return sum(drops) / len(drops) if drops else math.nan


def backward_transfer(R) -> float:
    """Mean over old tasks of (final accuracy) - (accuracy just after learning it). NaN with one task."""
    last = len(R) - 1
    if last == 0:
        return math.nan
    return sum(R[last][k] - R[k][k] for k in range(last)) / last


def summary(R) -> dict:
    """The four summary numbers of one accuracy matrix."""
    return dict(
        average=average_accuracy(R),
        forgetting=forgetting(R),
        backward_transfer=backward_transfer(R),
        learning=learning_accuracy(R),
    )


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); NaNs are dropped."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
