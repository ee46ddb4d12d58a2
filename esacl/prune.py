"""Update rules that make weights sparse: how a gradient becomes new weights and masks.

`SGD` is the dense rule. `DualAveraging` is the directional-pruning half of SDP in gRDA's form
(Chao et al. 2020): prunable weights are the soft-threshold of an accumulator of lr-scaled
gradients, so a pruned weight keeps its accumulated direction and can come back; no retraining
phase follows. `Magnitude` is gradual magnitude pruning (Zhu & Gupta 2017) for the ablation.
Non-prunable parameters (stem, shortcuts, batch-norm, head) take a plain SGD step in every rule.
"""

from dataclasses import dataclass

import torch

from .errors import UserError
from .knobs import Section, knob
from .steps import perturbed


@dataclass(frozen=True)
class SparsityConfig(Section):
    """Sparse update rules (SDP, GMP, SparCL): which weights, how many, how the threshold moves, and the task end."""

    sparsity: float | None = knob(
        None,
        "target sparsity of the prunable layers (default: 0.9 for sparse methods, 0 for dense ones)",
        interval="[0, 1)",
    )
    sparsity_scope: str = knob(
        "layer",
        "'layer': the target holds per prunable layer (SparCL's convention); "
        "'global': over all prunable weights together",
        choices=lambda: ["global", "layer"],
    )
    threshold: str = knob(
        "target",
        "'target': the threshold is the quantile of |accumulator| that tracks the "
        "sparsity schedule; 'grda': gRDA's c * lr^0.5 * (n lr)^mu",
        choices=lambda: ["grda", "target"],
    )
    prune: str = knob(
        "soft",
        "'soft': soft-threshold the accumulator (gRDA); 'hard': keep the top-k values as they are",
        choices=lambda: ["hard", "soft"],
    )
    ramp_fraction: float = knob(
        0.5,
        "the sparsity schedule ramps (cubic) over this fraction of the first task's "
        "steps, then holds the target (0: sparse from the first update)",
        interval="[0, 1]",
    )
    dense_grad_every: int | None = knob(
        None,
        "SDP: the accumulator takes the dense weight gradient every this-many steps and "
        "the live weights' gradient in between (RigL's regrowth at sparse cost; 1: every step)",
        interval="[1, inf)",
        tuned=1,
    )
    grda_c: float = knob(0.005, "gRDA threshold scale c (with threshold 'grda')", interval="[0, inf)")
    grda_mu: float = knob(0.55, "gRDA threshold growth exponent mu (with threshold 'grda')", interval="(0, 1)")
    project_gap: float = knob(
        0.0,
        "SDP and GMP: the schedule holds sparsity - gap and each task-end projection prunes to the "
        "sparsity, so the projection moves weights (0: it keeps exactly the weights training left nonzero)",
        interval="[0, 1)",
    )
    reset_accumulator: bool = knob(False, "reset the dual-averaging accumulator to the weights at each task start")
    one_shot_sparsity: float = knob(
        0.0,
        "dense methods: at each task end, record the accuracy and loss lost by "
        "one-shot magnitude pruning to this sparsity, no retraining (the flatness test; "
        "0: not measured)",
        interval="[0, 1)",
    )
    flatness_probe: bool = knob(
        False,
        "at each task end, the flatness probe (esacl/flatness.py): the current task's accuracy and "
        "training loss after one-shot magnitude pruning to 0.5-0.95 (layer and global scope), and after "
        "0, 10 and 100 fine-tuning steps with the mask fixed; measured, the run unchanged",
    )
    bn_recalibrate: bool = knob(
        True,
        "sparse methods: recompute batch-norm running statistics at each task end "
        "with one no-grad pass over the task's batches (weights unchanged; FLOPs counted)",
    )


