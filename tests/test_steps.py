import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esacl.learners import Learner
from esacl.prune import SGD, DualAveraging
from esacl.selection import AllData, IDS
from esacl.steps import Step, perturbed, support_indices
from helpers import config, toy_batch


class Tiny(nn.Module):
    """Conv + batch-norm + linear: small enough to differentiate by hand with autograd."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 10)

    def forward(self, x):
        return self.head(F.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))

    def prunable(self):
        return ["conv.weight"]


def loss_at(model, params, x, y, reduction="mean"):
    """Cross-entropy of `model` with its parameters replaced by `params` (train-mode batch-norm,
    running statistics untouched)."""
    model = copy.deepcopy(model)
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.track_running_stats = False
    out = torch.func.functional_call(model, params, (x,))
    return F.cross_entropy(out, y, reduction=reduction)


def hand_sam(model, x, y, rho, lr, keep=None, asam=False):
    """SAM written out: g at w, eps = rho g/||g|| (or ASAM's), gradient at w + eps (on `keep`), w - lr g~."""
    w = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    g = torch.autograd.grad(loss_at(model, w, x, y), list(w.values()))
    if asam:
        t = [p.abs() + 0.01 for p in w.values()]
        norm = torch.sqrt(sum(((ti * gi) ** 2).sum() for ti, gi in zip(t, g)))
        eps = [rho * ti**2 * gi / norm for ti, gi in zip(t, g)]
    else:
        norm = torch.sqrt(sum((gi**2).sum() for gi in g))
        eps = [rho * gi / norm for gi in g]
    w_eps = {n: (p + e).detach().requires_grad_() for (n, p), e in zip(w.items(), eps)}
    xs, ys = (x, y) if keep is None else (x[keep], y[keep])
    g2 = torch.autograd.grad(loss_at(model, w_eps, xs, ys), list(w_eps.values()))
    return {n: p.detach() - lr * gi for (n, p), gi in zip(w.items(), g2)}


@pytest.mark.parametrize("asam", [False, True])
def test_sam_step_equals_a_hand_written_two_pass_update(asam):
    torch.manual_seed(0)
    model, batch = Tiny(), toy_batch(8)
    cfg = config(method="sam", rho=0.05, lr=0.1, asam=asam)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    expected = hand_sam(model, batch.x, batch.y, 0.05, 0.1, asam=asam)
    step = Step(model, cfg, sam=True, rule=SGD(model, cfg), selector=AllData(cfg, "cpu"))
    loss = step(model, Learner(cfg, 10, 0), batch)
    for n, p in model.named_parameters():
        assert torch.allclose(p, expected[n], atol=1e-6), n
    # The returned loss is pass 1's, at the weights before the update.
    assert torch.allclose(loss.total, loss_at(model, start, batch.x, batch.y))


def test_batch_norm_running_stats_move_once_per_step():
    torch.manual_seed(0)
    model, batch = Tiny(), toy_batch(8)
    reference = copy.deepcopy(model)
    reference(batch.x)  # one train-mode forward at w
    cfg = config(method="sam")
    Step(model, cfg, sam=True, rule=SGD(model, cfg), selector=AllData(cfg, "cpu"))(model, Learner(cfg, 10, 0), batch)
    assert torch.allclose(model.bn.running_mean, reference.bn.running_mean)
    assert torch.allclose(model.bn.running_var, reference.bn.running_var)
    assert int(model.bn.num_batches_tracked) == 1


class Recording(IDS):
    def record(self, batch, loss, scores=None, keep=None):
        self.seen = (scores, keep)


def test_support_selection_keeps_exactly_k_of_the_highest_scores():
    torch.manual_seed(0)
    model, batch = Tiny(), toy_batch(12)
    cfg = config(method="ids-only", rho=0.5, lr=0.1, support_size=5, support_balance="none")
    selector = Recording(cfg, "cpu")
    step = Step(model, cfg, sam=True, rule=SGD(model, cfg), selector=selector)
    before = copy.deepcopy(model)
    step(model, Learner(cfg, 10, 0), batch)
    scores, keep = selector.seen
    assert keep.shape == (5,) and len(set(keep.tolist())) == 5
    # Scores by hand: per-example loss at w + eps minus at w (batch statistics of the whole batch).
    wp = {n: p.detach().clone().requires_grad_() for n, p in before.named_parameters()}
    grads = torch.autograd.grad(loss_at(before, wp, batch.x, batch.y), list(wp.values()))
    norm = torch.sqrt(sum((gi**2).sum() for gi in grads))
    w_eps = {n: p.detach() + 0.5 * gi / norm for (n, p), gi in zip(wp.items(), grads)}
    hand = loss_at(before, w_eps, batch.x, batch.y, "none") - loss_at(before, wp, batch.x, batch.y, "none").detach()
    assert torch.allclose(scores, hand, atol=1e-5)
    assert set(keep.tolist()) == set(hand.topk(5).indices.tolist())
    # ... and the update used the gradient of the kept examples only.
    expected = hand_sam(before, batch.x, batch.y, 0.5, 0.1, keep=keep)
    for n, p in model.named_parameters():
        assert torch.allclose(p, expected[n], atol=1e-6), n


def test_the_ascent_leaves_pruned_weights_at_zero_and_restores_w_exactly():
    torch.manual_seed(0)
    model, batch = Tiny(), toy_batch(8)
    cfg = config(method="esacl", sparsity=0.5, ramp_fraction=1.0)
    rule = DualAveraging(model, cfg)
    rule.begin_task(0, 1)
    step = Step(model, cfg, sam=True, rule=rule, selector=AllData(cfg, "cpu"))
    learner = Learner(cfg, 10, 0)
    step(model, learner, batch)  # now half of conv.weight is pruned
    mask = rule.masks["conv.weight"]
    assert (model.conv.weight[~mask] == 0).all() and (~mask).sum() == round(0.5 * model.conv.weight.numel())
    learner.loss(model, batch).total.backward()
    saved = [p.detach().clone() for p in model.parameters()]
    with perturbed(list(model.parameters())):
        step.ascend()
        assert (model.conv.weight[~mask] == 0).all()  # eps is zero on pruned weights
        assert not torch.equal(model.conv.weight[mask], saved[0][mask])
    assert all(torch.equal(p, s) for p, s in zip(model.parameters(), saved))


def test_class_balanced_support_keeps_each_class_in_proportion_and_its_sharpest():
    torch.manual_seed(0)
    y = torch.tensor([3] * 12 + [7] * 4 + [5] * 8)[torch.randperm(24)]  # shares 1/2, 1/6, 1/3
    scores = torch.randn(24)
    scores[y == 3] += 5  # class 3 is sharpest by far
    keep = support_indices(scores, y, 12, "class")
    assert keep.shape == (12,) and len(set(keep.tolist())) == 12
    assert sorted(torch.bincount(y[keep], minlength=8)[[3, 5, 7]].tolist()) == [2, 4, 6]
    for c in (3, 5, 7):
        mine = (y == c).nonzero().flatten()
        kept = set(keep.tolist()) & set(mine.tolist())
        assert kept == set(mine[scores[mine].topk(len(kept)).indices].tolist())  # its sharpest
    plain = support_indices(scores, y, 12, "none")
    assert set(plain.tolist()) == set(scores.topk(12).indices.tolist())
    assert (y[plain] == 3).all()  # the skew the balance removes


def test_whole_batch_statistics_normalise_the_scoring_and_the_second_pass():
    torch.manual_seed(0)
    model, batch = Tiny(), toy_batch(12)
    cfg = config(method="ids-only", rho=0.5, lr=0.1, support_size=5, support_bn="batch", support_balance="none")
    selector = Recording(cfg, "cpu")
    before = copy.deepcopy(model)
    Step(model, cfg, sam=True, rule=SGD(model, cfg), selector=selector)(model, Learner(cfg, 10, 0), batch)
    scores, keep = selector.seen
    # By hand: batch-norm normalises every forward of the step with pass 1's batch statistics (at w).
    h = before.conv(batch.x).detach()
    mean, var = h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=False)
    fixed = copy.deepcopy(before).eval()
    fixed.bn.running_mean, fixed.bn.running_var = mean, var
    wp = {n: p.detach().clone().requires_grad_() for n, p in before.named_parameters()}
    at = lambda w, x, y, reduction="mean": F.cross_entropy(
        torch.func.functional_call(fixed, w, (x,)), y, reduction=reduction
    )
    train_loss = loss_at(before, wp, batch.x, batch.y)  # pass 1 itself: train mode
    grads = torch.autograd.grad(train_loss, list(wp.values()))
    norm = torch.sqrt(sum((gi**2).sum() for gi in grads))
    w_eps = {n: (p.detach() + 0.5 * gi / norm).requires_grad_() for (n, p), gi in zip(wp.items(), grads)}
    hand = at(w_eps, batch.x, batch.y, "none") - loss_at(before, wp, batch.x, batch.y, "none").detach()
    assert torch.allclose(scores, hand, atol=1e-5)
    g2 = torch.autograd.grad(at(w_eps, batch.x[keep], batch.y[keep]), list(w_eps.values()))
    for (n, p), gi in zip(model.named_parameters(), g2):
        assert torch.allclose(p, wp[n].detach() - 0.1 * gi, atol=1e-6), n
    assert torch.allclose(model.bn.running_mean, 0.9 * before.bn.running_mean + 0.1 * mean)  # pass 1 only


