"""Step mechanics: how a learner's loss becomes a weight update.

A step is called as `step(model, learner, batch) -> Loss` (the loss at the pre-update weights).
It knows nothing about which continual learner produced the loss, so SAM's two passes, IDS's
support selection and every pruning rule wrap every learner without copying the training loop:

    pass 1      loss and gradient g at w                        (every step)
    ascent      w <- w + eps, eps = rho * g*m / ||g*m||           (SAM; live weights only)
    scoring     s_i = l_i(w + eps) - l_i(w), keep the top K       (IDS support selection)
    pass 2      gradient at w + eps on the kept examples, then w restored exactly   (SAM)
    update      the sparsifier's rule: SGD, dual averaging (SDP), magnitude pruning
"""
import contextlib
import math

import torch

from .methods import SPARSIFIERS, Loss
from .prune import PRUNERS


@contextlib.contextmanager
def frozen_bn_stats(model: torch.nn.Module):
    """Batch-norm normalises with batch statistics but does not update its running statistics
    (nor num_batches_tracked): the ascent pass must not count as a second look at the data."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


class Step:
    """One update on one batch; see the module docstring for the passes."""

    def __init__(self, model, cfg, sam: bool, pruner, selector, meter=None):
        self.cfg, self.sam, self.pruner, self.selector = cfg, sam, pruner, selector
        self.meter = meter
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def _phase(self, name):
        return self.meter.phase(name) if self.meter is not None else contextlib.nullcontext()

    def __call__(self, model, learner, batch) -> Loss:
        model.zero_grad(set_to_none=True)
        with self._phase("first_pass"):
            loss = learner.loss(model, batch)
            loss.total.backward()
        scores = keep = None
        if self.sam:
            saved = self.ascend()
            with frozen_bn_stats(model):
                second = batch
                k = self.selector.support_size(len(batch.y))
                if k < len(batch.y) and self.cfg.support_rule == "random":             # control: no scoring
                    keep = torch.randperm(len(batch.y), device=batch.y.device)[:k]
                    second = batch.subset(keep)
                elif k < len(batch.y):
                    with torch.no_grad(), self._phase("scoring"):
                        at_eps = learner.loss(model, batch).per_sample                 # [B]
                    scores = at_eps - loss.per_sample.detach()                           # [B] sharpness
                    keep = scores.topk(k, sorted=False).indices                          # [K] fixed size
                    second = batch.subset(keep)
                model.zero_grad(set_to_none=True)
                with self._phase("second_pass"):
                    learner.loss(model, second).total.backward()
            with torch.no_grad():
                torch._foreach_copy_([p for _, p in self.named], saved)               # exact restore
        self.selector.record(batch, loss, scores, keep)
        self.pruner.update()
        return loss

    @torch.no_grad()
    def ascend(self) -> list[torch.Tensor]:
        """w <- w + eps on live weights; returns copies of w (dense copy: 1x parameter memory, transient)."""
        params = [p for _, p in self.named]
        saved = [p.detach().clone() for p in params]
        masks = self.pruner.masks
        direction = []
        for (name, p) in self.named:
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            if name in masks:
                g = g * masks[name]
            if self.cfg.asam:                    # ASAM: eps = rho * T^2 g / ||T g||, T = |w| + 0.01
                g = g * (p.abs() + 0.01) ** 2
            direction.append(g)
        if self.cfg.asam:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(
                [d / (p.abs() + 0.01) for d, (_, p) in zip(direction, self.named)])))
        else:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(direction)))
        scale = self.cfg.rho / (norm + 1e-12)                                            # 0-dim, on the device
        torch._foreach_add_(params, torch._foreach_mul(direction, scale))
        return saved

    def state_dict(self) -> dict:
        return dict(pruner=self.pruner.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.pruner.load_state_dict(state["pruner"])


def build_step(cfg, preset, model, selector, meter=None) -> Step:
    """The step of a preset: its sparsifier decides the passes and the update rule."""
    sam, rule = SPARSIFIERS[preset.sparsifier]
    return Step(model, cfg, sam, PRUNERS[rule](model, cfg, meter), selector, meter)


def support_size(cfg, batch: int) -> int:
    """Examples the SAM second pass keeps out of a batch of `batch`."""
    if cfg.support_size is not None:
        return min(cfg.support_size, batch)
    return max(1, math.ceil(cfg.support_fraction * batch))
