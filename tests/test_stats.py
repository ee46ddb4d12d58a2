"""The verdict statistics against hand computations and a simulation under no difference."""

import math

import numpy as np
import pytest

from esacl.stats import Paired, floor, holm, paired, verdicts


def cell(mean: float, sd: float, n: int = 3, margin: float = 1.0) -> Paired:
    """Differences with exactly this mean and sample standard deviation (n = 3: mean - sd, mean, mean + sd)."""
    base = np.linspace(-1, 1, n)
    base = base / base.std(ddof=1) if n > 1 else base
    return Paired(0.0, 0.0, tuple(mean + sd * base), margin)


def test_the_paired_t_interval_and_p_of_the_readmes_fmnist_derpp_cell():
    # split_fmnist DER++ class-IL, EsaCL minus SparCL over 3 seeds: +3.03 +- 0.79 (mean +- sd).
    c = cell(3.03, 0.79)
    assert c.mean == pytest.approx(3.03) and c.sd == pytest.approx(0.79)
    se = 0.79 / math.sqrt(3)
    assert c.interval() == pytest.approx((3.03 - 4.302653 * se, 3.03 + 4.302653 * se), abs=1e-5)
    assert [round(x, 2) for x in c.interval()] == [1.07, 4.99]
    assert c.p == pytest.approx(0.0219, abs=5e-4)  # t = 6.64 on 2 degrees of freedom
    er = cell(9.97, 4.38)  # split_digits ER class-IL: not significant at 3 seeds
    assert er.p == pytest.approx(0.059, abs=1e-3) and er.interval()[0] < 0 < er.interval()[1]


def test_seeds_for_80_percent_power_at_the_observed_effect():
    # The effects of the README's split_digits verdicts (mean / sd of the paired differences).
    assert cell(9.97, 4.38).seeds_for_power() == 4  # ER
    assert cell(3.83, 2.79).seeds_for_power() == 7  # DER++
    assert cell(1.27, 1.24).seeds_for_power() == 10  # EWC
    assert cell(-0.44, 0.99).seeds_for_power() == 42  # CO2L
    assert cell(0.0, 1.0).seeds_for_power() is None


def test_holm_steps_down_and_keeps_the_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 2 x 0.8 capped at 1, then monotone


def test_the_exact_sign_flip_permutation_test():
    assert Paired(0, 0, (1.0, 2.0, 3.0), 1.0).p_permutation == 0.25  # 2 of 8 patterns: 3 seeds never decide
    assert Paired(0, 0, (1.0, -1.0, 1.0, -1.0), 1.0).p_permutation == 1.0
    six = Paired(0, 0, (1.0, 2.0, 3.0, 4.0, 5.0, 6.0), 1.0)
    # patterns whose |sum| >= 21: all plus and all minus only
    assert six.p_permutation == 2 / 64
    # the verdict text shows it where it can decide (6 seeds on), not at 3 seeds
    (at_six,) = verdicts([six])
    assert f"p={six.p:.3f}, permutation p=0.031 (Holm" in at_six.text()
    assert "permutation" not in verdicts([cell(3.0, 0.5)])[0].text()


def test_tost_says_equivalent_only_inside_the_margin():
    tight = cell(0.1, 0.3, n=10)
    assert tight.p_equivalent < 0.05 and tight.p > 0.05
    wide = cell(0.1, 3.0, n=10)
    assert wide.p_equivalent > 0.05
    outside = cell(1.5, 0.1, n=10)  # a real difference beyond the margin: never equivalent
    assert outside.p_equivalent > 0.5


def test_verdict_words_floor_and_correction():
    cells = [cell(3.0, 0.5, n=10), cell(-3.0, 0.5, n=10), cell(0.05, 0.2, n=10), cell(0.5, 2.0, n=10), cell(0.4, 0.3)]
    cells[4] = Paired(19.9, 19.5, cells[4].diffs, 1.0)  # both at the class-IL floor of 5 tasks
    words = verdicts(cells, floors=[None, None, None, None, 20.0])
    assert [v.word for v in words] == ["better", "worse", "equivalent", "undecided", "n/a"]
    assert words[3].seeds_needed > 10 and "seeds for 80% power" in words[3].text()
    assert words[0].p_adjusted == pytest.approx(min(1.0, 4 * cells[0].p))  # the smallest of 4 tested cells
    assert words[0].text().startswith("+3.00 [") and words[0].text().endswith(": better")


def test_holm_turns_a_lone_significant_cell_undecided_in_a_table_of_many():
    lone = cell(3.03, 0.79)  # p = 0.022 alone
    assert verdicts([lone])[0].word == "better"
    others = [cell(0.3, 2.0) for _ in range(7)]
    assert verdicts([lone] + others)[0].word == "undecided"  # 8 x 0.022 > 0.05


def test_paired_takes_the_seeds_both_have():
    c = paired({0: 90.0, 1: 92.0, 2: 91.0}, {1: 90.0, 2: 90.5, 3: 80.0})
    assert c.diffs == (2.0, 0.5) and c.a_mean == 91.5 and c.b_mean == 90.25
    with pytest.raises(ValueError, match="no seed in common"):
        paired({0: 1.0}, {1: 1.0})


def test_floors_of_a_model_that_knows_only_the_last_task():
    assert floor("class_il", 5, 2) == 20.0
    assert floor("task_il", 5, 2) == 60.0
    assert floor("class_il", 10, 10) == 10.0


@pytest.mark.parametrize("seeds", [3, 10])
def test_better_or_worse_is_called_at_most_5_percent_of_the_time_under_no_difference(seeds):
    """Tables of 8 cells whose paired differences have mean 0: the share of tables with any 'better' or
    'worse' (the family-wise error) stays at most 5% (plus Monte-Carlo noise); the one-std rule it
    replaces calls a difference in most such tables."""
    rng = np.random.default_rng(0)
    tables, cells = 600, 8
    any_call = old_rule = 0
    for _ in range(tables):
        diffs = rng.normal(0.0, 1.5, size=(cells, seeds))
        table = [Paired(0.0, 0.0, tuple(d), 1.0) for d in diffs]
        any_call += any(v.word in ("better", "worse") for v in verdicts(table))
        old_rule += any(abs(d.mean()) > d.std(ddof=1) for d in diffs)
    noise = 2.5 * math.sqrt(0.05 * 0.95 / tables)
    assert any_call / tables <= 0.05 + noise
    assert old_rule / tables > 0.05 + noise  # the rule this replaces: mean beyond one sd, no correction
