"""Base learners: what the loss is and what a learner remembers between steps.

Methods are compositions of a base learner, a sparsifier and a data selector (`method.py`). A base
learner only says what the loss is (`Learner.loss`), what to remember between steps (buffer, Fisher,
a past model) and, if anything, how to change the gradient before the update (`adjust_gradient`).
How the loss becomes a weight update (plain SGD, SAM, sharpness-aware pruning) is the step's business
(steps.py), so every step mechanic wraps every learner unchanged.
"""

import contextlib
import copy
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, vmap

from .knobs import Section, knob


@dataclass(frozen=True)
class ReplayConfig(Section):
    """Replay learners (ER, DER++, A-GEM, CO2L): the reservoir buffer and its draw."""

    buffer_size: int | None = knob(None, "replay buffer size (reservoir)", interval="[1, inf)")
    minibatch_size: int | None = knob(None, "replay minibatch size", interval="[1, inf)")
    replay_first_task: bool = knob(
        True,
        "replay learners draw from the buffer during the first task too (Mammoth's "
        "ER; off: from the second task on, as the official SparCL code)",
    )


@dataclass(frozen=True)
class DERppConfig(Section):
    """DER++ (Buzzega et al. 2020)."""

    derpp_alpha: float | None = knob(
        None, "DER++: weight of the MSE to the stored logits", interval="[0, inf)", tuned=0.1
    )
    derpp_beta: float | None = knob(None, "DER++: weight of the replay cross-entropy", interval="[0, inf)", tuned=0.5)


@dataclass(frozen=True)
class LwFConfig(Section):
    """LwF (Li & Hoiem 2017)."""

    lwf_alpha: float | None = knob(
        None,
        "LwF: weight of the distillation to the last task end's model (Li & Hoiem's 1)",
        interval="[0, inf)",
        tuned=1.0,
    )
    lwf_temperature: float = knob(2.0, "LwF: distillation temperature (Li & Hoiem's 2)", interval="(0, inf)")
    lwf_warmup_epochs: int | None = knob(
        None,
        "LwF: epochs at the start of every task after the first that train only the new classes' outputs "
        "(Li & Hoiem's warm-up; 0: none)",
        interval="[0, inf)",
        tuned=0,
    )


@dataclass(frozen=True)
class EWCConfig(Section):
    """Online EWC (Schwarz et al. 2018)."""

    ewc_lambda: float | None = knob(None, "online EWC penalty weight", interval="[0, inf)", tuned=100.0)
    ewc_gamma: float = knob(1.0, "online EWC decay of the old Fisher", interval="[0, 1]")
    ewc_cap: bool = knob(
        True,
        "online EWC: cap each penalty weight lambda * F at 1 / (2 lr), where one SGD step "
        "on the penalty lands on the anchor (larger weights overshoot and, past 1 / lr, diverge)",
    )
    ewc_step: str = knob(
        "gradient",
        "online EWC: the penalty's 'gradient' in the loss (capped by ewc_cap), or its exact 'proximal' step "
        "after each SGD update, stable for every weight without a cap (dense update rules only)",
        choices=lambda: ["gradient", "proximal"],
    )


@dataclass
class Batch:
    """What one step trains on. `replay` is drawn once per step, so a two-pass step sees the same."""

    x: torch.Tensor  # [B, C, H, W] stream inputs, augmented
    y: torch.Tensor  # [B] global class ids
    idx: torch.Tensor  # [B] positions in the task's training set
    x_raw: torch.Tensor  # [B, C, H, W] stream inputs before augmentation (what a buffer stores)
    replay: dict = field(default_factory=dict)

    def subset(self, keep: torch.Tensor) -> "Batch":
        """The stream examples at positions `keep` ([K]); the replay draw is kept whole."""
        return replace(self, x=self.x[keep], y=self.y[keep], idx=self.idx[keep], x_raw=self.x_raw[keep])


@dataclass
class Loss:
    """A learner's loss on one batch."""

    total: torch.Tensor  # [] what the step back-propagates
    per_sample: torch.Tensor  # [B] loss of each stream example (before any reduction)
    logits: torch.Tensor  # [B, n_classes] stream logits


