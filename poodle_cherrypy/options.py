"""Checking option values, once for the whole package.

The pool, the circuit breaker, the plugin, the config and the request tool
take sizes, seconds and callables; these are the checks they share, so that a
bad value gets the same clear error wherever it is given: a ``TypeError`` for
a value of the wrong type, a ``ValueError`` for one out of range, each
message starting with the option's name and ending with the value.

Nothing here knows of pools, buses or requests.
"""

from __future__ import annotations

import math
from typing import Any, Optional

__all__ = [
    "check_callable",
    "check_optional_seconds",
    "check_seconds",
    "check_size",
    "is_number",
    "is_seconds",
]


def is_number(value: object) -> bool:
    """Whether ``value`` is an int or a float, and not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_seconds(value: object, *, allow_zero: bool = True) -> bool:
    """Whether ``value`` is a number of seconds: a number, not NaN, >= 0 (> 0
    without ``allow_zero``)."""
    if not is_number(value):
        return False
    assert isinstance(value, (int, float))
    return not math.isnan(value) and (value > 0 or (allow_zero and value == 0))


def check_size(name: str, value: object, minimum: int) -> int:
    """``value``, an int (not a bool) of at least ``minimum``, or an error naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def check_seconds(name: str, value: object, *, allow_zero: bool = True) -> float:
    """``value`` as float seconds (>= 0, or > 0 without ``allow_zero``), or an
    error naming ``name``."""
    if not is_number(value):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not is_seconds(value, allow_zero=allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} seconds, got {value!r}")
    return float(value)  # type: ignore[arg-type]  # a number, checked above


def check_optional_seconds(name: str, value: object, *, allow_zero: bool = True) -> Optional[float]:
    """None, or ``value`` checked as by :func:`check_seconds`."""
    return None if value is None else check_seconds(name, value, allow_zero=allow_zero)


def check_callable(name: str, value: object) -> Any:
    """``value`` if it is callable or None, else a ``TypeError`` naming ``name``."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {value!r}")
    return value
