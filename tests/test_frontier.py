from types import SimpleNamespace

import pytest

from esacl.config import UserError
from esacl.frontier import LADDER, Point, at_cost, flops_for, frontier, frontier_configs, matched


def point(flops, class_il, task_il=None, method="esacl-er", sparsity=0.9):
    """A cost point with per-seed accuracies (seeds 0, 1, ...)."""
    task_il = task_il or class_il
    knobs = (("sparsity", sparsity), ("dense_grad_every", 1), ("sam_every", 1))
    return Point(method, knobs, flops, dict(class_il=dict(enumerate(class_il)), task_il=dict(enumerate(task_il))))


def test_a_frontier_keeps_each_point_no_cheaper_point_is_as_accurate_as():
    cheap, dominated, dear = point(0.2, [80, 82]), point(0.3, [79, 80]), point(0.5, [90, 90])
    assert frontier([dear, dominated, cheap], "class_il") == [cheap, dear]


def test_accuracy_at_a_cost_interpolates_each_seed_linearly_in_log_flops_and_never_extrapolates():
    a, b = point(0.1, [80, 70]), point(0.4, [90, 90])
    got = at_cost([a, b], 0.2, "class_il", 0.4)  # halfway in log: log 0.2 is the mean of log 0.1 and log 0.4
    assert got == pytest.approx({0: 85.0, 1: 80.0})
    assert at_cost([a, b], 0.4, "class_il", 0.4) == {0: 90, 1: 90}
    assert at_cost([a, b], 0.05, "class_il", 0.4) is None and at_cost([a, b], 0.5, "class_il", 0.4) is None
    # past the last frontier point, up to the method's dearest (dominated) point: the best within the budget
    assert at_cost([a, b], 0.6, "class_il", 0.8) == {0: 90, 1: 90}


def test_the_flops_a_frontier_needs_for_an_accuracy_interpolate_its_mean():
    a, b = point(0.1, [80, 80]), point(0.4, [90, 90])
    assert flops_for([a, b], 85, "class_il") == pytest.approx(0.2)
    assert flops_for([a, b], 75, "class_il") == 0.1  # the cheapest point is as accurate already
    assert flops_for([a, b], 95, "class_il") is None


def run(method, seed, flops, class_il, task_il, sparsity=0.9, dge=1, sam_every=1):
    config = dict(
        benchmark="split_digits", method=method, seed=seed, sparsity=sparsity, dense_grad_every=dge, sam_every=sam_every
    )
    summary = dict(class_il=dict(average=class_il), task_il=dict(average=task_il))
    return SimpleNamespace(
        complete=True, config=config, efficiency=dict(flops_relative=flops), summary=summary, class_il=[[0]] * 5
    )


def test_matched_cost_pairs_esacl_interpolated_at_sparcls_default_cost_with_sparcl_by_seed():
    records = []
    for seed in range(6):
        # EsaCL: 0.1x SGD at 80 + seed, 0.4x at 90 + seed; SparCL's default at 0.2x: 82 + seed / 2.
        records += [
            run("esacl-er", seed, 0.1, 80 + seed, 95, sparsity=0.95),
            run("esacl-er", seed, 0.4, 90 + seed, 96),
            run("sparcl-er", seed, 0.2, 82 + seed / 2, 95),
            run("sparcl-er", seed, 0.12, 70, 90, sparsity=0.95),
        ]
    (v,) = matched(records, ["er"])
    assert v.cost == v.default == pytest.approx(0.2) and v.reach == pytest.approx((0.1, 0.4))
    # class-IL at 0.2x: halfway between 80 + s and 90 + s, i.e. 85 + s, minus 82 + s / 2
    assert v.cells["class_il"].diffs == pytest.approx(tuple(3 + s / 2 for s in range(6)))
    assert v.words["class_il"].word == "better"
    # SparCL's mean 83.25 class-IL: EsaCL's mean runs 82.5 -> 92.5, crossing it 7.5% of the way in log FLOPs
    assert v.needs["class_il"] == pytest.approx(0.1 * 4**0.075 / 0.2)
    assert "class-IL +4.25" in v.line() and "at SparCL's default cost (0.200x SGD)" in v.line()


