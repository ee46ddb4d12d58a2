import json
import math

import pytest
import torch
import torch.nn.functional as F

from esacl.landscape import (
    filter_normalized_direction,
    hutchinson_trace,
    hvp,
    interpolate,
    measure,
    sam_gap,
    slice_2d,
    top_hessian_eigenvalue,
)
from esacl.models import ConvNet

EIGS = (5.0, 2.0, 1.0, 0.5)


def quadratic(eigs=EIGS, rotate=True, seed=0):
    """0.5 w^T A w + b^T w with A = Q diag(eigs) Q^T, w split across a [3] and a [1, 1] tensor."""
    g = torch.Generator().manual_seed(seed)
    Q = (
        torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))[0]
        if rotate
        else torch.eye(4, dtype=torch.float64)
    )
    A = Q @ torch.diag(torch.tensor(eigs, dtype=torch.float64)) @ Q.T
    A = (A + A.T) / 2
    b = torch.randn(4, generator=g, dtype=torch.float64)
    w1 = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_()
    w2 = torch.randn(1, 1, generator=g, dtype=torch.float64).requires_grad_()
    params = [w1, w2]

    def flat(ps):
        return torch.cat([p.reshape(-1) for p in ps])

    def loss_at(w):
        return 0.5 * w @ A @ w + b @ w

    return A, b, params, flat, (lambda: loss_at(flat(params))), loss_at


def test_hvp_equals_A_v_across_two_tensors():
    A, _, params, flat, loss_of, _ = quadratic()
    v = [torch.randn(3, dtype=torch.float64), torch.randn(1, 1, dtype=torch.float64)]
    hv = hvp(loss_of, params, v)
    assert [h.shape for h in hv] == [p.shape for p in params]
    assert torch.allclose(flat(hv), A @ flat(v), atol=1e-12)


def test_top_eigenvalue_recovers_largest_and_keeps_its_sign():
    _, _, params, _, loss_of, _ = quadratic()
    eig = top_hessian_eigenvalue(loss_of, params, generator=torch.Generator().manual_seed(1))
    assert abs(eig - 5.0) / 5.0 < 1e-3
    _, _, params, _, loss_of, _ = quadratic(eigs=(-5.0, 2.0, 1.0, 0.5))
    eig = top_hessian_eigenvalue(loss_of, params, generator=torch.Generator().manual_seed(1))
    assert abs(eig + 5.0) / 5.0 < 1e-3


def test_hutchinson_trace_is_unbiased_and_exact_for_diagonal_hessian():
    _, _, params, _, loss_of, _ = quadratic()
    est = hutchinson_trace(loss_of, params, samples=4000, generator=torch.Generator().manual_seed(2))
    assert abs(est - 8.5) / 8.5 < 0.03
    # Rademacher v has v_i^2 = 1, so v . Hv = tr(H) for every draw when H is diagonal.
    _, _, params, _, loss_of, _ = quadratic(rotate=False)
    assert hutchinson_trace(loss_of, params, samples=3, generator=torch.Generator().manual_seed(3)) == pytest.approx(
        8.5, rel=1e-12
    )


@pytest.mark.parametrize("masked", [False, True])
def test_sam_gap_matches_closed_form_and_restores_params_and_grads(masked):
    A, b, params, flat, loss_of, loss_at = quadratic()
    w1, w2 = params
    w1.grad = torch.full_like(w1, 7.0)  # an existing gradient must survive untouched
    grad_before = w1.grad.clone()
    before = [p.detach().clone() for p in params]
    masks = [torch.tensor([True, False, True]), None] if masked else None
    seen = []

    def recording():
        seen.append(w1.detach().clone())
        return loss_of()

    rho = 0.3
    gap = sam_gap(recording, params, rho, masks)

    w = flat(before)
    g = A @ w + b
    if masked:
        g = g * torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    expected = loss_at(w + rho * g / g.norm()) - loss_at(w)
    assert gap == pytest.approx(expected.item(), rel=1e-9, abs=1e-12)
    assert expected.item() > 0
    if masked:
        assert seen[-1][1] == before[0][1]  # the masked coordinate was not perturbed
        assert seen[-1][0] != before[0][0]
    assert all(torch.equal(p, q) for p, q in zip(params, before))
    assert torch.equal(w1.grad, grad_before) and w2.grad is None


