"""The trainer: join scores with labels, evaluate, learn, publish snapshots.

It is the single writer of the model. Each snapshot records where to resume every input
partition, and which records it had already processed, so a restarted trainer learns each
label exactly once (see `_already_learned`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np
import orjson
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from infra.config import Settings
from infra.dlq import send_to_dlq
from infra.gc_tuning import quiet_gc
from infra.kafka import make_consumer, make_producer
from infra.metrics import Metrics
from infra.model_updates import read_latest_snapshot
from infra.registry import snapshot_key
from schemas import DecodeError
from schemas.fast import decode_label_fast
from schemas.snapshot import Offsets, Snapshot, encode_snapshot, make_snapshot
from scorer.model import build_pipeline, upgrade_pipeline
from trainer.fast_learner import FusedModel
from trainer.join import Joined, Joiner
from trainer.lifecycle import Arena, Guardrails, RollbackWatcher, TrainerLifecycle
from trainer.maturation import (
    MAX_FUTURE_US,
    WATERMARK_KEY,
    ScoreFetcher,
    event_time_us,
    wall_clock_us,
)
from trainer.quality import RollingQuality
from trainer.score_decode import decode_score_fields
from trainer.tracking import MlflowLogger

log = logging.getLogger(__name__)

_TID_PREFIX = b'{"transaction_id":"'


def _leading_tid(raw: bytes) -> str | None:
    """The transaction id of a Score that starts with it (as the scorer writes them), without
    parsing the rest; None when it does not, or the id has escapes: parse the whole record."""
    if not raw.startswith(_TID_PREFIX):
        return None
    end = raw.find(b'"', len(_TID_PREFIX))
    if end < 0:
        return None
    tid = raw[len(_TID_PREFIX) : end]
    if b"\\" in tid:
        return None
    try:
        return tid.decode()
    except UnicodeDecodeError:
        return None


class Trainer(TrainerLifecycle):
    def __init__(
        self, settings: Settings, metrics: Metrics, mlflow_logger: MlflowLogger | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.cfg = settings.trainer
        self.topics = settings.topics
        self.mlflow = mlflow_logger
        # The champion; `pipeline` is its River object (see the property).
        self.fused = FusedModel(build_pipeline(settings.model))
        self.version = 0
        self.labels_learned = 0
        self.last_label_at: float | None = None
        self.label_counts = {"fraud": 0, "legit": 0}
        # Labels as they really arrive: see trainer/maturation.py and `_mature`.
        self.maturation_us = round(self.cfg.maturation_s * 1_000_000)
        self.joiner = Joiner(self.cfg.join_buffer_size, self.cfg.join_ttl_s, self.maturation_us)
        # Stream time: the newest score event time seen (microseconds), and the one stored in
        # the snapshot we resumed from (what had matured before the restart).
        self.watermark_us: int | None = None
        self.restored_watermark_us: int | None = None
        self._labels_caught_up = False  # see _maturation_watermark
        self._state = "starting"  # fraudstream_process_state
        self.fetcher = ScoreFetcher(settings)
        # Per-record metric updates are batched or resolved once (labels() costs ~2 us).
        self._labels_read = {b: metrics.labels.labels(str(b).lower()) for b in (True, False)}
        self._read_unreported = {True: 0, False: 0}  # reported with the gauges, per loop turn
        self._learned_unreported = 0
        self._lags: list[float] = []
        self.quality = RollingQuality(self.cfg.quality_window, settings.scorer.threshold)
        # Next offset to read per (topic, partition), i.e. everything below was processed.
        self.positions: dict[tuple[str, int], int] = {}
        # From the snapshot we resumed: records below these were processed before the restart.
        self.restored_processed: Offsets = {}
        self.restored_resume: Offsets = {}
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        self._last_mlflow = 0.0
        self._last: Snapshot | None = None
        self._evictions_reported: dict[tuple[str, str], int] = {}
        self._stop = threading.Event()
        # When the first batch of records was handed to `_handle` (perf_counter; benchmarks).
        self.first_record_at: float | None = None
        # Model lifecycle (trainer/lifecycle.py): publish only sane snapshots; adopt rollbacks.
        self.guardrails = Guardrails(settings)
        self.rollbacks = RollbackWatcher(settings)
        self.arena = Arena(settings)
        self.key = snapshot_key(settings)
        if mlflow_logger is not None:
            mlflow_logger.metrics = metrics
        self.producer: Producer = make_producer(settings, "trainer producer")
        self.consumer: Consumer = make_consumer(
            settings,
            self.cfg.group_id,
            "trainer consumer",
            on_lag=metrics.set_lag,
            **{
                "fetch.wait.max.ms": self.cfg.fetch_wait_max_ms,
                # The trainer is one process: eager assignment lets on_assign set positions.
                "partition.assignment.strategy": "range",
            },
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def pipeline(self) -> Any:
        """The champion's River pipeline, with everything learned so far written into it."""
        return self.fused.pipeline

    @pipeline.setter
    def pipeline(self, pipeline: Any) -> None:
        # A restored, rolled back or promoted model: the fused learner takes it over.
        self.fused = FusedModel(pipeline)

    def stop(self) -> None:
        self._stop.set()

    def restore(self) -> None:
        # Warm start: with model-updates empty, the registry champion (needs MLflow).
        warm = self.mlflow is not None and self.settings.registry.warm_start
        snapshot = read_latest_snapshot(self.settings, warm_start=warm)
        if snapshot is None:
            log.info(
                "no snapshot on %s: starting from an untrained model", self.topics.model_updates
            )
            return
        # A model written before the dense-only scaler learns its one-hot keys from now on.
        self.pipeline = upgrade_pipeline(snapshot.load_model())
        self.version = snapshot.version
        self.labels_learned = snapshot.labels_learned
        self.label_counts = {"fraud": 0, "legit": 0, **snapshot.label_counts}
        self.restored_processed = snapshot.processed_offsets
        self.restored_resume = snapshot.resume_offsets
        self.metrics.model_version.set(self.version)
        self._last = snapshot
        self.arena.restored(snapshot.candidate, snapshot.hyperparameters)
        self.arena.restore_challengers(snapshot)
        if snapshot.origin == "registry":
            log.info(
                "warm start: %s is empty; starting from the registry champion (version %s, "
                "snapshot v%d, %d labels learned)",
                self.topics.model_updates,
                snapshot.registry_version,
                snapshot.version,
                self.labels_learned,
            )
            if self.mlflow is not None:
                self.mlflow.tags["warm_start.registry_version"] = str(snapshot.registry_version)
            return
        log.info("resumed from snapshot v%d (%d labels learned)", self.version, self.labels_learned)

    def run(self) -> None:
        self._set_state("loading_model")
        self.restore()
        # The watermark rides in the snapshot's free-form `label_counts` (trainer.maturation).
        restored_watermark = self.label_counts.pop(WATERMARK_KEY, None)
        if restored_watermark is not None:
            self.restored_watermark_us = self.watermark_us = int(restored_watermark)
        self.rollbacks.start(self.version)
        if self.mlflow is not None:
            self.mlflow.start()
        self.consumer.subscribe([self.topics.scores, self.topics.labels], on_assign=self._on_assign)
        self._set_state("joining_group")
        log.info("trainer consuming %s + %s", self.topics.scores, self.topics.labels)
        quiet_gc()
        try:
            while not self._stop.is_set():
                msgs = self.consumer.consume(self.cfg.batch_size, 0.1)
                now = time.time()
                if msgs and self.first_record_at is None:
                    self.first_record_at = time.perf_counter()
                for msg in msgs:
                    self._handle(msg, now)
                if self._state == "catching_up" and not self._catching_up():
                    self._set_state("running")
                self.producer.poll(0)
                self._maybe_snapshot()
        finally:
            self._shutdown()

    def _set_state(self, state: str) -> None:
        self._state = state
        self.metrics.state.state(state)

    def _shutdown(self) -> None:
        self._set_state("stopping")
        log.info("trainer stopping: final snapshot")
        try:
            self._update_gauges()  # reports what the last loop turn learned
            self._stamp_watermark()
            self.snapshot(final=True)
            self.producer.flush(30)
        finally:
            self.consumer.close()
            self.fetcher.close()
            self.rollbacks.stop()
            if self.mlflow is not None:
                self.mlflow.close()
        log.info("trainer stopped at v%d, %d labels learned", self.version, self.labels_learned)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            offset = self.restored_resume.get(tp.topic, {}).get(str(tp.partition))
            if offset is not None:
                tp.offset = offset
        consumer.assign(partitions)
        self._set_state("catching_up" if self._catching_up() else "running")
        log.info(
            "assigned %s",
            ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions),
        )

    # -- records -----------------------------------------------------------------------------

    def _handle(self, msg: Message, now: float) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error: %s", err.str())
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        self.positions[(topic, partition)] = offset + 1
        if topic == self.topics.scores:
            joined = self._score(msg, now)
            if joined is not None:
                self._learn(joined)
            if self.maturation_us and self.watermark_us is not None:
                # Record by record, so what has matured is a function of what was read: a
                # snapshot's watermark says exactly which scores it had matured.
                for matured in self.joiner.mature(self._maturation_watermark(), now):
                    self._learn(matured)
        else:
            joined = self._label(msg, now)
            if joined is not None:
                self._learn(joined)

    def _score(self, msg: Message, now: float) -> Joined | None:
        raw = msg.value() or b""
        if not self.maturation_us:
            # Fast path: our scorer writes the id first; the whole record is parsed (and
            # checked) once, when it is learned.
            tid_fast = _leading_tid(raw)
            if tid_fast is not None:
                return self.joiner.add_score(tid_fast, raw, now, msg.partition(), msg.offset())
        try:
            record = orjson.loads(raw)
            tid = record["transaction_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.metrics.dlq.labels(msg.topic(), "invalid_score").inc()
            return None
        if not isinstance(tid, str):
            self.metrics.dlq.labels(msg.topic(), "invalid_score").inc()
            return None
        if not self.maturation_us:
            return self.joiner.add_score(tid, raw, now, msg.partition(), msg.offset())
        event_us = event_time_us(record.get("event_time"))
        if event_us is None:
            # Without an event time it could never mature: not a usable Score.
            self.metrics.dlq.labels(msg.topic(), "invalid_score").inc()
            return None
        partition, offset = msg.partition(), msg.offset()
        if event_us <= wall_clock_us() + MAX_FUTURE_US and (
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
            self._matured_before(partition, offset, event_us),
        )

    def _maturation_watermark(self) -> int:
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
        topic = self.topics.labels
        for key, done in self.restored_processed.get(topic, {}).items():
            start = self.restored_resume.get(topic, {}).get(key, done)
            if self.positions.get((topic, int(key)), start) < done:
                return restored
        self._labels_caught_up = True
        return wm

    def _matured_before(self, partition: int, offset: int, event_us: int) -> bool:
        """A re-read score that the snapshot we resumed from had already matured: it was read
        then (below the processed offset) and its window ended by the watermark stored then."""
        restored = self.restored_watermark_us
        if restored is None or event_us + self.maturation_us > restored:
            return False
        done = self.restored_processed.get(self.topics.scores, {}).get(str(partition), -1)
        return offset < done

    def _label(self, msg: Message, now: float) -> Joined | None:
        try:
            label = decode_label_fast(msg.value())  # pydantic's rules, msgspec's speed
        except DecodeError as exc:
            send_to_dlq(self.producer, self.topics.labels_dlq, msg, exc.reason, exc.detail)
            self.metrics.dlq.labels(msg.topic(), exc.reason).inc()
            return None
        self._read_unreported[label.is_fraud] += 1
        ts_type, ts_ms = msg.timestamp()
        time_us = ts_ms * 1000 if ts_type != TIMESTAMP_NOT_AVAILABLE and ts_ms > 0 else 0
        return self.joiner.add_label(
            label.transaction_id, label.is_fraud, now, msg.partition(), msg.offset(), time_us
        )

    def _already_learned(self, joined: Joined) -> bool:
        """Both halves were read before the snapshot we resumed from: learned back then.
        (A matured transaction has no label half; see `_matured_before` for those.)"""
        done = self.restored_processed
        if not done or joined.label_at is None:  # (nothing restored: nothing learned before)
            return False
        s_part, s_off = joined.score_at
        l_part, l_off = joined.label_at
        return s_off < done.get(self.topics.scores, {}).get(str(s_part), -1) and l_off < done.get(
            self.topics.labels, {}
        ).get(str(l_part), -1)

    def _learn(self, joined: Joined) -> None:
        if self._already_learned(joined):
            return
        if joined.kind == "late":
            self._late(joined)
            return
        if self._fit(joined) and joined.kind == "matured":
            self.label_counts["matured"] = self.label_counts.get("matured", 0) + 1
            self.metrics.matured.inc()

    def _late(self, joined: Joined) -> None:
        """A label for a transaction already learned as legitimate at maturation.

        A legitimate one confirms it: nothing to learn. A fraud one is honoured: the Score is
        re-read from the scores topic (its serving-time features left memory at maturation)
        and learned once as fraud, with the usual fraud weight. The earlier legitimate update
        is not undone (SGD cannot unlearn exactly); its step was proportional to the fraud
        probability the model gave then, small for the fraud it missed, so learning the fraud
        once nets out close to having learned it as fraud only.
        """
        if not joined.is_fraud:
            self.metrics.late_labels.labels("confirmed").inc()
            return
        raw = joined.score_raw
        if raw is None:
            raw = self.fetcher.fetch(*joined.score_at)
        if raw is None:
            log.warning(
                "late fraud label for %s: its score %s[%d]@%d is gone; not learned",
                joined.transaction_id,
                self.topics.scores,
                *joined.score_at,
            )
            self.metrics.late_labels.labels("unmatched").inc()
            return
        if self._fit(replace(joined, score_raw=raw)):
            self.label_counts["late"] = self.label_counts.get("late", 0) + 1
            self.metrics.late_labels.labels("honoured").inc()

    def _fit(self, joined: Joined) -> bool:
        """Evaluate, then learn one joined transaction. False: the Score was unusable."""
        raw = joined.score_raw or b""
        fields = decode_score_fields(raw)
        if fields is not None:  # numbers only: the compiled learner
            features, served, event_time = fields.features, fields.score, fields.event_time
            learn = self.fused.predict_learn
        else:
            try:
                record = orjson.loads(raw)
                features = record["features"]
                if not isinstance(features, dict):
                    raise TypeError("features is not an object")
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self.metrics.dlq.labels(self.topics.scores, "invalid_score").inc()
                return False
            served, event_time = record.get("score"), record.get("event_time")
            learn = self.fused.learn_any  # River's own path, as before
        y = joined.is_fraud
        # Progressive validation: the model's probability before it learns the label.
        # Matured transactions count too: they are most of the real negatives.
        self.quality.update(y, learn(features, y, self.arena.fraud_weight if y else 1.0))
        self.guardrails.observe(features, y, served)
        self.label_counts["fraud" if y else "legit"] += 1
        self.arena.learn(features, y)
        self.labels_learned += 1
        self.last_label_at = joined.label_arrived
        self._since_snapshot += 1
        self._learned_unreported += 1  # the counter is bumped once per loop turn
        if joined.label_us:
            event_us = joined.event_us or event_time_us(event_time)
            if event_us:
                self._lags.append(max(0.0, (joined.label_us - event_us) / 1e6))
        return True

    # -- snapshots ---------------------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        rollback = self.rollbacks.take()
        if rollback is not None:
            self._adopt(rollback)
        now = time.monotonic()
        due = self._since_snapshot >= self.cfg.snapshot_every_labels or (
            self._since_snapshot > 0 and now - self._last_snapshot >= self.cfg.snapshot_every_s
        )
        self.joiner.expire(time.time())
        self._update_gauges()
        if due:
            self._stamp_watermark()
            self.snapshot()

    def _stamp_watermark(self) -> None:
        """Put the watermark where the snapshot carries it (see WATERMARK_KEY)."""
        if self.watermark_us is not None:
            self.label_counts[WATERMARK_KEY] = self.watermark_us

    def _offsets(self) -> tuple[Offsets, Offsets]:
        processed: Offsets = {}
        for (topic, partition), pos in self.positions.items():
            processed.setdefault(topic, {})[str(partition)] = pos
        # Resume where the oldest still-unjoined record sits, so the buffer is rebuilt.
        resume: Offsets = {t: dict(p) for t, p in processed.items()}
        j = self.joiner
        for topic, mins in (
            (self.topics.scores, j.scores.min_offsets()),
            (self.topics.labels, j.labels.min_offsets()),
            # With maturation on: both halves of every remembered transaction, so a restart
            # re-reads them and neither matures a joined score nor misses a late label.
            (self.topics.scores, j.score_pins.mins()),
            (self.topics.labels, j.label_pins.mins()),
        ):
            for partition, offset in mins.items():
                parts = resume.setdefault(topic, {})
                key = str(partition)
                parts[key] = min(parts.get(key, offset), offset)
        # Partitions not read since the restart keep the offsets they resumed from.
        for source in (self.restored_resume,):
            for topic, parts in source.items():
                for key, offset in parts.items():
                    resume.setdefault(topic, {}).setdefault(key, offset)
        for topic, parts in self.restored_processed.items():
            for key, offset in parts.items():
                processed.setdefault(topic, {}).setdefault(key, offset)
        return resume, processed

    def _catching_up(self) -> bool:
        """Still re-reading records that the snapshot we resumed from had processed.

        A snapshot now would record processed offsets below the restored ones, and after
        another restart pairs learned before the first one would count as new: learned twice.
        """
        for topic, parts in self.restored_processed.items():
            for key, done in parts.items():
                start = self.restored_resume.get(topic, {}).get(key, done)
                if self.positions.get((topic, int(key)), start) < done:
                    return True
        return False

    def snapshot(self, final: bool = False) -> None:
        if self._since_snapshot == 0 and not final:
            return
        if self._catching_up():
            # The restored snapshot stays the latest; a restart repeats the catch-up.
            if final:
                log.info("still re-reading after the restart: no final snapshot")
            return
        if self._since_snapshot:
            self._maybe_promote()
        quality = self.quality.as_dict()
        held = (
            self.guardrails.check(self.pipeline, self.quality, self.fused.predict_many)
            if self._since_snapshot
            else []
        )
        if held:
            self._hold(held)
        elif self._since_snapshot > 0:
            resume, processed = self._offsets()
            self.version += 1
            snap = make_snapshot(
                self.pipeline,
                self.settings.model.name,
                self.version,
                self.labels_learned,
                resume,
                processed,
                quality,
                label_counts=dict(self.label_counts),
                key=self.key,
                candidate=self.arena.champion,
                hyperparameters=self.arena.champion_model.model_dump(),
                last_label_at=self.last_label_at,
                # Challengers too: a restarted trainer goes on with them trained.
                **self.arena.snapshot_fields(),
            )
            # Not waited for: learning goes on while the broker acknowledges (or is down).
            self.producer.produce(
                self.topics.model_updates,
                encode_snapshot(snap),
                self.settings.model.name.encode(),
                on_delivery=lambda err, _msg, snap=snap: self._published(err, snap),
            )
            self.metrics.model_version.set(self.version)
            self._since_snapshot = 0
            self._last_snapshot = time.monotonic()
            self._last = snap
        snap = self._last  # type: ignore[assignment]
        if self.mlflow is not None and snap is not None:
            now = time.monotonic()
            with_model = final or now - self._last_mlflow >= self.settings.trainer.mlflow_every_s
            self.mlflow.submit(snap, self.pipeline, with_model)
            if with_model:
                self._last_mlflow = now

    def _published(self, err: KafkaError | None, snap: Snapshot) -> None:
        if err is not None:
            # A later snapshot supersedes this one: nothing to retry.
            log.warning("snapshot v%d not published: %s", snap.version, err.str())
            return
        # Offsets are committed only once the snapshot that covers them is stored.
        self._commit(snap.resume_offsets)
        self.metrics.snapshots.inc()
        auc = snap.metrics.get("roc_auc")
        log.info(
            "snapshot v%d published (%d labels learned, auc=%s)",
            snap.version,
            snap.labels_learned,
            f"{auc:.3f}" if auc is not None else "n/a",
        )

    def _commit(self, resume: Offsets) -> None:
        offsets = [
            TopicPartition(topic, int(p), off)
            for topic, parts in resume.items()
            for p, off in parts.items()
        ]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except Exception as exc:  # noqa: BLE001  committed offsets only inform lag; the snapshot rules
            log.warning("offset commit failed: %s", exc)

    def _update_gauges(self) -> None:
        unreported = self._read_unreported
        for is_fraud, n in unreported.items():
            if n:
                self._labels_read[is_fraud].inc(n)
                unreported[is_fraud] = 0
        if self._learned_unreported:
            self.metrics.labels_learned.inc(self._learned_unreported)
            self._learned_unreported = 0
        if self._lags:
            self.metrics.label_lag.observe_many(np.asarray(self._lags))
            self._lags.clear()
        q = self.quality.as_dict()
        if "roc_auc" in q:
            self.metrics.model_roc_auc.set(q["roc_auc"])
        if "precision" in q:
            self.metrics.model_precision.set(q["precision"])
        if "recall" in q:
            self.metrics.model_recall.set(q["recall"])
        if "log_loss" in q:
            self.metrics.model_log_loss.set(q["log_loss"])
        learned = self.labels_learned
        if learned:
            # Labelled (explicit or late) over resolved (labelled or matured) transactions.
            matured, late = self.label_counts.get("matured", 0), self.label_counts.get("late", 0)
            resolved = learned - late
            if resolved > 0:
                self.metrics.label_coverage.set((learned - matured) / resolved)
        self.metrics.join_pending.labels("score").set(len(self.joiner.scores))
        self.metrics.join_pending.labels("label").set(len(self.joiner.labels))
        j = self.joiner
        for side, cause, total in (
            ("score", "duplicate", j.duplicate_scores),
            ("label", "duplicate", j.duplicate_labels),
            ("label", "conflict", j.conflicting_labels),
        ):
            seen = self._evictions_reported.get((side, cause), 0)
            if total > seen:
                self.metrics.join_ignored.labels(side, cause).inc(total - seen)
                self._evictions_reported[(side, cause)] = total
        for side, buffer in (("score", self.joiner.scores), ("label", self.joiner.labels)):
            for cause, total in (
                ("full", buffer.evicted_full),
                ("expired", buffer.evicted_expired),
            ):
                seen = self._evictions_reported.get((side, cause), 0)
                if total > seen:
                    self.metrics.join_evicted.labels(side, cause).inc(total - seen)
                    self._evictions_reported[(side, cause)] = total
