"""The flatness probe: what one-shot pruning costs a model as trained, and how much of it a few
fine-tuning steps win back (docs/method.md, "Flatness").

The paper argues that a flat minimum (SAM) can be pruned without retraining. The probe measures that
claim's two quantities on the weights at a task end (config key `flatness_probe`), for each scope in
SCOPES and sparsity in SPARSITIES:

    drop      the current task's test accuracy and training loss of the dense weights, against those
              of the weights pruned to the top-k |w| (batch-norm statistics recomputed for both over
              PROBE_EXAMPLES of the task's training examples, which the training loss also uses: stale
              statistics alone gave 71.1% against 100% after one Split-Digits task at sparsity 0.9,
              docs/method.md, "Batch-norm recalibration")
    recovery  the same after k steps of fine-tuning with the mask fixed, k in STEPS (plain SGD at the
              run's lr, cross-entropy on the task's own examples in a seeded order)

The claim predicts a smaller drop and a smaller recovery gain after SAM than after SGD. A sparse run
probes its own task-end projection instead: the drop is the projection's jump on the current task,
the recovery what retraining with its mask would win. Beside them: the top Hessian eigenvalue and the
loss along the pruning direction. Every weight, batch-norm statistic and random generator is restored
afterwards: the run goes on as without the probe, and its FLOPs are reported as measurement
('measure.flatness'), not training.

The experiment (`plan`, then `results`; benchmarks/flatness.py and notebooks/flatness.ipynb run it):
- 'pruned': dense SGD, SAM and ASAM trained on the same stream to the same training loss, each task
  end probed at every scope and sparsity; SGD's effects minus the flat training's, paired by seed.
- 'sdp': SDP (the ascent at the benchmark's rho) and SDP without the ascent (rho 0: gRDA's form) at
  matched steps, in variants where the projection keeps exactly the trained nonzeros ('target', the
  main job's), prunes `project_gap` more than training held ('gap'), or cuts what gRDA's own
  threshold left ('grda'); without the ascent's effects minus with, and each one's retraining gain
  against 0.
"""

import statistics

import torch
import torch.nn.functional as F

from .landscape import top_hessian_eigenvalue
from .prune import projection_masks, topk_masks
from .seeding import rng_state, set_rng_state
from .steps import batch_norms, frozen_bn_stats, perturbed