class ReservoirBuffer:
    """A uniform sample of every example seen so far (Vitter's algorithm R), kept on the device.

    Slots are drawn on the device from the buffer's own generator and the count of seen examples
    is host-side, so adding a batch costs no host sync and no upload. Within one batch, when two
    examples draw the same slot the later one wins (as one-by-one insertion would); losers and
    rejected examples are written to a scratch row past the end, so every write is branch-free.
    """

    def __init__(self, capacity: int, seed: int):
        self.capacity = capacity
        self.seed = seed
        self.generator: torch.Generator | None = None  # created on the first batch's device
        self.n_seen = 0
        self.data: dict[str, torch.Tensor] = {}  # name -> [capacity + 1 (scratch), ...]

    def __len__(self) -> int:
        return min(self.n_seen, self.capacity)

    def slots(self, n: int, device) -> torch.Tensor:
        """Slot of each of the next `n` stream examples; `capacity` (the scratch row) where not kept."""
        if self.generator is None:
            self.generator = torch.Generator(device).manual_seed(self.seed)
        seen = self.n_seen + torch.arange(n, device=device)  # [n]
        drawn = (
            torch.rand(n, generator=self.generator, device=device, dtype=torch.float64) * (seen + 1)
        ).long()  # uniform in [0, i]
        slot = torch.where(seen < self.capacity, seen, drawn)
        taken_later = (slot[:, None] == slot[None, :]).triu(diagonal=1).any(dim=1)  # [n]
        self.n_seen += n
        return torch.where((slot < self.capacity) & ~taken_later, slot, self.capacity)

    def add(self, **items: torch.Tensor) -> None:
        """Offer a batch of examples (equal-length tensors, e.g. x=, y=, logits=)."""
        first = next(iter(items.values()))
        slot = self.slots(len(first), first.device)
        for name, value in items.items():
            if name not in self.data:
                self.data[name] = torch.zeros(
                    (self.capacity + 1, *value.shape[1:]), dtype=value.dtype, device=value.device
                )
            self.data[name][slot] = value.detach()

    def sample(self, size: int) -> dict[str, torch.Tensor]:
        """`size` distinct stored examples (fewer while the buffer holds fewer), uniformly."""
        filled = len(self)
        pick = torch.randperm(filled, device=self.data["y"].device)[: min(size, filled)]
        return {name: value[pick] for name, value in self.data.items()}

    def contents(self) -> dict[str, torch.Tensor]:
        """Every stored example (the scratch row excluded)."""
        return {name: value[: len(self)] for name, value in self.data.items()}

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.data.values())

    def state_dict(self) -> dict:
        return dict(
            n_seen=self.n_seen,
            data=dict(self.data),
            generator=self.generator.get_state() if self.generator is not None else None,
        )

    def load_state_dict(self, state: dict) -> None:
        self.n_seen = state["n_seen"]
        self.data = dict(state["data"])
        if state["generator"] is not None:
            device = next(iter(self.data.values())).device
            self.generator = torch.Generator(device)
            self.generator.set_state(state["generator"].cpu())