@dataclass(frozen=True)
class SparCLConfig(Section):
    """SparCL (Wang et al. 2022): task-aware dynamic masking and dynamic gradient masking."""

    tdm: bool = knob(True, "SparCL: task-aware dynamic masking of the prunable weights (off: dense weights)")
    tdm_every: int | None = knob(None, "SparCL: epochs between two prune-and-grow mask updates", interval="[1, inf)")
    tdm_gap: float = knob(
        0.01, "SparCL: prune to target + gap, then regrow to the target (the schedule's bounds)", interval="[0, 1)"
    )
    tdm_lambda: float = knob(0.5, "SparCL: importance |w| + lambda |grad w| for pruning", interval="[0, inf)")
    dgm: bool = knob(True, "SparCL: dynamic gradient masking of the prunable layers")
    dgm_keep: float | None = knob(
        None,
        "SparCL: share of each prunable layer's weight gradient kept (largest |grad|)",
        interval="(0, 1]",
        tuned=0.2,
    )
    dgm_every: int = knob(
        30, "SparCL: batches (within an epoch) between two gradient-mask updates", interval="[1, inf)"
    )


def soft_threshold(x: torch.Tensor, threshold) -> torch.Tensor:
    """sign(x) * max(|x| - threshold, 0)."""
    return x.sign() * (x.abs() - threshold).clamp_min(0)


def cubic_sparsity(step: int, ramp_steps: int, target: float) -> float:
    """Zhu & Gupta's schedule: 0 at step 0, rising as a cubic to `target` at `ramp_steps`, then held."""
    if step >= ramp_steps:
        return target
    return target * (1 - (1 - step / ramp_steps) ** 3)


def grda_threshold(c: float, lr: float, n: int, mu: float) -> float:
    """gRDA's threshold after n steps: c * lr^0.5 * (n lr)^mu."""
    return c * lr**0.5 * (n * lr) ** mu


def topk_masks(values: dict[str, torch.Tensor], sparsity: float, scope: str) -> dict[str, torch.Tensor]:
    """Masks keeping the largest |value|: exactly round(sparsity * n) zeros per layer ('layer'),
    or over all layers together ('global'). topk, not a threshold, so ties cannot break the count."""
    if scope == "layer":
        return {name: _keep_top(v.abs().flatten(), sparsity).view_as(v) for name, v in values.items()}
    flat = torch.cat([v.abs().flatten() for v in values.values()])
    keep = _keep_top(flat, sparsity)
    return {
        name: part.view_as(v)
        for (name, v), part in zip(values.items(), keep.split([v.numel() for v in values.values()]))
    }


@torch.no_grad()
def projection_masks(prunable: dict[str, torch.Tensor], sparsity: float, scope: str) -> dict[str, torch.Tensor]:
    """The task-end projection's masks: the top-k |w| (`topk_masks`) that are nonzero. A weight at zero
    is pruned whether or not top-k kept it (gRDA's threshold can zero more than the target): masks,
    recorded sparsity, model size and FLOPs all follow w != 0."""
    top = topk_masks(prunable, sparsity, scope)
    return {n: top[n] & (p != 0) for n, p in prunable.items()}


def _keep_top(magnitude: torch.Tensor, sparsity: float) -> torch.Tensor:
    n = magnitude.numel()
    keep = torch.zeros(n, dtype=torch.bool, device=magnitude.device)
    keep[magnitude.topk(n - round(sparsity * n), sorted=False).indices] = True
    return keep


@torch.no_grad()
def sgd(params: list[torch.Tensor], lr: float) -> None:
    """p <- p - lr * grad for every parameter that has a gradient (one fused foreach kernel)."""
    live = [p for p in params if p.grad is not None]
    if live:
        torch._foreach_add_(live, [p.grad for p in live], alpha=-lr)


