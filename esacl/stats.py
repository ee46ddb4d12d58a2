"""Paired comparisons over seeds, and the verdict words a reviewer accepts.

    cells = [paired(esacl_by_seed, sparcl_by_seed) for ...]   # one per table cell (learner x metric)
    words = verdicts(cells, margin=1.0, floors=[20.0, ...])    # Holm over the table's cells

Each cell holds the per-seed differences (a minus b, paired by seed), their mean, a 95% t-interval, the
paired t-test's two-sided p-value, the exact sign-flip permutation p-value (every one of the 2^n sign
patterns; its smallest possible value is 2 / 2^n, so it cannot decide at 3 seeds), and the two one-sided
tests (TOST) of equivalence within +-margin. `verdicts` corrects both families of tests for the number of
cells in the table (Holm's step-down) and says for each cell:
- better / worse: the difference test rejects "no difference" after the correction (equivalently, the
  interval at the corrected level excludes 0);
- equivalent: TOST rejects "the difference is at least the margin" after the correction;
- undecided: neither, with the seeds a paired t-test would need for 80% power at the observed effect (at
  alpha over the number of tested cells, the level Holm's first step asks);
- n/a: both methods' means at or below the benchmark's floor (plus the margin): nothing learned to compare.
"""

import itertools
import math
import statistics
from dataclasses import dataclass

from scipy import stats

ALPHA = 0.05
MARGIN = 1.0  # accuracy points: the default equivalence margin
POWER = 0.8
MAX_SEEDS = 10_000  # beyond this a needed seed count is not worth stating
# Seed counts whose verdict text shows the exact permutation p-value: from the first where it can fall
# below 0.05 (2 / 2^6) to the most whose 2^n sign patterns are cheap to enumerate.
PERMUTATION_SEEDS = (6, 16)


@dataclass(frozen=True)
class Paired:
    """One cell: a's and b's values paired by seed, and the tests on their differences."""

    a_mean: float
    b_mean: float
    diffs: tuple[float, ...]  # a - b per seed, in seed order
    margin: float

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.diffs)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.diffs) if self.n > 1 else math.nan

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(self.n)

    def interval(self, level: float = 1 - ALPHA) -> tuple[float, float]:
        """The two-sided t-interval of the mean difference at `level`."""
        if self.n < 2:
            return (math.nan, math.nan)
        if self.se == 0:
            return (self.mean, self.mean)
        half = stats.t.ppf(0.5 + level / 2, self.n - 1) * self.se
        return (self.mean - half, self.mean + half)

    @property
    def p(self) -> float:
        """Two-sided p-value of the paired t-test of no difference (1.0 for a constant zero difference)."""
        if self.n < 2:
            return 1.0
        if self.se == 0:
            return 1.0 if self.mean == 0 else 0.0
        return float(2 * stats.t.sf(abs(self.mean) / self.se, self.n - 1))

    @property
    def p_permutation(self) -> float:
        """Exact two-sided sign-flip permutation p-value: the share of the 2^n sign patterns whose mean
        is at least as far from 0 as the observed one (at most 2^16 patterns: 16 seeds)."""
        if self.n > PERMUTATION_SEEDS[1]:
            raise ValueError(
                f"the exact permutation test enumerates 2^n sign patterns: at most {PERMUTATION_SEEDS[1]} seeds"
            )
        observed = abs(sum(self.diffs)) - 1e-12 * max(1.0, sum(abs(d) for d in self.diffs))
        hits = sum(
            abs(sum(s * d for s, d in zip(signs, self.diffs))) >= observed
            for signs in itertools.product((1, -1), repeat=self.n)
        )
        return hits / 2**self.n

    @property
    def p_equivalent(self) -> float:
        """TOST p-value of equivalence within +-margin: the larger of the two one-sided t-tests of
        'difference <= -margin' and 'difference >= +margin'."""
        if self.n < 2:
            return 1.0
        if self.se == 0:
            return 0.0 if abs(self.mean) < self.margin else 1.0
        lower = stats.t.sf((self.mean + self.margin) / self.se, self.n - 1)
        upper = stats.t.cdf((self.mean - self.margin) / self.se, self.n - 1)
        return float(max(lower, upper))

    def seeds_for_power(self, alpha: float = ALPHA, power: float = POWER) -> int | None:
        """The smallest number of seeds at which a paired t-test at `alpha` (two-sided) reaches `power`
        for the observed effect (mean / sd of the differences): a lower bound, as the observed effect of
        an undecided cell is an estimate. None where there is no effect to detect (mean 0) or it would take
        more than `MAX_SEEDS`."""
        if self.n < 2 or self.mean == 0:
            return None
        if self.sd == 0:
            return self.n
        effect = abs(self.mean) / self.sd

        def enough(n: int) -> bool:
            return stats.nct.sf(stats.t.ppf(1 - alpha / 2, n - 1), n - 1, effect * math.sqrt(n)) >= power

        high = 2  # power grows with n: double until enough, then bisect
        while not enough(high):
            if high > MAX_SEEDS:
                return None
            high *= 2
        low = high // 2 + 1 if high > 2 else 2
        while low < high:
            mid = (low + high) // 2
            low, high = (low, mid) if enough(mid) else (mid + 1, high)
        return high