SPARSITIES = (0.5, 0.8, 0.9, 0.95)
SCOPES = ("layer", "global")
STEPS = (0, 10, 100)
EVAL_BATCH = 512  # examples per no-grad forward
# Training examples (a seeded draw from the task's) that recalibration and the training loss use: on
# Split Fashion-MNIST's 12,000 a task, the whole set made the probe as slow as the task's training.
PROBE_EXAMPLES = 2048
PATH_POINTS = 11  # alpha = 0, 0.1, ..., 1 along the pruning direction
PATH_BATCH = 512  # of the drawn examples, the first this-many: the path's loss
HESSIAN_BATCH = 256  # of the drawn examples, the first this-many: the top Hessian eigenvalue
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
    """The current task's training loss (on the examples given) and test accuracy (class-IL: over all classes; task-IL:
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
    model.train()
    losses = []
    with perturbed(list(prunable.values())) as saved, frozen_bn_stats(batch_norms(model)):
        for i in range(PATH_POINTS):
            alpha = i / (PATH_POINTS - 1)
            for (name, p), w in zip(prunable.items(), saved):
                p.copy_(w * (1 - alpha * (~masks[name])))  # exact at both ends
            losses.append(F.cross_entropy(model(x), y))
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
    drawn = torch.randperm(len(task.y_train), generator=torch.Generator().manual_seed(seed))[:PROBE_EXAMPLES]
    drawn = drawn.to(task.y_train.device)  # [M]: a CPU draw, the same on every device
    x_fit, y_fit = task.x_train[drawn], task.y_train[drawn]  # [M, ...], [M]
    data = x_fit, y_fit, task.x_test, task.y_test, task.classes
    generator = torch.Generator(task.y_train.device).manual_seed(seed)
    params = dict(model.named_parameters())
    prunable = {n: params[n] for n in model.prunable()}
    out = dict(as_trained=current_task(model, *data))
    recalibrate(model, x_fit, batch_size)
    out["dense"] = current_task(model, *data)
    out["top_eigenvalue"] = sharpness(
        model, x_fit[:HESSIAN_BATCH], y_fit[:HESSIAN_BATCH], torch.Generator().manual_seed(seed)
    )
    if own is None:
        cuts = [(scope, s, lambda w, s=s, scope=scope: topk_masks(w, s, scope)) for scope in SCOPES for s in SPARSITIES]
    else:
        sparsity, scope = own
        cuts = [("own", sparsity, lambda w: projection_masks(w, sparsity, scope))]
        out["own_sparsity"] = sparsity
        zeros = sum(int((p == 0).sum()) for p in prunable.values())  # host sync
        out["trained_sparsity"] = zeros / sum(p.numel() for p in prunable.values())  # before the projection
    out["path"] = {}
    for scope, sparsity, masks_of in cuts:
        model.load_state_dict(saved)
        masks = masks_of({n: p.detach() for n, p in prunable.items()})
        path = pruning_path(model, prunable, masks, x_fit[:PATH_BATCH], y_fit[:PATH_BATCH])
        out["path"].setdefault(scope, {})[str(sparsity)] = path
        with torch.no_grad():
            for n, mask in masks.items():
                prunable[n].mul_(mask)
        out.setdefault(scope, {})[str(sparsity)] = rows = {}
        done = 0
        for k in STEPS:
            finetune(model, task, masks, k - done, lr, batch_size, generator, augment)
            done = k
            recalibrate(model, x_fit, batch_size)
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

# Accuracy lost by pruning (k = 0); accuracy won back by the last k; training loss gained by pruning.
MEASURES = ("drop", "recovery", "loss_rise")
# Equivalence margins: 1 accuracy point; 0.01 nats of mean training loss (a 1% change of the likelihood).
MARGINS = {"drop": 1.0, "recovery": 1.0, "loss_rise": 0.01}


def cuts(probe: dict) -> list[tuple[str, float]]:
    """The (scope, sparsity) pairs a probe pruned to: SCOPES x SPARSITIES for a dense run, ('own', its
    sparsity) for a sparse one."""
    return [(scope, float(s)) for scope in (*SCOPES, "own") if scope in probe for s in probe[scope]]


def probes_of(record) -> list[dict]:
    """The flatness probes of a run's task ends, in task order (ValueError: the run made none)."""
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
    probes = probes_of(record)
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
    values = [p["top_eigenvalue"] for p in probes_of(record) if "top_eigenvalue" in p]
    return statistics.fmean(values) if values else None


def compare(reference: dict, trained: dict, metric: str = "class_il", measures=MEASURES):
    """The claim's test: `reference` and `trained` ({seed: Record}, e.g. SGD's and SAM's runs) paired by
    seed, per scope, sparsity and measure: reference's effect minus trained's (positive: the flat
    training lost less to pruning, or gained less from fine-tuning, as the claim predicts). Returns
    [(scope, sparsity, measure, Verdict)], Holm-corrected over all of them (`esacl.stats`); equivalence
    within MARGINS."""
    from .stats import paired, verdicts

    a = {seed: run_effects(r, metric) for seed, r in reference.items()}
    b = {seed: run_effects(r, metric) for seed, r in trained.items()}
    keys = [(scope, s, m) for scope, s in cuts(probes_of(next(iter(reference.values())))[0]) for m in measures]
    cells = [
        paired({k: v[key] for k, v in a.items()}, {k: v[key] for k, v in b.items()}, MARGINS[key[2]]) for key in keys
    ]
    return [(*key, verdict) for key, verdict in zip(keys, verdicts(cells))]


# ----------------------------------------------------------------------------- the experiment

PRUNED_MODES = {"sgd": dict(method="sgd"), "sam": dict(method="sam"), "asam": dict(method="sam", asam=True, rho=0.5)}
SDP_MODES = {"sdp": dict(method="esacl-noids"), "no ascent": dict(method="grda")}
SDP_VARIANTS = {"target": dict(), "gap": dict(project_gap=0.2), "grda": dict(threshold="grda")}