def test_where_esacl_does_not_reach_sparcls_default_cost_both_meet_at_the_nearest_cost_they_span():
    records = []
    for s in range(6):
        records += [
            run("esacl-er", s, 0.25, 90 + s, 99, sparsity=0.95),  # EsaCL's cheapest: above SparCL's default
            run("esacl-er", s, 0.5, 91 + s, 99),
            run("sparcl-er", s, 0.2, 80, 99),  # SparCL's default, and a dearer point it dominates
            run("sparcl-er", s, 0.4, 79, 99, sparsity=0.8),
        ]
    (v,) = matched(records, ["er"])
    assert v.cost == pytest.approx(0.25) and v.default == pytest.approx(0.2)
    # SparCL within a 0.25x budget: its default's 80 (its 0.4x point is less accurate)
    assert v.cells["class_il"].diffs == pytest.approx(tuple(10 + s for s in range(6)))
    assert "at 0.250x SGD, the nearest cost both reach (SparCL's default costs 0.200x" in v.line()
    assert "cheapest point (1.25x SparCL's FLOPs) is as accurate already" in v.line()
    apart = [run("esacl-er", s, 0.5, 90, 99) for s in range(3)] + [run("sparcl-er", s, 0.2, 80, 99) for s in range(3)]
    (v,) = matched(apart, ["er"])
    assert v.cost is None and v.cells == {"class_il": None, "task_il": None} and v.words == {}
    assert "no common cost: EsaCL's points span 0.500-0.500x SGD, SparCL's default costs 0.200x" in v.line()


def test_the_frontier_job_runs_every_ladder_point_for_each_learner_named_by_its_cost_knobs():
    configs = frontier_configs("split_digits", [0, 1], ["er", "ewc"], out="o")
    per_learner = sum(len(p) for p in LADDER.values()) * 2
    assert len(configs) == 2 * per_learner and len({c.name for c in configs}) == len(configs)
    assert {c.method for c in configs} == {"esacl-er", "sparcl-er", "esacl-ewc", "sparcl-ewc"}
    cheapest = [c for c in configs if c.method == "esacl-er" and c.sam_every == 8]
    assert [(c.sparsity, c.dense_grad_every, c.seed) for c in cheapest] == [(0.95, 10, 0), (0.95, 10, 1)]
    assert cheapest[0].name == "split_digits-esacl-er-sp0.95-dge10-se8-s0"
    with pytest.raises(UserError, match="'-p sparsity' is set by esacl paper --frontier"):
        frontier_configs("split_digits", [0], ["er"], overrides={"sparsity": "0.5"})
    with pytest.raises(UserError, match="no base learner 'err' \\(did you mean 'er'\\?\\)"):
        frontier_configs("split_digits", [0], ["err"])


def test_esacl_paper_frontier_runs_the_ladders_and_prints_points_frontiers_and_the_matched_cost_line(tmp_path, capsys):
    from workbench.cli import main

    argv = ["paper", "--frontier", "--learners", "er", "--seeds", "0", "--out", str(tmp_path / "f"), "--workers", "1"]
    assert main(argv + ["-p", "n_tasks", "2", "-p", "epochs", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "-er " in line and "x SGD" not in line]
    assert len(rows) == sum(len(p) for p in LADDER.values())  # every cost point, once
    assert "sparsity 0.95, dense_grad_every 10, sam_every 8" in out and "sparsity 0.7" in out
    assert any(line.rstrip().endswith("^") for line in rows)  # frontier points marked
    assert "er: EsaCL vs SparCL " in out  # the matched-cost line
    assert len(list((tmp_path / "f").glob("split_digits-*-er-*"))) == len(rows)
