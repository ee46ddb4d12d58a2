"""Methods as compositions: base learner (loss terms) x sparsifier x data selector.

A base learner only says what the loss is (`Learner.loss`) and what to remember between steps
(buffer, Fisher). How the loss becomes a weight update (plain SGD, SAM, sharpness-aware pruning)
is the step's business (steps.py), so every step mechanic wraps every learner unchanged.
"""
import contextlib
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, vmap

from .config import UserError


@dataclass
class Batch:
    """What one step trains on. `replay` is drawn once per step, so a two-pass step sees the same."""
    x: torch.Tensor                  # [B, C, H, W] stream inputs, augmented
    y: torch.Tensor                  # [B] global class ids
    idx: torch.Tensor                # [B] positions in the task's training set
    x_raw: torch.Tensor              # [B, C, H, W] stream inputs before augmentation (what a buffer stores)
    replay: dict = field(default_factory=dict)

    def subset(self, keep: torch.Tensor) -> "Batch":
        """The stream examples at positions `keep` ([K]); the replay draw is kept whole."""
        return replace(self, x=self.x[keep], y=self.y[keep], idx=self.idx[keep], x_raw=self.x_raw[keep])


@dataclass
class Loss:
    """A learner's loss on one batch."""
    total: torch.Tensor              # [] what the step back-propagates
    per_sample: torch.Tensor         # [B] loss of each stream example (before any reduction)
    logits: torch.Tensor             # [B, n_classes] stream logits


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
        self.generator: torch.Generator | None = None    # created on the first batch's device
        self.n_seen = 0
        self.data: dict[str, torch.Tensor] = {}           # name -> [capacity + 1 (scratch), ...]

    def __len__(self) -> int:
        return min(self.n_seen, self.capacity)

    def slots(self, n: int, device) -> torch.Tensor:
        """Slot of each of the next `n` stream examples; `capacity` (the scratch row) where not kept."""
        if self.generator is None:
            self.generator = torch.Generator(device).manual_seed(self.seed)
        seen = self.n_seen + torch.arange(n, device=device)                                    # [n]
        drawn = (torch.rand(n, generator=self.generator, device=device, dtype=torch.float64)
                 * (seen + 1)).long()                                                          # uniform in [0, i]
        slot = torch.where(seen < self.capacity, seen, drawn)
        taken_later = (slot[:, None] == slot[None, :]).triu(diagonal=1).any(dim=1)             # [n]
        self.n_seen += n
        return torch.where((slot < self.capacity) & ~taken_later, slot, self.capacity)

    def add(self, **items: torch.Tensor) -> None:
        """Offer a batch of examples (equal-length tensors, e.g. x=, y=, logits=)."""
        first = next(iter(items.values()))
        slot = self.slots(len(first), first.device)
        for name, value in items.items():
            if name not in self.data:
                self.data[name] = torch.zeros((self.capacity + 1, *value.shape[1:]), dtype=value.dtype,
                                              device=value.device)
            self.data[name][slot] = value.detach()

    def sample(self, size: int) -> dict[str, torch.Tensor]:
        """`size` distinct stored examples (fewer while the buffer holds fewer), uniformly."""
        filled = len(self)
        pick = torch.randperm(filled, device=self.data["y"].device)[:min(size, filled)]
        return {name: value[pick] for name, value in self.data.items()}

    def contents(self) -> dict[str, torch.Tensor]:
        """Every stored example (the scratch row excluded)."""
        return {name: value[:len(self)] for name, value in self.data.items()}

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.data.values())

    def state_dict(self) -> dict:
        return dict(n_seen=self.n_seen, data=dict(self.data),
                    generator=self.generator.get_state() if self.generator is not None else None)

    def load_state_dict(self, state: dict) -> None:
        self.n_seen = state["n_seen"]
        self.data = dict(state["data"])
        if state["generator"] is not None:
            device = next(iter(self.data.values())).device
            self.generator = torch.Generator(device)
            self.generator.set_state(state["generator"].cpu())


