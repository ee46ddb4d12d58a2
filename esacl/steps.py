"""Step mechanics: how a learner's loss becomes a weight update.

A step is called as `step(model, learner, batch) -> Loss` (the loss at the pre-update weights).
It knows nothing about which continual learner produced the loss, so SAM's two passes, IDS's
support selection and every pruning rule wrap every learner without copying the training loop:

    pass 1      loss and gradient g at w                        (every step)
    ascent      w <- w + eps, eps = rho * g*m / ||g*m||           (SAM; live weights only)
    scoring     s_i = l_i(w + eps) - l_i(w) on the stream examples, keep K of them  (IDS support selection)
    pass 2      gradient at w + eps on the kept examples and the whole replay draw, then w restored exactly
    gradient    the update rule's masks (SparCL), then the learner's own change, if any (A-GEM's
                projection, made on the part of the gradients the update applies)
    update      the update rule: SGD, dual averaging (SDP), magnitude pruning; then the learner's
                own change of the weights, if any (EWC's proximal step)

With `sam_every` K > 1, only every K-th step takes the ascent, scoring and pass 2; the others
update with pass 1's gradient (LookSAM-style).
"""

import contextlib
import dataclasses
from dataclasses import dataclass

import torch

from .knobs import Section, knob
from .learners import Loss
from .selection import SupportConfig, second_pass_size


@dataclass(frozen=True)
class SAMConfig(Section):
    """The SAM ascent."""

    rho: float | None = knob(None, "SAM neighbourhood radius", interval="(0, inf)", tuned=0.05)
    asam: bool = knob(False, "adaptive SAM: scale the ascent by |w| (Kwon et al. 2021)")
    sam_every: int = knob(
        1,
        "SAM's ascent and second pass every this-many steps, a plain step on the first "
        "pass's gradient in between (LookSAM-style; 1: every step)",
        interval="[1, inf)",
    )


@contextlib.contextmanager
def perturbed(params: list[torch.Tensor]):
    """Inside, `params` may move freely; on exit (also on an error) they are written back exactly from
    the copies taken on entry, which the context yields (adding and subtracting a perturbation does
    not round-trip in floating point). Dense copy: 1x the parameters' memory, transient."""
    saved = [p.detach().clone() for p in params]
    try:
        yield saved
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, saved)


@torch.no_grad()
def sam_perturbation(params, grads, masks, rho: float, asam: bool = False) -> list[torch.Tensor]:
    """SAM's ascent: eps = rho * d / ||d||, d = g*m (live weights only; g None counts as zero); with
    `asam`, ASAM's eps = rho * T^2 g / ||T g||, T = |w| + 0.01. masks: a list aligned with params of
    bool tensors (True = live) or None (all live). The one copy of the ascent: the training step
    (`Step.ascend`) and the sharpness measurement (`landscape.sam_gap`) both take it. No host sync."""
    direction = []
    for p, g, m in zip(params, grads, masks):
        g = torch.zeros_like(p) if g is None else g
        if m is not None:
            g = g * m
        if asam:
            g = g * (p.abs() + 0.01) ** 2
        direction.append(g)
    if asam:
        norm = torch.linalg.vector_norm(
            torch.stack(torch._foreach_norm([d / (p.abs() + 0.01) for d, p in zip(direction, params)]))
        )
    else:
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(direction)))
    return torch._foreach_mul(direction, rho / (norm + 1e-12))  # a zero gradient gives eps = 0


