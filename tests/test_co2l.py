import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import esacl
from esacl.co2l import CO2L, asymmetric_supcon, embed, relation_distillation, two_views
from esacl.learners import Batch
from esacl.models import ConvNet
from helpers import config, toy_batch


def unit(angles):
    return torch.tensor([[math.cos(a), math.sin(a)] for a in angles], dtype=torch.float64)


def hand_supcon(angles, labels, anchors, t):
    """The loss of each sample with explicit loops: z_i.z_j = cos(angle_i - angle_j)."""
    n, out = len(angles), []
    for i in range(n):
        positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not anchors[i] or not positives:
            out.append(0.0)
            continue
        denominator = sum(math.exp(math.cos(angles[i] - angles[a]) / t) for a in range(n) if a != i)
        terms = [math.log(math.exp(math.cos(angles[i] - angles[p]) / t) / denominator) for p in positives]
        out.append(-sum(terms) / len(terms))
    return out


def test_asymmetric_supcon_equals_the_hand_computation():
    angles, labels, anchors = [0.0, 0.4, 2.0, 2.9], [0, 0, 1, 1], [True, True, False, False]
    got = asymmetric_supcon(unit(angles), torch.tensor(labels), torch.tensor(anchors), 0.5)
    expected = hand_supcon(angles, labels, anchors, 0.5)
    assert expected[0] > 0 and expected[2] == 0
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_buffer_positives_count_for_anchors_but_non_anchors_have_no_loss():
    # Sample 0 (anchor) shares its label only with sample 2 (a buffer sample, not an anchor);
    # anchor 1 has no positive at all.
    angles, labels, anchors = [0.0, 1.5, 0.3], [0, 1, 0], [True, True, False]
    z = unit(angles).requires_grad_(True)
    got = asymmetric_supcon(z, torch.tensor(labels), torch.tensor(anchors), 0.5)
    s01, s02 = math.cos(angles[0] - angles[1]) / 0.5, math.cos(angles[0] - angles[2]) / 0.5
    assert got[0].item() == pytest.approx(-math.log(math.exp(s02) / (math.exp(s01) + math.exp(s02))), rel=1e-12)
    assert got[1].item() == 0 and got[2].item() == 0
    got.sum().backward()
    assert z.grad[2].abs().sum() > 0  # the buffer sample is pulled towards its anchor


def softmax_rows(z, t):
    """p[i][j] over j != i of exp(z_i.z_j / t), with explicit loops (p[i][i] = 0)."""
    n = len(z)
    sim = [[sum(a * b for a, b in zip(z[i], z[j])) / t for j in range(n)] for i in range(n)]
    out = []
    for i in range(n):
        denominator = sum(math.exp(sim[i][k]) for k in range(n) if k != i)
        out.append([0.0 if j == i else math.exp(sim[i][j]) / denominator for j in range(n)])
    return out


def test_relation_distillation_is_the_cross_entropy_of_past_and_current_relations():
    g = torch.Generator().manual_seed(0)
    z_now = F.normalize(torch.randn(5, 3, generator=g, dtype=torch.float64), dim=1)
    z_past = F.normalize(torch.randn(5, 3, generator=g, dtype=torch.float64), dim=1)
    p_now, p_past = softmax_rows(z_now.tolist(), 0.2), softmax_rows(z_past.tolist(), 0.3)
    expected = sum(-p_past[i][j] * math.log(p_now[i][j]) for i in range(5) for j in range(5) if j != i) / 5
    assert relation_distillation(z_now, z_past, 0.2, 0.3).item() == pytest.approx(expected, rel=1e-10)

    # Same embeddings and temperature: the cross-entropy is at its minimum, the entropy of p_past.
    p = softmax_rows(z_past.tolist(), 0.3)
    entropy = sum(-p[i][j] * math.log(p[i][j]) for i in range(5) for j in range(5) if j != i) / 5
    at_minimum = relation_distillation(z_past, z_past, 0.3, 0.3).item()
    assert at_minimum == pytest.approx(entropy, rel=1e-10)
    for _ in range(20):
        other = F.normalize(z_past + 0.3 * torch.randn(5, 3, generator=g, dtype=torch.float64), dim=1)
        assert relation_distillation(other, z_past, 0.3, 0.3).item() > at_minimum


def affine_residual(view, crop):
    """Max error of the best fit view ~ s * crop + b (the intensity jitter is affine)."""
    v, c = view.flatten().double(), crop.flatten().double()
    s = ((v - v.mean()) * (c - c.mean())).sum() / ((c - c.mean()) ** 2).sum()
    return (v - (s * (c - c.mean()) + v.mean())).abs().max().item()