def test_agem_under_sparcl_projects_the_gradient_the_update_applies():
    # SparCL zeroes pruned weights' gradients and keeps the largest DGM share of the rest: the update
    # that is applied must still not raise the replay loss to first order (g~ . g_ref >= 0).
    from esacl.learners import AGEM
    from esacl.prune import SparCL

    torch.manual_seed(0)
    model, batch = Tiny(), toy_batch(8)
    cfg = config(method="sparcl-agem", lr=0.1, buffer_size=20, minibatch_size=8, sparsity=0.5, dgm_keep=0.3)
    rule = SparCL(model, cfg)
    rule.begin_task(0, 10)
    rule.begin_epoch(0)
    assert 0 < rule.masks["conv.weight"].float().mean() < 1
    x_ref, y_ref = batch.x, (batch.y + 1) % 10  # relabelled: the replay gradient opposes the stream's
    w = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    g = torch.autograd.grad(loss_at(model, w, batch.x, batch.y), list(w.values()))
    r = torch.autograd.grad(loss_at(model, w, x_ref, y_ref), list(w.values()))
    assert sum((a * b).sum() for a, b in zip(g, r)) < 0  # the projection has work to do
    batch.replay = {"reference": dict(x=x_ref, y=y_ref)}
    Step(model, cfg, sam=False, rule=rule, selector=AllData(cfg, "cpu"))(model, AGEM(cfg, 10, 0), batch)
    applied = [(w[n].detach() - p.detach()) / 0.1 for n, p in model.named_parameters()]  # the update's g~
    assert sum((a.double() * b.double()).sum() for a, b in zip(applied, r)) >= -1e-9
    assert (applied[0][~rule.masks["conv.weight"]] == 0).all()  # and pruned weights stayed pruned