def one_shot_pruned(prunable: dict[str, torch.Tensor], evaluate, sparsity: float, scope: str) -> tuple[dict, dict]:
    """`evaluate()` of the model as it is and with its `prunable` weights one-shot pruned to `sparsity`
    (top-k of |w|, no retraining); the weights are restored afterwards. Weights at that sparsity already
    (SDP's at a task end) are not evaluated twice: one host sync to find out."""
    before = evaluate()
    with perturbed(list(prunable.values())) as saved:  # dense copy of the prunable weights
        with torch.no_grad():
            for n, mask in topk_masks(prunable, sparsity, scope).items():
                prunable[n].mul_(mask)
        unchanged = all(torch.equal(p, s) for p, s in zip(prunable.values(), saved))
        after = before if unchanged else evaluate()
    return before, after


def _mean_seen(result: dict) -> float:
    """Mean class-IL accuracy over the tasks an evaluation covered (the later ones are None)."""
    seen = [a for a in result["class_il"] if a is not None]
    return sum(seen) / len(seen)


def jump_summary(before: dict, after: dict) -> dict:
    """Accuracy (mean class-IL over the tasks seen) and loss before and after a pruning step."""
    return dict(
        class_il_before=_mean_seen(before),
        class_il_after=_mean_seen(after),
        loss_before=before["loss"],
        loss_after=after["loss"],
        accuracy_drop=_mean_seen(before) - _mean_seen(after),
    )


