"""The flatness probe: what one-shot pruning costs a model as trained, and how much of it a few
fine-tuning steps win back (docs/method.md, "Flatness").

The paper argues that a flat minimum (SAM) can be pruned without retraining. The probe measures that
claim's two quantities on the weights at a task end (config key `flatness_probe`), for each scope in
SCOPES and sparsity in SPARSITIES:

    drop      the current task's accuracy and training loss of the dense weights, against those of
              the weights pruned to the top-k |w| (batch-norm statistics recomputed over the task's
              training examples for both: stale statistics alone gave 71.1% against 100% after one
              Split-Digits task at sparsity 0.9, docs/method.md, "Batch-norm recalibration")
    recovery  the same after k steps of fine-tuning with the mask fixed, k in STEPS (plain SGD at the
              run's lr, cross-entropy on the task's own examples in a seeded order)

The claim predicts a smaller drop and a smaller recovery gain after SAM than after SGD. Every weight,
batch-norm statistic and random generator is restored afterwards: the run goes on as without the
probe, and its FLOPs are reported as measurement ('measure.flatness'), not training.
"""

import statistics

import torch
import torch.nn.functional as F

from .landscape import top_hessian_eigenvalue
from .prune import projection_masks, topk_masks
from .seeding import rng_state, set_rng_state
from .steps import batch_norms, frozen_bn_stats

SPARSITIES = (0.5, 0.8, 0.9, 0.95)
SCOPES = ("layer", "global")
STEPS = (0, 10, 100)
EVAL_BATCH = 512  # examples per no-grad forward
PATH_POINTS = 11  # alpha = 0, 0.1, ..., 1 along the pruning direction
PATH_BATCH = 512  # training examples the path's loss is measured on (the first of the task's)
HESSIAN_BATCH = 256  # training examples of the top Hessian eigenvalue (the first of the task's)
HESSIAN_ITERS = 20


