"""Numeric settings read from environment variables (limits, download settings), checked the same way."""
import math
import os

from ..errors import ConfigError


def env_number(name, default, kind=int, smallest=1, meaning=""):
    """``$name`` as a ``kind`` (``int`` or ``float``; ``_`` and ``,`` digit separators allowed), read on every
    call; ``default`` when unset or blank. Anything but a finite number >= ``smallest`` is a :class:`ConfigError`
    naming the variable, e.g. ``$MINDRAM_MAX_IMAGE_PIXELS='lots': expected a positive int (pixels per image)``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw.replace("_", "").replace(",", ""))
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < smallest:
        noun = "int" if kind is int else "number"
        wanted = f"a positive {noun}" if smallest == 1 else f"{'an' if kind is int else 'a'} {noun} >= {smallest}"
        raise ConfigError(f"${name}={raw!r}: expected {wanted}{f' ({meaning})' if meaning else ''}")
    return value
