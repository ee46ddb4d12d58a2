"""Knobs: each field's type, bounds and choices checked in one place, one-line errors."""

import math
from dataclasses import dataclass, fields

import pytest

from esacl.errors import UserError
from esacl.knobs import Section, check_value, in_interval, knob, parse_string, renamed, type_name


@dataclass(frozen=True)
class Toy(Section):
    rate: float = knob(0.1, "a rate", interval="(0, 1]")
    steps: int | None = knob(None, "steps", interval="[1, inf)", tuned=5)
    mode: str = knob("soft", "a mode", choices=lambda: ["hard", "soft"])
    on: bool = knob(False, "a switch")


FIELDS = {f.name: f for f in fields(Toy)}


@pytest.mark.parametrize(
    "value, interval, inside",
    [
        (0.0, "[0, 1)", True),
        (1.0, "[0, 1)", False),
        (0.0, "(0, 1]", False),
        (1.0, "(0, 1]", True),
        (1e9, "[1, inf)", True),
        (math.nan, "[0, inf)", False),
    ],
)
def test_intervals_hold_their_open_and_closed_ends(value, interval, inside):
    assert in_interval(value, interval) is inside


def test_values_are_checked_against_type_bounds_and_choices():
    assert check_value(FIELDS["rate"], 1) == 1.0 and isinstance(check_value(FIELDS["rate"], 1), float)
    assert check_value(FIELDS["steps"], None) is None  # optional
    with pytest.raises(UserError, match=r"'rate' must be in \(0, 1\], got 0"):
        check_value(FIELDS["rate"], 0.0)
    with pytest.raises(UserError, match="'steps' expects int or None, got True"):
        check_value(FIELDS["steps"], True)  # a bool is not an int here
    with pytest.raises(UserError, match="'mode' must be one of: hard, soft; got 'sofft' \\(did you mean 'soft'\\?\\)"):
        check_value(FIELDS["mode"], "sofft")
    with pytest.raises(UserError, match="'on' expects bool, got None"):
        check_value(FIELDS["on"], None)


def test_command_line_strings_become_the_fields_types():
    assert parse_string(FIELDS["rate"], "0.5") == 0.5
    assert parse_string(FIELDS["steps"], "none") is None and parse_string(FIELDS["steps"], "3") == 3
    assert parse_string(FIELDS["on"], "yes") is True and parse_string(FIELDS["on"], "off") is False
    with pytest.raises(UserError, match="'on' expects bool, got 'maybe'"):
        parse_string(FIELDS["on"], "maybe")
    with pytest.raises(UserError, match="'steps' expects int or None, got '2.5'"):
        parse_string(FIELDS["steps"], "2.5")
    assert type_name(FIELDS["steps"].type) == "int or None"


def test_a_tuned_knob_says_its_untuned_default_and_a_section_reads_its_own_keys():
    assert "untuned: 5" in FIELDS["steps"].metadata["help"] and FIELDS["steps"].metadata["tuned"] == 5

    class Config:  # stands in for a RunConfig: every key, this section's among them
        rate, steps, mode, on, other = 0.2, 3, "hard", True, "ignored"

    assert Toy.of(Config) == Toy(rate=0.2, steps=3, mode="hard", on=True)


def test_keys_renamed_since_run_directories_were_first_written_read_with_todays_names():
    assert renamed({"alpha": 0.5, "beta": 1.0, "seed": 0}) == {"derpp_alpha": 0.5, "derpp_beta": 1.0, "seed": 0}
