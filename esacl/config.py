"""RunConfig: every knob of a run in one validated place.

Built from a dict (notebook parameters), from CLI strings, or directly. Every mistake is a
`UserError` whose message is one line naming the key and what is allowed. Knobs left at `None`
take the benchmark's protocol default (`resolve`), and the run records which ones did.
"""
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field, fields


class UserError(Exception):
    """A mistake in what the user asked for: shown as one line, never as a traceback."""


def knob(default, help, *, interval=None, choices=None):
    """A config field with its help text and its allowed values.

    interval: "[lo, hi)" style bounds (inf allowed); choices: a callable returning the valid names.
    """
    return field(default=default, metadata=dict(help=help, interval=interval, choices=choices))


def _method_names():
    from .methods import PRESETS
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
    seed: int = knob(0, "seeds every RNG: python, numpy, torch, class order, buffer", interval="[0, inf)")
    n_tasks: int | None = knob(None, "train on the first N tasks only (default: all)", interval="[1, inf)")
    epochs: int | None = knob(None, "epochs per task", interval="[1, inf)")
    batch_size: int | None = knob(None, "stream minibatch size", interval="[1, inf)")
    lr: float | None = knob(None, "SGD learning rate (no momentum, no weight decay, constant)", interval="(0, inf)")
    buffer_size: int | None = knob(None, "replay buffer size (reservoir)", interval="[1, inf)")
    minibatch_size: int | None = knob(None, "replay minibatch size", interval="[1, inf)")
    alpha: float = knob(0.1, "DER++ logit-distillation weight", interval="[0, inf)")
    beta: float = knob(0.5, "DER++ replay cross-entropy weight", interval="[0, inf)")
    ewc_lambda: float = knob(10.0, "online EWC penalty weight", interval="[0, inf)")
    ewc_gamma: float = knob(1.0, "online EWC decay of the old Fisher", interval="[0, 1]")
    sparsity: float = knob(0.0, "target sparsity of the prunable layers (sparse methods only)", interval="[0, 1)")
    class_order: str = knob("seeded", "class order: 'seeded' (a permutation drawn from the seed) or 'natural'",
                            choices=lambda: ["natural", "seeded"])
    width: int | None = knob(None, "backbone width (filters of the first layer)", interval="[1, inf)")
    device: str = knob("auto", "'auto' (cuda if present), 'cpu', 'cuda' or 'cuda:N'")
    data_root: str | None = knob(None, "folder holding the datasets (default: $ESACL_DATA)")
    out: str = knob("runs", "parent folder of the run directory")
    name: str | None = knob(None, "run directory name (default: benchmark-method-sSEED, made unique)")
    progress: bool = knob(True, "show progress bars")

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            object.__setattr__(self, f.name, _check_value(f, value))
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise UserError(f"config key 'device' must be auto, cpu, cuda or cuda:N; got {self.device!r}")

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


def _field(key: str) -> dataclasses.Field:
    for f in fields(RunConfig):
        if f.name == key:
            return f
    near = difflib.get_close_matches(key, KEYS, n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    raise UserError(f"unknown config key '{key}'{hint}; valid keys: {', '.join(KEYS)}")


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
        near = difflib.get_close_matches(value, names, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise UserError(f"config key '{f.name}' must be one of: {', '.join(names)}; got {value!r}{hint}")
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
PROTOCOL_KEYS = ("epochs", "batch_size", "lr", "buffer_size", "minibatch_size", "width")


def resolve(cfg: RunConfig, protocol: dict) -> tuple[RunConfig, list[str]]:
    """Fill every `None` protocol knob from the benchmark; returns the config and the filled keys."""
    filled = [k for k in PROTOCOL_KEYS if getattr(cfg, k) is None]
    return dataclasses.replace(cfg, **{k: protocol[k] for k in filled}), filled