class Learner:
    """Fine-tuning: cross-entropy on the current batch only (the lower bound)."""
    cumulative = False               # True: each task trains on every task's data seen so far
    scores_with_replay = False       # IDS scoring forwards the stream only, unless a stream loss depends on replay
    trains_at_task_end = False       # True: end_task changes the model (CO2L's probe), so evaluate after it

    def __init__(self, cfg, n_classes: int, seed: int, augment=None):
        self.cfg = cfg
        self.n_classes = n_classes
        self.augment = augment or (lambda x: x)
        self.meter = None              # flops.FlopMeter, for work a learner does outside the step

    def attach(self, model) -> None:
        """Add what the learner trains besides the backbone (a projection head) to `model`, so the
        step updates it and checkpoints carry it. Called once, before the step is built."""

    def phase(self, name: str):
        """Count forwards made inside this block as training FLOPs of component `name`."""
        return self.meter.phase(name) if self.meter is not None else contextlib.nullcontext()

    def begin_task(self, task, model) -> None:
        pass

    def prepare(self, batch: Batch) -> Batch:
        """Draw whatever the step needs besides the stream batch (replay), once per step."""
        return batch

    def loss(self, model, batch: Batch) -> Loss:
        logits = model(batch.x)
        per_sample = F.cross_entropy(logits, batch.y, reduction="none")
        return Loss(per_sample.mean(), per_sample, logits)

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

    def __init__(self, cfg, n_classes, seed, augment=None):
        super().__init__(cfg, n_classes, seed, augment)
        self.buffer = ReservoirBuffer(cfg.buffer_size, seed + 1)
        self.task_index = 0

    def begin_task(self, task, model) -> None:
        self.task_index = task.index

    def replaying(self) -> bool:
        """Whether this step draws from the buffer: once it holds anything, from the first task on
        (Mammoth's ER), or from the second (`replay_first_task=false`, the official SparCL code)."""
        return len(self.buffer) > 0 and (self.cfg.replay_first_task or self.task_index > 0)

    def draw(self) -> dict:
        replay = self.buffer.sample(self.cfg.minibatch_size)
        replay["x"] = self.augment(replay["x"])
        return replay

    def observe(self, batch, loss):
        self.buffer.add(x=batch.x_raw, y=batch.y)

    def state_dict(self):
        return dict(buffer=self.buffer.state_dict(), task_index=self.task_index)

    def load_state_dict(self, state):
        self.buffer.load_state_dict(state["buffer"])
        self.task_index = state.get("task_index", 0)       # checkpoints written before the switch: 0 is harmless

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
        logits = model(torch.cat([batch.x, batch.replay["x"]]))        # [B + M, n_classes]
        per_example = F.cross_entropy(logits, torch.cat([batch.y, batch.replay["y"]]), reduction="none")
        return Loss(per_example.mean(), per_example[:b], logits[:b])


class DERpp(Replay):
    """DER++ (Buzzega et al. 2020): CE + alpha * MSE to stored logits + beta * CE on replay.

    Two independent replay draws, as in Mammoth. One forward over stream + both draws (Mammoth
    runs three; batch-norm then normalises over the joint batch, as in Mammoth's ER).
    """

    def prepare(self, batch):
        if self.replaying():
            batch.replay = {"distill": self.draw(), "ce": self.draw()}
        return batch

    def loss(self, model, batch):
        if not batch.replay:
            return super().loss(model, batch)
        distill, ce = batch.replay["distill"], batch.replay["ce"]
        b, m1 = len(batch.y), len(distill["y"])
        logits = model(torch.cat([batch.x, distill["x"], ce["x"]]))      # [B + M1 + M2, n_classes]
        stream, old, replay = logits[:b], logits[b:b + m1], logits[b + m1:]
        per_sample = F.cross_entropy(stream, batch.y, reduction="none")
        total = (per_sample.mean() + self.cfg.alpha * F.mse_loss(old, distill["logits"])
                 + self.cfg.beta * F.cross_entropy(replay, ce["y"]))
        return Loss(total, per_sample, stream)

    def observe(self, batch, loss):
        # Logits of the step's first forward, at the pre-update weights (as Mammoth stores them).
        self.buffer.add(x=batch.x_raw, y=batch.y, logits=loss.logits.detach().float())  # float32 under bf16 autocast too


