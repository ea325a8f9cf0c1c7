"""Durations as users write them: "30d", "168h", "30m", "45s" or plain seconds."""

from __future__ import annotations

import math

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in `text`; ValueError (naming the text) when it is not a duration >= 0.

    >>> parse_duration("30d"), parse_duration("1.5h"), parse_duration("90")
    (2592000.0, 5400.0, 90.0)
    """
    value = text.strip().lower()
    scale = 1.0
    if value and value[-1] in _UNITS:
        value, scale = value[:-1], _UNITS[value[-1]]
    try:
        seconds = float(value) * scale
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (e.g. 30d, 168h, 30m, 45s, 90)") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and >= 0, got {text!r}")
    return seconds
