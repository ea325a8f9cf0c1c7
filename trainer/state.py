"""The trainer's training state, without a broker: which transactions to learn, from which
offsets a restart must resume, and when a snapshot is due.

`TrainingState` is fed records already read and decoded: a score's transaction id, raw
bytes, event time and (partition, offset); a label's id, verdict, trust rank, timestamp and
(partition, offset). It answers with decisions, and the Kafka loop (trainer/run.py) applies
them:

- `add_score`, `add_label`, `mature`: transactions joined (or matured) to learn now;
- `already_learned`: a transaction the snapshot resumed from had learned: skip it;
- `offsets`: per partition, where a restart resumes and what was processed, for a snapshot;
- `catching_up`: still re-reading what the resumed snapshot had processed (no snapshot yet);
- `snapshot_due`: enough labels learned, or enough time passed, since the last snapshot.

Restarts learn each label exactly once: a snapshot records, per partition, the offset up to
which records were processed and the lower offset to resume from (the oldest transaction the
join buffer still holds or remembers). After a restart, a transaction whose two halves lie
below the processed offsets was learned before it, and a score below them whose window had
ended by the stored watermark had matured before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from core.snapshot import Offsets
from infra.config import TrainerSettings
from trainer.join import Joined, Joiner
from trainer.maturation import MAX_FUTURE_US, wall_clock_us


class TrainingState:
    """Join, maturation, watermark, resume offsets and snapshot timing for one trainer.

    `clock`: monotonic seconds for snapshot timing; `wall_clock`: microseconds since the
    epoch, the bound on believable event times (a broken clock's event time far in the
    future must not advance the watermark).
    """

    def __init__(
        self,
        cfg: TrainerSettings,
        scores_topic: str,
        labels_topic: str,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], int] = wall_clock_us,
    ) -> None:
        self.scores_topic = scores_topic
        self.labels_topic = labels_topic
        self.clock = clock
        self.wall_clock = wall_clock
        self.snapshot_every_labels = cfg.snapshot_every_labels
        self.snapshot_every_s = cfg.snapshot_every_s
        self.maturation_us = round(cfg.maturation_s * 1_000_000)
        self.joiner = Joiner(cfg.join_buffer_size, cfg.join_ttl_s, self.maturation_us)
        # An admitted label needs nothing of the state but the join buffer: the transaction to
        # learn if its score was waiting (or a late or overriding label for one already learned).
        self.add_label = self.joiner.add_label
        # Stream time: the newest believable score event time seen (microseconds), and the one
        # stored in the snapshot resumed from (what had matured before the restart).
        self.watermark_us: int | None = None
        self.restored_watermark_us: int | None = None
        self._labels_caught_up = False  # see maturation_watermark
        # Next offset to read per (topic, partition): everything below was processed.
        self.positions: dict[tuple[str, int], int] = {}
        # From the snapshot resumed from: records below these were processed before the restart.
        self.restored_processed: Offsets = {}
        self.restored_resume: Offsets = {}
        self.since_snapshot = 0  # transactions learned since the last snapshot
        self.last_snapshot = clock()

    # -- restart -----------------------------------------------------------------------------

    def resume_from(
        self, processed: Offsets, resume: Offsets, watermark_us: int | None = None
    ) -> None:
        """The offsets and watermark of the snapshot the trainer resumed from."""
        self.restored_processed = processed
        self.restored_resume = resume
        if watermark_us is not None:
            self.restored_watermark_us = self.watermark_us = watermark_us

    def resume_offset(self, topic: str, partition: int) -> int | None:
        """Where to start reading a newly assigned partition; None: the group's position."""
        return self.restored_resume.get(topic, {}).get(str(partition))

    def catching_up(self) -> bool:
        """Still re-reading records that the snapshot resumed from had processed.

        A snapshot now would record processed offsets below the restored ones, and after
        another restart pairs learned before the first one would count as new: learned twice.
        """
        for topic, parts in self.restored_processed.items():
            for key, done in parts.items():
                start = self.restored_resume.get(topic, {}).get(key, done)
                if self.positions.get((topic, int(key)), start) < done:
                    return True
        return False

    def already_learned(self, joined: Joined) -> bool:
        """Both halves were read before the snapshot resumed from: learned back then.
        (A matured transaction has no label half; see `matured_before` for those.)"""
        done = self.restored_processed
        if not done or joined.label_at is None:  # (nothing restored: nothing learned before)
            return False
        s_part, s_off = joined.score_at
        l_part, l_off = joined.label_at
        return s_off < done.get(self.scores_topic, {}).get(str(s_part), -1) and l_off < done.get(
            self.labels_topic, {}
        ).get(str(l_part), -1)

    def matured_before(self, partition: int, offset: int, event_us: int) -> bool:
        """A re-read score that the snapshot resumed from had already matured: it was read
        then (below the processed offset) and its window ended by the watermark stored then."""
        restored = self.restored_watermark_us
        if restored is None or event_us + self.maturation_us > restored:
            return False
        done = self.restored_processed.get(self.scores_topic, {}).get(str(partition), -1)
        return offset < done

    # -- records -----------------------------------------------------------------------------

    def read(self, topic: str, partition: int, offset: int) -> None:
        """A record was read (whatever becomes of it): a restart need not read it again."""
        self.positions[(topic, partition)] = offset + 1

    def add_score(
        self, tid: str, raw: bytes, now: float, partition: int, offset: int, event_us: int = 0
    ) -> Joined | None:
        """A Score: the transaction to learn if its label was waiting. With maturation on,
        `event_us` (its event time) moves the watermark and schedules its maturation."""
        if not self.maturation_us:
            return self.joiner.add_score(tid, raw, now, partition, offset)
        if event_us <= self.wall_clock() + MAX_FUTURE_US and (
            self.watermark_us is None or event_us > self.watermark_us
        ):
            self.watermark_us = event_us
        return self.joiner.add_score(
            tid,
            raw,
            now,
            partition,
            offset,
            event_us,
            self.matured_before(partition, offset, event_us),
        )

    def mature(self, now: float) -> list[Joined]:
        """Scores whose maturation window the watermark has passed: to learn as legitimate.
        Called after every score read, so what has matured is a function of what was read:
        a snapshot's watermark says exactly which scores it had matured."""
        if not self.maturation_us or self.watermark_us is None:
            return []
        return self.joiner.mature(self.maturation_watermark(), now)

    def maturation_watermark(self) -> int:
        """The watermark maturation may use now.

        After a restart the two topics are re-read in whatever interleaving the fetches give.
        Labels the restored snapshot had read were all known before anything matured past its
        watermark in the first run; until they are re-read, nothing matures past it here
        either, or a score could mature before its re-read label and that label then count
        as late (a second learning).
        """
        wm = self.watermark_us
        restored = self.restored_watermark_us
        assert wm is not None
        if restored is None or wm <= restored or self._labels_caught_up:
            return wm
        topic = self.labels_topic
        for key, done in self.restored_processed.get(topic, {}).items():
            start = self.restored_resume.get(topic, {}).get(key, done)
            if self.positions.get((topic, int(key)), start) < done:
                return restored
        self._labels_caught_up = True
        return wm

    def expire(self, now: float) -> None:
        """Drop buffered halves older than the join TTL (`now`: the clock records carry)."""
        self.joiner.expire(now)

    # -- snapshots ---------------------------------------------------------------------------

    def learned(self) -> None:
        """One transaction was learned: it counts towards the next snapshot."""
        self.since_snapshot += 1

    def snapshot_due(self) -> bool:
        if self.since_snapshot >= self.snapshot_every_labels:
            return True
        return (
            self.since_snapshot > 0 and self.clock() - self.last_snapshot >= self.snapshot_every_s
        )

    def snapshot_taken(self) -> None:
        """A snapshot was published, or held back: the count and the timer start over."""
        self.since_snapshot = 0
        self.last_snapshot = self.clock()

    def snapshot_now(self) -> None:
        """The next snapshot is due at once (an adopted rollback is published right away)."""
        self.since_snapshot = max(self.since_snapshot, 1)
        self.last_snapshot = float("-inf")

    def offsets(self) -> tuple[Offsets, Offsets]:
        """(resume, processed) per topic and partition, for a snapshot: a restart reads from
        `resume` on and treats what lies below `processed` as learned before."""
        processed: Offsets = {}
        for (topic, partition), pos in self.positions.items():
            processed.setdefault(topic, {})[str(partition)] = pos
        # Resume where the oldest still-unjoined record sits, so the buffer is rebuilt.
        resume: Offsets = {t: dict(p) for t, p in processed.items()}
        j = self.joiner
        for topic, mins in (
            (self.scores_topic, j.scores.min_offsets()),
            (self.labels_topic, j.labels.min_offsets()),
            # With maturation on: both halves of every remembered transaction, so a restart
            # re-reads them and neither matures a joined score nor misses a late label.
            (self.scores_topic, j.score_pins.mins()),
            (self.labels_topic, j.label_pins.mins()),
        ):
            for partition, offset in mins.items():
                parts = resume.setdefault(topic, {})
                key = str(partition)
                parts[key] = min(parts.get(key, offset), offset)
        # Partitions not read since the restart keep the offsets they resumed from.
        for topic, parts in self.restored_resume.items():
            for key, offset in parts.items():
                resume.setdefault(topic, {}).setdefault(key, offset)
        for topic, parts in self.restored_processed.items():
            for key, offset in parts.items():
                processed.setdefault(topic, {}).setdefault(key, offset)
        return resume, processed