class EWC(Learner):
    """Online EWC (Schwarz et al. 2018; Mammoth's ewc_on): CE + sum_i k_i (w_i - w*_i)^2, k = lambda F.

    The Fisher diagonal is p(y|x)-weighted squared per-example gradients of log p(y|x) over the
    task's training set, computed with torch.func (vmap of grad) in eval mode: batch-norm uses
    its running statistics (Mammoth runs single examples through train-mode batch-norm).

    `ewc_cap` (default on) caps each weight k_i at 1 / (2 lr): there one SGD step on the penalty
    lands exactly on the anchor. Past it an explicit step overshoots, and past 1 / lr it diverges:
    the Fisher accumulates over tasks, so without the cap every lambda large enough to protect a
    task eventually turns the loss into NaN (measured: docs/method.md, "EWC").
    """

    def __init__(self, cfg, n_classes, seed, augment=None):
        super().__init__(cfg, n_classes, seed, augment)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.stiffness: dict[str, torch.Tensor] = {}   # k = lambda F (capped): what the penalty uses

    def loss(self, model, batch):
        loss = super().loss(model, batch)
        if self.stiffness:
            penalty = sum((self.stiffness[n] * (p - self.anchor[n]) ** 2).sum() for n, p in model.named_parameters())
            loss.total = loss.total + penalty
        return loss

    def end_task(self, task, model):
        fisher = fisher_diagonal(model, task.x_train, task.y_train)
        for name, value in fisher.items():
            self.fisher[name] = self.cfg.ewc_gamma * self.fisher[name] + value if name in self.fisher else value
        self.anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.stiffness = self.penalty_weights()

    def penalty_weights(self) -> dict[str, torch.Tensor]:
        cap = 1 / (2 * self.cfg.lr) if self.cfg.ewc_cap else float("inf")
        return {n: (self.cfg.ewc_lambda * f).clamp(max=cap) for n, f in self.fisher.items()}

    def state_dict(self):
        return dict(fisher=self.fisher, anchor=self.anchor)

    def load_state_dict(self, state):
        self.fisher, self.anchor = dict(state["fisher"]), dict(state["anchor"])
        self.stiffness = self.penalty_weights()

    def memory_bytes(self):
        # Fisher + anchor: two dense copies of the parameters.
        return sum(v.numel() * v.element_size() for d in (self.fisher, self.anchor) for v in d.values())


