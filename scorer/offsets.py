"""Which input offsets may be committed: only those whose outputs the broker acknowledged."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

# (topic, partition) -> next offset to read
Positions = dict[tuple[str, int], int]


@dataclass
class _Batch:
    pending: int
    positions: Positions
    failed: bool = False


@dataclass
class OffsetTracker:
    """Batches in consume order; a batch's offsets become committable once every output it
    produced is delivered, and only after all earlier batches are (so commits never skip)."""

    _batches: deque[tuple[int, _Batch]] = field(default_factory=deque)
    _by_id: dict[int, _Batch] = field(default_factory=dict)
    _next_id: int = 0
    in_flight: int = 0

    def open(self, positions: Positions, outputs: int) -> int:
        batch_id = self._next_id
        self._next_id += 1
        batch = _Batch(outputs, positions)
        self._batches.append((batch_id, batch))
        self._by_id[batch_id] = batch
        self.in_flight += outputs
        return batch_id

    def delivered(self, batch_id: int) -> None:
        batch = self._by_id[batch_id]
        batch.pending -= 1
        self.in_flight -= 1

    def ready(self) -> Positions:
        """Pop the completed prefix of batches; returns the highest position per partition."""
        out: Positions = {}
        while self._batches and self._batches[0][1].pending <= 0:
            batch_id, batch = self._batches.popleft()
            del self._by_id[batch_id]
            for tp, pos in batch.positions.items():
                if pos > out.get(tp, -1):
                    out[tp] = pos
        return out

    def __len__(self) -> int:
        return len(self._batches)