class Learner:
    """Fine-tuning: cross-entropy on the current batch only (the lower bound)."""

    cumulative = False  # True: each task trains on every task's data seen so far
    scores_with_replay = False  # IDS scoring forwards the stream only, unless a stream loss depends on replay
    trains_at_task_end = False  # True: end_task changes the model (CO2L's probe), so evaluate after it
    Config: type[Section] | None = None  # the learner's own knobs, read as `self.opts`

    def __init__(self, cfg, n_classes: int, seed: int, augment=None):
        self.opts = self.Config.of(cfg) if self.Config else None
        self.n_classes = n_classes
        self.augment = augment or (lambda x: x)
        self.meter = None  # flops.FlopMeter, for work a learner does outside the step

    def attach(self, model) -> None:
        """Add what the learner trains besides the backbone (a projection head) to `model`, so the
        step updates it and checkpoints carry it. Called once, before the step is built."""

    def phase(self, name: str, dense_weight_grad: bool = False):
        """Count forwards made inside this block (and their backwards) as training FLOPs of component `name`."""
        return self.meter.phase(name, dense_weight_grad) if self.meter is not None else contextlib.nullcontext()

    def begin_task(self, task, model) -> None:
        pass

    def begin_epoch(self, epoch: int) -> None:
        """Called before each epoch of a task (epochs count from 0 in every task)."""

    def prepare(self, batch: Batch) -> Batch:
        """Draw whatever the step needs besides the stream batch (replay), once per step."""
        return batch

    def loss(self, model, batch: Batch) -> Loss:
        logits = model(batch.x)
        per_sample = F.cross_entropy(logits, batch.y, reduction="none")
        return Loss(per_sample.mean(), per_sample, logits)

    def per_sample_loss(self, model, batch: Batch) -> torch.Tensor:
        """The loss of each stream example ([B]), all that the IDS score and batch-norm recalibration read:
        `loss(...).per_sample` without the forwards only the total needs (a teacher's)."""
        return self.loss(model, batch).per_sample

    def adjust_gradient(self, model, batch: Batch, applied=lambda name, grad: grad) -> None:
        """Between the step's last backward and the update: change the parameters' `.grad` in place
        (A-GEM's projection). With SAM, the gradient is the second pass's, the weights back at w.
        `.grad` is already what the sparsifier applies; `applied(name, grad)` reduces another gradient
        of parameter `name` the same way (`prune.SGD.applied`)."""

    def after_update(self, model) -> None:
        """Right after the update rule changed the weights (EWC's proximal step)."""

    def observe(self, batch: Batch, loss: Loss) -> None:
        """After the update: remember what the learner keeps (buffer)."""

    def end_task(self, task, model) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def memory_bytes(self) -> int:
        return 0


class Joint(Learner):
    """Upper bound: every task trains on the union of all data seen so far."""

    cumulative = True


class Replay(Learner):
    """Shared by replay learners: a reservoir buffer of raw stream inputs and labels."""

    Config = ReplayConfig  # a subclass's own Config replaces it as `self.opts`; `replay_opts` stays

    def __init__(self, cfg, n_classes, seed, augment=None):
        super().__init__(cfg, n_classes, seed, augment)
        self.replay_opts = ReplayConfig.of(cfg)
        self.buffer = ReservoirBuffer(self.replay_opts.buffer_size, seed + 1)
        self.task_index = 0

    def begin_task(self, task, model) -> None:
        self.task_index = task.index

    def replaying(self) -> bool:
        """Whether this step draws from the buffer: once it holds anything, from the first task on
        (Mammoth's ER), or from the second (`replay_first_task=false`, the official SparCL code)."""
        return len(self.buffer) > 0 and (self.replay_opts.replay_first_task or self.task_index > 0)

    def draw(self) -> dict:
        replay = self.buffer.sample(self.replay_opts.minibatch_size)
        replay["x"] = self.augment(replay["x"])
        return replay

    def observe(self, batch, loss):
        self.buffer.add(x=batch.x_raw, y=batch.y)

    def state_dict(self):
        return dict(buffer=self.buffer.state_dict(), task_index=self.task_index)

    def load_state_dict(self, state):
        self.buffer.load_state_dict(state["buffer"])
        self.task_index = state.get("task_index", 0)  # checkpoints written before the switch: 0 is harmless

    def memory_bytes(self):
        return self.buffer.nbytes()


class ER(Replay):
    """Experience replay (Mammoth's ER): one cross-entropy over stream + replay minibatch."""

    def prepare(self, batch):
        if self.replaying():
            batch.replay = self.draw()
        return batch

    def loss(self, model, batch):
        if not batch.replay:
            return super().loss(model, batch)
        b = len(batch.y)
        logits = model(torch.cat([batch.x, batch.replay["x"]]))  # [B + M, n_classes]
        per_example = F.cross_entropy(logits, torch.cat([batch.y, batch.replay["y"]]), reduction="none")
        return Loss(per_example.mean(), per_example[:b], logits[:b])


