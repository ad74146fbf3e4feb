"""Checks of the public API's number arguments (thresholds, IoUs, sizes), one message style for all.

A numpy scalar (np.float32(0.3)), a 0-d numpy array and a 0-d torch tensor are numbers like Python's.
bool is refused although Python counts it as an int: `box_threshold=True` is a slip, not 1.0. No torch here.
"""

from __future__ import annotations

import math
import numbers


def _scalar(value):
    """A numpy scalar, a 0-d numpy array or a 0-d tensor -> the Python number it holds; anything else as is."""
    if not isinstance(value, (str, bytes)) and getattr(value, "shape", None) == () and hasattr(value, "item"):
        return value.item()
    return value


def _shown(value) -> str:
    return f"{value!r} (a bool, not a number)" if isinstance(_scalar(value), bool) else repr(value)


def unit_interval(name: str, value, *, optional: bool = False) -> float | None:
    """A number in [0, 1] -> float. optional: None passes through (a step that None turns off)."""
    if value is None and optional:
        return None
    number = _scalar(value)
    if isinstance(number, bool) or not isinstance(number, numbers.Real) or not 0.0 <= float(number) <= 1.0:
        off = ", or None to turn it off" if optional else ""
        raise ValueError(f"{name} must be a number between 0 and 1{off}, got {_shown(value)}")
    return float(number)


def whole_number(name: str, value, minimum: int) -> int:
    """An integer >= minimum -> int. A float that is a whole number (50e6) counts; 2.5, NaN and bool do not."""
    number = _scalar(value)
    whole = (not isinstance(number, bool) and isinstance(number, numbers.Real) and math.isfinite(number)
             and float(number).is_integer())
    if not whole or number < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {_shown(value)}")
    return int(number)