class SGD:
    """Plain SGD on every parameter: no momentum, no weight decay, constant lr."""

    sparse = False

    def __init__(self, model, cfg, meter=None):
        self.opts = SparsityConfig.of(cfg)  # the knobs an update rule reads, typed
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.lr = cfg.lr
        named = dict(model.named_parameters())
        self.prunable = {name: named[name] for name in model.prunable()}
        self.masks: dict[str, torch.Tensor] = {}
        # Updates since the run began: the run's one step counter (the step's sam_every, the sparsity
        # schedule, gRDA's n and the trainer's sparsity samples all read it).
        self.n_steps = 0

    def begin_task(self, task: int, steps_in_task: int) -> None:
        pass

    def begin_epoch(self, epoch: int) -> None:
        """Called before each epoch of a task (epochs count from 0 in every task)."""

    def prepare_gradient(self) -> None:
        """Before a learner changes the gradient (`Learner.adjust_gradient`): reduce `.grad` in place to
        what this rule will apply (SparCL's masks). SGD and the other rules apply it as it is."""

    def applied(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        """The part of a gradient of parameter `name` this rule would apply: where a learner projects the
        gradient (A-GEM), it projects against this part of the reference, so the update keeps the property."""
        return grad

    def update(self) -> None:
        sgd(self.params, self.lr)
        self.n_steps += 1

    def dense_weight_grad(self) -> bool:
        """Whether the next update reads the dense gradient of the prunable layers (priced so in FLOPs)."""
        return False

    def sparsity(self) -> float:
        return 0.0

    def project(self) -> None:
        pass

    def end_task(self, evaluate, recalibrate_bn) -> tuple[dict, dict | None]:
        """The sparsifier's end of a task: fields for the task's event, and `evaluate()` of the final
        weights when it made one (None: not evaluated). `evaluate()` scores the model on the tasks
        seen; `recalibrate_bn()` recomputes its batch-norm statistics over the task's batches.

        SGD: the flatness test where `one_shot_sparsity` asks for it, what one-shot magnitude
        pruning with no retraining would cost these weights (they are left as they were)."""
        if not self.opts.one_shot_sparsity:
            return {}, None
        jump = jump_summary(
            *one_shot_pruned(self.prunable, evaluate, self.opts.one_shot_sparsity, self.opts.sparsity_scope)
        )
        return dict(one_shot=dict(jump, sparsity=self.opts.one_shot_sparsity)), None

    def state_dict(self) -> dict:
        return dict(n_steps=self.n_steps)

    def load_state_dict(self, state: dict) -> None:
        self.n_steps = state.get("n_steps", self.n_steps)  # a checkpoint from before it counted: the step's

    def state_bytes(self) -> int:
        return 0


class _Pruning(SGD):
    """Shared by the sparse rules: the prunable set, the sparsity schedule, masks, projection."""

    sparse = True

    def __init__(self, model, cfg, meter=None):
        super().__init__(model, cfg, meter)
        self.meter = meter
        named = dict(model.named_parameters())
        self.dense_params = [p for n, p in named.items() if n not in self.prunable and p.requires_grad]
        self.masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in self.prunable.items()}
        self.ramp_steps = 1
        if self.opts.project_gap > self.opts.sparsity:
            raise UserError(
                f"project_gap {self.opts.project_gap} is above the sparsity {self.opts.sparsity}: "
                "the schedule would hold a negative sparsity"
            )

    def begin_task(self, task, steps_in_task):
        if task == 0:
            self.ramp_steps = max(1, round(self.opts.ramp_fraction * steps_in_task))

    def sparsity(self) -> float:
        """The schedule's sparsity after the updates made so far (`project_gap` below the target)."""
        return cubic_sparsity(self.n_steps, self.ramp_steps, self.opts.sparsity - self.opts.project_gap)

    def update(self):
        sgd(self.dense_params, self.lr)
        self.n_steps += 1  # after n updates the weights have the schedule's sparsity at n
        with torch.no_grad():
            self.update_prunable()
        if self.meter is not None:
            self.meter.set_density(self.masks)

    def project(self) -> None:
        """Hard projection of the weights onto exactly the target sparsity (task end)."""
        with torch.no_grad():
            self.masks = projection_masks(self.prunable, self.opts.sparsity, self.opts.sparsity_scope)
            for name, p in self.prunable.items():
                p.mul_(self.masks[name])
        if self.meter is not None:
            self.meter.set_density(self.masks)

    def end_task(self, evaluate, recalibrate_bn):
        """The final projection and its pruning jump (no retraining follows it): first a one-shot
        projection of the weights as trained, with the running statistics training left; then the
        recorded projection: batch-norm statistics recalibrated (`bn_recalibrate`) at the weights as
        trained and again at the projected weights where the projection moved one, which it keeps."""
        stale, pruned = one_shot_pruned(self.prunable, evaluate, self.opts.sparsity, self.opts.sparsity_scope)
        before = stale
        if self.opts.bn_recalibrate:
            recalibrate_bn()
            before = evaluate()
        trained = {n: p.detach().clone() for n, p in self.prunable.items()}  # transient dense copy
        self.project()
        unchanged = all(torch.equal(p, trained[n]) for n, p in self.prunable.items())
        if not unchanged and self.opts.bn_recalibrate:
            recalibrate_bn()  # the statistics of the weights it keeps (forward passes, not retraining)
        final = before if unchanged else evaluate()
        return dict(jump=dict(jump_summary(before, final), as_trained=jump_summary(stale, pruned))), final

    def state_dict(self):
        return dict(super().state_dict(), masks=self.masks, ramp_steps=self.ramp_steps)

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.masks, self.ramp_steps = dict(state["masks"]), state["ramp_steps"]
        if self.meter is not None:
            self.meter.set_density(self.masks)