def fisher_diagonal(model, x: torch.Tensor, y: torch.Tensor, budget_bytes: int = 2 ** 29) -> dict:
    """Mean over examples of p(y|x) * (d log p(y|x) / dw)^2, per parameter."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}

    def log_prob(p, xi, yi):
        logits = functional_call(model, (p, buffers), (xi[None],))
        return F.log_softmax(logits, dim=1)[0].gather(0, yi[None])[0]   # gather: vmap-safe indexing

    per_example = vmap(grad_and_value(log_prob), in_dims=(None, 0, 0))
    n_params = sum(p.numel() for p in params.values())
    chunk = max(1, budget_bytes // (4 * n_params))        # per-example grads: chunk x n_params floats
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()
    for xc, yc in zip(x.split(chunk), y.split(chunk)):
        grads, log_p = per_example(params, xc, yc)
        weight = log_p.exp()                               # [chunk] p(y|x)
        for n, g in grads.items():
            fisher[n] += torch.einsum("b,b...->...", weight, g ** 2)
    model.train(was_training)
    return {n: f / len(x) for n, f in fisher.items()}


LEARNERS = {"finetune": Learner, "joint": Joint, "er": ER, "derpp": DERpp, "ewc": EWC}


# Sparsifier axis -> (SAM two-pass step?, update rule of prune.PRUNERS).
SPARSIFIERS = {
    "none": (False, "dense"),
    "sam": (True, "dense"),
    "grda": (False, "dual_averaging"),
    "sdp": (True, "dual_averaging"),
    "sam-gmp": (True, "magnitude"),
    "sparcl": (False, "sparcl"),
}


@dataclass(frozen=True)
class Preset:
    """A row of the comparison table: one choice on each axis, and where it comes from."""
    learner: str
    sparsifier: str
    selector: str
    source: str

    @property
    def sparse(self) -> bool:
        return SPARSIFIERS[self.sparsifier][1] != "dense"


_ESACL = "EsaCL (Ren & Honavar SDM 2024), reconstruction: docs/method.md"
_SPARCL = "SparCL (Wang et al. NeurIPS 2022), official code's settings"
PRESETS: dict[str, Preset] = {
    "sgd": Preset("finetune", "none", "none", "fine-tuning with SGD; lower bound"),
    "joint": Preset("joint", "none", "none", "trains on all data seen so far; upper bound"),
    "er": Preset("er", "none", "none", "experience replay, reservoir buffer (Mammoth)"),
    "derpp": Preset("derpp", "none", "none", "DER++, Buzzega et al. NeurIPS 2020 (Mammoth)"),
    "ewc": Preset("ewc", "none", "none", "online EWC, Schwarz et al. ICML 2018 (Mammoth's ewc_on)"),
    "co2l": Preset("co2l", "none", "none",
                   "CO2L, Cha et al. ICCV 2021: asymmetric SupCon + relation distillation, linear probe on buffer"),
    "esacl": Preset("finetune", "sdp", "ids", _ESACL),
    "esacl-er": Preset("er", "sdp", "ids", _ESACL + ", on ER"),
    "esacl-derpp": Preset("derpp", "sdp", "ids", _ESACL + ", on DER++"),
    "esacl-ewc": Preset("ewc", "sdp", "ids", _ESACL + ", on online EWC"),
    "esacl-co2l": Preset("co2l", "sdp", "ids", _ESACL + ", on CO2L"),
    "esacl-noids": Preset("finetune", "sdp", "none", "ablation: SDP without data selection"),
    "ids-only": Preset("finetune", "sam", "ids", "ablation: dense SAM with IDS, no pruning"),
    "sam": Preset("finetune", "sam", "none", "ablation: dense SAM, Foret et al. ICLR 2021"),
    "grda": Preset("finetune", "grda", "none", "ablation: dual-averaging pruning without SAM (gRDA, Chao et al. 2020)"),
    "sam-gmp": Preset("finetune", "sam-gmp", "none",
                      "ablation: SAM + gradual magnitude pruning (Zhu & Gupta 2017) instead of dual averaging"),
    "sparcl-er": Preset("er", "sparcl", "ddr", _SPARCL + ", on ER"),
    "sparcl-derpp": Preset("derpp", "sparcl", "ddr", _SPARCL + ", on DER++"),
    "sparcl-ewc": Preset("ewc", "sparcl", "ddr", _SPARCL + ", on online EWC"),
    "sparcl-co2l": Preset("co2l", "sparcl", "ddr", _SPARCL + ", on CO2L"),
}


def build_learner(cfg, n_classes: int, augment=None) -> Learner:
    """The base learner of `cfg.method`'s preset."""
    preset = PRESETS[cfg.method]
    if cfg.sparsity > 0 and not preset.sparse:
        raise UserError(f"method '{cfg.method}' is dense: config key 'sparsity' must be 0, got {cfg.sparsity}")
    return LEARNERS[preset.learner](cfg, n_classes, cfg.seed, augment)


from .co2l import CO2L  # noqa: E402  (co2l.py imports this module)
LEARNERS["co2l"] = CO2L
