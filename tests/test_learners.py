import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

import esacl
from esacl import RunConfig, UserError
from esacl.config import resolve
from esacl.learners import EWC, Batch, DERpp, ER, LwF, ReservoirBuffer, agem_project, fisher_diagonal
from esacl.method import build_learner
from esacl.models import ConvNet


def stream_through(buffer, n, batch):
    for start in range(0, n, batch):
        items = torch.arange(start, min(start + batch, n))
        buffer.add(x=items[:, None].float(), y=items)
    return buffer


def test_reservoir_keeps_every_stream_item_with_equal_probability():
    capacity, n, trials = 10, 50, 2000
    counts = np.zeros(n)
    for trial in range(trials):
        kept = stream_through(ReservoirBuffer(capacity, seed=trial), n, batch=7).contents()["y"]
        assert len(set(kept.tolist())) == capacity  # no slot holds a duplicate
        counts[kept.numpy()] += 1
    # Each item is kept with probability capacity / n; a chi-square test at p = 0.001.
    assert stats.chisquare(counts).pvalue > 1e-3
    # And an item of the late stream is as likely as one of the first batch (no recency bias).
    assert abs(counts[:25].sum() - counts[25:].sum()) / counts.sum() < 0.05


def sequential_reservoir(capacity, n, seed):
    """Algorithm R one example at a time, from the same uniform draws as the buffer's generator."""
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    kept = [None] * capacity
    for i in range(n):
        j = i if i < capacity else int(u[i] * (i + 1))
        if j < capacity:
            kept[j] = i
    return kept


def test_reservoir_batches_equal_one_by_one_insertion():
    expected = sequential_reservoir(8, 100, seed=3)
    for batch in (1, 13, 100):  # 100: one batch, many collisions resolved at once
        buffer = stream_through(ReservoirBuffer(8, seed=3), 100, batch=batch)
        assert buffer.contents()["y"].tolist() == expected and buffer.n_seen == 100


def test_reservoir_sample_is_distinct_and_bounded_by_content():
    buffer = stream_through(ReservoirBuffer(20, seed=0), 5, batch=5)
    drawn = buffer.sample(32)
    assert sorted(drawn["y"].tolist()) == [0, 1, 2, 3, 4]
    buffer = stream_through(ReservoirBuffer(20, seed=0), 100, batch=10)
    assert len(set(buffer.sample(16)["y"].tolist())) == 16


def learner_for(cls, **changes):
    cfg, _ = resolve(RunConfig(**changes))
    return cls(cfg, 10, seed=0)


def toy_batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Batch(x, y, torch.arange(n), x)


def test_er_loss_is_one_cross_entropy_over_stream_and_replay():
    torch.manual_seed(0)
    model, learner = ConvNet(1, 10, 4), learner_for(ER, method="er")
    learner.observe(toy_batch(8, seed=1), None)
    batch = learner.prepare(toy_batch())
    loss = learner.loss(model, batch)
    x = torch.cat([batch.x, batch.replay["x"]])
    y = torch.cat([batch.y, batch.replay["y"]])
    assert torch.allclose(loss.total, F.cross_entropy(model(x), y))
    assert torch.allclose(loss.per_sample, F.cross_entropy(model(x), y, reduction="none")[:6])


def test_derpp_loss_matches_its_formula():
    torch.manual_seed(0)
    model, learner = ConvNet(1, 10, 4), learner_for(DERpp, method="derpp", derpp_alpha=0.3, derpp_beta=0.7)
    model.eval()  # per-forward batch-norm statistics would differ from one joint forward
    stored = toy_batch(8, seed=1)
    learner.observe(stored, type("L", (), {"logits": torch.randn(8, 10)})())
    batch = learner.prepare(toy_batch())
    d, c = batch.replay["distill"], batch.replay["ce"]
    expected = (
        F.cross_entropy(model(batch.x), batch.y)
        + 0.3 * F.mse_loss(model(d["x"]), d["logits"])
        + 0.7 * F.cross_entropy(model(c["x"]), c["y"])
    )
    assert torch.allclose(learner.loss(model, batch).total, expected, atol=1e-6)


