"""Knobs: a config field with its help text and allowed values, and a component's own section of them.

Each component declares the knobs it reads as a `Section` beside its code (SAM in `steps.py`,
pruning in `prune.py`, each learner's own under its prefix in `learners.py` and `co2l.py`, ...);
`config.RunConfig` is all of them together, the flat `key=value` form that command lines,
notebooks and sweeps speak. Values are checked here: every mistake is a one-line `UserError`.
"""

import dataclasses
import math
import types
import typing
from dataclasses import field, fields

from .errors import UserError, did_you_mean


# Keys renamed since run directories were first written: their config.json is read with today's names.
RENAMED = {"alpha": "derpp_alpha", "beta": "derpp_beta"}


def renamed(values: dict) -> dict:
    """A config dict as any earlier version saved it, with today's key names."""
    return {RENAMED.get(key, key): value for key, value in values.items()}


def knob(default, help, *, interval=None, choices=None, tuned=None):
    """A config field with its help text and its allowed values.

    interval: "[lo, hi)" style bounds (inf allowed); choices: a callable returning the valid names.
    tuned: a knob that a method family's tuning chooses per benchmark (benchmarks/tune.py): its default
    is None, filled by `config.resolve` from the benchmark's tuned values for the run's family, else
    this value (the untuned default).
    """
    if tuned is not None:
        help += f" (default: the benchmark's tuned value for the method's family, 'esacl benchmarks'; untuned: {tuned})"
    return field(default=default, metadata=dict(help=help, interval=interval, choices=choices, tuned=tuned))


class Section:
    """Base of a component's knobs: a frozen dataclass of `knob` fields, named as the flat config keys
    (a learner's under its prefix: `derpp_alpha`), so `RunConfig` is the union of the sections."""

    @classmethod
    def of(cls, cfg):
        """This section's values out of a (resolved) RunConfig: what the component reads, typed."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


def base_type(tp):
    """(type, optional) from an annotation like `int | None`."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def type_name(tp) -> str:
    base, optional = base_type(tp)
    return base.__name__ + (" or None" if optional else "")


def parse_string(f: dataclasses.Field, text: str):
    """A command-line string as field `f`'s type ('none' is None where allowed)."""
    base, optional = base_type(f.type)
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
        raise UserError(f"config key '{f.name}' expects {type_name(f.type)}, got {text!r}") from None


def check_value(f: dataclasses.Field, value):
    """`value` if field `f` allows it (an int where a float goes becomes a float), else a UserError."""
    base, optional = base_type(f.type)
    if value is None:
        if optional:
            return None
        raise UserError(f"config key '{f.name}' expects {type_name(f.type)}, got None")
    ok = isinstance(value, base) and not (base is not bool and isinstance(value, bool))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise UserError(f"config key '{f.name}' expects {type_name(f.type)}, got {value!r} ({type(value).__name__})")
    interval = f.metadata["interval"]
    if interval and not in_interval(value, interval):
        raise UserError(f"config key '{f.name}' must be in {interval}, got {value!r}")
    choices = f.metadata["choices"]
    if choices and value not in choices():
        names = choices()
        raise UserError(
            f"config key '{f.name}' must be one of: {', '.join(names)}; got {value!r}{did_you_mean(value, names)}"
        )
    return value


def in_interval(value: float, interval: str) -> bool:
    lo_text, hi_text = interval[1:-1].split(",")
    lo, hi = float(lo_text), float(hi_text)
    if math.isnan(value):
        return False
    above = value >= lo if interval[0] == "[" else value > lo
    below = value <= hi if interval[-1] == "]" else value < hi
    return above and below
