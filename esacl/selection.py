"""Data selectors: which examples a step and a task train on, and the record of what was chosen.

`AllData` trains on every example. `IDS` is EsaCL's intelligent data selection:
- batch level (support example selection): the SAM second pass runs on the K examples of the
  batch whose loss rises most under the ascent, s_i = l_i(w + eps) - l_i(w) (steps.Step);
- task level (redundant example elimination): `Elimination`'s schedule, lowest mean sharpness
  score first.
`DDR` is SparCL's dynamic data removal on the same schedule, by forgetting events.
Per-example statistics live on the device, indexed by the batch's task positions: no sync per step.
"""

import math
from dataclasses import dataclass

import numpy as np

import torch

from .errors import UserError
from .knobs import Section, knob


@dataclass(frozen=True)
class SupportConfig(Section):
    """IDS's batch level: which examples the SAM second pass keeps."""

    support_fraction: float | None = knob(
        None,
        "share of each batch the SAM second pass trains on (highest sharpness scores)",
        interval="(0, 1]",
        tuned=0.5,
    )
    support_size: int | None = knob(
        None, "absolute support size per batch (overrides support_fraction)", interval="[1, inf)"
    )
    support_rule: str = knob(
        "sharpest",
        "which examples the second pass keeps: the 'sharpest' (IDS) or a 'random' subset of the same size (control)",
        choices=lambda: ["random", "sharpest"],
    )
    support_balance: str | None = knob(
        None,
        "'class': each class keeps its sharpest examples in proportion to its "
        "share of the batch; 'none': the sharpest K of the whole batch",
        choices=lambda: ["class", "none"],
        tuned="class",
    )
    support_bn: str | None = knob(
        None,
        "batch-norm statistics of the scoring forward and the second pass: the "
        "'subset' each forwards, or the whole 'batch' of the first pass (replay included)",
        choices=lambda: ["batch", "subset"],
        tuned="subset",
    )


def second_pass_size(cfg, batch: int) -> int:
    """Examples a selecting SAM second pass keeps out of a batch of `batch` (knobs `support_size`, else
    `support_fraction`)."""
    if cfg.support_size is not None:
        return min(cfg.support_size, batch)
    return max(1, math.ceil(cfg.support_fraction * batch))


@dataclass(frozen=True)
class RemovalConfig(Section):
    """Task-level removal: IDS's redundant example elimination, SparCL's dynamic data removal."""

    removal_fraction: float | None = knob(
        None,
        "share of a task's examples removed (IDS's redundant example elimination, SparCL's dynamic data removal)",
        interval="[0, 1)",
        tuned=0.3,
    )
    removal_every: int | None = knob(None, "epochs between two removals", interval="[1, inf)")
    removal_until: int | None = knob(
        None, "removals happen during the first this-many epochs of a task", interval="[1, inf)"
    )
    ere_score: str = knob(
        "sharpness",
        "what marks an example redundant: lowest running 'sharpness' score, or fewest 'forgetting' events",
        choices=lambda: ["forgetting", "sharpness"],
    )


class AllData:
    """Every example of the task, every epoch; the SAM second pass sees the whole batch."""

    def __init__(self, cfg, device):
        self.opts, self.support = RemovalConfig.of(cfg), SupportConfig.of(cfg)  # the knobs it reads, typed
        self.epochs, self.seed, self.device = cfg.epochs, cfg.seed, device
        self.active = torch.zeros(0, dtype=torch.long, device=device)
        self.task = self.epoch = 0

    selects_support = False  # the SAM second pass sees the whole batch (IDS: its sharpest share)

    def begin_task(self, task: int, y: torch.Tensor) -> None:
        self.task = task
        self.active = torch.arange(len(y), device=self.device)

    def begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def pool(self) -> torch.Tensor:
        """Task positions of the examples still trained on."""
        return self.active

    def record(self, batch, loss, scores=None, keep=None) -> None:
        pass

    def end_epoch(self) -> dict | None:
        """An event for the run record when something was removed, else None."""
        return None

    def task_record(self) -> dict | None:
        """Arrays describing this task's selections, for the run directory (None: nothing to save)."""
        return None

    def state_dict(self) -> dict:
        return dict(active=self.active, epoch=self.epoch)

    def load_state_dict(self, state: dict) -> None:
        self.active, self.epoch = state["active"], state["epoch"]