def explained(view, image, pad, flip):
    """Whether `view` is an affine-jittered crop of `image` (reflect-padded), flipped or not."""
    padded = F.pad(image[None], (pad,) * 4, mode="reflect")[0]
    h, w = image.shape[-2:]
    for top in range(2 * pad + 1):
        for left in range(2 * pad + 1):
            crop = padded[:, top : top + h, left : left + w]
            if affine_residual(view, crop.flip(-1) if flip else crop) < 1e-4:
                return True
    return False


def test_two_views_translate_and_jitter_but_never_flip_digits():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)  # random images: a flip is never a translation
    v1, v2 = two_views(x)
    assert v1.shape == x.shape and v2.shape == x.shape and not torch.equal(v1, v2)
    for view in (v1, v2):
        for image, out in zip(x, view):
            assert explained(out, image, 1, flip=False)

    rgb = torch.randn(16, 3, 8, 8)
    v1, v2 = two_views(rgb)
    flipped = [
        explained(out, image, 1, flip=True) and not explained(out, image, 1, flip=False)
        for view in (v1, v2)
        for image, out in zip(rgb, view)
    ]
    assert 0 < sum(flipped) < len(flipped)  # natural images: flipped about half the time


def co2l_learner(**changes):
    torch.manual_seed(0)
    model = ConvNet(1, 10, 4)
    learner = CO2L(config(method="co2l", minibatch_size=4, **changes), 10, seed=0)
    learner.attach(model)
    return model, learner


def test_loss_combines_anchor_supcon_with_distillation_from_the_past_model():
    model, learner = co2l_learner()
    assert model.projector[-1].out_features == 128
    learner.observe(toy_batch(8, seed=1), None)
    learner.begin_task(SimpleNamespace(index=1), model)
    with torch.no_grad():  # the past model differs from the live one
        model.projector[0].weight.mul_(1.5)
    batch = learner.prepare(toy_batch(6))
    assert batch.x.shape == (6, 2, 1, 8, 8) and batch.replay["x"].shape == (4, 2, 1, 8, 8)
    loss = learner.loss(model, batch)
    # The views are drawn once, in prepare: every forward of a step (pass 1, scoring, pass 2) sees the same.
    assert torch.equal(learner.loss(model, batch).total, loss.total)

    x = torch.cat([batch.x, batch.replay["x"]])
    views = torch.cat([x[:, 0], x[:, 1]])
    features, z = embed(model, views)
    y = torch.cat([batch.y, batch.replay["y"]]).repeat(2)
    anchor = torch.tensor(([True] * 6 + [False] * 4) * 2)
    opts = learner.opts  # the benchmark's tuned temperature and distillation weight
    supcon = asymmetric_supcon(z, y, anchor, opts.co2l_temperature)
    with torch.no_grad():
        _, z_past = embed(learner.past, views)
    expected = supcon.sum() / 12 + opts.co2l_distill * relation_distillation(z, z_past, 0.2, 0.01)
    assert torch.allclose(loss.total, expected, atol=1e-6)
    assert torch.allclose(loss.per_sample, (supcon[:6] + supcon[10:16]) / 2, atol=1e-6)
    assert loss.logits.shape == (6, 10) and not loss.logits.requires_grad

    loss.total.backward()
    assert model.projector[0].weight.grad.abs().sum() > 0 and model.stem[0].weight.grad.abs().sum() > 0
    assert model.head.weight.grad is None  # the head is trained by the probe only
    assert all(p.grad is None and not p.requires_grad for p in learner.past.parameters())


def test_probe_trains_the_head_only_and_state_round_trips():
    model, learner = co2l_learner(co2l_probe_epochs=20)
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 2, (64,), generator=g)
    x = torch.randn(64, 1, 8, 8, generator=g) + 2 * y[:, None, None, None]  # separable classes
    old = torch.randn(8, 1, 8, 8, generator=g) - 2  # an earlier task's class 2
    learner.observe(Batch(old, torch.full((8,), 2), torch.arange(8), old), None)
    learner.begin_task(SimpleNamespace(index=1), model)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    head = model.head.weight.clone()
    model.train()
    learner.end_task(SimpleNamespace(x_train=x, y_train=y, classes=[0, 1]), model)
    assert model.training
    assert all(torch.equal(v, frozen[k]) for k, v in model.state_dict().items() if not k.startswith("head."))
    assert not torch.equal(model.head.weight, head)
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() > 0.9 and (model(old).argmax(1) == 2).all()

    state = learner.state_dict()
    _, other = co2l_learner()
    other.load_state_dict(state)
    assert torch.equal(other.buffer.contents()["x"], learner.buffer.contents()["x"])
    past, restored = learner.past.state_dict(), other.past.state_dict()
    assert past.keys() == restored.keys() and all(torch.equal(past[k], restored[k]) for k in past)
    assert not other.past.training and other.memory_bytes() == learner.memory_bytes()
    n_params = sum(p.numel() * 4 for p in model.parameters())
    assert learner.memory_bytes() == learner.buffer.nbytes() + n_params