@torch.no_grad()
def recalibrate(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """Batch-norm running statistics recomputed over `x` ([N, ...]) in batches of `batch_size`: a
    cumulative average, as the trainer's recalibration, but over the task's examples alone."""
    norms = batch_norms(model)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for start in range(0, len(x), batch_size):
        model(x[start : start + batch_size])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


@torch.no_grad()
def current_task(model, x_train, y_train, x_test, y_test, classes: list[int]) -> dict:
    """The current task's training loss and test accuracy (class-IL: over all classes; task-IL:
    within the task's classes), in eval mode. Host sync: once per measurement."""
    model.eval()
    loss = sum(
        F.cross_entropy(model(x_train[i : i + EVAL_BATCH]), y_train[i : i + EVAL_BATCH], reduction="sum")
        for i in range(0, len(x_train), EVAL_BATCH)
    ) / len(y_train)
    logits = torch.cat([model(x_test[i : i + EVAL_BATCH]) for i in range(0, len(x_test), EVAL_BATCH)])
    own = torch.tensor(classes, device=logits.device)
    task_il = own[logits[:, own].argmax(1)]  # [N] prediction among the task's classes
    return dict(
        loss=loss.item(),
        class_il=(logits.argmax(1) == y_test).float().mean().item() * 100,
        task_il=(task_il == y_test).float().mean().item() * 100,
    )


@torch.no_grad()
def pruning_path(model, prunable: dict, masks: dict, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Training loss on (x, y) along w(alpha) = w - alpha * (w - P(w)), alpha in [0, 1] (PATH_POINTS):
    the 1-D slice from the weights to their pruned projection P(w) = w * mask. Batch norm normalises
    with the batch's own statistics at every point (running statistics untouched): each point as if
    recalibrated, so the end is comparable to the recalibrated drop. The weights are restored."""
    saved = {n: p.detach().clone() for n, p in prunable.items()}  # dense copy of the prunable weights
    model.train()
    losses = []
    with frozen_bn_stats(batch_norms(model)):
        for i in range(PATH_POINTS):
            alpha = i / (PATH_POINTS - 1)
            for n, p in prunable.items():
                p.copy_(saved[n] * (1 - alpha * (~masks[n])))  # exact at both ends
            losses.append(F.cross_entropy(model(x), y))
    for n, p in prunable.items():
        p.copy_(saved[n])
    return torch.stack(losses).tolist()  # host sync: once per path


def sharpness(model, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> float:
    """The top Hessian eigenvalue of the training loss on (x, y) at the weights as they are, batch norm
    in eval mode (`landscape.top_hessian_eigenvalue`, HESSIAN_ITERS power iterations at most)."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    return top_hessian_eigenvalue(lambda: F.cross_entropy(model(x), y), params, HESSIAN_ITERS, generator=generator)


def probe(model, task, lr: float, batch_size: int, seed: int, augment=None, own=None) -> dict:
    """The probe on `model` at the end of `task` (its x_train, y_train, x_test, y_test, classes),
    before the task end's projection.

    Returns {'as_trained': m, 'dense': m, 'top_eigenvalue': float, SCOPE: {SPARSITY: {STEP: m}},
    'path': {SCOPE: {SPARSITY: [loss]}}} with m = current_task(...) (keys as strings, as JSON keeps
    them): 'as_trained' with the statistics training left, 'dense' and the rest recalibrated; 'path'
    the training loss along the pruning direction (`pruning_path`). A sparse run passes
    `own=(sparsity, scope)`, its own projection: then SCOPE is 'own' alone and 'own_sparsity' its
    sparsity, the drop is the projection's jump on the current task and the recovery what retraining
    with its mask would win. `model` and every RNG are as they were when it returns."""
    rng, mode = rng_state(), model.training
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}  # dense copy: 2x model memory
    data = task.x_train, task.y_train, task.x_test, task.y_test, task.classes
    generator = torch.Generator(task.y_train.device).manual_seed(seed)
    params = dict(model.named_parameters())
    prunable = {n: params[n] for n in model.prunable()}
    out = dict(as_trained=current_task(model, *data))
    recalibrate(model, task.x_train, batch_size)
    out["dense"] = current_task(model, *data)
    out["top_eigenvalue"] = sharpness(
        model, task.x_train[:HESSIAN_BATCH], task.y_train[:HESSIAN_BATCH], torch.Generator().manual_seed(seed)
    )
    if own is None:
        cuts = [(scope, s, lambda w, s=s, scope=scope: topk_masks(w, s, scope)) for scope in SCOPES for s in SPARSITIES]
    else:
        sparsity, scope = own
        cuts = [("own", sparsity, lambda w: projection_masks(w, sparsity, scope))]
        out["own_sparsity"] = sparsity
    out["path"] = {}
    for scope, sparsity, masks_of in cuts:
        model.load_state_dict(saved)
        masks = masks_of({n: p.detach() for n, p in prunable.items()})
        path = pruning_path(model, prunable, masks, task.x_train[:PATH_BATCH], task.y_train[:PATH_BATCH])
        out["path"].setdefault(scope, {})[str(sparsity)] = path
        with torch.no_grad():
            for n, mask in masks.items():
                prunable[n].mul_(mask)
        out.setdefault(scope, {})[str(sparsity)] = rows = {}
        done = 0
        for k in STEPS:
            finetune(model, task, masks, k - done, lr, batch_size, generator, augment)
            done = k
            recalibrate(model, task.x_train, batch_size)
            rows[str(k)] = current_task(model, *data)
    model.load_state_dict(saved)
    model.train(mode)
    set_rng_state(rng)
    return out


def finetune(model, task, masks: dict, steps: int, lr: float, batch_size: int, generator, augment=None) -> None:
    """`steps` SGD steps of cross-entropy on the task's examples (a seeded random batch each), the
    pruned weights held at zero."""
    params = [p for p in model.parameters() if p.requires_grad]
    named = dict(model.named_parameters())
    model.train()
    n = len(task.y_train)
    for _ in range(steps):
        idx = torch.randint(n, (min(batch_size, n),), generator=generator, device=task.y_train.device)  # [B]
        x = task.x_train[idx]
        x = augment(x) if augment else x
        loss = F.cross_entropy(model(x), task.y_train[idx])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(lr * g)
            for name, mask in masks.items():
                named[name].mul_(mask)


# ----------------------------------------------------------------------------- the experiment's numbers

MEASURES = ("drop", "recovery")  # accuracy lost by pruning (k = 0); accuracy won back by the last k


def cuts(probe: dict) -> list[tuple[str, float]]:
    """The (scope, sparsity) pairs a probe pruned to: SCOPES x SPARSITIES for a dense run, ('own', its
    sparsity) for a sparse one."""
    return [(scope, float(s)) for scope in (*SCOPES, "own") if scope in probe for s in probe[scope]]


def _probes(record) -> list[dict]:
    probes = [e["flatness"] for e in record.task_events if "flatness" in e]
    if not probes:
        raise ValueError(f"{record.path}: no flatness probe in this run (flatness_probe=true)")
    return probes


def run_effects(record, metric: str = "class_il") -> dict[tuple[str, float, str], float]:
    """One run's effects, each the mean over its task ends, keyed (scope, sparsity, measure): 'drop',
    the current task's `metric` (accuracy, %) of the recalibrated dense weights minus the pruned ones'
    before fine-tuning; 'recovery', the pruned weights' accuracy after the last fine-tuning count in
    STEPS minus before. Also 'loss_rise' per (scope, sparsity): the training loss after pruning minus
    the dense weights'."""
    probes = _probes(record)
    out = {}
    last = str(STEPS[-1])
    for scope, sparsity in cuts(probes[0]):
        rows = [(p["dense"], p[scope][str(sparsity)]) for p in probes]
        out[scope, sparsity, "drop"] = statistics.fmean(d[metric] - r["0"][metric] for d, r in rows)
        out[scope, sparsity, "recovery"] = statistics.fmean(r[last][metric] - r["0"][metric] for d, r in rows)
        out[scope, sparsity, "loss_rise"] = statistics.fmean(r["0"]["loss"] - d["loss"] for d, r in rows)
    return out


def run_sharpness(record) -> float | None:
    """The top Hessian eigenvalue of the current task's training loss, mean over the run's task ends
    (None: probes made before it was measured)."""
    values = [p["top_eigenvalue"] for p in _probes(record) if "top_eigenvalue" in p]
    return statistics.fmean(values) if values else None


def compare(reference: dict, trained: dict, metric: str = "class_il", measures=MEASURES):
    """The claim's test: `reference` and `trained` ({seed: Record}, e.g. SGD's and SAM's runs) paired by
    seed, per scope, sparsity and measure: reference's effect minus trained's (positive: the flat
    training lost less to pruning, or gained less from fine-tuning, as the claim predicts). Returns
    [(scope, sparsity, measure, Verdict)], Holm-corrected over all of them (`esacl.stats`)."""
    from .stats import paired, verdicts

    a = {seed: run_effects(r, metric) for seed, r in reference.items()}
    b = {seed: run_effects(r, metric) for seed, r in trained.items()}
    keys = [(scope, s, m) for scope, s in cuts(_probes(next(iter(reference.values())))[0]) for m in measures]
    cells = [paired({k: v[key] for k, v in a.items()}, {k: v[key] for k, v in b.items()}) for key in keys]
    return [(*key, verdict) for key, verdict in zip(keys, verdicts(cells))]