class DERpp(Replay):
    """DER++ (Buzzega et al. 2020): CE + derpp_alpha * MSE to stored logits + derpp_beta * CE on replay.

    Two independent replay draws, as in Mammoth. One forward over stream + both draws (Mammoth
    runs three; batch-norm then normalises over the joint batch, as in Mammoth's ER).
    """

    Config = DERppConfig

    def prepare(self, batch):
        if self.replaying():
            batch.replay = {"distill": self.draw(), "ce": self.draw()}
        return batch

    def loss(self, model, batch):
        if not batch.replay:
            return super().loss(model, batch)
        distill, ce = batch.replay["distill"], batch.replay["ce"]
        b, m1 = len(batch.y), len(distill["y"])
        logits = model(torch.cat([batch.x, distill["x"], ce["x"]]))  # [B + M1 + M2, n_classes]
        stream, old, replay = logits[:b], logits[b : b + m1], logits[b + m1 :]
        per_sample = F.cross_entropy(stream, batch.y, reduction="none")
        total = (
            per_sample.mean()
            + self.opts.derpp_alpha * F.mse_loss(old, distill["logits"])
            + self.opts.derpp_beta * F.cross_entropy(replay, ce["y"])
        )
        return Loss(total, per_sample, stream)

    def observe(self, batch, loss):
        # Logits of the step's first forward, at the pre-update weights (as Mammoth stores them).
        self.buffer.add(
            x=batch.x_raw, y=batch.y, logits=loss.logits.detach().float()
        )  # float32 under bf16 autocast too


class AGEM(Replay):
    """A-GEM (Chaudhry et al. ICLR 2019) on a reservoir buffer (Mammoth's agem_r): the stream loss is
    cross-entropy, and the update's gradient g is projected so that, to first order, it does not raise
    the loss on a replay draw: with g_ref that draw's gradient at the same weights,
    g <- g - min(0, g . g_ref) / (g_ref . g_ref) g_ref (`agem_project`). The buffer fills as ER's."""

    def prepare(self, batch):
        if self.replaying():
            batch.replay = {"reference": self.draw()}
        return batch

    def adjust_gradient(self, model, batch, applied=lambda name, grad: grad):
        if not batch.replay:
            return
        named = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
        reference = batch.replay["reference"]
        # One more forward and backward per step; autograd computes every weight gradient, pruned ones too.
        with self.phase("reference", dense_weight_grad=True):
            g_ref = torch.autograd.grad(F.cross_entropy(model(reference["x"]), reference["y"]), [p for _, p in named])
        # Projected against the part of g_ref the update applies (SparCL's masks), the applied update g~
        # keeps g~ . g_ref >= 0: g~ lies where the masks are open, so g~ . g_ref = g~ . masked g_ref.
        agem_project([p.grad for _, p in named], [applied(n, r) for (n, _), r in zip(named, g_ref)])


def agem_project(grads: list[torch.Tensor], reference: list[torch.Tensor]) -> None:
    """In place: g <- g - min(0, g . r) / (r . r) r over the concatenation of the tensors (no host sync)."""
    dot = sum((g * r).sum() for g, r in zip(grads, reference))
    norm2 = sum((r * r).sum() for r in reference)
    torch._foreach_add_(grads, torch._foreach_mul(reference, -dot.clamp(max=0) / norm2.clamp(min=1e-30)))