def plan(
    benchmark: str,
    seeds,
    out: str,
    stop_loss: float,
    max_epochs: int,
    parts=("pruned", "sdp"),
    sdp_seeds=None,
    **changes,
) -> list[tuple]:
    """The experiment's runs as [(part, variant, mode, seed, RunConfig)], each named for what it is
    under `out` (run again, the same plan finds the runs already made); part 'sdp' on `sdp_seeds` (None:
    `seeds`); `changes`: RunConfig keys set in every run (e.g. n_tasks for a quick look).

    'pruned' trains each task until an epoch's mean training loss is at most `stop_loss` (`max_epochs`
    at most): matched quality. ASAM's rho 0.5 is Kwon et al.'s CIFAR-10 value, not tuned here. 'sdp' trains
    the benchmark's epochs (matched steps: no data selection, so the same batches) at sparsity 0.9."""
    from .config import RunConfig

    rows = []
    for part in parts:
        if part == "pruned":
            runs = [
                ("-", mode, values, dict(epochs=max_epochs, stop_loss=stop_loss))
                for mode, values in PRUNED_MODES.items()
            ]
        elif part == "sdp":
            runs = [
                (variant, mode, {**values, **variant_keys}, {})
                for variant, variant_keys in SDP_VARIANTS.items()
                for mode, values in SDP_MODES.items()
            ]
        else:
            raise ValueError(f"unknown part {part!r}: 'pruned' or 'sdp'")
        for variant, mode, values, budget in runs:
            for seed in (sdp_seeds or seeds) if part == "sdp" else seeds:
                slug = mode.replace(" ", "-") if part == "pruned" else f"{variant}-{mode.replace(' ', '-')}"
                cfg = RunConfig(
                    benchmark=benchmark,
                    seed=seed,
                    flatness_probe=True,
                    out=f"{out}/{part}",
                    name=f"{slug}-s{seed}",
                    progress=False,
                    **{**budget, **values, **changes},
                )
                rows.append((part, variant, mode, seed, cfg))
    return rows


def groups(rows: list[tuple], records: list) -> dict[tuple, dict]:
    """`plan`'s rows and their records as {(part, variant, mode): {seed: Record}}; a missing, diverged or
    unfinished run is left out."""
    runs: dict[tuple, dict] = {}
    for (part, variant, mode, seed, _), record in zip(rows, records):
        if record is not None and not record.diverged and record.complete:
            runs.setdefault((part, variant, mode), {})[seed] = record
    return runs


def _cell(verdict, **fields) -> dict:
    c = verdict.cell
    low, high = c.interval()
    return dict(
        fields, a=c.a_mean, b=c.b_mean, mean=c.mean, low=low, high=high, n=c.n, word=verdict.word, text=verdict.text()
    )


def results(rows: list[tuple], records: list, metric: str = "class_il") -> dict:
    """The experiment's tables from `plan`'s rows and their records (in the same order; a missing or
    diverged run is left out), JSON-ready. Each cell: a's and b's means, the mean paired difference a - b
    with its 95% interval, the verdict word and its text (`esacl.stats`, Holm over its table).

    'pruned': {'quality': {mode: {'epochs', 'loss'}}, 'sharpness': {mode: top eigenvalue},
    FLAT: [cell of SGD minus FLAT per scope, sparsity, measure]} for FLAT in sam, asam.
    'sdp': {'differences': [cell of 'no ascent' minus 'sdp' per variant and measure],
    'gains': [cell of each mode's retraining gain against 0, per variant], 'runs': {variant: {mode:
    {'sharpness', 'loss_rise', 'trained_sparsity', 'class_il', 'task_il'}}}}."""
    from .stats import paired, verdicts

    runs = groups(rows, records)
    out = {}
    if any(key[0] == "pruned" for key in runs):
        pruned = out["pruned"] = dict(quality={}, sharpness={})
        for mode in PRUNED_MODES:
            recs = runs.get(("pruned", "-", mode), {})
            if not recs:
                continue
            epochs, losses = [], []
            for r in recs.values():
                by_task = {}  # task -> its epoch events, in order
                for e in r.events:
                    if e["event"] == "epoch":
                        by_task.setdefault(e["task"], []).append(e)
                epochs += [len(v) for v in by_task.values()]
                losses += [v[-1]["loss"] for v in by_task.values()]
            pruned["quality"][mode] = dict(epochs=statistics.fmean(epochs), loss=statistics.fmean(losses))
            pruned["sharpness"][mode] = statistics.fmean(run_sharpness(r) for r in recs.values())
        for flat in ("sam", "asam"):
            if ("pruned", "-", "sgd") in runs and ("pruned", "-", flat) in runs:
                table = compare(runs["pruned", "-", "sgd"], runs["pruned", "-", flat], metric)
                pruned[flat] = [_cell(v, scope=scope, sparsity=s, measure=m) for scope, s, m, v in table]
    variants = [v for v in SDP_VARIANTS if all(("sdp", v, m) in runs for m in SDP_MODES)]
    if variants:
        effects = {
            (v, m): {seed: run_effects(r, metric) for seed, r in runs["sdp", v, m].items()}
            for v in variants
            for m in SDP_MODES
        }

        def effect(v, m, measure):
            sparsity = next(iter(next(iter(effects[v, m].values()))))[1]
            return {seed: e["own", sparsity, measure] for seed, e in effects[v, m].items()}

        keys = [(v, measure) for v in variants for measure in MEASURES]
        # A projection that moved no weight in any run (variant 'target') has no drop to test: said, not tested.
        moved = [any(any(effect(v, m, measure).values()) for m in SDP_MODES) for v, measure in keys]
        tested = [key for key, flag in zip(keys, moved) if flag]
        cells = [
            paired(effect(v, "no ascent", measure), effect(v, "sdp", measure), MARGINS[measure])
            for v, measure in tested
        ]
        found = {key: _cell(x, variant=key[0], measure=key[1]) for key, x in zip(tested, verdicts(cells))}
        none = dict(a=0.0, b=0.0, mean=0.0, word="none", text="0 in every run: nothing to test")
        differences = [found.get((v, m), dict(none, variant=v, measure=m)) for v, m in keys]
        keys = [(v, m) for v in variants for m in SDP_MODES]
        cells = [paired(effect(v, m, "recovery"), {seed: 0.0 for seed in effects[v, m]}) for v, m in keys]
        gains = [_cell(x, variant=v, mode=m) for (v, m), x in zip(keys, verdicts(cells))]
        summary = {}
        for v in variants:
            for m in SDP_MODES:
                recs = runs["sdp", v, m].values()
                probes = [p for r in recs for p in probes_of(r)]
                summary.setdefault(v, {})[m] = dict(
                    sharpness=statistics.fmean(run_sharpness(r) for r in recs),
                    loss_rise=statistics.fmean(effect(v, m, "loss_rise").values()),
                    trained_sparsity=statistics.fmean(p["trained_sparsity"] for p in probes),
                    class_il=statistics.fmean(r.summary["class_il"]["average"] for r in recs),
                    task_il=statistics.fmean(r.summary["task_il"]["average"] for r in recs),
                )
        out["sdp"] = dict(differences=differences, gains=gains, runs=summary)
    return out


