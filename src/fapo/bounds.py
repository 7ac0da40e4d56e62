"""Bounded numbers: the one check every numeric setting goes through.

A setting that is infinite, NaN, or so large that it means "never" (a timeout, a cooldown) or overflows
later (a sleep, an int conversion, an exponent) is refused where it is given, with one line naming the
setting and its range. Knows nothing about what the settings mean; imports only the standard library.
"""

from __future__ import annotations

import math
import numbers


def check_number(name: str, value: object, low: float, high: float, *, low_open: bool = False,
                 integer: bool = False) -> None:
    """Raise ValueError unless `value` is a real number (not a bool) in [low, high] ((low, high] with
    `low_open`), finite, and an integer when `integer`. The message names `name` and the range."""
    kind = "an integer" if integer else "a number"
    where = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    ok_type = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
    if not ok_type:
        raise ValueError(f"{name} must be {kind} in {where}, got {value!r}")
    number = float(value) if not integer else value
    if not (isinstance(number, int) or math.isfinite(number)) or not (
            (low < number if low_open else low <= number) and number <= high):
        raise ValueError(f"{name} must be {kind} in {where}, got {value!r}")