class Elimination(AllData):
    """Task-level removal: at the end of every `removal_every`-th epoch during the first
    `removal_until` epochs, the active examples with the lowest score leave the task, in equal
    shares, up to `removal_fraction` of it. Keeps per-example statistics on the device: forgetting
    events (a correct -> wrong flip of pass 1's prediction), and sharpness scores when given."""

    reset_after_removal = False

    def __init__(self, cfg, device):
        super().__init__(cfg, device)
        self.stats: dict[str, torch.Tensor] = {}

    def begin_task(self, task, y):
        super().begin_task(task, y)
        n, epochs = len(y), self.epochs
        zeros = lambda dtype: torch.zeros(n, dtype=dtype, device=self.device)
        self.stats = dict(
            y=y.clone(),
            score_sum=zeros(torch.float32),
            score_count=zeros(torch.int32),
            forget_count=zeros(torch.int32),
            last_correct=zeros(torch.bool),
            learned=zeros(torch.bool),
            removed_epoch=torch.full((n,), -1, dtype=torch.int32, device=self.device),
            epoch_score=torch.full((epochs, n), float("nan"), device=self.device),  # [E, N]
            epoch_kept=torch.zeros((epochs, n), dtype=torch.bool, device=self.device),
        )  # [E, N]

    def record(self, batch, loss, scores=None, keep=None):
        s, idx = self.stats, batch.idx
        correct = loss.logits.detach().argmax(1) == batch.y  # [B]
        s["forget_count"][idx] += (s["last_correct"][idx] & ~correct).int()
        s["last_correct"][idx] = correct
        s["learned"][idx] |= correct
        if scores is not None:
            s["score_sum"][idx] += scores.detach()
            s["score_count"][idx] += 1
            s["epoch_score"][self.epoch, idx] = scores.detach()
        if keep is not None:
            s["epoch_kept"][self.epoch, idx[keep]] = True

    def removal_counts(self, n: int) -> dict[int, int]:
        """Epoch -> examples removed at its end: equal shares, at most removal_fraction * n in all."""
        epochs = [
            e for e in range(self.epochs) if (e + 1) % self.opts.removal_every == 0 and e + 1 <= self.opts.removal_until
        ]
        total = math.floor(self.opts.removal_fraction * n)
        if not epochs or total == 0:
            return {}
        shares = np.diff(np.round(np.linspace(0, total, len(epochs) + 1)).astype(int))
        return dict(zip(epochs, shares.tolist()))

    def forgetting_score(self) -> torch.Tensor:
        """Forgetting events, never-learned examples last (SparCL's ranking: they are kept)."""
        return self.stats["forget_count"].float().masked_fill(~self.stats["learned"], float("inf"))

    def score(self) -> torch.Tensor:
        return self.forgetting_score()

    def end_epoch(self):
        count = self.removal_counts(len(self.stats["y"])).get(self.epoch, 0)
        if count == 0:
            return None
        s = self.stats
        # Ties (most examples have no forgetting event) go in a random order, seeded by run, task and
        # epoch, as the official DDR's first-presentation order does: never by position in the task,
        # which would drop the same examples for every seed, or whole classes where data is stored by class.
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.task * 1_009 + self.epoch)
        shuffled = torch.randperm(len(self.active), generator=g).to(self.device)
        order = shuffled[self.score()[self.active][shuffled].argsort(stable=True)]  # lowest first
        removed = self.active[order[:count]]
        s["removed_epoch"][removed] = self.epoch
        self.active = self.active[order[count:]].sort().values
        if self.reset_after_removal:
            for key in ("forget_count", "last_correct", "learned"):
                s[key].zero_()
        return dict(
            event="eliminate",
            epoch=self.epoch,
            removed=count,
            remaining=len(self.active),
            score=type(self).__name__.lower(),
        )

    def task_record(self):
        s = self.stats
        running = s["score_sum"] / s["score_count"].clamp_min(1)
        return dict(
            y=s["y"],
            running_score=running,
            forget_count=s["forget_count"],
            learned=s["learned"],
            removed_epoch=s["removed_epoch"],
            epoch_score=s["epoch_score"].half(),
            epoch_kept=s["epoch_kept"],
        )

    def state_dict(self):
        return dict(super().state_dict(), stats=self.stats)

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.stats = dict(state["stats"])


class IDS(Elimination):
    """EsaCL's data selection: support example selection per batch (the SAM second pass keeps the
    sharpest K) + redundant example elimination per task, by the mean sharpness score so far
    (ere_score='sharpness') or by forgetting events (ere_score='forgetting')."""

    selects_support = True

    def score(self):
        """Lowest first: the mean batch-level sharpness score so far; an example no step scored yet
        (possible with sam_every > 1) ranks last, kept, as never-learned examples are in DDR."""
        if self.opts.ere_score == "forgetting":
            return self.forgetting_score()
        s = self.stats
        return (s["score_sum"] / s["score_count"].clamp_min(1)).masked_fill(s["score_count"] == 0, float("inf"))


class DDR(Elimination):
    """SparCL's dynamic data removal: fewest forgetting events first, never-learned examples kept,
    forgetting statistics reset after each removal (as its official code does)."""

    reset_after_removal = True


SELECTORS = {"none": AllData, "ids": IDS, "ddr": DDR}


def build_selector(preset, cfg, device) -> AllData:
    """The preset's selector. IDS's elimination by sharpness ranks by the batch-level scores of its
    support selection: a configuration that computes none is refused rather than ranked by position."""
    if preset.selector == "ids" and cfg.ere_score == "sharpness" and cfg.removal_fraction > 0:
        if cfg.support_rule == "random" or second_pass_size(cfg, cfg.batch_size) >= cfg.batch_size:
            why = "support_rule is random" if cfg.support_rule == "random" else "the support set is the whole batch"
            raise UserError(
                f"IDS removes the examples with the lowest sharpness scores, but no step scores any "
                f"({why}); set ere_score=forgetting, removal_fraction=0, or keep support selection on"
            )
    return SELECTORS[preset.selector](cfg, device)
