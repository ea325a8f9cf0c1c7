"""CPU time the hypervisor gave to other guests ("steal") while a measurement ran.

On shared virtual machines steal comes and goes, and the same scorer code runs at about half
speed in rounds with 20-40% steal than in rounds with none. Each round
records its steal, so a reader can tell the software's speed from its neighbours'.
"""

from __future__ import annotations

from pathlib import Path

_STAT = Path("/proc/stat")


def _ticks() -> tuple[int, int] | None:
    """(steal, total) CPU ticks since boot over all CPUs; None where /proc/stat is absent."""
    try:
        fields = _STAT.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is in user)
    values = [int(v) for v in fields[1:9]]
    if len(values) < 8:
        return None
    return values[7], sum(values)


class StealMeter:
    """`with StealMeter() as m: ...` then `m.fraction`: steal over the block, 0..1 (None if
    the system does not report it)."""

    def __init__(self) -> None:
        self._start: tuple[int, int] | None = None
        self.fraction: float | None = None

    def __enter__(self) -> StealMeter:
        self._start = _ticks()
        return self

    def __exit__(self, *_: object) -> None:
        end = _ticks()
        if self._start is None or end is None:
            return
        total = end[1] - self._start[1]
        self.fraction = (end[0] - self._start[0]) / total if total > 0 else 0.0