def test_fisher_equals_an_explicit_per_example_loop():
    torch.manual_seed(0)
    model = ConvNet(1, 10, 4)
    model.train()
    batch = toy_batch(5)
    fisher = fisher_diagonal(model, batch.x, batch.y, budget_bytes=2 * 4 * sum(p.numel() for p in model.parameters()))
    assert model.training  # mode restored
    model.eval()
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for xi, yi in zip(batch.x, batch.y):
        log_p = F.log_softmax(model(xi[None]), dim=1)[0, yi]
        grads = torch.autograd.grad(log_p, list(model.parameters()))
        for (n, _), g in zip(model.named_parameters(), grads):
            expected[n] += log_p.exp().detach() * g**2 / 5
    for n in expected:
        assert torch.allclose(fisher[n], expected[n], rtol=1e-4, atol=1e-10), n


def test_online_ewc_decays_the_old_fisher_and_penalises_drift():
    torch.manual_seed(0)
    model, learner = ConvNet(1, 10, 4), learner_for(EWC, method="ewc", ewc_gamma=0.5, ewc_lambda=2.0)
    task = type("T", (), {"x_train": toy_batch().x, "y_train": toy_batch().y})()
    learner.end_task(task, model)
    first = {n: f.clone() for n, f in learner.fisher.items()}
    learner.end_task(task, model)
    for n in first:
        assert torch.allclose(learner.fisher[n], 1.5 * first[n])
    batch = toy_batch()
    plain = F.cross_entropy(model(batch.x), batch.y)
    assert torch.allclose(learner.loss(model, batch).total, plain)  # no drift yet: no penalty
    with torch.no_grad():
        model.head.bias += 1.0
    drift = 2.0 * learner.fisher["head.bias"].sum()
    assert torch.allclose(learner.loss(model, batch).total, F.cross_entropy(model(batch.x), batch.y) + drift)


def test_ewc_caps_each_penalty_weight_where_one_step_lands_on_the_anchor():
    torch.manual_seed(0)
    model = ConvNet(1, 10, 4)
    learner = learner_for(EWC, method="ewc", ewc_lambda=1e9, lr=0.05)
    task = type("T", (), {"x_train": toy_batch().x, "y_train": toy_batch().y})()
    learner.end_task(task, model)
    cap = 1 / (2 * 0.05)
    for n, f in learner.fisher.items():
        assert torch.equal(learner.stiffness[n], (1e9 * f).clamp(max=cap)), n
    assert (learner.stiffness["head.weight"] == cap).any()
    # One SGD step on the penalty alone moves a capped weight exactly back to its anchor.
    with torch.no_grad():
        model.head.weight += 0.3
    drifted = model.head.weight.detach().clone()
    penalty = sum((learner.stiffness[n] * (p - learner.anchor[n]) ** 2).sum() for n, p in model.named_parameters())
    penalty.backward()
    stepped = drifted - 0.05 * model.head.weight.grad
    capped = learner.stiffness["head.weight"] == cap
    assert torch.allclose(stepped[capped], learner.anchor["head.weight"][capped], atol=1e-6)
    uncapped = learner_for(EWC, method="ewc", ewc_lambda=1e9, lr=0.05, ewc_cap=False)
    uncapped.end_task(task, model)
    assert torch.equal(uncapped.stiffness["head.weight"], 1e9 * uncapped.fisher["head.weight"])


def test_ewc_proximal_step_minimises_the_penalty_plus_the_distance_moved_and_needs_no_cap(tiny):
    torch.manual_seed(0)
    model = ConvNet(1, 10, 4)
    learner = learner_for(EWC, method="ewc", ewc_lambda=1e6, lr=0.05, ewc_step="proximal")
    task = type("T", (), {"x_train": toy_batch().x, "y_train": toy_batch().y})()
    learner.end_task(task, model)
    k = learner.stiffness["head.weight"]
    assert torch.equal(k, 1e6 * learner.fisher["head.weight"]) and (k > 1 / (2 * 0.05)).any()  # uncapped
    batch = toy_batch()
    assert torch.allclose(learner.loss(model, batch).total, F.cross_entropy(model(batch.x), batch.y))  # not in the loss
    with torch.no_grad():
        model.head.weight += 0.3
    v = model.head.weight.detach().clone()
    learner.after_update(model)
    w = model.head.weight.detach()
    # w = argmin_u k (u - w*)^2 + (u - v)^2 / (2 lr): its derivative vanishes there, for every k.
    assert torch.allclose(2 * k * (w - learner.anchor["head.weight"]), -(w - v) / 0.05, rtol=1e-4, atol=1e-4)
    assert (w - learner.anchor["head.weight"]).abs().le((v - learner.anchor["head.weight"]).abs() + 1e-7).all()
    # Stiff enough to diverge as a gradient, uncapped: as a proximal step the run stays finite.
    record = esacl.run(tiny(method="ewc", ewc_step="proximal", ewc_lambda=1e6))
    assert record.complete and all(math.isfinite(a) for row in record.task_il for a in row if a is not None)
    with pytest.raises(UserError, match="ewc_step=proximal needs an SGD update"):
        build_learner(resolve(RunConfig(method="esacl-ewc", ewc_step="proximal"))[0], 10)


