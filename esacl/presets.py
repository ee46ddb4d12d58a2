"""The registries: base learners, sparsifiers, and the method presets that compose them.

A method is one choice on each axis: base learner (the loss, `methods.py`, `co2l.py`) x sparsifier
(the step's passes and update rule, `steps.py`, `prune.py`) x data selector (`selection.py`). Adding
a base learner is a class, a line in `LEARNERS`, its dense preset, and a line in `COMPOSED` for its
`esacl-X` and `sparcl-X` presets.
"""
from dataclasses import dataclass

from .co2l import CO2L
from .errors import UserError
from .methods import AGEM, DERpp, ER, EWC, Joint, Learner, LwF

LEARNERS = {"finetune": Learner, "joint": Joint, "er": ER, "derpp": DERpp, "ewc": EWC, "co2l": CO2L, "lwf": LwF,
            "agem": AGEM}


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
# The base learners that SparCL and EsaCL compose with (presets sparcl-X and esacl-X), as sources name them.
COMPOSED = {"er": "ER", "derpp": "DER++", "ewc": "online EWC", "co2l": "CO2L", "lwf": "LwF", "agem": "A-GEM"}
PRESETS: dict[str, Preset] = {
    "sgd": Preset("finetune", "none", "none", "fine-tuning with SGD; lower bound"),
    "joint": Preset("joint", "none", "none", "trains on all data seen so far; upper bound"),
    "er": Preset("er", "none", "none", "experience replay, reservoir buffer (Mammoth)"),
    "derpp": Preset("derpp", "none", "none", "DER++, Buzzega et al. NeurIPS 2020 (Mammoth)"),
    "ewc": Preset("ewc", "none", "none", "online EWC, Schwarz et al. ICML 2018 (Mammoth's ewc_on)"),
    "co2l": Preset("co2l", "none", "none",
                   "CO2L, Cha et al. ICCV 2021: asymmetric SupCon + relation distillation, linear probe on buffer"),
    "lwf": Preset("lwf", "none", "none", "LwF, Li & Hoiem TPAMI 2017: distillation to the last task end's model"),
    "agem": Preset("agem", "none", "none", "A-GEM, Chaudhry et al. ICLR 2019, reservoir buffer (Mammoth's agem_r)"),
    "esacl": Preset("finetune", "sdp", "ids", _ESACL),
    **{f"esacl-{x}": Preset(x, "sdp", "ids", f"{_ESACL}, on {name}") for x, name in COMPOSED.items()},
    "esacl-noids": Preset("finetune", "sdp", "none", "ablation: SDP without data selection"),
    "ids-only": Preset("finetune", "sam", "ids", "ablation: dense SAM with IDS, no pruning"),
    "sam": Preset("finetune", "sam", "none", "ablation: dense SAM, Foret et al. ICLR 2021"),
    "grda": Preset("finetune", "grda", "none", "ablation: dual-averaging pruning without SAM (gRDA, Chao et al. 2020)"),
    "sam-gmp": Preset("finetune", "sam-gmp", "none",
                      "ablation: SAM + gradual magnitude pruning (Zhu & Gupta 2017) instead of dual averaging"),
    **{f"sparcl-{x}": Preset(x, "sparcl", "ddr", f"{_SPARCL}, on {name}") for x, name in COMPOSED.items()},
}


def build_learner(cfg, n_classes: int, augment=None) -> Learner:
    """The base learner of `cfg.method`'s preset."""
    preset = PRESETS[cfg.method]
    if cfg.sparsity > 0 and not preset.sparse:
        raise UserError(f"method '{cfg.method}' is dense: config key 'sparsity' must be 0, got {cfg.sparsity}")
    return LEARNERS[preset.learner](cfg, n_classes, cfg.seed, augment)