class LwF(Learner):
    """Learning without Forgetting (Li & Hoiem, TPAMI 2017) in class-incremental form: cross-entropy on
    the stream plus `lwf_alpha` * KL(softmax(z_old / T) || softmax(z / T)), T = `lwf_temperature`, over
    the classes of earlier tasks, z_old the logits of the model as it was at the last task end (a
    frozen copy: one more copy of the model in memory, one more forward per loss). As Li & Hoiem weigh
    it (lambda_o = 1, no T^2 factor: Hinton et al.'s T^2 would make it 4x stronger at T = 2); the KL
    differs from their cross-entropy by the teacher's entropy, a constant."""

    Config = LwFConfig

    def __init__(self, cfg, n_classes, seed, augment=None):
        super().__init__(cfg, n_classes, seed, augment)
        self.model = None  # the live model (set by attach), copied into `teacher` on load
        self.teacher = None  # frozen copy at the last task end (none in the first task)
        self.seen: torch.Tensor | None = None  # [K] class ids of the earlier tasks, on the model's device
        self.new: torch.Tensor | None = None  # [n_classes] bool: the current task's classes
        self.warming = False  # this epoch trains only the new classes' outputs

    def attach(self, model):
        self.model = model

    def begin_task(self, task, model):
        device = next(model.parameters()).device
        self.new = torch.zeros(self.n_classes, dtype=torch.bool, device=device)
        self.new[list(task.classes)] = True

    def begin_epoch(self, epoch):
        self.warming = self.teacher is not None and epoch < self.opts.lwf_warmup_epochs

    def adjust_gradient(self, model, batch, applied=lambda name, grad: grad):
        """Warm-up (Li & Hoiem): every gradient but the head's rows of the new classes to zero, so the
        update moves only those outputs (batch-norm running statistics still follow the batches)."""
        if not self.warming:
            return
        for p in model.parameters():
            if p.grad is not None:
                if p is model.head.weight:
                    p.grad.mul_(self.new[:, None])
                elif p is model.head.bias:
                    p.grad.mul_(self.new)
                else:
                    p.grad.zero_()

    def loss(self, model, batch):
        loss = super().loss(model, batch)
        if self.teacher is not None:
            with torch.no_grad(), self.phase("teacher"):
                old = self.teacher(batch.x)[:, self.seen]  # [B, K]
            t = self.opts.lwf_temperature
            distill = F.kl_div(
                F.log_softmax(loss.logits[:, self.seen] / t, dim=1),
                F.log_softmax(old.float() / t, dim=1),
                log_target=True,
                reduction="batchmean",
            )
            loss.total = loss.total + self.opts.lwf_alpha * distill
        return loss

    def per_sample_loss(self, model, batch):
        return super().loss(model, batch).per_sample  # the distillation term is batch-level: no teacher forward

    def end_task(self, task, model):
        self.teacher = frozen_copy(model)
        earlier = [] if self.seen is None else self.seen.tolist()  # host sync: task end only
        self.seen = torch.tensor(sorted(set(earlier) | set(task.classes)), device=next(model.parameters()).device)

    def state_dict(self):
        if self.teacher is None:
            return dict(teacher=None, seen=None)
        return dict(teacher=self.teacher.state_dict(), seen=self.seen.tolist())

    def load_state_dict(self, state):
        self.teacher = self.seen = None
        if state["teacher"] is not None:
            self.teacher = frozen_copy(self.model)
            self.teacher.load_state_dict(state["teacher"])
            self.seen = torch.tensor(state["seen"], device=next(self.model.parameters()).device)

    def memory_bytes(self):
        if self.teacher is None:
            return 0
        return sum(t.numel() * t.element_size() for t in self.teacher.state_dict().values())


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy in eval mode with no gradients (one more copy of the parameters in memory).
    The FLOP meter's hook comes along, so its forwards are counted where they run."""
    past = copy.deepcopy(model).eval()
    for p in past.parameters():
        p.requires_grad_(False)
        p.grad = None
    return past