@contextlib.contextmanager
def frozen_bn_stats(norms: list):
    """The batch-norm layers `norms` normalise with batch statistics but do not update their running
    statistics (nor num_batches_tracked): the ascent pass must not count as a second look at the data."""
    norms = [m for m in norms if m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


def batch_norms(model: torch.nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


class BatchStats:
    """Batch-norm statistics of one forward, reused by later forwards of the same step.

    While `recording`, each layer's batch mean and (biased) variance of its input are kept, as
    train-mode batch-norm computes them to normalise (pass 1: the whole batch, replay included, at
    w). Inside `applied()`, the layers normalise with those instead (eval mode, the recorded
    statistics in place of the running ones, which stay untouched): the scoring forward and pass 2
    then see the whole batch's statistics however few examples they carry. The statistics are
    constants there, so no gradient flows through them. One mean and one variance per layer per step.
    """

    def __init__(self, model: torch.nn.Module):
        self.norms = batch_norms(model)
        self.members = set(self.norms)
        self.stats: dict = {}
        self.recording = False
        for m in self.norms:
            m.register_forward_pre_hook(self._record)

    def __deepcopy__(self, memo):
        return self  # a frozen copy of the model (CO2L's past model) keeps the hook, inert

    def _record(self, module, args):
        if self.recording and module in self.members:
            x = args[0].detach().float()
            dims = [0] + list(range(2, x.dim()))
            self.stats[module] = (x.mean(dims), x.var(dims, unbiased=False))

    @contextlib.contextmanager
    def record(self):
        self.recording = True
        try:
            yield
        finally:
            self.recording = False

    @contextlib.contextmanager
    def applied(self):
        saved = [(m.training, m.running_mean, m.running_var) for m in self.norms]
        for m in self.norms:
            m.running_mean, m.running_var = self.stats[m]
            m.training = False
        try:
            yield
        finally:
            for m, (training, mean, var) in zip(self.norms, saved):
                m.running_mean, m.running_var, m.training = mean, var, training


def support_indices(scores: torch.Tensor, y: torch.Tensor, k: int, balance: str) -> torch.Tensor:
    """The K stream examples the second pass keeps ([K], fixed size, no host sync).

    'none': the K highest scores. 'class': each class keeps its highest-scored examples in proportion
    to its share of the batch: an example's position within its class, (rank + 1/2) / class count,
    orders the whole batch and the K lowest positions stay (a stratified top-K)."""
    if balance == "none":
        return scores.topk(k, sorted=False).indices
    same = y[:, None] == y[None, :]  # [B, B]
    rank = ((scores[None, :] > scores[:, None]) & same).sum(1)  # [B] 0: sharpest of its class
    position = (rank + 0.5) / same.sum(1)  # [B] in (0, 1)
    return (-position).topk(k, sorted=False).indices


class Step:
    """One update on one batch; see the module docstring for the passes."""

    def __init__(self, model, cfg, sam: bool, rule, selector, meter=None):
        self.ascent, self.support = SAMConfig.of(cfg), SupportConfig.of(cfg)  # the knobs a step reads, typed
        self.sam, self.rule, self.selector = sam, rule, selector
        self.meter = meter
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.norms = batch_norms(model)  # walked once, not per step
        self.batch_stats = BatchStats(model) if sam and self.support.support_bn == "batch" else None

    def _stats(self):
        """Batch-norm for the forwards after pass 1: pass 1's whole-batch statistics ('batch'), or each
        forward's own, with the running statistics left alone ('subset')."""
        return self.batch_stats.applied() if self.batch_stats else frozen_bn_stats(self.norms)

    def _phase(self, name, dense_weight_grad: bool = False):
        return self.meter.phase(name, dense_weight_grad) if self.meter is not None else contextlib.nullcontext()

    def __call__(self, model, learner, batch) -> Loss:
        sam = self.sam and self.rule.n_steps % self.ascent.sam_every == 0  # the update rule counts the steps
        dense_wgrad = self.rule.dense_weight_grad()
        model.zero_grad(set_to_none=True)
        record = self.batch_stats.record() if sam and self.batch_stats else contextlib.nullcontext()
        with self._phase("first_pass", dense_weight_grad=dense_wgrad and not sam), record:
            loss = learner.loss(model, batch)
            loss.total.backward()
        scores = keep = None
        k = second_pass_size(self.support, len(batch.y)) if self.selector.selects_support else len(batch.y)
        scoring = sam and k < len(batch.y) and self.support.support_rule != "random"
        scored = batch if learner.scores_with_replay or not batch.replay else dataclasses.replace(batch, replay={})
        at_w = loss.per_sample
        # Both losses of a score come from one batch-norm regime, in float32. Pass 1 normalised over stream
        # + replay; where scoring forwards the stream alone under its own statistics (support_bn=subset),
        # l_i(w) is forwarded again the same way. Scores are loss differences of order 1e-3, which bf16
        # logits (8 mantissa bits) round away: under amp too. Either costs one more no-grad forward, at w.
        exact = torch.autocast(batch.y.device.type, enabled=False)
        amp = torch.is_autocast_enabled(batch.y.device.type)
        if scoring and (amp or (scored is not batch and self.batch_stats is None)):
            with torch.no_grad(), self._phase("scoring"), exact, self._stats():
                at_w = learner.per_sample_loss(model, scored)  # [B] float32
        if sam:
            with perturbed([p for _, p in self.named]), self._stats():  # pass 2 at w + eps, then w exactly
                self.ascend()
                second = batch
                if k < len(batch.y) and self.support.support_rule == "random":  # control: no scoring
                    keep = torch.randperm(len(batch.y), device=batch.y.device)[:k]
                    second = batch.subset(keep)
                elif scoring:
                    with torch.no_grad(), self._phase("scoring"), exact:
                        at_eps = learner.per_sample_loss(model, scored)  # [B]
                    scores = at_eps - at_w.detach()  # [B] sharpness
                    keep = support_indices(scores, batch.y, k, self.support.support_balance)  # [K]
                    second = batch.subset(keep)
                model.zero_grad(set_to_none=True)
                with self._phase("second_pass", dense_weight_grad=dense_wgrad):
                    learner.loss(model, second).total.backward()
        self.rule.prepare_gradient()  # what the update applies, before the learner changes it
        learner.adjust_gradient(model, batch, self.rule.applied)
        self.selector.record(batch, loss, scores, keep)
        self.rule.update()
        learner.after_update(model)
        return loss

    @torch.no_grad()
    def ascend(self) -> None:
        """w <- w + eps on live weights (inside `perturbed`, which restores w)."""
        params = [p for _, p in self.named]
        masks = [self.rule.masks.get(name) for name, _ in self.named]
        torch._foreach_add_(
            params, sam_perturbation(params, [p.grad for p in params], masks, self.ascent.rho, self.ascent.asam)
        )

    def state_dict(self) -> dict:
        return dict(rule=self.rule.state_dict())

    def load_state_dict(self, state: dict) -> None:
        # Checkpoints written while the step kept its own count: a dense rule's state then lacks one;
        # those written before the update rule had its name keep it under "pruner".
        self.rule.n_steps = state.get("n_steps", 0)
        self.rule.load_state_dict(state["rule"] if "rule" in state else state["pruner"])
