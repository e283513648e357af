"""Checks of user-supplied values, written once and used wherever a value enters (models, pipelines, Trainer).

Each returns the value in its canonical type or raises :class:`~mindram.errors.ConfigError` (a ``ValueError``)
with one line naming the argument, the value and what was expected.
"""
import math
import numbers
import re

import numpy as np

from ..errors import ConfigError


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def is_sha256(value):
    """Whether ``value`` is a sha256 digest as hex: 64 lowercase hex digits."""
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


def is_int(value):
    """Whether ``value`` is an integer (Python's or numpy's), not a bool."""
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Integral)


def check_positive_int(value, name, allow_none=False):
    """``value`` as an int >= 1 (``None`` passes through when ``allow_none``)."""
    if value is None and allow_none:
        return None
    if not is_int(value) or value < 1:
        expected = "None or a positive int" if allow_none else "a positive int"
        raise ConfigError(f"{name}: expected {expected}, got {value!r}")
    return int(value)


def check_int(value, name, minimum=0):
    """``value`` as an int >= ``minimum``."""
    if not is_int(value) or value < minimum:
        raise ConfigError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def check_top_k(value, name="top_k"):
    """``top_k``: ``None`` (keep every result) or a positive int."""
    return check_positive_int(value, name, allow_none=True)


def check_batch_size(value, name="batch_size"):
    """A batch size: a positive int."""
    return check_positive_int(value, name)


def check_threshold(value, name="threshold"):
    """``value`` as a float after checking that it is a number in [0, 1] (not NaN, not a bool)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name}: expected a number in [0, 1], got {value!r} ({type(value).__name__})")
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}: expected a number in [0, 1], got {value!r}")
    return float(value)


def check_number(value, name, low=None, high=None, low_open=False, high_open=False):
    """``value`` as a float after checking that it is a finite real number (not a bool) within the bounds given:
    ``low``/``high`` inclusive, or exclusive with ``low_open``/``high_open``."""
    if low is not None and high is not None:
        expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        expected = f"a finite number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        expected = f"a finite number {'<' if high_open else '<='} {high:g}"
    else:
        expected = "a finite number"
    number = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if (not number or not math.isfinite(value)
            or (low is not None and (value <= low if low_open else value < low))
            or (high is not None and (value >= high if high_open else value > high))):
        raise ConfigError(f"{name}: expected {expected}, got {value!r}")
    return float(value)
