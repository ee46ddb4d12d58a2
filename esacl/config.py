"""RunConfig: every knob of a run in one validated place, the flat form of every component's section.

Each component declares its own knobs beside its code (`knobs.Section`) and the method registry
collects them (`method.knob_sections`); this module adds the run's own (which benchmark and method,
protocol, speed, output) and puts them all together. Built from a dict (notebook parameters), from
CLI strings, or directly. Every mistake is a `UserError` whose message is one line naming the key
and what is allowed. Knobs left at `None` take the benchmark's protocol default (`resolve`), and the
run records which ones did.
"""

import dataclasses
import itertools
from dataclasses import dataclass, fields

from .errors import UserError, did_you_mean  # noqa: F401  (re-exported: esacl.config.UserError)
from .knobs import RENAMED, Section, check_value, knob, parse_string, type_name
from .landscape import LandscapeConfig
from .method import PRESETS, families, knob_sections


def _method_names():
    return sorted(PRESETS)


def _benchmark_names():
    from .data import BENCHMARKS

    return sorted(BENCHMARKS)


@dataclass(frozen=True)
class Run(Section):
    """Which benchmark, which method, which seed."""

    benchmark: str = knob("split_digits", "benchmark name (esacl benchmarks)", choices=_benchmark_names)
    method: str = knob("sgd", "method preset (esacl methods)", choices=_method_names)
    seed: int = knob(0, "seeds every RNG: python, numpy, torch, class order, buffer", interval="[0, 4294967295]")


@dataclass(frozen=True)
class Protocol(Section):
    """The benchmark's protocol: tasks, epochs, batches, lr, model width, evaluation split. Where the official
    SparCL code differs from Mammoth, the switch is here (measured: docs/method.md)."""

    n_tasks: int | None = knob(None, "train on the first N tasks only (default: all)", interval="[1, inf)")
    epochs: int | None = knob(None, "epochs per task", interval="[1, inf)")
    batch_size: int | None = knob(None, "stream minibatch size", interval="[1, inf)")
    lr: float | None = knob(None, "SGD learning rate (no momentum, no weight decay, constant)", interval="(0, inf)")
    class_order: str | None = knob(
        None,
        "class order: 'seeded' (a permutation drawn from the seed) or 'natural' "
        "(default: the benchmark's; natural for the image benchmarks, as the published "
        "results use)",
        choices=lambda: ["natural", "seeded"],
    )
    width: int | None = knob(None, "backbone width (filters of the first layer)", interval="[1, inf)")
    validation: float = knob(
        0.0,
        "hold out this share of each class's training examples and evaluate on them "
        "instead of the test set (for choosing hyper-parameters; 0: the test set)",
        interval="[0, 1)",
    )
    bn_bias: bool = knob(True, "batch-norm biases train (off: held at zero, as the official SparCL code does)")
    drop_last: bool = knob(False, "drop each epoch's last partial batch (as the official SparCL code does)")
    stop_loss: float | None = knob(
        None,
        "end a task's training after the first epoch whose mean training loss is at most this, with "
        "'epochs' the most it takes (training to a matched quality; default: every epoch)",
        interval="(0, inf)",
    )


@dataclass(frozen=True)
class Speed(Section):
    """Where and how fast: none of these changes what is computed, only how (bf16 changes rounding)."""

    device: str = knob("auto", "'auto' (cuda if present), 'cpu', 'cuda' or 'cuda:N'")
    threads: int | None = knob(
        None,
        "CPU threads of the run's tensor work (default on a CPU: 1, the canonical count, whatever the "
        "machine's load or core count; recorded in config.json). CPU results change in their last digits "
        "with it: tables never pair runs of different counts. Parallel runs give the throughput",
        interval="[1, inf)",
    )
    channels_last: bool | None = knob(
        None,
        "model and batches in channels_last memory format (default: on a CPU for the ConvNet benchmarks, "
        "measured faster by benchmarks/cpu_switches.py; off for the ResNet-18 ones and on a GPU)",
    )
    amp: bool = knob(
        False,
        "bf16 autocast around the step's forwards and evaluation (CUDA; on a CPU with native bf16 it is "
        "faster but changes results: docs/method.md)",
    )
    compile: bool = knob(
        False,
        "torch.compile the model in place (inductor; the first steps are slow while it "
        "compiles, and needs a C/C++ compiler on CPU)",
    )


@dataclass(frozen=True)
class Output(Section):
    """Where the run is written, what it records, and what it shows."""

    data_root: str | None = knob(None, "folder holding the datasets (default: $ESACL_DATA)")
    out: str = knob("runs", "parent folder of the run directory")
    name: str | None = knob(None, "run directory name (default: benchmark-method-sSEED, made unique)")
    progress: bool = knob(True, "show progress bars")
    log_every: int = knob(10, "steps between two sparsity samples in the run record", interval="[1, inf)")