class DualAveraging(_Pruning):
    """gRDA-form directional pruning: a <- a - lr * g;  w = S_lambda(a) (or a * top-k mask).

    lambda is either the quantile of |a| that meets the sparsity schedule ('target', default;
    per layer or global) or gRDA's c * lr^0.5 * (n lr)^mu ('grda'). The accumulator is a dense
    copy of the prunable weights: 1x their memory, on top of the weights themselves.
    """

    def __init__(self, model, cfg, meter=None):
        super().__init__(model, cfg, meter)
        self.accumulator = {n: p.detach().clone() for n, p in self.prunable.items()}

    def begin_task(self, task, steps_in_task):
        super().begin_task(task, steps_in_task)
        if self.opts.reset_accumulator and task > 0:
            self.accumulator = {n: p.detach().clone() for n, p in self.prunable.items()}

    def dense_weight_grad(self):
        return self.n_steps % self.opts.dense_grad_every == 0

    def update_prunable(self):
        names = list(self.prunable)
        acc = [self.accumulator[n] for n in names]
        grads = [self.prunable[n].grad for n in names]
        if (self.n_steps - 1) % self.opts.dense_grad_every:  # n_steps already counts this update
            grads = [g * self.masks[n] for g, n in zip(grads, names)]  # live weights only: pruned ones stay put
        torch._foreach_add_(acc, grads, alpha=-self.lr)
        if self.opts.threshold == "grda":
            lam = grda_threshold(self.opts.grda_c, self.lr, self.n_steps, self.opts.grda_mu)
            self.masks = {n: self.accumulator[n].abs() > lam for n in names}
            thresholds = {n: lam for n in names}
        else:
            self.masks = topk_masks(self.accumulator, self.sparsity(), self.opts.sparsity_scope)
            # The threshold is the largest pruned |a|: the soft-threshold then zeroes exactly the pruned.
            thresholds = {n: _largest_pruned(self.accumulator[n], self.masks[n]) for n in names}
            if self.opts.sparsity_scope == "global":
                top = torch.stack(list(thresholds.values())).max()
                thresholds = {n: top for n in names}
        for n in names:
            a = self.accumulator[n]
            w = soft_threshold(a, thresholds[n]) if self.opts.prune == "soft" else a
            self.prunable[n].copy_(w * self.masks[n])

    def state_dict(self):
        return dict(super().state_dict(), accumulator=self.accumulator)

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.accumulator = dict(state["accumulator"])

    def state_bytes(self) -> int:
        return sum(a.numel() * a.element_size() for a in self.accumulator.values())