def paired(a: dict, b: dict, margin: float = MARGIN) -> Paired:
    """The cell comparing `a` and `b` ({seed: value}) on the seeds both have."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("no seed in common")
    return Paired(
        statistics.fmean(a[s] for s in seeds),
        statistics.fmean(b[s] for s in seeds),
        tuple(a[s] - b[s] for s in seeds),
        margin,
    )


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (each compared with alpha directly), in the given order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Verdict:
    """A cell's word and what decided it."""

    word: str  # better | worse | equivalent | undecided | n/a
    cell: Paired
    p_adjusted: float  # Holm-adjusted p of the difference test
    p_equivalent_adjusted: float  # Holm-adjusted TOST p
    alpha: float = ALPHA  # the per-cell level of the seeds estimate: alpha over the tested cells (Holm's first step)

    @property
    def seeds_needed(self) -> int | None:
        """An undecided cell's seeds for 80% power at the observed effect (None for the other words)."""
        return self.cell.seeds_for_power(self.alpha) if self.word == "undecided" else None

    def text(self) -> str:
        """'+3.03 [+1.07, +4.99], p=0.022 (Holm p=0.043): better' and the like; from 6 seeds (where it can
        go below 0.05) to 16, the exact permutation p-value beside the t-test's: 'p=0.004, permutation
        p=0.006 (Holm p=0.013)'."""
        c = self.cell
        low, high = c.interval()
        exact = f", permutation {_p(c.p_permutation)}" if PERMUTATION_SEEDS[0] <= c.n <= PERMUTATION_SEEDS[1] else ""
        head = f"{c.mean:+.2f} [{low:+.2f}, {high:+.2f}], {_p(c.p)}{exact} (Holm {_p(self.p_adjusted)})"
        if self.word == "equivalent":
            return f"{head}: equivalent within +-{c.margin:g} (TOST Holm {_p(self.p_equivalent_adjusted)})"
        if self.word == "undecided":
            need = self.seeds_needed
            need = f"; about {need} seeds for 80% power" if need else ""
            return f"{head}: undecided{need}"
        if self.word == "n/a":
            return f"{head}: n/a (both at the floor)"
        return f"{head}: {self.word}"


def _p(p: float) -> str:
    """'p=0.022' or 'p<0.001'."""
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def verdicts(cells: list[Paired], floors: list[float | None] | None = None, alpha: float = ALPHA) -> list[Verdict]:
    """The verdict of every cell of one table, Holm-corrected over the cells that are compared (those
    not n/a). `floors`: per cell, the benchmark's floor for its metric (None: no floor)."""
    floors = floors or [None] * len(cells)
    at_floor = [floor is not None and max(c.a_mean, c.b_mean) <= floor + c.margin for c, floor in zip(cells, floors)]
    tested = [i for i in range(len(cells)) if not at_floor[i]]
    p_diff = dict(zip(tested, holm([cells[i].p for i in tested])))
    p_eq = dict(zip(tested, holm([cells[i].p_equivalent for i in tested])))
    level = alpha / max(1, len(tested))  # for the seeds an undecided cell would need
    out = []
    for i, c in enumerate(cells):
        if at_floor[i]:
            out.append(Verdict("n/a", c, 1.0, 1.0, alpha))
        elif p_diff[i] < alpha:
            out.append(Verdict("better" if c.mean > 0 else "worse", c, p_diff[i], p_eq[i], alpha))
        elif p_eq[i] < alpha:
            out.append(Verdict("equivalent", c, p_diff[i], p_eq[i], alpha))
        else:
            out.append(Verdict("undecided", c, p_diff[i], p_eq[i], level))
    return out


def floor(metric: str, n_tasks: int, classes_per_task: int) -> float:
    """The accuracy (percent) of a model that knows only the last task's classes, averaged over the
    tasks: class-IL 100 / n_tasks (every old task wrong); task-IL the last task right and a guess within
    each old task (1 / classes_per_task)."""
    if metric == "class_il":
        return 100.0 / n_tasks
    if metric == "task_il":
        return (100.0 + (n_tasks - 1) * 100.0 / classes_per_task) / n_tasks
    raise ValueError(f"no floor for metric {metric!r}")
