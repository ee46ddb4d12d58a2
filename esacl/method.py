"""The registries: base learners, sparsifiers, the method presets that compose them, and `Method`.

A method is one choice on each axis: base learner (the loss, `learners.py`, `co2l.py`) x sparsifier
(the step's passes and update rule, `steps.py`, `prune.py`) x data selector (`selection.py`).
`build_method` puts a preset's three parts together as one `Method`, the only thing the trainer
drives. Adding a base learner is a class (its own knobs, if any, a `knobs.Section` as its `Config`)
and its line in `LEARNERS`: that line makes its dense preset and, where it names the learner as
sources do, its `esacl-X` and `sparcl-X` presets, and `config.RunConfig` takes its knobs from it.
"""

from dataclasses import dataclass

from .co2l import CO2L
from .errors import UserError
from .knobs import Section
from .learners import AGEM, Batch, DERpp, ER, EWC, Joint, Learner, Loss, LwF
from .prune import RULES, SparCLConfig, SparsityConfig
from .selection import RemovalConfig, SupportConfig, build_selector
from .steps import SAMConfig, Step


@dataclass(frozen=True)
class Registered:
    """A base learner's registry line: its class, where it comes from (the dense preset's source), its
    name as sources write it where SparCL and EsaCL compose with it (None: a bound, not composed), and
    whether its loss trains on old classes' labelled examples (replayed or all the data), so that its
    class-IL should stay above the floor of a model that knows only the last task (the tests hold every
    preset of it to that)."""

    cls: type[Learner]
    source: str
    composed: str | None = None
    replays_labels: bool = False


LEARNERS = {
    "finetune": Registered(Learner, "fine-tuning with SGD; lower bound"),
    "joint": Registered(Joint, "trains on all data seen so far; upper bound", replays_labels=True),
    "er": Registered(ER, "experience replay, reservoir buffer (Mammoth)", "ER", replays_labels=True),
    "derpp": Registered(DERpp, "DER++, Buzzega et al. NeurIPS 2020 (Mammoth)", "DER++", replays_labels=True),
    "ewc": Registered(
        EWC,
        "online EWC, Schwarz et al. ICML 2018 (Mammoth's ewc_on, plus a stiffness cap: ewc_cap)",
        "online EWC",
    ),
    "co2l": Registered(
        CO2L,
        "CO2L, Cha et al. ICCV 2021: asymmetric SupCon + relation distillation, linear probe on buffer",
        "CO2L",
        replays_labels=True,
    ),
    "lwf": Registered(LwF, "LwF, Li & Hoiem TPAMI 2017: distillation to the last task end's model", "LwF"),
    "agem": Registered(AGEM, "A-GEM, Chaudhry et al. ICLR 2019, reservoir buffer (Mammoth's agem_r)", "A-GEM"),
}
DENSE_PRESET = {"finetune": "sgd"}  # a learner's dense preset is named for it, but for fine-tuning's


# Sparsifier axis -> (SAM two-pass step?, update rule of prune.RULES).
SPARSIFIERS = {
    "none": (False, "dense"),
    "sam": (True, "dense"),
    "grda": (False, "dual_averaging"),
    "sdp": (True, "dual_averaging"),
    "sam-gmp": (True, "magnitude"),
    "gmp": (False, "magnitude"),
    "sparcl": (False, "sparcl"),
}
# The knob sections of the step, its update rules and its selectors: one set for every method.
STEP_SECTIONS = (SparsityConfig, SparCLConfig, SAMConfig, SupportConfig, RemovalConfig)


def knob_sections() -> list[type[Section]]:
    """Every component's knob section once: the registered learners' (each class's `Config` and its
    bases'), then the step's; `config.RunConfig` is made of them."""
    learners = [k.__dict__["Config"] for r in LEARNERS.values() for k in r.cls.__mro__ if k.__dict__.get("Config")]
    return list(dict.fromkeys([*learners, *STEP_SECTIONS]))


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
COMPOSED = {x: r.composed for x, r in LEARNERS.items() if r.composed}  # the learners SparCL and EsaCL compose with
PRESETS: dict[str, Preset] = {
    **{DENSE_PRESET.get(x, x): Preset(x, "none", "none", r.source) for x, r in LEARNERS.items()},
    "esacl": Preset("finetune", "sdp", "ids", _ESACL),
    **{f"esacl-{x}": Preset(x, "sdp", "ids", f"{_ESACL}, on {name}") for x, name in COMPOSED.items()},
    "esacl-noids": Preset("finetune", "sdp", "none", "ablation: SDP without data selection"),
    "ids-only": Preset("finetune", "sam", "ids", "ablation: dense SAM with IDS, no pruning"),
    "sam": Preset("finetune", "sam", "none", "ablation: dense SAM, Foret et al. ICLR 2021"),
    "grda": Preset("finetune", "grda", "none", "ablation: dual-averaging pruning without SAM (gRDA, Chao et al. 2020)"),
    "sam-gmp": Preset(
        "finetune",
        "sam-gmp",
        "none",
        "ablation: SAM + gradual magnitude pruning (Zhu & Gupta 2017) instead of dual averaging",
    ),
    "sgd-gmp": Preset(
        "finetune",
        "gmp",
        "none",
        "ablation: plain SGD + gradual magnitude pruning (Zhu & Gupta 2017), sam-gmp without SAM",
    ),
    **{f"sparcl-{x}": Preset(x, "sparcl", "ddr", f"{_SPARCL}, on {name}") for x, name in COMPOSED.items()},
}


