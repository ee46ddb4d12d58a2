import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from esacl.learners import Learner
from esacl.models import ConvNet, build_model
from esacl.prune import SGD
from esacl.selection import AllData, IDS
from esacl.steps import Step
from esacl.flops import FlopMeter, dense_forward_flops, sparse_model_bytes
from helpers import config, toy_batch

W = 8
# 2 x MACs by hand: 3x3 convs on 8x8 (stem, stage1) and 4x4 (stage2), then the head.
STEM, STAGE1, STAGE2, HEAD = 2 * 9 * 1 * W * 64, 2 * 9 * W * 2 * W * 64, 2 * 9 * 2 * W * 4 * W * 16, 2 * 4 * W * 10


def test_dense_flops_per_layer_match_a_hand_count_and_the_counter():
    model = ConvNet(1, 10, W)
    per_layer = dense_forward_flops(model, (1, 8, 8), "cpu")
    assert per_layer == {"stem.0": STEM, "stage1.0.0": STAGE1, "stage2.0.0": STAGE2, "head": HEAD}
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(5, 1, 8, 8))
    assert 5 * sum(per_layer.values()) == counter.get_total_flops()


def meter_and_model():
    torch.manual_seed(0)
    model = ConvNet(1, 10, W)
    meter = FlopMeter(model, (1, 8, 8), "cpu")
    meter.track(model.prunable())
    return model, meter