def text(found: dict) -> str:
    """`results(...)` as the tables a terminal or a notebook prints."""
    lines = []
    if "pruned" in found:
        pruned = found["pruned"]
        lines.append(
            "\npruned: quality match (mean over seeds and tasks) and the top Hessian eigenvalue at the task ends"
        )
        for mode, q in pruned["quality"].items():
            lines.append(
                f"  {mode:5s} {q['epochs']:5.2f} epochs, last epoch's loss {q['loss']:.4f}, "
                f"top eigenvalue {pruned['sharpness'][mode]:8.2f}"
            )
        for flat in ("sam", "asam"):
            if flat not in pruned:
                continue
            lines.append(
                f"\nSGD minus {flat.upper()}, paired by seed (class-IL of the current task, points; loss, nats)"
            )
            lines.append(f"{'scope':7s}{'sparsity':>9s}  {'measure':10s}{'SGD':>8s}{flat.upper():>8s}  difference")
            for c in pruned[flat]:
                lines.append(
                    f"{c['scope']:7s}{c['sparsity']:9g}  {c['measure']:10s}{c['a']:8.2f}{c['b']:8.2f}  {c['text']}"
                )
    if "sdp" in found:
        sdp = found["sdp"]
        lines.append(
            "\nsdp: without the ascent minus with it, paired by seed (class-IL of the current task, points; loss, nats)"
        )
        lines.append(f"  {'variant':8s}{'measure':10s}{'no ascent':>10s}{'sdp':>8s}  difference")
        for c in sdp["differences"]:
            lines.append(f"  {c['variant']:8s}{c['measure']:10s}{c['a']:10.2f}{c['b']:8.2f}  {c['text']}")
        lines.append("retraining gain (100 steps with the run's mask fixed) against 0")
        for c in sdp["gains"]:
            lines.append(f"  {c['variant']:8s}{c['mode']:10s}{c['text']}")
        lines.append(
            "per mode, mean over seeds: top eigenvalue, loss rise at the projection, sparsity before it, accuracy"
        )
        for variant, modes in sdp["runs"].items():
            for mode, r in modes.items():
                lines.append(
                    f"  {variant:8s}{mode:10s} eigenvalue {r['sharpness']:8.2f}  loss rise {r['loss_rise']:+.4f}  "
                    f"trained sparsity {r['trained_sparsity']:.3f}  class-IL {r['class_il']:.2f}  "
                    f"task-IL {r['task_il']:.2f}"
                )
    return "\n".join(lines)