def test_two_task_run_probes_a_working_head(tiny):
    record = esacl.run(tiny(method="co2l", co2l_probe_epochs=5))
    rows = [a for row in record.class_il + record.task_il for a in row if a is not None]
    assert record.complete and all(math.isfinite(a) and 0 <= a <= 100 for a in rows)
    assert record.task_il[0][0] > 80
    model = torch.load(record.path / "checkpoint.pt", weights_only=True)["model"]
    assert {"projector.0.weight", "projector.2.weight"} <= set(model)
    tasks = [e for e in record.events if e["event"] == "task"]
    assert "linear_probe.forward" in tasks[0]["flops"] and "linear_probe.backward" not in tasks[0]["flops"]
    # From the second task on, the learner also holds the past model: one copy of the parameters.
    past = tasks[1]["memory"]["learner_state"] - tasks[0]["memory"]["learner_state"]
    assert past == tasks[1]["memory"]["model_dense"]


class Stop(Exception):
    pass


# Raising while the k-th epoch event is emitted resumes from the checkpoint of epoch k - 1:
# k = 2 resumes within task 0, k = 4 within task 1 (past model restored from the checkpoint).
@pytest.mark.parametrize("stop_after_epochs", [2, 4])
def test_resume_equals_an_uninterrupted_run(tiny, stop_after_epochs):
    cfg = tiny(method="co2l", co2l_probe_epochs=5)
    whole = esacl.run(cfg.replace(name="whole"))
    epochs = []

    def stop(event):
        if event["event"] == "epoch":
            epochs.append(event)
            if len(epochs) == stop_after_epochs:
                raise Stop

    with pytest.raises(Stop):
        esacl.run(cfg.replace(name="cut"), callbacks=[stop])
    resumed = esacl.resume(whole.path.parent / "cut")
    assert resumed.complete and resumed.class_il == whole.class_il and resumed.task_il == whole.task_il


def test_two_views_of_uint8_pixels_are_floats_on_the_pixel_scale():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    v1, v2 = two_views(x)
    assert v1.dtype == torch.float32 and v1.shape == x.shape and not torch.equal(v1, v2)
    for view in (v1, v2):
        for image, out in zip(x.float() / 255, view / 255):
            assert explained(out, image, 1, flip=True) or explained(out, image, 1, flip=False)
    # the jitter keeps pixels near the 0..255 range (not the normalised units' near-zero range)
    assert 60 < torch.cat([v1, v2]).std() < 160


def test_co2l_predicts_by_the_nearest_other_view_so_ddr_sees_learning_during_a_task():
    from esacl.co2l import neighbour_scores

    # Two stream examples and two replayed ones; view 1 rows, then view 2 rows; labels 4, 6, 4, 6.
    z = torch.nn.functional.normalize(
        torch.tensor(
            [[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9], [1.0, 0.05], [0.05, 1.0], [0.8, 0.3], [0.3, 0.8]]
        ),
        dim=1,
    )
    labels = torch.tensor([4, 6, 4, 6, 4, 6, 4, 6])
    scores = neighbour_scores(z, labels, b=2, n=4, n_classes=8)
    assert scores.shape == (2, 8) and torch.isinf(scores[:, [0, 1, 2, 3, 5, 7]]).all()
    # Example 0's own second view (row 4) is the closest of all, and excluded: its nearest is row 2 (class 4).
    assert float(scores[0, 4]) == pytest.approx(float(z[0] @ z[2]), abs=1e-6)
    assert scores.argmax(1).tolist() == [4, 6]
    model, learner = co2l_learner()
    batch = learner.prepare(toy_batch(6))
    logits = learner.loss(model, batch).logits
    assert logits.shape == (6, 10) and not logits.requires_grad
    present = set(batch.y.tolist())
    assert all(torch.isinf(logits[:, c]).all() == (c not in present) for c in range(10))