@dataclass(frozen=True)
class RunConfig(Output, Speed, LandscapeConfig, *reversed(knob_sections()), Protocol, Run):
    """One run: which benchmark, which method, and every hyper-parameter: the run's own sections and
    every registered component's (`method.knob_sections`), as flat keys (a dataclass takes its bases'
    fields last base first: `Run`'s lead, then the protocol's, the learners', the step's).

    `None` means "the benchmark's protocol default" (see `esacl benchmarks`).
    """

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            object.__setattr__(self, f.name, check_value(f, value))
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise UserError(f"config key 'device' must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        if self.name is not None and (not self.name or "/" in self.name or self.name in (".", "..")):
            raise UserError(
                f"config key 'name' is one folder name inside 'out' (no '/', not '.' or '..'); got {self.name!r}"
            )

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
            typed[key] = parse_string(_field(key), text)
        return cls.from_dict(typed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "RunConfig":
        for key in changes:
            _field(key)
        return dataclasses.replace(self, **changes)


KEYS = [f.name for f in fields(RunConfig)]
KNOB_DEFAULTS = {f.name: f.default for f in fields(RunConfig)}


def help_lines() -> list[tuple[str, str, str]]:
    """(key, type, help) for every knob, for CLI help and docs."""
    return [(f.name, type_name(f.type), f.metadata["help"]) for f in fields(RunConfig)]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; all of them where the OS has no affinity)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cross(fixed: dict, axes: dict) -> list[dict]:
    """Every combination of the `axes` values over `fixed`, the last axis fastest: the one grid
    expansion (`esacl run` and `esacl notebook` comma lists, sweep grids)."""
    return [dict(fixed, **dict(zip(axes, values))) for values in itertools.product(*axes.values())]


def _field(key: str) -> dataclasses.Field:
    for f in fields(RunConfig):
        if f.name == key:
            return f
    if key in RENAMED:
        raise UserError(f"config key '{key}' is now '{RENAMED[key]}'")
    raise UserError(f"unknown config key '{key}'{did_you_mean(key, KEYS)}; valid keys: {', '.join(KEYS)}")


# Knobs whose default comes from the benchmark's protocol (BenchmarkSpec.protocol in esacl/data/core.py).
PROTOCOL_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "buffer_size",
    "minibatch_size",
    "width",
    "removal_every",
    "removal_until",
    "tdm_every",
    "class_order",
)
# Knobs whose default a method family's tuning chose per benchmark (`knob(..., tuned=untuned default)`).
TUNED_KEYS = tuple(f.name for f in fields(RunConfig) if f.metadata["tuned"] is not None)
# Their untuned values (`knob(..., tuned=)`): what a benchmark without a tuned value uses, and what a run
# written before a knob existed did.
UNTUNED = {f.name: f.metadata["tuned"] for f in fields(RunConfig) if f.name in TUNED_KEYS}


def tuned_defaults(benchmark: str, method: str) -> dict:
    """The tuned knobs' defaults for `method` on `benchmark`: its families' tuned values
    (`BenchmarkSpec.tuned`, the sparsifier's family before the base learner's), else the untuned ones."""
    from .data import BENCHMARKS

    values = dict(UNTUNED)
    for family in reversed(families(method)):
        values.update(BENCHMARKS[benchmark].tuned.get(family, {}))
    return values


def resolve(cfg: RunConfig) -> tuple[RunConfig, list[str]]:
    """Fill every `None` protocol knob from the benchmark, every `None` tuned knob from its tuned values for
    the method's families (`tuned_defaults`), and `sparsity` from the method (a dense method refuses one
    above 0); returns the config and the filled keys."""
    from .data import BENCHMARKS

    protocol, tuned = BENCHMARKS[cfg.benchmark].protocol, tuned_defaults(cfg.benchmark, cfg.method)
    values = {k: protocol[k] for k in PROTOCOL_KEYS if getattr(cfg, k) is None}
    values |= {k: tuned[k] for k in TUNED_KEYS if getattr(cfg, k) is None}
    if cfg.sparsity is None:
        values["sparsity"] = 0.9 if PRESETS[cfg.method].sparse else 0.0
    elif cfg.sparsity > 0 and not PRESETS[cfg.method].sparse:  # the dense/sparse rule: here alone
        raise UserError(f"method '{cfg.method}' is dense: config key 'sparsity' must be 0, got {cfg.sparsity}")
    return dataclasses.replace(cfg, **values), list(values)


# The CPU intra-op thread count of every run that sets none: one, whatever the machine's load or core count,
# so that a result is a function of its config and seed (CPU results change in their last digits with the
# count). Throughput comes from running several runs at once, each in its own process.
CANONICAL_THREADS = 1


def resolve_speed(cfg: RunConfig, device_type: str) -> tuple[RunConfig, list[str]]:
    """Fill the speed knobs left at None for the device the run trains on; returns the config and the
    filled keys. On a CPU: `threads` the canonical count, `channels_last` where the benchmark's backbone
    was measured faster with it (`BenchmarkSpec.cpu_channels_last`). On a GPU: the process's threads,
    `channels_last` off."""
    from .data import BENCHMARKS

    values = {}
    if cfg.threads is None and device_type == "cpu":
        values["threads"] = CANONICAL_THREADS
    if cfg.channels_last is None:
        values["channels_last"] = device_type == "cpu" and BENCHMARKS[cfg.benchmark].cpu_channels_last
    return dataclasses.replace(cfg, **values), list(values)
