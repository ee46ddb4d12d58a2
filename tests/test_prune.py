import numpy as np
import pytest
import torch

from esacl.models import ConvNet
from esacl.prune import DualAveraging, Magnitude, cubic_sparsity, grda_threshold, soft_threshold, topk_masks
from helpers import config


def test_soft_threshold_on_hand_values():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.5, 2.0, 1.0])
    assert torch.equal(soft_threshold(x, 1.0), torch.tensor([-2.0, 0.0, 0.0, 0.0, 1.0, 0.0]))


def test_grda_threshold_and_cubic_schedule_on_hand_values():
    assert grda_threshold(c=0.1, lr=0.04, n=100, mu=0.5) == pytest.approx(0.1 * 0.2 * 2.0)
    assert grda_threshold(c=0.1, lr=0.04, n=0, mu=0.5) == 0.0
    assert cubic_sparsity(0, 100, 0.9) == 0.0
    assert cubic_sparsity(50, 100, 0.9) == pytest.approx(0.9 * (1 - 0.5**3))
    assert cubic_sparsity(100, 100, 0.9) == cubic_sparsity(10_000, 100, 0.9) == 0.9


def test_topk_masks_count_exactly_per_layer_and_globally():
    values = {"a": torch.arange(10.0), "b": -torch.arange(30.0)}
    layer = topk_masks(values, 0.7, "layer")
    assert [int(m.sum()) for m in layer.values()] == [3, 9]
    assert layer["a"][-3:].all() and not layer["a"][:7].any()
    glob = topk_masks(values, 0.75, "global")
    assert sum(int(m.sum()) for m in glob.values()) == 10 and not glob["a"].any()  # the 10 largest |v| are in b


