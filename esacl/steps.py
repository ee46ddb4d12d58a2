"""Step mechanics: how a learner's loss becomes a weight update.

A step is called as `step(model, learner, batch) -> Loss`. It owns the optimizer state and
knows nothing about which continual learner produced the loss, so a two-pass step (SAM, SDP)
wraps every learner without copying the training loop.
"""
import torch

from .methods import Loss


class SGDStep:
    """Plain SGD (no momentum, no weight decay, constant lr): one forward, one backward, one update."""

    def __init__(self, model: torch.nn.Module, lr: float):
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def __call__(self, model, learner, batch) -> Loss:
        loss = learner.loss(model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        self.optimizer.step()
        return loss

    def state_dict(self) -> dict:
        return dict(optimizer=self.optimizer.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def build_step(cfg, preset, model) -> SGDStep:
    """The step mechanics of a preset's sparsifier ('none': plain SGD)."""
    if preset.sparsifier == "none":
        return SGDStep(model, cfg.lr)
    raise ValueError(f"unknown sparsifier {preset.sparsifier!r}")
