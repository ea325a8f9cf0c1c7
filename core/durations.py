"""Durations as people write them: plain seconds, or a number with a unit (d, h, m, s)."""

from __future__ import annotations

import math

UNITS: dict[str, float] = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
EXAMPLES = "e.g. 90d, 168h, 30m, 45s or plain seconds"


def parse_duration(value: str | float) -> float:
    """Seconds in `value`: a number of seconds, or text such as "90d", "168h", "30m", "45s".

    Raises ValueError naming the text and the accepted forms; NaN and infinities are refused
    (a duration is a finite number of seconds).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r} ({EXAMPLES})")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower()
        scale = 1.0
        if text and text[-1] in UNITS:
            text, scale = text[:-1].strip(), UNITS[text[-1]]
        try:
            seconds = float(text) * scale
        except ValueError:
            raise ValueError(f"not a duration: {value!r} ({EXAMPLES})") from None
    if not math.isfinite(seconds):
        raise ValueError(f"not a duration: {value!r} ({EXAMPLES})")
    return seconds