def random_steps(rule, model, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        rule.update()
        yield


@pytest.mark.parametrize("rule_class, prune", [(DualAveraging, "soft"), (DualAveraging, "hard"), (Magnitude, "soft")])
def test_pruned_weights_are_exactly_zero_after_every_step_and_track_the_schedule(rule_class, prune):
    torch.manual_seed(0)
    model = ConvNet(1, 10, 8)
    rule = rule_class(model, config(method="esacl", sparsity=0.9, prune=prune, ramp_fraction=0.5))
    rule.begin_task(0, steps_in_task=40)  # ramp over 20 steps
    named = dict(model.named_parameters())
    for _ in random_steps(rule, model, 30):
        expected = cubic_sparsity(rule.n_steps, 20, 0.9)
        for name, mask in rule.masks.items():
            w = named[name]
            assert (w[~mask] == 0).all()
            assert int((~mask).sum()) == round(expected * w.numel())
    rule.project()
    for name in rule.masks:
        assert int((named[name] == 0).sum()) == round(0.9 * named[name].numel())


def test_dual_averaging_accumulates_lr_scaled_gradients_and_soft_thresholds():
    torch.manual_seed(0)
    model = ConvNet(1, 10, 4)
    cfg = config(method="esacl", sparsity=0.5, lr=0.1, ramp_fraction=1.0)
    rule = DualAveraging(model, cfg)
    rule.begin_task(0, steps_in_task=1)  # a ramp of one update: the target at once
    name = "stage1.0.0.weight"
    w = dict(model.named_parameters())[name]
    a0 = w.detach().clone()
    grads = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = grads[n].clone()
    head_before = model.head.weight.detach().clone()
    rule.update()
    a1 = a0 - 0.1 * grads[name]
    assert torch.allclose(rule.accumulator[name], a1)
    k = round(0.5 * a1.numel())
    lam = a1.abs().flatten().kthvalue(k).values  # the largest pruned |a|
    assert torch.allclose(w, soft_threshold(a1, lam))
    assert torch.allclose(model.head.weight, head_before - 0.1 * grads["head.weight"])  # dense: plain SGD


def test_grda_mode_thresholds_by_its_schedule():
    torch.manual_seed(0)
    model = ConvNet(1, 10, 4)
    cfg = config(method="esacl", threshold="grda", grda_c=0.5, grda_mu=0.6, lr=0.1)
    rule = DualAveraging(model, cfg)
    rule.begin_task(0, 10)
    list(random_steps(rule, model, 3))
    lam = grda_threshold(0.5, 0.1, 3, 0.6)
    for name, a in rule.accumulator.items():
        assert torch.equal(rule.masks[name], a.abs() > lam)


def test_accumulator_persists_across_tasks_unless_reset():
    torch.manual_seed(0)
    model = ConvNet(1, 10, 4)
    for reset in (False, True):
        rule = DualAveraging(model, config(method="esacl", reset_accumulator=reset))
        rule.begin_task(0, 10)
        list(random_steps(rule, model, 5))
        before = {n: a.clone() for n, a in rule.accumulator.items()}
        rule.begin_task(1, 10)
        named = dict(model.named_parameters())
        for n, a in rule.accumulator.items():
            assert torch.equal(a, named[n].detach() if reset else before[n])


def sparcl(model, **changes):
    from esacl.prune import SparCL

    cfg = config(**dict(dict(method="sparcl-er", sparsity=0.75, epochs=10, tdm_every=2, tdm_gap=0.05), **changes))
    return SparCL(model, cfg)


def test_tdm_prunes_to_the_lower_bound_and_regrows_zeros_to_the_upper():
    torch.manual_seed(0)
    model = ConvNet(1, 10, 8)
    rule = sparcl(model)
    named = dict(model.named_parameters())
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = {n: named[n].detach().clone() for n in rule.prunable}
    importance = {n: before[n].abs() + 0.5 * named[n].grad.abs() for n in rule.prunable}
    rule.begin_epoch(0)  # bounds (s, s - gap) = (0.75, 0.70)
    for n, mask in rule.masks.items():
        size = mask.numel()
        kept_by_importance = topk_masks({n: importance[n]}, 0.75, "layer")[n]
        regrown = mask & ~kept_by_importance
        assert int(mask.sum()) == size - round(0.75 * size) + round(0.05 * size)  # the upper bound
        assert int(regrown.sum()) == round(0.05 * size)
        assert (named[n][regrown] == 0).all()  # regrown start at zero
        assert torch.equal(named[n][kept_by_importance], before[n][kept_by_importance])
        assert (named[n][~mask] == 0).all()


def test_tdm_bounds_follow_the_schedule_and_restart_every_task():
    torch.manual_seed(0)
    model = ConvNet(1, 10, 8)
    rule = sparcl(model)
    densities = []
    for task in range(2):
        rule.begin_task(task, 100)
        for epoch in range(10):
            rule.begin_epoch(epoch)
            densities.append(round(rule.sparsity(), 4))
    # every 2 epochs: (0.75, 0.70) first, (0.80, 0.75) from epoch 2, fixed (0.75, 0.75) from epoch 8.
    assert densities[:10] == [0.70, 0.70, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75]
    assert densities[10:] == densities[:10]
    layer = rule.masks["stage1.0.0.weight"]
    assert int((~layer).sum()) == round(0.75 * layer.numel())  # the fixed mask sits at the target


def test_dgm_keeps_the_top_share_of_gradients_and_refreshes_on_schedule():
    torch.manual_seed(0)
    model = ConvNet(1, 10, 8)
    rule = sparcl(model, dgm_keep=0.2, dgm_every=3, lr=1.0)
    rule.begin_epoch(0)
    name = "stage1.0.0.weight"
    w = dict(model.named_parameters())[name]
    masks_seen = []
    for batch in range(4):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        raw = w.grad.clone() * rule.masks[name]
        before = w.detach().clone()
        rule.update()
        applied = before - w.detach()  # lr 1: the gradient that was applied
        if batch % 3 == 0:  # refresh: the top 20% of |grad| survive
            expected = topk_masks({name: raw}, 0.8, "layer")[name]
            assert int((applied != 0).sum()) == round(0.2 * raw.numel())
            assert torch.equal(applied != 0, expected)
        masks_seen.append(rule.grad_masks[name].clone())
        assert ((applied != 0) <= masks_seen[-1]).all()  # nothing outside the gradient mask moves
    assert torch.equal(masks_seen[0], masks_seen[1]) and torch.equal(masks_seen[1], masks_seen[2])
    assert not torch.equal(masks_seen[2], masks_seen[3])  # batch 3: recomputed


def test_recorded_masks_and_sparsity_follow_the_zero_weights(tiny):
    # gRDA's threshold can zero more weights than the target: the masks, and so the recorded sparsity,
    # must count every zero, not just the top-k complement.
    import esacl
    from esacl.rundir import load_masks

    record = esacl.run(tiny(method="esacl", sparsity=0.5, threshold="grda", grda_c=0.1, epochs=5))
    model = torch.load(record.path / "checkpoint.pt", weights_only=True)["model"]
    masks = load_masks(record.path, 1)
    zeros = {n: (model[n] == 0) for n in masks}
    for n, m in masks.items():
        assert np.array_equal(m, ~zeros[n].numpy()), n
    assert zeros["stage2.0.0.weight"].float().mean() > 0.5  # more than the target is zero
    nnz = sum(int(m.sum()) for m in masks.values())
    assert record.task_events[-1]["sparsity"] == pytest.approx(1 - nnz / sum(m.size for m in masks.values()))


def test_ramp_fraction_zero_is_sparse_from_the_first_update():
    torch.manual_seed(0)
    model = ConvNet(1, 10, 4)
    rule = DualAveraging(model, config(method="esacl", sparsity=0.8, ramp_fraction=0.0))
    rule.begin_task(0, 100)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    rule.update()
    for n, m in rule.masks.items():
        assert (~m).sum() == round(0.8 * m.numel()), n


@pytest.mark.parametrize("recalibrate", [True, False])
def test_the_update_rules_task_end_projects_once_and_reports_its_jump(recalibrate):
    """SDP's end of task: the one-shot jump of the weights as trained, then (after batch-norm
    recalibration, if on) the projection it keeps; the final evaluation is returned, not repeated."""
    from esacl.train import build

    cfg = config(method="esacl-noids", sparsity=0.75, bn_recalibrate=recalibrate)
    _, model, method, _ = build(cfg, torch.device("cpu"))
    calls = []

    def evaluate():  # a stand-in evaluation: the mean |w| of the prunable weights
        level = float(sum(p.detach().abs().mean() for p in method.rule.prunable.values()))
        calls.append(level)
        return dict(class_il=[level, None], task_il=[level, None], loss=level)

    recalibrations = []
    fields, final = method.rule.end_task(evaluate, lambda: recalibrations.append(1))
    # the weights as trained, one-shot pruned (weights restored), [after recalibration,] projected
    # the projection moved weights: their statistics are recalibrated again before the final evaluation
    assert len(calls) == (4 if recalibrate else 3) and len(recalibrations) == 2 * int(recalibrate)
    assert final["loss"] == calls[-1] and calls[1] == calls[-1] and calls[0] > calls[1]
    jump = fields["jump"]
    assert jump["loss_before"] == calls[0] and jump["loss_after"] == calls[-1]  # the weights trained as they are
    assert jump["as_trained"]["loss_before"] == calls[0] and jump["as_trained"]["accuracy_drop"] == calls[0] - calls[1]
    for name, p in method.rule.prunable.items():
        assert (p == 0).sum() == round(0.75 * p.numel()) and torch.equal(method.masks[name], p != 0)


def test_project_gap_trains_below_the_target_and_the_projection_prunes_the_rest():
    torch.manual_seed(0)
    model = ConvNet(1, 10, 8)
    rule = DualAveraging(model, config(method="esacl", sparsity=0.9, project_gap=0.3, ramp_fraction=0.0))
    rule.begin_task(0, 10)
    for _ in random_steps(rule, model, 5):
        pass
    named = dict(model.named_parameters())
    trained = {n: named[n].detach().clone() for n in rule.masks}
    for name, mask in rule.masks.items():
        assert int((named[name] == 0).sum()) == round(0.6 * mask.numel()), name
    rule.project()
    for name in rule.masks:
        w = named[name]
        assert int((w == 0).sum()) == round(0.9 * w.numel()) and not torch.equal(w, trained[name])
        assert torch.equal(w[w != 0], trained[name][w != 0])  # the kept weights are the trained ones


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(method="esacl", sparsity=0.5, project_gap=0.6), "above the sparsity"),
        (dict(method="sparcl-er", project_gap=0.1), "tdm_gap"),
    ],
)
def test_a_project_gap_the_rule_cannot_hold_is_refused(changes, message):
    from esacl.errors import UserError
    from esacl.prune import SparCL

    rule = SparCL if changes["method"].startswith("sparcl") else DualAveraging
    with pytest.raises(UserError, match=message):
        rule(ConvNet(1, 10, 4), config(**changes))


def test_a_dense_task_end_changes_nothing_and_measures_the_flatness_test_only_when_asked():
    from esacl.train import build

    for one_shot, expected in ((0.0, set()), (0.5, {"one_shot"})):
        _, model, method, _ = build(config(method="sgd", one_shot_sparsity=one_shot), torch.device("cpu"))
        weights = [p.detach().clone() for p in model.parameters()]
        fields, final = method.rule.end_task(lambda: dict(class_il=[1.0], task_il=[1.0], loss=1.0), None)
        assert set(fields) == expected and final is None
        assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