class EWC(Learner):
    """Online EWC (Schwarz et al. 2018; Mammoth's ewc_on, plus the cap below): CE + sum_i k_i (w_i - w*_i)^2,
    k = lambda F.

    The Fisher diagonal is p(y|x)-weighted squared per-example gradients of log p(y|x) over the
    task's training set, computed with torch.func (vmap of grad) in eval mode: batch-norm uses
    its running statistics (Mammoth runs single examples through train-mode batch-norm).

    `ewc_cap` (default on) caps each weight k_i at 1 / (2 lr): there one SGD step on the penalty
    lands exactly on the anchor. Past it an explicit step overshoots, and past 1 / lr it diverges:
    the Fisher accumulates over tasks, so without the cap every lambda large enough to protect a
    task eventually turns the loss into NaN (measured: docs/method.md, "EWC").

    `ewc_step=proximal` leaves the penalty out of the loss and, after each SGD update, takes its exact
    proximal step w <- (w + 2 lr k w*) / (1 + 2 lr k): stable for every k, so uncapped, and it keeps
    the penalty's ordering of weights. Only where the update is SGD on the weights (the dense rule):
    dual averaging recomputes the weights from its accumulator, and SparCL's masks would be undone.
    """

    Config = EWCConfig

    def __init__(self, cfg, n_classes, seed, augment=None):
        super().__init__(cfg, n_classes, seed, augment)
        self.lr = cfg.lr  # the cap's SGD stability limit
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.stiffness: dict[str, torch.Tensor] = {}  # k = lambda F (capped): what the penalty uses

    def loss(self, model, batch):
        loss = super().loss(model, batch)
        if self.stiffness and self.opts.ewc_step == "gradient":
            penalty = sum((self.stiffness[n] * (p - self.anchor[n]) ** 2).sum() for n, p in model.named_parameters())
            loss.total = loss.total + penalty
        return loss

    def end_task(self, task, model):
        fisher = fisher_diagonal(model, task.x_train, task.y_train)
        if self.meter is not None:  # per-example gradients under vmap: counted here, not by the hook
            self.meter.count("fisher", len(task.y_train), backward=True)
        for name, value in fisher.items():
            self.fisher[name] = self.opts.ewc_gamma * self.fisher[name] + value if name in self.fisher else value
        self.anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.stiffness = self.penalty_weights()

    @torch.no_grad()
    def after_update(self, model) -> None:
        if self.stiffness and self.opts.ewc_step == "proximal":
            for n, p in model.named_parameters():
                step = 2 * self.lr * self.stiffness[n]  # [same shape as p]
                p.add_(step * self.anchor[n]).div_(1 + step)

    def penalty_weights(self) -> dict[str, torch.Tensor]:
        capped = self.opts.ewc_cap and self.opts.ewc_step == "gradient"  # the proximal step needs no cap
        cap = 1 / (2 * self.lr) if capped else float("inf")
        return {n: (self.opts.ewc_lambda * f).clamp(max=cap) for n, f in self.fisher.items()}

    def state_dict(self):
        return dict(fisher=self.fisher, anchor=self.anchor)

    def load_state_dict(self, state):
        self.fisher, self.anchor = dict(state["fisher"]), dict(state["anchor"])
        self.stiffness = self.penalty_weights()

    def memory_bytes(self):
        # Fisher + anchor: two dense copies of the parameters.
        return sum(v.numel() * v.element_size() for d in (self.fisher, self.anchor) for v in d.values())


def fisher_diagonal(model, x: torch.Tensor, y: torch.Tensor, budget_bytes: int = 2**29) -> dict:
    """Mean over examples of p(y|x) * (d log p(y|x) / dw)^2, per parameter."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}

    def log_prob(p, xi, yi):
        logits = functional_call(model, (p, buffers), (xi[None],))
        return F.log_softmax(logits, dim=1)[0].gather(0, yi[None])[0]  # gather: vmap-safe indexing

    per_example = vmap(grad_and_value(log_prob), in_dims=(None, 0, 0))
    n_params = sum(p.numel() for p in params.values())
    chunk = max(1, budget_bytes // (4 * n_params))  # per-example grads: chunk x n_params floats
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()
    for xc, yc in zip(x.split(chunk), y.split(chunk)):
        grads, log_p = per_example(params, xc, yc)
        weight = log_p.exp()  # [chunk] p(y|x)
        for n, g in grads.items():
            fisher[n] += torch.einsum("b,b...->...", weight, g**2)
    model.train(was_training)
    return {n: f / len(x) for n, f in fisher.items()}
