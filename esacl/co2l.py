"""CO2L (Cha, Lee & Shin, ICCV 2021): contrastive continual learning.

The backbone learns a representation with an asymmetric supervised contrastive loss (only the
current task's examples are anchors; replayed examples serve as positives and negatives) plus
instance-wise relation distillation (IRD) from a frozen copy of the model taken at the start of
the task. Classification comes from a linear probe on frozen features, trained at each task end.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .data import random_window
from .knobs import Section, knob
from .learners import Loss, Replay, frozen_copy

PROJECTION_DIM = 128
PROBE_LR, PROBE_MOMENTUM, PROBE_BATCH = 0.1, 0.9, 256


@dataclass(frozen=True)
class CO2LConfig(Section):
    """CO2L (Cha et al. 2021)."""

    co2l_temperature: float | None = knob(
        None, "CO2L: temperature of the asymmetric supervised contrastive loss", interval="(0, inf)", tuned=0.5
    )
    co2l_current_temperature: float = knob(
        0.2, "CO2L: relation-distillation temperature of the current model", interval="(0, inf)"
    )
    co2l_past_temperature: float = knob(
        0.01, "CO2L: relation-distillation temperature of the past model", interval="(0, inf)"
    )
    co2l_distill: float | None = knob(
        None, "CO2L: weight of the instance-wise relation distillation", interval="[0, inf)", tuned=1.0
    )
    co2l_probe_epochs: int = knob(50, "CO2L: epochs of the linear probe trained at each task end", interval="[1, inf)")


def two_views(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent random augmentations of every example of `x` ([N, C, H, W]), batched on x's device.

    Each view: a random translation by up to max(1, H // 8) pixels (reflect padding, then a per-example
    crop gathered in one indexing op), a horizontal flip with probability 1/2 for 3-channel (natural)
    images only (a flipped digit is another symbol), and a per-example affine intensity jitter
    x * s + b with s in [0.6, 1.4], b in [-0.4, 0.4] in normalised units. Float input is taken as
    normalised (the digits); uint8 pixels (the image benchmarks, whose models start with an InputNorm)
    come back as float32 on the same 0..255 scale, jittered by the same amounts read through a
    nominal mean 0.5 and std 0.25: (p - 127.5) * s + 127.5 + 63.75 b. Randomness comes from torch's
    global RNG on the device, which checkpoints save.
    """
    pixels = x.dtype == torch.uint8
    x = x.float() if pixels else x  # reflect padding needs floats
    n, c, h, w = x.shape
    both = torch.cat([x, x])  # [2N, C, H, W]
    pad = max(1, h // 8)
    padded = F.pad(both, (pad, pad, pad, pad), mode="reflect")  # [2N, C, H + 2p, W + 2p]
    views = random_window(padded, pad, flip=c == 3)  # [2N, C, H, W]
    dev = x.device
    scale = torch.empty(2 * n, 1, 1, 1, device=dev, dtype=x.dtype).uniform_(0.6, 1.4)
    shift = torch.empty(2 * n, 1, 1, 1, device=dev, dtype=x.dtype).uniform_(-0.4, 0.4)
    if pixels:
        views = (views - 127.5) * scale + 127.5 + 63.75 * shift
    else:
        views = views * scale + shift
    return views[:n], views[n:]


def asymmetric_supcon(z: torch.Tensor, y: torch.Tensor, is_anchor: torch.Tensor, temperature: float) -> torch.Tensor:
    """Asymmetric supervised contrastive loss of each sample ([N]).

    z: [N, d] L2-normalised embeddings; y: [N] labels; is_anchor: [N] bool. For an anchor i with
    positives P(i) = {p != i : y_p = y_i} (any sample, anchor or not):
        loss_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / T) / sum_{a != i} exp(z_i.z_a / T) ).
    Non-anchors and anchors without a positive get 0; the caller averages over the anchors that have
    positives. Every row is computed (O(N^2 d)) and masked: selecting anchor rows by a boolean
    index would cost a host sync.
    """
    self_mask = torch.eye(len(y), dtype=torch.bool, device=z.device)  # [N, N]
    sim = z @ z.T / temperature  # [N, N]
    log_denominator = sim.masked_fill(self_mask, float("-inf")).logsumexp(dim=1, keepdim=True)  # [N, 1]
    log_prob = sim - log_denominator  # [N, N]
    positive = (y[:, None] == y[None, :]) & ~self_mask  # [N, N]
    n_positive = positive.sum(dim=1)  # [N]
    mean_log_prob = torch.where(positive, log_prob, 0.0).sum(dim=1) / n_positive.clamp(min=1)  # [N]
    return torch.where(is_anchor & (n_positive > 0), -mean_log_prob, 0.0)


def relation_distillation(z_now: torch.Tensor, z_past: torch.Tensor, t_now: float, t_past: float) -> torch.Tensor:
    """Instance-wise relation distillation: mean over rows i of H(p_past(i), p_now(i)) ([]).

    z_now, z_past: [N, d] normalised embeddings of the same N samples by the current and the past
    model. p(i) is the softmax over j != i of z_i.z_j / t (self excluded), at t_now and t_past.
    """
    self_mask = torch.eye(len(z_now), dtype=torch.bool, device=z_now.device)  # [N, N]
    log_p_now = (z_now @ z_now.T / t_now).masked_fill(self_mask, float("-inf")).log_softmax(dim=1)  # [N, N]
    p_past = (z_past @ z_past.T / t_past).masked_fill(self_mask, float("-inf")).softmax(dim=1)  # [N, N]
    # The diagonal is 0 * -inf: zero the log first so it stays 0 (and its gradient too).
    return -(p_past * log_p_now.masked_fill(self_mask, 0.0)).sum(dim=1).mean()


def neighbour_scores(z: torch.Tensor, labels: torch.Tensor, b: int, n: int, n_classes: int) -> torch.Tensor:
    """What the representation predicts for the B stream examples ([B, n_classes]): per class, the
    highest similarity of the example's first view to any other view in the step of that class, its
    own second view excluded (-inf for classes absent from the step). Its argmax is a leave-one-out
    nearest-neighbour prediction that learns during the task: what counts an example as learned or
    forgotten (SparCL's DDR). The linear head cannot: it is trained only at task ends, so during a task
    it has never seen the task's classes.

    z: [2N, d] normalised embeddings (view 1 of N examples, then view 2); labels: [2N]."""
    sim = z[:b] @ z.T  # [B, 2N]
    own = torch.arange(b, device=z.device)
    sim[own, own] = float("-inf")  # the example itself
    sim[own, own + n] = float("-inf")  # and its other view
    scores = torch.full((b, n_classes), float("-inf"), device=z.device, dtype=sim.dtype)
    return scores.scatter_reduce(1, labels[None].expand(b, -1), sim, reduce="amax")


def embed(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features ([N, D]) and normalised projections ([N, 128]) of `x`."""
    features = model.features(x)  # [N, D]
    return features, F.normalize(model.projector(features), dim=1)  # [N, 128]


class CO2L(Replay):
    """CO2L: asymmetric SupCon + relation distillation on stream + replay, linear probe at task ends.

    Departures from the paper: the buffer is the reservoir buffer of the other replay learners (the
    paper samples a class-balanced buffer at each task end); views are the light on-device
    augmentations of `two_views`, not the paper's crop/colour pipeline; the probe trains on frozen
    features of un-augmented inputs, computed once. The official code also scales the contrastive
    term by T / 0.07, averages it over all 2(B + M) rows (non-anchors as zeros) and runs the past
    model in train mode; here the mean is over anchors, unscaled, and the past model is in eval
    mode (running batch-norm statistics). Cost per step: one forward/backward of the
    backbone on 2 (B + M) views, plus, after the first task, one no-grad forward of the past model.
    """

    scores_with_replay = True  # replayed examples are the anchors' positives and negatives
    trains_at_task_end = True  # the linear probe
    Config = CO2LConfig

    def __init__(self, cfg, n_classes, seed, augment=None):
        super().__init__(cfg, n_classes, seed, augment)
        self.model = None  # the live model (set by attach), rebuilt into `past` on load
        self.past = None  # frozen copy at the start of the current task (none in the first)

    def attach(self, model):
        d = model.head.in_features
        device = next(model.parameters()).device
        model.projector = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, PROJECTION_DIM)).to(device)
        if self.meter is not None:
            self.meter.watch(model.projector, (d,))  # the backbone's forward does not run it
        self.model = model

    def begin_task(self, task, model):
        super().begin_task(task, model)
        if task.index > 0:
            self.past = frozen_copy(model)

    def prepare(self, batch):
        """Draw the replay minibatch and both augmented views of every example, once per step: every
        forward of a two-pass step (pass 1, IDS scoring, pass 2) sees the same views. `batch.x` and
        `replay["x"]` become [N, 2, C, H, W], so a support subset keeps each example's two views."""
        if self.replaying():
            batch.replay = self.draw()
            batch.replay["x"] = torch.stack(two_views(batch.replay["x"]), dim=1)  # [M, 2, C, H, W]
        batch.x = torch.stack(two_views(batch.x), dim=1)  # [B, 2, C, H, W]
        return batch

    def loss(self, model, batch):
        return self._loss(model, batch, distill=True)

    def per_sample_loss(self, model, batch):
        return self._loss(model, batch, distill=False).per_sample  # no past-model forward

    def _loss(self, model, batch, distill: bool) -> Loss:
        b = len(batch.y)
        x, y = batch.x, batch.y  # x: [B, 2, C, H, W] views
        if batch.replay:
            x, y = torch.cat([x, batch.replay["x"]]), torch.cat([y, batch.replay["y"]])  # [N = B + M, 2, ...]
        n = len(y)
        views = x.transpose(0, 1).flatten(0, 1)  # [2N, C, H, W]: view 1, then view 2
        features, z = embed(model, views)  # [2N, D], [2N, 128]
        labels = y.repeat(2)  # [2N]
        is_anchor = torch.zeros(2 * n, dtype=torch.bool, device=y.device)
        is_anchor[:b] = True
        is_anchor[n : n + b] = True  # stream part of both views
        per_view = asymmetric_supcon(z, labels, is_anchor, self.opts.co2l_temperature)  # [2N]
        # Every anchor has a positive (its other view), so the anchor count is 2B: no device count needed.
        total = per_view.sum() / (2 * b)
        if distill and self.past is not None:
            with torch.no_grad():
                _, z_past = embed(self.past, views)  # [2N, 128]
            total = total + self.opts.co2l_distill * relation_distillation(
                z, z_past, self.opts.co2l_current_temperature, self.opts.co2l_past_temperature
            )
        per_sample = (per_view[:b] + per_view[n : n + b]) / 2  # [B]
        with torch.no_grad():
            logits = neighbour_scores(z.detach(), labels, b, n, self.n_classes)  # [B, n_classes]
        return Loss(total, per_sample, logits)

    def end_task(self, task, model):
        """Retrain `model.head` as a linear probe on frozen features; backbone and projector are untouched.

        Probe data as in the official code: the current task's training set plus the buffer's
        examples of earlier tasks (the current task's buffered examples are already in the former),
        with a class-balanced cross-entropy (the official code samples classes evenly)."""
        was_training = model.training
        model.eval()
        x, y = task.x_train, task.y_train
        if len(self.buffer):
            stored = self.buffer.contents()
            # Boolean indexing syncs with the host: acceptable once per task.
            past = ~torch.isin(stored["y"], torch.as_tensor(task.classes, device=y.device))  # [buffer]
            x, y = torch.cat([stored["x"][past], x]), torch.cat([stored["y"][past], y])
        with torch.no_grad(), self.phase("linear_probe"):
            features = torch.cat([model.features(chunk) for chunk in x.split(512)])  # [N, D]
        fit_linear_probe(model.head, features, y, self.n_classes, self.opts.co2l_probe_epochs)
        if self.meter is not None:  # the head's forward and backward (3 x 2 x MACs), every epoch over the probe data
            macs = model.head.in_features * model.head.out_features
            self.meter.add("linear_probe.head", 3 * 2 * macs * self.opts.co2l_probe_epochs * len(y))
        model.train(was_training)

    def state_dict(self):
        return dict(super().state_dict(), past=self.past.state_dict() if self.past is not None else None)

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.past = None
        if state["past"] is not None:
            self.past = frozen_copy(self.model)
            self.past.load_state_dict(state["past"])

    def memory_bytes(self):
        past = sum(p.numel() * p.element_size() for p in self.past.parameters()) if self.past is not None else 0
        return self.buffer.nbytes() + past


def fit_linear_probe(head: nn.Linear, features: torch.Tensor, y: torch.Tensor, n_classes: int, epochs: int) -> None:
    """Re-initialise `head` and train it on `features` ([N, D]) and labels `y` ([N]): SGD with momentum,
    class-balanced cross-entropy (weights 1 / class count), shuffled minibatches. Leaves no gradients."""
    head.reset_parameters()
    counts = torch.zeros(n_classes, device=y.device).index_add_(0, y, torch.ones_like(y, dtype=torch.float))
    weight = 1 / counts.clamp(min=1)  # [n_classes]
    optimizer = torch.optim.SGD(head.parameters(), lr=PROBE_LR, momentum=PROBE_MOMENTUM)
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in torch.randperm(len(y), device=y.device).split(PROBE_BATCH):
                loss = F.cross_entropy(head(features[idx]), y[idx], weight=weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    head.zero_grad(set_to_none=True)