def _largest_pruned(a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return a.abs().masked_fill(mask, 0).max()  # 0-dim tensor, stays on the device


class Magnitude(_Pruning):
    """Gradual magnitude pruning: an SGD step, then keep the top-(1 - s_t) |w| under the schedule."""

    def dense_weight_grad(self):
        return True  # the SGD step moves every prunable weight, pruned ones included

    def update_prunable(self):
        names = list(self.prunable)
        torch._foreach_add_([self.prunable[n] for n in names], [self.prunable[n].grad for n in names], alpha=-self.lr)
        self.masks = topk_masks(self.prunable, self.sparsity(), self.opts.sparsity_scope)
        for n in names:
            self.prunable[n].mul_(self.masks[n])


class SparCL(_Pruning):
    """SparCL's sparsifier (Wang et al. NeurIPS 2022, as its official code runs it).

    TDM, task-aware dynamic masking (`tdm`): at epoch 0 of every task and every `tdm_every` epochs,
    prune each prunable layer to a lower bound by importance |w| + lambda |grad w|, then regrow
    randomly chosen pruned weights, at zero, up to an upper bound. The bounds restart every task:
    (s, s - gap) before the first `tdm_every` epochs, (s + gap, s) until `tdm_every` epochs before
    the end, then (s, s): a fixed mask. Pruned weights and their gradients stay zero in between.
    DGM, dynamic gradient masking (`dgm`): every `dgm_every` batches of an epoch, keep the largest
    `dgm_keep` share of each prunable layer's weight-gradient entries (after the weight mask) and
    reuse that mask in between; the weight-gradient FLOPs shrink accordingly.
    """

    def __init__(self, model, cfg, meter=None):
        super().__init__(model, cfg, meter)
        if self.opts.project_gap:
            raise UserError("project_gap is for SDP and GMP; SparCL's schedule has its own gap: tdm_gap")
        self.sparcl = SparCLConfig.of(cfg)
        self.grad_masks: dict[str, torch.Tensor] = {}
        self.prepared = False  # prepare_gradient ran since the last update
        self.epochs = cfg.epochs
        self.batch_in_epoch = 0
        self.target = 0.0  # the upper bound in force: what the masks hold between updates

    def begin_epoch(self, epoch):
        self.batch_in_epoch = 0
        if not self.sparcl.tdm or epoch % self.sparcl.tdm_every:
            self._report()  # with tdm off the masks stay dense, and DGM's share still prices the gradients
            return
        every, s, gap = self.sparcl.tdm_every, self.opts.sparsity, self.sparcl.tdm_gap
        stage = sum(epoch >= e for e in (every, self.epochs - every))
        lower, upper = [(s, s - gap), (s + gap, s), (s, s)][stage]
        lower, upper = min(lower, 0.999), max(upper, 0.0)
        with torch.no_grad():
            importance = {
                n: p.abs() + (self.sparcl.tdm_lambda * p.grad.abs() if p.grad is not None else 0)
                for n, p in self.prunable.items()
            }
            self.masks = topk_masks(importance, lower, self.opts.sparsity_scope)
            for n, p in self.prunable.items():
                p.mul_(self.masks[n])  # pruned: zero
                pruned = (~self.masks[n]).flatten().nonzero().flatten()
                grow = round((lower - upper) * p.numel())
                regrow = pruned[torch.randperm(len(pruned), device=pruned.device)[:grow]]
                self.masks[n].view(-1)[regrow] = True  # regrown weights start at zero
        self.target = upper
        self._report()

    def sparsity(self):
        return self.target

    @torch.no_grad()
    def prepare_gradient(self):
        """Pruned weights' gradients to zero; DGM's mask (refreshed every `dgm_every` batches) on the rest.
        Once per update: `update` calls it where the step did not."""
        self.prepared = True
        for n, p in self.prunable.items():
            if p.grad is None:
                continue
            p.grad.mul_(self.masks[n])
            if self.sparcl.dgm:
                if self.batch_in_epoch % self.sparcl.dgm_every == 0 or n not in self.grad_masks:
                    self.grad_masks[n] = topk_masks({n: p.grad}, 1 - self.sparcl.dgm_keep, "layer")[n]
                p.grad.mul_(self.grad_masks[n])

    def applied(self, name, grad):
        if name not in self.prunable:
            return grad
        grad = grad * self.masks[name]
        return grad * self.grad_masks[name] if self.sparcl.dgm and name in self.grad_masks else grad

    def update(self):
        if not self.prepared:
            self.prepare_gradient()
        self.prepared = False
        sgd(self.params, self.lr)
        with torch.no_grad():
            for n, p in self.prunable.items():
                p.mul_(self.masks[n])
        self.batch_in_epoch += 1
        self.n_steps += 1

    def _report(self):
        if self.meter is not None:
            keep = {n: self.sparcl.dgm_keep for n in self.prunable} if self.sparcl.dgm else None
            self.meter.set_density(self.masks, keep)

    def project(self):
        if self.sparcl.tdm:  # with tdm off the weights stay dense throughout (DGM alone: SparCL's ablation)
            super().project()
        self._report()

    def state_dict(self):
        return dict(
            super().state_dict(), grad_masks=self.grad_masks, batch_in_epoch=self.batch_in_epoch, target=self.target
        )

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.grad_masks, self.batch_in_epoch, self.target = (
            dict(state["grad_masks"]),
            state["batch_in_epoch"],
            state["target"],
        )
        self._report()


RULES = {"dense": SGD, "dual_averaging": DualAveraging, "magnitude": Magnitude, "sparcl": SparCL}


def mask_sparsity(masks: dict[str, torch.Tensor]) -> dict:
    """Per-layer and global sparsity of `masks` (host sync)."""
    if not masks:
        return {"global": 0.0, "layers": {}}
    nnz = torch.stack([m.sum() for m in masks.values()]).tolist()
    sizes = [m.numel() for m in masks.values()]
    return {"global": 1 - sum(nnz) / sum(sizes), "layers": {n: 1 - k / s for n, k, s in zip(masks, nnz, sizes)}}