def test_agem_projection_by_hand():
    # g = (1, 0), r = (-1, 1) split over two tensors: g.r = -1, r.r = 2, g~ = g + r / 2 = (0.5, 0.5).
    g, r = [torch.tensor([1.0]), torch.tensor([0.0])], [torch.tensor([-1.0]), torch.tensor([1.0])]
    agem_project(g, r)
    assert [t.item() for t in g] == [0.5, 0.5]
    g = [torch.tensor([1.0]), torch.tensor([0.0])]
    agem_project(g, [torch.tensor([1.0]), torch.tensor([1.0])])  # g.r = 1 > 0: left alone
    assert [t.item() for t in g] == [1.0, 0.0]


def test_lwf_adds_the_distillation_to_the_last_task_ends_model_by_hand():
    from types import SimpleNamespace

    torch.manual_seed(0)
    cfg = RunConfig(method="lwf", lwf_alpha=0.7, lwf_temperature=2.0)
    model = ConvNet(1, 10, width=4)
    learner = LwF(cfg, 10, 0)
    learner.attach(model)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([2, 3, 2, 3, 2, 3])
    batch = Batch(x, y, torch.arange(6), x)
    assert learner.loss(model, batch).total.item() == pytest.approx(F.cross_entropy(model(x), y).item())
    learner.end_task(SimpleNamespace(classes=[0, 1]), model)  # task 0 had classes 0 and 1
    model.eval()
    with torch.no_grad():
        old = model(x).double().numpy()  # the teacher: this model, in eval mode
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # training moves on
    model.train()
    loss = learner.loss(model, batch)
    new = loss.logits.detach().double().numpy()
    soft = lambda z: np.exp(z / 2.0) / np.exp(z / 2.0).sum(axis=1, keepdims=True)
    p_old, p_new = soft(old[:, [0, 1]]), soft(new[:, [0, 1]])
    kl = (p_old * np.log(p_old / p_new)).sum(axis=1).mean()
    ce = F.cross_entropy(loss.logits, y).item()
    assert loss.total.item() == pytest.approx(ce + 0.7 * kl, rel=1e-5)  # Li & Hoiem: no T^2 factor
    # A checkpoint carries the teacher.
    again = LwF(cfg, 10, 0)
    again.attach(model)
    again.load_state_dict(learner.state_dict())
    assert again.seen.tolist() == [0, 1] and again.loss(model, batch).total.item() == pytest.approx(
        loss.total.item(), rel=1e-6
    )


def test_lwf_warm_up_moves_only_the_new_classes_outputs_then_everything():
    from types import SimpleNamespace

    from esacl.prune import SGD
    from esacl.selection import AllData
    from esacl.steps import Step
    from helpers import config

    torch.manual_seed(0)
    cfg = config(method="lwf", lwf_warmup_epochs=1, lr=0.1)
    model = ConvNet(1, 10, width=4)
    learner = LwF(cfg, 10, 0)
    learner.attach(model)
    step = Step(model, cfg, False, SGD(model, cfg), AllData(cfg, "cpu"))
    learner.end_task(SimpleNamespace(classes=[0, 1]), model)  # task 0 ends: a teacher exists
    learner.begin_task(SimpleNamespace(classes=[2, 3]), model)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([2, 3, 2, 3, 2, 3])
    for epoch, warming in ((0, True), (1, False)):
        learner.begin_epoch(epoch)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        step(model, learner, Batch(x, y, torch.arange(6), x))
        moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        if warming:
            assert moved == {"head.weight", "head.bias"}
            rows = (model.head.weight != before["head.weight"]).any(1).nonzero().flatten().tolist()
            assert rows == [2, 3]  # the new classes' outputs only
        else:
            assert "stem.0.weight" in moved and len(moved) > 2