def families(method: str) -> tuple[str, ...]:
    """The method families whose tuned knobs a preset takes (`BenchmarkSpec.tuned`, benchmarks/tune.py): its
    sparsifier side ('esacl' for SDP, its ablations and IDS; 'sparcl'), then its base learner's name."""
    preset = PRESETS[method]
    if preset.sparsifier == "sparcl":
        side = ("sparcl",)
    elif preset.sparsifier != "none" or preset.selector != "none":
        side = ("esacl",)
    else:
        side = ()
    return side + (preset.learner,)


def build_learner(cfg, n_classes: int, augment=None) -> Learner:
    """The base learner of `cfg.method`'s preset."""
    preset = PRESETS[cfg.method]
    if cfg.ewc_step == "proximal" and SPARSIFIERS[preset.sparsifier][1] != "dense":
        raise UserError(
            f"ewc_step=proximal needs an SGD update of the weights; method '{cfg.method}' updates them by "
            f"{SPARSIFIERS[preset.sparsifier][1].replace('_', ' ')}: use ewc_step=gradient"
        )
    return LEARNERS[preset.learner].cls(cfg, n_classes, cfg.seed, augment)


class Method:
    """A preset's base learner, sparsifier and data selector, driven as one.

    The trainer calls, per task: `begin_task`, then per epoch `begin_epoch`, a `train_step` per
    batch of `pool()` and `end_epoch`, and finally `end_task`. Inside a step the learner's loss
    feeds the sparsifier's passes, its gradient hook (`Learner.adjust_gradient`) runs between the
    last backward and the update, and the selector scores what the step saw. One `state_dict`
    carries all three.
    """

    def __init__(self, learner: Learner, step: Step):
        self.learner, self.step = learner, step
        self.rule, self.selector = step.rule, step.selector
        self.cumulative = learner.cumulative  # each task trains on every task's data seen so far

    @property
    def masks(self) -> dict:
        """name -> bool mask of each prunable weight ({} for dense methods)."""
        return self.rule.masks

    def begin_task(self, t: int, task, y, model, steps_in_task: int) -> None:
        """Task `t` starts: `y` ([N]) the labels it trains on, `steps_in_task` its planned updates."""
        self.learner.begin_task(task, model)
        self.selector.begin_task(t, y)
        self.rule.begin_task(t, steps_in_task)

    def begin_epoch(self, epoch: int) -> None:
        self.learner.begin_epoch(epoch)
        self.selector.begin_epoch(epoch)
        self.rule.begin_epoch(epoch)

    def pool(self):
        """[N'] positions of the task's examples this epoch trains on (the selector's)."""
        return self.selector.pool()

    def prepare(self, batch: Batch) -> Batch:
        """The step's whole batch: the stream batch and the learner's replay draw (drawn once)."""
        return self.learner.prepare(batch)

    def train_step(self, model, batch: Batch) -> Loss:
        """One update on `batch` (prepared); the loss at the weights before it."""
        loss = self.step(model, self.learner, batch)
        self.learner.observe(batch, loss)
        return loss

    def end_epoch(self) -> dict | None:
        """The selector's removal after an epoch, as an event (None: nothing removed)."""
        return self.selector.end_epoch()

    def end_task(self, task, model, evaluate, recalibrate_bn) -> tuple[dict, dict | None]:
        """The update rule's end of task (projection and its jump, batch-norm recalibration; see
        `prune.SGD.end_task`), then the learner's (after the projection: EWC anchors the final
        weights). Returns fields for the task's event and `evaluate()` of the final weights, or
        None where that is still to be made (also when the learner trains at its task end)."""
        fields, final = self.rule.end_task(evaluate, recalibrate_bn)
        self.learner.end_task(task, model)
        return fields, None if self.learner.trains_at_task_end else final

    def state_bytes(self) -> dict:
        """Memory the method keeps besides the model: the update rule's state and the learner's."""
        return dict(optimizer_state=self.rule.state_bytes(), learner_state=self.learner.memory_bytes())

    def state_dict(self) -> dict:
        return dict(step=self.step.state_dict(), learner=self.learner.state_dict(), selector=self.selector.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.step.load_state_dict(state["step"])
        self.learner.load_state_dict(state["learner"])
        self.selector.load_state_dict(state["selector"])


def build_method(cfg, model, n_classes: int, augment, device, meter=None) -> Method:
    """`cfg.method`'s preset as a `Method` on `model`: the learner attaches what it trains besides the
    backbone first, so the step's parameters include it; the sparsifier decides the step's passes
    (SAM or one) and its update rule."""
    preset = PRESETS[cfg.method]
    learner = build_learner(cfg, n_classes, augment)
    learner.meter = meter  # before attach: a part it adds is metered too
    learner.attach(model)
    sam, rule = SPARSIFIERS[preset.sparsifier]
    step = Step(model, cfg, sam, RULES[rule](model, cfg, meter), build_selector(preset, cfg, device), meter)
    return Method(learner, step)
