"""RunConfig: every knob of a run in one validated place.

Built from a dict (notebook parameters), from CLI strings, or directly. Every mistake is a
`UserError` whose message is one line naming the key and what is allowed. Knobs left at `None`
take the benchmark's protocol default (`resolve`), and the run records which ones did.
"""
import dataclasses
import itertools
import math
import types
import typing
from dataclasses import dataclass, field, fields

from .errors import UserError, did_you_mean  # noqa: F401  (re-exported: esacl.config.UserError)


def knob(default, help, *, interval=None, choices=None):
    """A config field with its help text and its allowed values.

    interval: "[lo, hi)" style bounds (inf allowed); choices: a callable returning the valid names.
    """
    return field(default=default, metadata=dict(help=help, interval=interval, choices=choices))


def _method_names():
    from .presets import PRESETS
    return sorted(PRESETS)


def _benchmark_names():
    from .data import BENCHMARKS
    return sorted(BENCHMARKS)


@dataclass(frozen=True)
class RunConfig:
    """One run: which benchmark, which method, and every hyper-parameter.

    `None` means "the benchmark's protocol default" (see `esacl benchmarks`).
    """
    benchmark: str = knob("split_digits", "benchmark name (esacl benchmarks)", choices=_benchmark_names)
    method: str = knob("sgd", "method preset (esacl methods)", choices=_method_names)
    seed: int = knob(0, "seeds every RNG: python, numpy, torch, class order, buffer", interval="[0, 4294967295]")
    n_tasks: int | None = knob(None, "train on the first N tasks only (default: all)", interval="[1, inf)")
    epochs: int | None = knob(None, "epochs per task", interval="[1, inf)")
    batch_size: int | None = knob(None, "stream minibatch size", interval="[1, inf)")
    lr: float | None = knob(None, "SGD learning rate (no momentum, no weight decay, constant)", interval="(0, inf)")
    buffer_size: int | None = knob(None, "replay buffer size (reservoir)", interval="[1, inf)")
    minibatch_size: int | None = knob(None, "replay minibatch size", interval="[1, inf)")
    alpha: float = knob(0.1, "DER++ logit-distillation weight", interval="[0, inf)")
    beta: float = knob(0.5, "DER++ replay cross-entropy weight", interval="[0, inf)")
    lwf_alpha: float = knob(1.0, "LwF: weight of the distillation to the last task end's model (Li & Hoiem's 1)",
                            interval="[0, inf)")
    lwf_temperature: float = knob(2.0, "LwF: distillation temperature (Li & Hoiem's 2)", interval="(0, inf)")
    ewc_lambda: float | None = knob(None, "online EWC penalty weight (default: the benchmark's, chosen on a "
                                    "validation split: benchmarks/tune.py)", interval="[0, inf)")
    ewc_gamma: float = knob(1.0, "online EWC decay of the old Fisher", interval="[0, 1]")
    ewc_cap: bool = knob(True, "online EWC: cap each penalty weight lambda * F at 1 / (2 lr), where one SGD step "
                         "on the penalty lands on the anchor (larger weights overshoot and, past 1 / lr, diverge)")
    co2l_temperature: float = knob(0.5, "CO2L: temperature of the asymmetric supervised contrastive loss",
                                   interval="(0, inf)")
    co2l_current_temperature: float = knob(0.2, "CO2L: relation-distillation temperature of the current model",
                                           interval="(0, inf)")
    co2l_past_temperature: float = knob(0.01, "CO2L: relation-distillation temperature of the past model",
                                        interval="(0, inf)")
    co2l_distill: float = knob(1.0, "CO2L: weight of the instance-wise relation distillation", interval="[0, inf)")
    co2l_probe_epochs: int = knob(50, "CO2L: epochs of the linear probe trained at each task end",
                                  interval="[1, inf)")
    # Sparsifier (SDP, GMP): which weights, how many, and how the threshold moves.
    sparsity: float | None = knob(None, "target sparsity of the prunable layers (default: 0.9 for sparse "
                                  "methods, 0 for dense ones)", interval="[0, 1)")
    sparsity_scope: str = knob("layer", "'layer': the target holds per prunable layer (SparCL's convention); "
                               "'global': over all prunable weights together", choices=lambda: ["global", "layer"])
    threshold: str = knob("target", "'target': the threshold is the quantile of |accumulator| that tracks the "
                          "sparsity schedule; 'grda': gRDA's c * lr^0.5 * (n lr)^mu", choices=lambda: ["grda", "target"])
    prune: str = knob("soft", "'soft': soft-threshold the accumulator (gRDA); 'hard': keep the top-k values as they are",
                      choices=lambda: ["hard", "soft"])
    ramp_fraction: float = knob(0.5, "the sparsity schedule ramps (cubic) over this fraction of the first task's "
                                "steps, then holds the target (0: sparse from the first update)", interval="[0, 1]")
    dense_grad_every: int = knob(1, "SDP: the accumulator takes the dense weight gradient every this-many steps and "
                                 "the live weights' gradient in between (RigL's regrowth at sparse cost; 1: every step)",
                                 interval="[1, inf)")
    grda_c: float = knob(0.005, "gRDA threshold scale c (with threshold 'grda')", interval="[0, inf)")
    grda_mu: float = knob(0.55, "gRDA threshold growth exponent mu (with threshold 'grda')", interval="(0, 1)")
    reset_accumulator: bool = knob(False, "reset the dual-averaging accumulator to the weights at each task start")
    one_shot_sparsity: float = knob(0.0, "dense methods: at each task end, record the accuracy and loss lost by "
                                    "one-shot magnitude pruning to this sparsity, no retraining (the flatness test; "
                                    "0: not measured)", interval="[0, 1)")
    bn_recalibrate: bool = knob(True, "sparse methods: recompute batch-norm running statistics at each task end "
                                "with one no-grad pass over the task's batches (weights unchanged; FLOPs counted)")
    # SparCL (Wang et al. 2022): task-aware dynamic masking and dynamic gradient masking.
    tdm: bool = knob(True, "SparCL: task-aware dynamic masking of the prunable weights (off: dense weights)")
    tdm_every: int | None = knob(None, "SparCL: epochs between two prune-and-grow mask updates", interval="[1, inf)")
    tdm_gap: float = knob(0.01, "SparCL: prune to target + gap, then regrow to the target (the schedule's bounds)",
                          interval="[0, 1)")
    tdm_lambda: float = knob(0.5, "SparCL: importance |w| + lambda |grad w| for pruning", interval="[0, inf)")
    dgm: bool = knob(True, "SparCL: dynamic gradient masking of the prunable layers")
    dgm_keep: float = knob(0.2, "SparCL: share of each prunable layer's weight gradient kept (largest |grad|)",
                           interval="(0, 1]")
    dgm_every: int = knob(30, "SparCL: batches (within an epoch) between two gradient-mask updates",
                          interval="[1, inf)")
    # SAM ascent.
    rho: float = knob(0.05, "SAM neighbourhood radius", interval="(0, inf)")
    asam: bool = knob(False, "adaptive SAM: scale the ascent by |w| (Kwon et al. 2021)")
    sam_every: int = knob(1, "SAM's ascent and second pass every this-many steps, a plain step on the first "
                          "pass's gradient in between (LookSAM-style; 1: every step)", interval="[1, inf)")
    # IDS: batch-level support example selection and task-level redundant example elimination.
    support_fraction: float = knob(0.5, "share of each batch the SAM second pass trains on (highest sharpness "
                                   "scores)", interval="(0, 1]")
    support_size: int | None = knob(None, "absolute support size per batch (overrides support_fraction)",
                                    interval="[1, inf)")
    support_rule: str = knob("sharpest", "which examples the second pass keeps: the 'sharpest' (IDS) or a "
                             "'random' subset of the same size (control)", choices=lambda: ["random", "sharpest"])
    support_balance: str = knob("class", "'class': each class keeps its sharpest examples in proportion to its "
                                "share of the batch; 'none': the sharpest K of the whole batch",
                                choices=lambda: ["class", "none"])
    support_bn: str = knob("subset", "batch-norm statistics of the scoring forward and the second pass: the "
                           "'subset' each forwards, or the whole 'batch' of the first pass (replay included)",
                           choices=lambda: ["batch", "subset"])
    removal_fraction: float = knob(0.3, "share of a task's examples removed (IDS's redundant example elimination, "
                                   "SparCL's dynamic data removal)",
                               interval="[0, 1)")
    removal_every: int | None = knob(None, "epochs between two removals", interval="[1, inf)")
    removal_until: int | None = knob(None, "removals happen during the first this-many epochs of a task",
                                 interval="[1, inf)")
    ere_score: str = knob("sharpness", "what marks an example redundant: lowest running 'sharpness' score, or "
                          "fewest 'forgetting' events", choices=lambda: ["forgetting", "sharpness"])
    # Sharpness of the loss landscape, measured at each task end.
    landscape: bool = knob(False, "measure sharpness at each task end (SAM gap, Hessian, slices)")
    landscape_batch: int = knob(256, "examples in the fixed evaluation batch of the landscape", interval="[1, inf)")
    hessian_iters: int = knob(20, "power iterations for the top Hessian eigenvalue", interval="[1, inf)")
    hutchinson_samples: int = knob(10, "Rademacher samples for the Hessian trace", interval="[1, inf)")
    slice_steps: int = knob(11, "grid points per axis of the 2-D slice (0: no slice)", interval="[0, inf)")
    log_every: int = knob(10, "steps between two sparsity samples in the run record", interval="[1, inf)")
    class_order: str | None = knob(None, "class order: 'seeded' (a permutation drawn from the seed) or 'natural' "
                                   "(default: the benchmark's; natural for the image benchmarks, as the published "
                                   "results use)", choices=lambda: ["natural", "seeded"])
    width: int | None = knob(None, "backbone width (filters of the first layer)", interval="[1, inf)")
    validation: float = knob(0.0, "hold out this share of each class's training examples and evaluate on them "
                             "instead of the test set (for choosing hyper-parameters; 0: the test set)",
                             interval="[0, 1)")
    device: str = knob("auto", "'auto' (cuda if present), 'cpu', 'cuda' or 'cuda:N'")
    threads: int | None = knob(None, "CPU threads of the run's tensor work, set before it starts (default: the "
                               "process's: $OMP_NUM_THREADS, else the cores it may use less one per core other "
                               "processes keep busy at the start; sweeps divide the cores among their parallel "
                               "points). CPU results change in their last digits with it",
                               interval="[1, inf)")
    data_root: str | None = knob(None, "folder holding the datasets (default: $ESACL_DATA)")
    out: str = knob("runs", "parent folder of the run directory")
    name: str | None = knob(None, "run directory name (default: benchmark-method-sSEED, made unique)")
    progress: bool = knob(True, "show progress bars")
    # Protocol details where the official SparCL code differs from Mammoth (measured: docs/method.md).
    replay_first_task: bool = knob(True, "replay learners draw from the buffer during the first task too (Mammoth's "
                                   "ER; off: from the second task on, as the official SparCL code)")
    bn_bias: bool = knob(True, "batch-norm biases train (off: held at zero, as the official SparCL code does)")
    drop_last: bool = knob(False, "drop each epoch's last partial batch (as the official SparCL code does)")
    # Speed: none of these changes what is computed, only how (bf16 changes rounding).
    channels_last: bool = knob(False, "model and batches in channels_last memory format (faster convs on "
                               "tensor-core GPUs)")
    amp: bool = knob(False, "bf16 autocast around the step's forwards and evaluation (CUDA; on a CPU it runs, "
                     "usually slower)")
    compile: bool = knob(False, "torch.compile the model in place (inductor; the first steps are slow while it "
                         "compiles, and needs a C/C++ compiler on CPU)")

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            object.__setattr__(self, f.name, _check_value(f, value))
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise UserError(f"config key 'device' must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        if self.name is not None and (not self.name or "/" in self.name or self.name in (".", "..")):
            raise UserError(f"config key 'name' is one folder name inside 'out' (no '/', not '.' or '..'); "
                            f"got {self.name!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        """Build from typed values (a notebook's parameters); unknown keys are an error."""
        for key in values:
            _field(key)
        return cls(**values)

    @classmethod
    def from_strings(cls, values: dict[str, str], base: dict | None = None) -> "RunConfig":
        """Build from CLI strings: each is parsed as its field's type ('none' means None)."""
        typed = dict(base or {})
        for key, text in values.items():
            typed[key] = _parse_string(_field(key), text)
        return cls.from_dict(typed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "RunConfig":
        for key in changes:
            _field(key)
        return dataclasses.replace(self, **changes)


KEYS = [f.name for f in fields(RunConfig)]


def help_lines() -> list[tuple[str, str, str]]:
    """(key, type, help) for every knob, for CLI help and docs."""
    return [(f.name, _type_name(f.type), f.metadata["help"]) for f in fields(RunConfig)]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; all of them where the OS has no affinity)."""
    import os
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                      # macOS, Windows
        return os.cpu_count() or 1


def cross(fixed: dict, axes: dict) -> list[dict]:
    """Every combination of the `axes` values over `fixed`, the last axis fastest: the one grid
    expansion (`esacl run` and `esacl notebook` comma lists, sweep grids)."""
    return [dict(fixed, **dict(zip(axes, values))) for values in itertools.product(*axes.values())]


def _field(key: str) -> dataclasses.Field:
    for f in fields(RunConfig):
        if f.name == key:
            return f
    raise UserError(f"unknown config key '{key}'{did_you_mean(key, KEYS)}; valid keys: {', '.join(KEYS)}")


def _base_type(tp):
    """(type, optional) from an annotation like `int | None`."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _type_name(tp) -> str:
    base, optional = _base_type(tp)
    return base.__name__ + (" or None" if optional else "")


def _parse_string(f: dataclasses.Field, text: str):
    base, optional = _base_type(f.type)
    if optional and text.strip().lower() in ("none", "null", ""):
        return None
    try:
        if base is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return base(text)
    except ValueError:
        raise UserError(f"config key '{f.name}' expects {_type_name(f.type)}, got {text!r}") from None


def _check_value(f: dataclasses.Field, value):
    base, optional = _base_type(f.type)
    if value is None:
        if optional:
            return None
        raise UserError(f"config key '{f.name}' expects {_type_name(f.type)}, got None")
    ok = isinstance(value, base) and not (base is not bool and isinstance(value, bool))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise UserError(f"config key '{f.name}' expects {_type_name(f.type)}, "
                        f"got {value!r} ({type(value).__name__})")
    interval = f.metadata["interval"]
    if interval and not _in_interval(value, interval):
        raise UserError(f"config key '{f.name}' must be in {interval}, got {value!r}")
    choices = f.metadata["choices"]
    if choices and value not in choices():
        names = choices()
        raise UserError(f"config key '{f.name}' must be one of: {', '.join(names)}; got {value!r}"
                        f"{did_you_mean(value, names)}")
    return value


def _in_interval(value: float, interval: str) -> bool:
    lo_text, hi_text = interval[1:-1].split(",")
    lo, hi = float(lo_text), float(hi_text)
    if math.isnan(value):
        return False
    above = value >= lo if interval[0] == "[" else value > lo
    below = value <= hi if interval[-1] == "]" else value < hi
    return above and below


# Knobs whose default comes from the benchmark's protocol (data.Benchmark.protocol).
PROTOCOL_KEYS = ("epochs", "batch_size", "lr", "buffer_size", "minibatch_size", "width", "removal_every",
                 "removal_until", "tdm_every", "class_order", "ewc_lambda")


def resolve(cfg: RunConfig, protocol: dict) -> tuple[RunConfig, list[str]]:
    """Fill every `None` protocol knob from the benchmark (and `sparsity` from the method);
    returns the config and the filled keys."""
    from .presets import PRESETS
    filled = [k for k in PROTOCOL_KEYS if getattr(cfg, k) is None]
    values = {k: protocol[k] for k in filled}
    if cfg.sparsity is None:
        values["sparsity"] = 0.9 if PRESETS[cfg.method].sparse else 0.0
        filled.append("sparsity")
    return dataclasses.replace(cfg, **values), filled