@pytest.mark.parametrize("support_bn", ["subset", "batch"])
def test_both_losses_of_a_replay_learners_score_come_from_one_batch_norm_regime(support_bn):
    # At a vanishing radius w + eps = w, so a score is 0 wherever l_i(w + eps) and l_i(w) are normalised
    # alike. Pass 1 normalises over stream + replay; 'subset' scoring forwards the stream alone.
    from esacl.learners import ER

    torch.manual_seed(0)
    model, batch = Tiny(), toy_batch(12)
    cfg = config(method="esacl-er", rho=1e-9, lr=0.1, support_size=5, support_bn=support_bn, buffer_size=20)
    learner = ER(cfg, 10, 0)
    learner.buffer.add(x=toy_batch(20, seed=1).x * 3 + 2, y=toy_batch(20, seed=1).y)  # statistics unlike the stream's
    selector = Recording(cfg, "cpu")
    step = Step(model, cfg, sam=True, rule=SGD(model, cfg), selector=selector)
    step(model, learner, learner.prepare(batch))
    scores, _ = selector.seen
    assert scores.abs().max() < 1e-5
    # the two regimes really differ here: the stream's losses under each
    stream_alone = F.cross_entropy(copy.deepcopy(model)(batch.x), batch.y, reduction="none")
    joint = F.cross_entropy(
        copy.deepcopy(model)(torch.cat([batch.x, batch.replay["x"]]))[:12], batch.y, reduction="none"
    )
    assert (stream_alone - joint).abs().max() > 1e-2


