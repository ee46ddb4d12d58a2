"""Loss-landscape sharpness: Hessian spectrum and trace, SAM gap, 1-D and 2-D loss slices.

Every measurement takes a loss closure `loss_of() -> 0-dim tensor` and the list of parameter
tensors it depends on, so it works on any model and can be checked on closed-form quadratics.
Every function that moves the parameters does it inside `steps.perturbed`, which writes them back
exactly (adding and subtracting a perturbation does not round-trip in floating point), and none writes `.grad`:
gradients are taken with `torch.autograd.grad`, never `.backward()`.

Random draws are made on the generator's device (the CPU when none is given) and then moved, so
a seed gives the same directions whatever device the model sits on.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .knobs import Section, knob
from .steps import perturbed, sam_perturbation


@dataclass(frozen=True)
class LandscapeConfig(Section):
    """Sharpness of the loss landscape, measured at each task end."""

    landscape: bool = knob(False, "measure sharpness at each task end (SAM gap, Hessian, slices)")
    landscape_batch: int = knob(256, "examples in the fixed evaluation batch of the landscape", interval="[1, inf)")
    hessian_iters: int = knob(20, "power iterations for the top Hessian eigenvalue", interval="[1, inf)")
    hutchinson_samples: int = knob(10, "Rademacher samples for the Hessian trace", interval="[1, inf)")
    slice_steps: int = knob(11, "grid points per axis of the 2-D slice (0: no slice)", interval="[0, inf)")


def _draw(params, generator, kind: str) -> list[torch.Tensor]:
    device = generator.device if generator is not None else torch.device("cpu")
    out = []
    for p in params:
        if kind == "gauss":
            v = torch.randn(p.shape, generator=generator, device=device, dtype=p.dtype)
        else:  # Rademacher: +-1
            v = torch.randint(0, 2, p.shape, generator=generator, device=device).to(p.dtype) * 2 - 1
        out.append(v.to(p.device))
    return out


def _dot(a, b) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def _norm(vs) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in vs]))


def _graph_grads(loss_of, params) -> list[torch.Tensor]:
    """Gradients that are themselves differentiable (one forward + one backward, graph kept)."""
    grads = torch.autograd.grad(loss_of(), params, create_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def _hvp_from_grads(grads, params, vectors, retain: bool) -> list[torch.Tensor]:
    # d/dw (g . v) = H v: one backward through the gradient graph, which is itself about two
    # backward passes of the loss, so an HVP costs about two backward passes.
    terms = [(g * v).sum() for g, v in zip(grads, vectors) if g.requires_grad]
    if not terms:  # loss linear in params: H = 0
        return [torch.zeros_like(p) for p in params]
    hv = torch.autograd.grad(sum(terms), params, retain_graph=retain, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(hv, params)]


def hvp(loss_of, params, vectors) -> list[torch.Tensor]:
    """Hessian-vector product H v of loss_of() w.r.t. params; `vectors` is a list shaped like params.

    Double backward: the gradient is taken with create_graph=True, then g . v is differentiated.
    """
    return _hvp_from_grads(_graph_grads(loss_of, params), params, vectors, retain=False)


def top_hessian_eigenvalue(loss_of, params, iters=20, tol=1e-3, generator=None, tick=None, grads=None) -> float:
    """Largest-magnitude Hessian eigenvalue (signed Rayleigh quotient) by power iteration on HVPs.

    Starts from a random unit vector (torch.randn with `generator`) and stops early once the
    Rayleigh quotient changes by less than `tol` relative. The forward and first backward are paid
    once (the gradient graph is kept; or pass `grads` from `_graph_grads` to share one, which is
    then kept), then each iteration is one HVP (about two backward passes) and one host sync for
    the stopping test. `tick()`, if given, is called after each HVP.
    """
    keep = grads is not None
    grads = grads if keep else _graph_grads(loss_of, params)
    v = _draw(params, generator, "gauss")
    norm = _norm(v)
    v = [x / norm for x in v]
    eig = float("nan")
    for i in range(iters):
        hv = _hvp_from_grads(grads, params, v, retain=keep or i + 1 < iters)
        if tick:
            tick()
        rq = _dot(v, hv).item()
        converged = i > 0 and abs(rq - eig) <= tol * abs(rq)
        eig = rq
        norm = _norm(hv)
        if converged or norm == 0:
            break
        v = [h / norm for h in hv]
    return eig


def hutchinson_trace(loss_of, params, samples=10, generator=None, tick=None, grads=None) -> float:
    """Hutchinson estimate of tr(H): mean over Rademacher vectors v of v . Hv.

    Unbiased; exact for every draw when H is diagonal. Costs one forward + backward with graph (or
    none, given `grads` from `_graph_grads`, which is then kept), then one HVP (about two backward
    passes) per sample. One vector at a time: batching them (`is_grads_batched`) was 1.5x slower for
    the split_digits ConvNet on 2 CPU threads. `tick()`, if given, is called after each HVP.
    """
    keep = grads is not None
    grads = grads if keep else _graph_grads(loss_of, params)
    total = 0.0
    for i in range(samples):
        v = _draw(params, generator, "rademacher")
        total += _dot(v, _hvp_from_grads(grads, params, v, retain=keep or i + 1 < samples)).item()
        if tick:
            tick()
    return total / samples


def sam_gap(loss_of, params, rho, masks=None, asam: bool = False) -> float:
    """L(w + eps) - L(w) with eps = `sam_perturbation` (SAM's, or ASAM's with `asam`) at w.

    masks: None, or a list aligned with params of bool tensors (True = live) or None (all live);
    masked coordinates are not perturbed. Parameters are restored exactly from copies (1x
    parameter memory, transient) and `.grad` is never written. One forward + backward, then one
    forward under no_grad.
    """
    loss = loss_of()
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    eps = sam_perturbation(params, grads, masks or [None] * len(params), rho, asam)
    with perturbed(params), torch.no_grad():
        torch._foreach_add_(params, eps)
        at_eps = loss_of()
    return (at_eps - loss.detach()).item()


def filter_normalized_direction(params, generator=None, masks=None) -> list[torch.Tensor]:
    """Random Gaussian direction with filter normalisation (Li et al., 2018).

    For each parameter with dim >= 2, each output filter d[i] (conv kernel stack or linear row)
    is rescaled to the norm of the weight filter w[i]. Parameters with dim <= 1 (biases,
    batch-norm) get a zero direction, as in the paper. Entries with masks[i] False are zero, so
    pruned weights stay pruned along the direction.
    """
    out = []
    for i, (p, d) in enumerate(zip(params, _draw(params, generator, "gauss"))):
        if p.dim() <= 1:
            out.append(torch.zeros_like(p))
            continue
        m = masks[i] if masks is not None else None
        if m is not None:
            d = d * m
        w = p.detach().flatten(1)  # [out, fan_in]
        flat = d.flatten(1)  # [out, fan_in]
        scale = w.norm(dim=1) / (flat.norm(dim=1) + 1e-10)  # [out]
        out.append((flat * scale[:, None]).view_as(p))
    return out


def _grid(lo: float, hi: float, points: int) -> list[float]:
    # Computed per point so the ends (and 0 for a symmetric odd grid) are exact.
    if points == 1:
        return [lo]
    return [lo + (hi - lo) * (i / (points - 1)) for i in range(points)]


def interpolate(loss_of, params, start, end, points=11) -> list[float]:
    """Loss along w(alpha) = (1-alpha)*start + alpha*end for alpha = linspace(0, 1, points).

    start/end are lists of tensors aligned with params; params are restored exactly afterwards.
    `points` forwards under no_grad.
    """
    losses = []
    with perturbed(params), torch.no_grad():
        for a in _grid(0.0, 1.0, points):
            for p, s, e in zip(params, start, end):
                p.copy_(s * (1 - a) + e * a)  # exact at both ends
            losses.append(loss_of().item())
    return losses


def slice_2d(loss_of, params, d1, d2, steps=11, span=1.0) -> dict:
    """Loss on the grid w + a*d1 + b*d2 for a, b in linspace(-span, span, steps).

    Returns {'alphas', 'betas', 'loss'} with loss[i][j] at (alphas[i], betas[j]); params are
    restored exactly. steps**2 forwards under no_grad.
    """
    grid = _grid(-span, span, steps)
    losses = []
    with perturbed(params) as saved, torch.no_grad():
        for a in grid:
            row = []
            for b in grid:
                for p, w, u, v in zip(params, saved, d1, d2):
                    p.copy_(w).add_(u, alpha=a).add_(v, alpha=b)
                row.append(loss_of().item())
            losses.append(row)
    return {"alphas": grid, "betas": list(grid), "loss": losses}


@torch.no_grad()
def slice_2d_stacked(model, x, y, names, d1, d2, steps=11, span=1.0, points=None, tick=None) -> dict:
    """`slice_2d` of the mean cross-entropy of `model` on (x, y), `points` grid points per forward:
    the weights of a chunk are stacked ([points, ...] per parameter) and the model mapped over them
    (`torch.func.vmap` of `functional_call`; convolutions become grouped ones). One launch sequence per
    chunk instead of per point: for a GPU, where a small model's forward is bound by kernel launches.
    On 2 CPU threads the split_digits ConvNet's forward is bound by arithmetic and this was slower.

    names: the parameter names d1/d2 follow; the model must be in eval mode (batch-norm statistics are
    shared by the stacked weights). points: default a row of the grid (`steps`). Equals `slice_2d` up to
    float summation order; `tick(n)`, if given, is called with each chunk's size.
    """
    from torch.func import functional_call, vmap

    params = dict(model.named_parameters())
    fixed = {n: t for n, t in list(params.items()) + list(model.named_buffers()) if n not in names}
    grid = _grid(-span, span, steps)
    first = params[names[0]]
    alphas = torch.tensor([a for a in grid for _ in grid], dtype=first.dtype, device=first.device)  # [steps^2]
    betas = torch.tensor([b for _ in grid for b in grid], dtype=first.dtype, device=first.device)  # [steps^2]
    points = points or steps

    def loss_at(weights):
        return F.cross_entropy(functional_call(model, {**fixed, **weights}, (x,)), y)

    losses = []
    for start in range(0, steps * steps, points):
        a, b = alphas[start : start + points], betas[start : start + points]  # [G]
        stacked = {}
        for n, u, v in zip(names, d1, d2):
            w = params[n].detach()
            shape = (-1,) + (1,) * w.dim()
            stacked[n] = w + a.view(shape) * u + b.view(shape) * v  # [G, *w.shape]
        losses += vmap(loss_at)(stacked).tolist()  # host sync per chunk
        if tick:
            tick(len(a))
    return {"alphas": grid, "betas": list(grid), "loss": [losses[i * steps : (i + 1) * steps] for i in range(steps)]}


def measure(
    model,
    x,
    y,
    *,
    rho=0.05,
    asam=False,
    masks=None,
    previous=None,
    hessian_iters=20,
    hutchinson_samples=10,
    slice_steps=11,
    slice_span=1.0,
    seed=0,
    progress=None,
    slice_points=None,
) -> dict:
    """Every sharpness measurement for a classifier on one fixed batch (x [N, ...], y [N] int64).

    Loss is mean cross-entropy with the model in eval mode (batch-norm uses its running
    statistics, which therefore are not updated); each module's mode is restored afterwards.
    masks: param name -> bool tensor for pruned parameters (others all live), applied to the SAM
    ascent and the slice directions; `asam`: the SAM gap takes ASAM's ascent (the run's key).
    previous: None or param name -> tensor, an earlier endpoint, interpolated to the current weights.
    All random draws come from one generator seeded with `seed`. Parameters, their .grad and buffers
    are as before the call on return. Returns a JSON-serialisable dict (see the keys below;
    'interpolation'/'slice' are None when skipped).
    progress: None, or a tqdm-like bar whose total this sets to the number of forwards and HVPs and
    which moves one per each (the power iteration may stop early: the total then shrinks to match).
    slice_points: grid points per forward of the slice (`slice_2d_stacked`); None: a row of the grid on
    CUDA, else one (`slice_2d`: faster where the forward is bound by arithmetic, as on a CPU).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    mask_list = [masks.get(n) for n, _ in named] if masks else None
    generator = torch.Generator().manual_seed(seed)
    modes = {m: m.training for m in model.modules()}
    model.eval()

    tick = progress.update if progress is not None else None
    if progress is not None:
        progress.total = (
            1 + 2 + 1 + hessian_iters + hutchinson_samples + (11 if previous is not None else 0) + slice_steps**2
        )

    def loss_of():
        if tick:
            tick()
        return F.cross_entropy(model(x), y)

    try:
        with torch.no_grad():
            loss = loss_of().item()
        out = {"loss": loss, "sam_gap": sam_gap(loss_of, params, rho, mask_list, asam)}
        grads = _graph_grads(loss_of, params)  # one gradient graph for both Hessian measurements
        out["top_eigenvalue"] = top_hessian_eigenvalue(
            loss_of, params, hessian_iters, generator=generator, tick=tick, grads=grads
        )
        out["hutchinson_trace"] = hutchinson_trace(
            loss_of, params, hutchinson_samples, generator, tick=tick, grads=grads
        )
        out["interpolation"] = out["slice"] = None
        del grads
        if previous is not None:
            start = [previous[n].detach().to(p) for n, p in named]
            end = [p.detach().clone() for p in params]
            out["interpolation"] = {"alphas": _grid(0.0, 1.0, 11), "loss": interpolate(loss_of, params, start, end, 11)}
        if slice_steps:
            d1 = filter_normalized_direction(params, generator, mask_list)
            d2 = filter_normalized_direction(params, generator, mask_list)
            points = slice_points or (slice_steps if x.device.type == "cuda" else 1)
            if points > 1:
                out["slice"] = slice_2d_stacked(
                    model, x, y, [n for n, _ in named], d1, d2, slice_steps, slice_span, points, tick=tick
                )
            else:
                out["slice"] = slice_2d(loss_of, params, d1, d2, slice_steps, slice_span)
    finally:
        for m, mode in modes.items():
            m.train(mode)
        if progress is not None:
            progress.total = progress.n  # an early-stopped power iteration: end at 100%
            progress.refresh()
    return out