def test_forward_cost_scales_with_layer_density():
    model, meter = meter_and_model()
    dense = STEM + STAGE1 + STAGE2 + HEAD
    assert meter.forward_cost.item() == dense
    quarter = torch.zeros(2 * W, W, 3, 3, dtype=torch.bool)
    quarter.view(-1)[: quarter.numel() // 4] = True
    meter.set_density(
        {"stage1.0.0.weight": quarter, "stage2.0.0.weight": torch.ones(4 * W, 2 * W, 3, 3, dtype=torch.bool)}
    )
    assert meter.forward_cost.item() == pytest.approx(dense - 0.75 * STAGE1)


def test_sgd_and_sam_ids_steps_count_what_they_forward():
    dense = STEM + STAGE1 + STAGE2 + HEAD
    model, meter = meter_and_model()
    cfg = config(method="sgd")
    Step(model, cfg, False, SGD(model, cfg), AllData(cfg, "cpu"), meter)(model, Learner(cfg, 10, 0), toy_batch(32))
    assert meter.snapshot() == {
        "first_pass.forward": 32 * dense,
        "first_pass.backward": 64 * dense,
        "total": 96 * dense,
        "measure": 0,
    }

    model, meter = meter_and_model()
    cfg = config(method="ids-only", support_fraction=0.5)
    step = Step(model, cfg, True, SGD(model, cfg), IDS(cfg, "cpu"), meter)
    step.selector.begin_task(0, torch.zeros(32, dtype=torch.long))
    step(model, Learner(cfg, 10, 0), toy_batch(32))
    counts = meter.snapshot()
    assert counts["scoring.forward"] == 32 * dense and "scoring.backward" not in counts
    assert counts["second_pass.forward"] == 16 * dense and counts["second_pass.backward"] == 32 * dense
    assert counts["total"] == (96 + 32 + 48) * dense  # 5.5 forward-equivalents per example vs SAM's 6


def test_evaluation_outside_a_step_costs_nothing():
    model, meter = meter_and_model()
    model(torch.zeros(7, 1, 8, 8))
    assert meter.snapshot() == {"total": 0, "measure": 0}
    with meter.phase("measure.evaluation"), torch.no_grad():
        model(torch.zeros(7, 1, 8, 8))
    assert meter.snapshot() == {
        "measure.evaluation.forward": 7 * meter.dense_forward,
        "total": 0,
        "measure": 7 * meter.dense_forward,
    }


@pytest.mark.parametrize("learner", ["sgd", "joint", "ewc", "lwf", "er", "agem", "derpp", "co2l"])
def test_one_task_of_every_base_learner_costs_what_a_hand_count_says(learner, tmp_path):
    """Task 1 of a two-task run: every pass the learner trains with, at its steps and at the task end,
    against a count from the data sizes; evaluation is reported apart from the total."""

    from esacl.data import load_benchmark
    from esacl.train import batch_bounds, run

    cfg = config(method=learner, n_tasks=2, epochs=1, seed=0, out=str(tmp_path), progress=False)
    bench = load_benchmark(cfg, torch.device("cpu"))
    n0, n1 = (len(task.y_train) for task in bench.tasks[:2])
    tests = sum(len(task.y_test) for task in bench.tasks[:2])
    steps, m = len(batch_bounds(n0 + n1 if learner == "joint" else n1, cfg.batch_size)), cfg.minibatch_size
    events = run(cfg).task_events
    f = events[0]["flops_dense_sgd"] / (3 * n0)  # one example's dense forward
    got = {k: v - events[0]["flops"].get(k, 0) for k, v in events[1]["flops"].items()}

    def trained(component, examples):  # a forward and a backward (2x the forward) per example
        return {f"{component}.forward": examples * f, f"{component}.backward": 2 * examples * f}

    replayed = steps * m  # a replay minibatch per step (the buffer holds more than m after task 0)
    expected = {
        "sgd": lambda: trained("first_pass", n1),
        "joint": lambda: trained("first_pass", n0 + n1),  # the union of the tasks so far
        "ewc": lambda: trained("first_pass", n1) | trained("fisher", n1),  # the Fisher: every example, task end
        "lwf": lambda: trained("first_pass", n1) | {"teacher.forward": n1 * f},
        "er": lambda: trained("first_pass", n1 + replayed),
        "agem": lambda: trained("first_pass", n1) | trained("reference", replayed),
        "derpp": lambda: trained("first_pass", n1 + 2 * replayed),  # two replay minibatches per step
        "co2l": dict,
    }[learner]()
    if learner == "co2l":
        model = build_model(bench.backbone, bench.input_shape, bench.n_classes, cfg.width, bench.norm)
        dim = model.head.in_features
        per_view = f + 2 * (dim * dim + dim * 128)  # the backbone, then the projector's two linear layers
        views = 2 * (n1 + replayed)  # two views of every stream and replay example
        # the current model's forward and backward, the past model's (taken at the task start) forward
        expected = {"first_pass.forward": 2 * views * per_view, "first_pass.backward": 2 * views * per_view}
        probe = round(got["linear_probe.forward"] / f)  # the task's examples plus the buffer's of earlier tasks
        assert n1 <= probe <= n1 + cfg.buffer_size
        expected["linear_probe.forward"] = probe * f
        expected["linear_probe.head"] = 3 * 2 * dim * bench.n_classes * cfg.co2l_probe_epochs * probe
    training = {k: v for k, v in got.items() if k not in ("total", "measure") and not k.startswith("measure.")}
    assert training == pytest.approx(expected, rel=1e-9)
    assert got["total"] == pytest.approx(sum(expected.values()), rel=1e-9)
    assert got["measure"] == got["measure.evaluation.forward"] == pytest.approx(tests * f, rel=1e-9)


def test_sparse_model_size_is_nonzeros_plus_a_bitmap():
    model, _ = meter_and_model()
    mask = torch.zeros(2 * W, W, 3, 3, dtype=torch.bool)
    mask.view(-1)[:100] = True
    sizes = sparse_model_bytes(model, {"stage1.0.0.weight": mask})
    n = mask.numel()
    assert sizes["model_dense"] - sizes["model_sparse"] == 4 * n - (4 * 100 + (n + 7) // 8)


def test_dgm_scales_the_weight_gradient_term_only():
    model, meter = meter_and_model()
    half = torch.zeros(2 * W, W, 3, 3, dtype=torch.bool)
    half.view(-1)[: half.numel() // 2] = True
    full = torch.ones(4 * W, 2 * W, 3, 3, dtype=torch.bool)
    meter.set_density(
        {"stage1.0.0.weight": half, "stage2.0.0.weight": full},
        grad_density={"stage1.0.0.weight": 0.2, "stage2.0.0.weight": 0.2},
    )
    dense = STEM + STAGE1 + STAGE2 + HEAD
    forward = dense - 0.5 * STAGE1
    assert meter.forward_cost.item() == pytest.approx(forward)
    # backward = activation gradients (the forward's cost) + weight gradients (20% of each layer).
    assert meter.backward_cost.item() == pytest.approx(forward + dense - 0.8 * STAGE1 - 0.8 * STAGE2)


def test_a_dual_averaging_step_prices_the_gradient_it_consumes_as_dense():
    # SDP at half density in stage1 and stage2: pass 1 (its gradient only points the ascent, on live
    # weights) has sparse weight gradients; pass 2 feeds the accumulator at every position: dense.
    from esacl.prune import DualAveraging

    model, meter = meter_and_model()
    cfg = config(method="esacl-noids", sparsity=0.5, ramp_fraction=0.0, dense_grad_every=1)
    rule = DualAveraging(model, cfg, meter)
    rule.begin_task(0, 10)
    step = Step(model, cfg, True, rule, AllData(cfg, "cpu"), meter)
    step(model, Learner(cfg, 10, 0), toy_batch(4))  # the first update makes both layers half dense
    assert rule.masks["stage1.0.0.weight"].float().mean() == 0.5
    before = meter.snapshot()
    step(model, Learner(cfg, 10, 0), toy_batch(4))
    after = meter.snapshot()
    delta = {k: after[k] - before.get(k, 0) for k in after if k != "total"}
    dense = STEM + STAGE1 + STAGE2 + HEAD
    forward = dense - 0.5 * (STAGE1 + STAGE2)  # per example, both masked layers at half
    assert delta["first_pass.forward"] == delta["second_pass.forward"] == pytest.approx(4 * forward)
    assert delta["first_pass.backward"] == pytest.approx(4 * (forward + forward))  # live weight gradients
    assert delta["second_pass.backward"] == pytest.approx(4 * (forward + dense))  # dense weight gradients


def test_dense_grad_every_k_prices_and_feeds_the_dense_gradient_every_k_th_step_only():
    from esacl.prune import DualAveraging

    model, meter = meter_and_model()
    cfg = config(method="grda", sparsity=0.5, ramp_fraction=0.0, dense_grad_every=2)
    rule = DualAveraging(model, cfg, meter)
    rule.begin_task(0, 10)
    step = Step(model, cfg, False, rule, AllData(cfg, "cpu"), meter)
    learner = Learner(cfg, 10, 0)
    step(model, learner, toy_batch(4))  # update 0: dense
    dense = STEM + STAGE1 + STAGE2 + HEAD
    forward = dense - 0.5 * (STAGE1 + STAGE2)
    costs = []
    for i in range(2):  # update 1: live only; update 2: dense
        before = meter.snapshot()["first_pass.backward"]
        pruned = {n: (~m).clone() for n, m in rule.masks.items()}
        acc = {n: a.clone() for n, a in rule.accumulator.items()}
        step(model, learner, toy_batch(4, seed=i + 1))
        costs.append(meter.snapshot()["first_pass.backward"] - before)
        moved = any(not torch.equal(rule.accumulator[n][pruned[n]], acc[n][pruned[n]]) for n in acc)
        assert moved == (i == 1), i  # pruned positions move on dense steps only
    assert costs == pytest.approx([4 * (forward + forward), 4 * (forward + dense)])


def test_dgm_without_tdm_prices_a_fifth_of_the_weight_gradients():
    from esacl.prune import SparCL

    model, meter = meter_and_model()
    cfg = config(method="sparcl-er", sparsity=0.9, tdm=False, dgm_keep=0.2)
    rule = SparCL(model, cfg, meter)
    rule.begin_task(0, 10)
    rule.begin_epoch(0)
    dense = STEM + STAGE1 + STAGE2 + HEAD
    assert meter.forward_cost.item() == dense
    assert meter.backward_cost.item() == pytest.approx(2 * dense - 0.8 * (STAGE1 + STAGE2))


def test_sam_every_k_takes_the_two_passes_on_every_k_th_step_only():
    model, meter = meter_and_model()
    cfg = config(method="sam", sam_every=3)
    step = Step(model, cfg, True, SGD(model, cfg), AllData(cfg, "cpu"), meter)
    passes = []
    for i in range(6):
        before = meter.snapshot().get("second_pass.forward", 0)
        step(model, Learner(cfg, 10, 0), toy_batch(4, seed=i))
        passes.append(meter.snapshot().get("second_pass.forward", 0) > before)
    assert passes == [True, False, False, True, False, False]
    assert step.state_dict()["rule"]["n_steps"] == 6  # the one step counter, the update rule's