def test_sam_gap_with_asam_takes_the_adaptive_ascent_of_the_training_step():
    A, b, params, flat, loss_of, loss_at = quadratic()
    w = flat([p.detach() for p in params])
    g = A @ w + b
    t = w.abs() + 0.01  # ASAM's T = |w| + 0.01
    rho = 0.3
    expected = loss_at(w + rho * t**2 * g / (t * g).norm()) - loss_at(w)
    assert sam_gap(loss_of, params, rho, asam=True) == pytest.approx(expected.item(), rel=1e-9, abs=1e-12)
    assert sam_gap(loss_of, params, rho) != pytest.approx(expected.item(), rel=1e-3)


def test_filter_normalized_direction_norms_zero_biases_and_masks():
    torch.manual_seed(0)
    model = ConvNet(in_channels=1, n_classes=10, width=4)
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    i = names.index("stage1.0.0.weight")
    mask = torch.rand(params[i].shape) > 0.5
    with torch.no_grad():
        params[i].mul_(mask)  # pruned as a rule leaves it
    masks = [mask if k == i else None for k in range(len(params))]
    d = filter_normalized_direction(params, torch.Generator().manual_seed(0), masks)
    for p, v in zip(params, d):
        assert v.shape == p.shape
        if p.dim() <= 1:
            assert torch.count_nonzero(v) == 0
        else:
            assert torch.allclose(v.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1), rtol=1e-5)
            assert torch.count_nonzero(v) > 0
    assert torch.count_nonzero(d[i][~mask]) == 0
    again = filter_normalized_direction(params, torch.Generator().manual_seed(0), masks)
    assert all(torch.equal(u, v) for u, v in zip(d, again))


def test_interpolate_hits_endpoints_and_follows_the_quadratic():
    _, _, params, flat, loss_of, loss_at = quadratic()
    before = [p.detach().clone() for p in params]
    g = torch.Generator().manual_seed(4)
    start = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
    end = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
    losses = interpolate(loss_of, params, start, end, points=5)
    assert len(losses) == 5
    assert losses[0] == loss_at(flat(start)).item()
    assert losses[-1] == loss_at(flat(end)).item()
    for a, got in zip(torch.linspace(0, 1, 5).tolist(), losses):
        assert got == pytest.approx(loss_at((1 - a) * flat(start) + a * flat(end)).item(), rel=1e-12)
    assert all(torch.equal(p, q) for p, q in zip(params, before))


def test_slice_2d_grid_centre_and_orientation():
    _, _, params, flat, loss_of, loss_at = quadratic()
    before = [p.detach().clone() for p in params]
    g = torch.Generator().manual_seed(5)
    d1 = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
    d2 = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
    out = slice_2d(loss_of, params, d1, d2, steps=5, span=0.7)
    assert out["alphas"] == out["betas"] and len(out["alphas"]) == 5
    assert out["alphas"][0] == -0.7 and out["alphas"][-1] == 0.7 and out["alphas"][2] == 0.0
    assert len(out["loss"]) == 5 and all(len(row) == 5 for row in out["loss"])
    assert out["loss"][2][2] == loss_at(flat(before)).item()
    w = flat(before)
    for i, j in [(0, 4), (4, 1), (1, 3)]:  # row index is alpha (along d1)
        a, b = out["alphas"][i], out["betas"][j]
        want = loss_at(w + a * flat(d1) + b * flat(d2)).item()
        assert out["loss"][i][j] == pytest.approx(want, rel=1e-12)
    assert all(torch.equal(p, q) for p, q in zip(params, before))


def trained_convnet():
    torch.manual_seed(0)
    model = ConvNet(in_channels=1, n_classes=10, width=4)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    F.cross_entropy(model(x), y).backward()  # BN running stats move, grads exist
    model.head.bias.grad = None  # and one grad is absent
    return model, x, y