@pytest.mark.parametrize("opposed", [True, False])
def test_agem_projects_the_step_gradient_against_the_replay_gradient(opposed):
    from esacl.learners import AGEM

    torch.manual_seed(0)
    model, batch = Tiny(), toy_batch(8)
    # Opposed: the stream's inputs relabelled; aligned: the stream batch itself (g.r = g.g > 0).
    x_ref, y_ref = batch.x, (batch.y + 1) % 10 if opposed else batch.y
    cfg = config(method="agem", lr=0.1, buffer_size=20, minibatch_size=8)
    # By hand (float64): g at w on the stream, r at w on the replay draw, g~ = g - min(0, g.r)/(r.r) r, w - lr g~.
    w = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    g = torch.autograd.grad(loss_at(model, w, batch.x, batch.y), list(w.values()))
    r = torch.autograd.grad(loss_at(model, w, x_ref, y_ref), list(w.values()))
    dot = sum((a.double() * b.double()).sum() for a, b in zip(g, r))
    assert (dot < 0) == opposed  # the case each parameter stands for
    norm2 = sum((b.double() ** 2).sum() for b in r)
    projected = [a.double() - min(0.0, dot.item()) / norm2.item() * b.double() for a, b in zip(g, r)]
    expected = {n: p.detach().double() - 0.1 * gi for (n, p), gi in zip(w.items(), projected)}
    if opposed:  # the projected gradient no longer opposes r
        assert abs(sum((a * b.double()).sum() for a, b in zip(projected, r)).item()) < 1e-9

    learner = AGEM(cfg, 10, 0)
    batch.replay = {"reference": dict(x=x_ref, y=y_ref)}
    Step(model, cfg, sam=False, rule=SGD(model, cfg), selector=AllData(cfg, "cpu"))(model, learner, batch)
    for n, p in model.named_parameters():
        assert torch.allclose(p.double(), expected[n], atol=1e-6), n


def test_perturbed_writes_the_weights_back_exactly_also_after_an_error():
    params = [torch.randn(5), torch.randn(2, 3)]
    before = [p.clone() for p in params]
    with perturbed(params) as saved:
        assert all(torch.equal(s, b) for s, b in zip(saved, before))
        for p in params:
            p.add_(0.1).sub_(0.1)  # does not round-trip in floating point
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    with pytest.raises(RuntimeError, match="mid-step"):
        with perturbed(params):
            params[0].mul_(3)
            raise RuntimeError("mid-step")
    assert all(torch.equal(p, b) for p, b in zip(params, before))


def test_a_checkpoint_from_when_the_step_kept_its_own_count_loads_into_the_one_counter():
    torch.manual_seed(0)
    model = Tiny()
    cfg = config(method="sam", sam_every=2)
    step = Step(model, cfg, sam=True, rule=SGD(model, cfg), selector=AllData(cfg, "cpu"))
    step.load_state_dict(dict(pruner={}, n_steps=5))  # as written before the update rule counted or had its name
    assert step.rule.n_steps == 5 and step.state_dict() == dict(rule=dict(n_steps=5))