def snapshot(model):
    return (
        {n: p.detach().clone() for n, p in model.named_parameters()},
        {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        {n: b.clone() for n, b in model.named_buffers()},
    )


def same(a, b):
    return a.keys() == b.keys() and all(
        (a[k] is None and b[k] is None) or (a[k] is not None and b[k] is not None and torch.equal(a[k], b[k]))
        for k in a
    )


def test_measure_convnet_shapes_state_and_determinism():
    model, x, y = trained_convnet()
    mask = torch.rand(model.stage1[0][0].weight.shape) > 0.5
    with torch.no_grad():
        model.stage1[0][0].weight.mul_(mask)
    previous = {n: p.detach() + 0.1 * torch.randn_like(p) for n, p in model.named_parameters()}
    model.stem[1].eval()  # a submodule in its own mode keeps it
    before = snapshot(model)
    kw = dict(
        masks={"stage1.0.0.weight": mask},
        previous=previous,
        hessian_iters=5,
        hutchinson_samples=3,
        slice_steps=3,
        slice_span=0.5,
        seed=7,
    )
    out = measure(model, x, y, **kw)

    assert model.training and not model.stem[1].training and model.stage1[0][1].training
    params, grads, buffers = snapshot(model)
    assert same(params, before[0]) and same(grads, before[1]) and same(buffers, before[2])
    assert "stem.1.num_batches_tracked" in buffers

    for key in ("loss", "sam_gap", "top_eigenvalue", "hutchinson_trace"):
        assert isinstance(out[key], float) and math.isfinite(out[key])
    model.eval()
    with torch.no_grad():
        assert out["loss"] == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)
    model.train()
    model.stem[1].eval()
    interp = out["interpolation"]
    assert len(interp["alphas"]) == len(interp["loss"]) == 11
    assert interp["loss"][-1] == pytest.approx(out["loss"], rel=1e-6)
    sl = out["slice"]
    assert sl["alphas"] == sl["betas"] == [-0.5, 0.0, 0.5]
    assert len(sl["loss"]) == 3 and all(len(r) == 3 and all(math.isfinite(v) for v in r) for r in sl["loss"])
    assert sl["loss"][1][1] == pytest.approx(out["loss"], rel=1e-6)
    json.dumps(out)

    assert measure(model, x, y, **kw) == out  # same seed, same numbers
    assert measure(model, x, y, **dict(kw, seed=8))["slice"] != out["slice"]


@pytest.mark.parametrize("points", [4, 9])  # chunks that split rows, and the whole grid at once
def test_the_stacked_slice_equals_the_serial_one_and_moves_nothing(points):
    model, x, y = trained_convnet()
    mask = torch.rand(model.stage1[0][0].weight.shape) > 0.5
    kw = dict(masks={"stage1.0.0.weight": mask}, hessian_iters=2, hutchinson_samples=1, slice_steps=3, seed=7)
    before = snapshot(model)
    serial, stacked = measure(model, x, y, **kw), measure(model, x, y, slice_points=points, **kw)
    assert all(same(a, b) for a, b in zip(snapshot(model), before))
    assert stacked["slice"]["alphas"] == serial["slice"]["alphas"]
    want, got = torch.tensor(serial["slice"]["loss"]), torch.tensor(stacked["slice"]["loss"])  # [3, 3]
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6) and not torch.equal(want[0], want[1])
    model.eval()
    with torch.no_grad():  # the centre is the model itself
        assert got[1, 1].item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-5)


def test_measure_skips_interpolation_and_slice():
    model, x, y = trained_convnet()
    out = measure(model, x, y, hessian_iters=2, hutchinson_samples=1, slice_steps=0)
    assert out["interpolation"] is None and out["slice"] is None
    assert math.isfinite(out["top_eigenvalue"])


def test_measure_moves_its_bar_once_per_forward_and_hvp_and_ends_it_full():
    class Bar:  # the part of tqdm measure uses
        n, total = 0, None

        def update(self, k=1):
            self.n += k

        def refresh(self):
            pass

    model, x, y = trained_convnet()
    previous = {n: p.detach() + 0.1 * torch.randn_like(p) for n, p in model.named_parameters()}
    kw = dict(previous=previous, hessian_iters=4, hutchinson_samples=3, slice_steps=3, seed=7)
    bar = Bar()
    out = measure(model, x, y, progress=bar, **kw)
    assert out == measure(model, x, y, **kw)  # the bar changes nothing measured
    # loss, SAM gap, the gradient graph both Hessian measurements share, power iteration, Hutchinson, line, slice
    planned = 1 + 2 + 1 + 4 + 3 + 11 + 3 * 3
    assert planned - 3 <= bar.n <= planned and bar.total == bar.n  # the power iteration may stop early
    counted, stacked = Bar(), Bar()
    measure(model, x, y, progress=counted, **dict(kw, hessian_iters=1))  # one HVP: no early stop possible
    assert counted.n == counted.total == planned - 3
    measure(model, x, y, progress=stacked, slice_points=3, **dict(kw, hessian_iters=1))
    assert stacked.n == stacked.total == planned - 3
