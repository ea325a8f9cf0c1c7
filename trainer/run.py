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
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from core.codec import DecodeError
from core.codec_msgspec import decode_label_fast, decode_score_fields, features_error
from core.learner_compiled import FusedModel
from core.model import build_pipeline, upgrade_pipeline
from core.snapshot import (
    Offsets,
    Snapshot,
    empty_label_state,
    encode_snapshot,
    label_state_of,
    make_snapshot,
)
from infra.config import Settings
from infra.delivery import Delivery
from infra.dlq import dead_letter
from infra.envelope import envelope_error
from infra.gc_tuning import quiet_gc
from infra.kafka import make_consumer, make_producer
from infra.metrics import Metrics
from infra.model_updates import read_latest_snapshot
from infra.signing import require_signing_key
from infra.topics import SNAPSHOT_MAX_BYTES
from trainer.join import Joined, Joiner
from trainer.label_trust import JUDGING_RANK, LabelGate
from trainer.lifecycle import Arena, Guardrails, RollbackWatcher, TrainerLifecycle
from trainer.maturation import (
    MAX_FUTURE_US,
    WATERMARK_KEY,
    ScoreFetcher,
    event_time_us,
    wall_clock_us,
)
from trainer.quality import RollingQuality
from trainer.tracking import MlflowLogger

log = logging.getLogger(__name__)

_TID_PREFIX = b'{"transaction_id":"'
# A Score is a few hundred bytes; its ids come from a transaction of at most 64 KiB. Larger
# records are not Scores, and the join buffer must not hold them.
MAX_SCORE_BYTES = 256 * 1024
SNAPSHOT_FAILURE_LOG_S = 60.0


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
        # What the model knows from labels beyond its weights: shipped with them.
        self.label_state = empty_label_state(settings.model)
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
        # Who may teach the model (trainer/label_trust.py); refusals counted by (source, reason).
        self.gate = LabelGate(settings.labels)
        self._refused: dict[tuple[str, str], Any] = {}
        self._dead_letters_dropped = 0
        self._dropped_logged_at = float("-inf")
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
        self._snapshot_failure_logged = -SNAPSHOT_FAILURE_LOG_S
        self._evictions_reported: dict[tuple[str, str], int] = {}
        self._stop = threading.Event()
        # When the first batch of records was handed to `_handle` (perf_counter; benchmarks).
        self.first_record_at: float | None = None
        # Model lifecycle (trainer/lifecycle.py): publish only sane snapshots; adopt rollbacks.
        # The private key snapshots are signed with (ConfigError without one): first, so a
        # trainer without it stops before connecting anywhere.
        self.key = require_signing_key(settings, "the trainer")
        self.guardrails = Guardrails(settings)
        self.rollbacks = RollbackWatcher(settings, metrics)
        self.arena = Arena(settings)
        if mlflow_logger is not None:
            mlflow_logger.metrics = metrics
        self.producer: Producer = make_producer(
            settings, "trainer producer", **{"message.max.bytes": SNAPSHOT_MAX_BYTES}
        )
        # Dead letters that can never be delivered are dropped and counted; others retried.
        self.delivery = Delivery(self.producer, metrics)
        # Feature names learned so far (bounded: core.codec_msgspec.MAX_MODEL_FEATURES).
        self.feature_names: set[str] = set()
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
        self.label_state = label_state_of(snapshot, self.settings.model)
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
        if self.fused.learner is not None:  # the restored model's names count to the bound
            self.feature_names.update(self.fused.learner.keys)
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
                self.delivery.retry_due()
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
        refused = envelope_error(msg)
        if refused is not None:  # a key or headers over their limits: nothing else is read
            if topic == self.topics.labels:
                self._dead_letter(msg, refused)
            else:
                self.metrics.dlq.labels(topic, refused.reason).inc()
            return
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
        if len(raw) > MAX_SCORE_BYTES:
            self.metrics.dlq.labels(msg.topic(), "too_large").inc()
            return None
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
            self._dead_letter(msg, exc)
            return None
        self._read_unreported[label.is_fraud] += 1
        ts_type, ts_ms = msg.timestamp()
        time_us = ts_ms * 1000 if ts_type != TIMESTAMP_NOT_AVAILABLE and ts_ms > 0 else 0
        verdict = self.gate.admit(label.source, time_us)
        if verdict.reason is not None:
            self._refuse(msg, verdict.source, verdict.reason)
            return None
        return self.joiner.add_label(
            label.transaction_id,
            label.is_fraud,
            now,
            msg.partition(),
            msg.offset(),
            time_us,
            verdict.rank,
        )

    def _dead_letter(self, msg: Message, exc: DecodeError) -> None:
        key, value, headers = dead_letter(msg, exc.reason, exc.detail)
        self.delivery.produce(self.topics.labels_dlq, value, key, headers, self.delivery.callback)
        self.metrics.dlq.labels(msg.topic(), exc.reason).inc()

    def _refuse(self, msg: Message, source: str, reason: str) -> None:
        """A label not learned because of its source: counted, and dead-lettered (it can be
        replayed once its source is configured). It never enters the join buffer."""
        counter = self._refused.get((source, reason))
        if counter is None:  # bounded: LabelGate caps the source names
            counter = self._refused[(source, reason)] = self.metrics.labels_refused.labels(
                source, reason
            )
        counter.inc()
        if not self.settings.labels.dead_letter_refused:
            return
        key, value, headers = dead_letter(msg, reason, f"source {source}")
        for attempt in range(2):
            try:
                self.producer.produce(
                    self.topics.labels_dlq, value, key, headers=headers,
                    on_delivery=self.delivery.callback,
                )  # fmt: skip
            except BufferError:
                # A flood fills the producer's queue faster than the broker takes it: serve
                # the delivery callbacks once, then let this dead letter go (the refusal is
                # counted above). Never wait here: a flood must not slow the trainer down.
                if attempt == 0:
                    self.producer.poll(0)
                    continue
            except KafkaException as exc:
                log.debug("dead letter for a refused label not sent: %s", exc)
            else:
                self.metrics.dlq.labels(msg.topic(), reason).inc()
                return
            break
        self._dead_letters_dropped += 1
        now = time.monotonic()
        if now - self._dropped_logged_at >= 60.0:
            self._dropped_logged_at = now
            log.warning(
                "%d refused labels not dead-lettered so far (producer queue full): counted "
                "in fraudstream_labels_refused_total only",
                self._dead_letters_dropped,
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
        if joined.kind == "override":
            self._override(joined)
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
        if self._fit(replace(joined, score_raw=raw), correction=True):
            self.label_counts["late"] = self.label_counts.get("late", 0) + 1
            self.metrics.late_labels.labels("honoured").inc()

    def _override(self, joined: Joined) -> None:
        """A label from a higher-trust source contradicts the label learned for this
        transaction (an investigator's verdict after a customer's report, a chargeback).

        The earlier update is not undone (SGD cannot unlearn exactly). The Score is re-read
        from the scores topic and learned once more, with the overriding label and its usual
        weight; the transaction's label is the overriding one from now on (a later label of
        lower trust is a conflict). The residual of the earlier step stays in the model: small
        when the earlier label called a missed fraud legitimate (its step was proportional to
        the small fraud probability), larger for a false fraud label (fraud weight). Counted
        as `corrected`, or `unmatched` when the Score is gone.
        """
        raw = self.fetcher.fetch(*joined.score_at)
        if raw is None:
            log.warning(
                "overriding label for %s: its score %s[%d]@%d is gone; not learned",
                joined.transaction_id,
                self.topics.scores,
                *joined.score_at,
            )
            self.metrics.label_overrides.labels("unmatched").inc()
            return
        if self._fit(replace(joined, score_raw=raw), correction=True):
            self.label_counts["overridden"] = self.label_counts.get("overridden", 0) + 1
            self.metrics.label_overrides.labels("corrected").inc()

    def _fit(self, joined: Joined, correction: bool = False) -> bool:
        """Evaluate, then learn one joined transaction. False: the Score was unusable. A
        `correction` (late or overriding label) turns the transaction's earlier label in the
        label-fed state into this one instead of counting a second label."""
        raw = joined.score_raw or b""
        fields = decode_score_fields(raw)
        if fields is not None:  # numbers only: the compiled learner
            features, served, event_time = fields.features, fields.score, fields.event_time
            entities = (fields.merchant_id, fields.merchant_category, fields.country)
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
            entities = (
                record.get("merchant_id"),
                record.get("merchant_category"),
                record.get("country"),
            )
            learn = self.fused.learn_any  # River's own path (bools, say)
        refused = features_error(features, self.feature_names)
        if refused is not None:  # not what a scorer writes: never reaches the model
            self.metrics.dlq.labels(self.topics.scores, refused).inc()
            return False
        y = joined.is_fraud
        # Progressive validation: the model's probability before it learns the label.
        # Matured transactions count too: they are most of the real negatives.
        predicted = learn(features, y, self.arena.fraud_weight if y else 1.0)
        self.quality.update(y, predicted)
        # Only labels from trusted sources (and matured transactions) judge candidate models.
        if joined.trust >= JUDGING_RANK:
            self.guardrails.observe(features, y, served, predicted)
        self.label_counts["fraud" if y else "legit"] += 1
        self.arena.learn(features, y)
        event_us = joined.event_us or event_time_us(event_time)
        if event_us:
            self._observe_label_state(entities, y, event_us, correction)
        self.labels_learned += 1
        self.last_label_at = joined.label_arrived
        self._since_snapshot += 1
        self._learned_unreported += 1  # the counter is bumped once per loop turn
        if joined.label_us and event_us:
            self._lags.append(max(0.0, (joined.label_us - event_us) / 1e6))
        return True

    def _observe_label_state(
        self, entities: tuple[Any, Any, Any], y: bool, event_us: int, correction: bool
    ) -> None:
        """Feed one learned label to the label-fed state the next snapshot ships (on the same
        path as learning: exactly once, restarts included)."""
        if event_us > wall_clock_us() + MAX_FUTURE_US:  # would pin the state in the future
            return
        merchant, category, country = (v if isinstance(v, str) else None for v in entities)
        self.label_state.observe(merchant, category, country, y, event_us / 1e6, correction)

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
            self.guardrails.check(self.pipeline, self.fused.predict_many)
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
                label_state=self.label_state.to_data(),
                # Challengers too: a restarted trainer goes on with them trained.
                **self.arena.snapshot_fields(),
            )
            # Not waited for: learning goes on while the broker acknowledges (or is down).
            try:
                self.producer.produce(
                    self.topics.model_updates,
                    encode_snapshot(snap),
                    self.settings.model.name.encode(),
                    on_delivery=lambda err, _msg, snap=snap: self._published(err, snap),
                )
            except (BufferError, KafkaException) as exc:
                # Refused at once (too large, queue full): as a failed delivery, the next
                # snapshot supersedes this one.
                err = exc.args[0] if isinstance(exc, KafkaException) else None
                self._published(err or KafkaError(KafkaError._QUEUE_FULL), snap)
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
            # A later snapshot supersedes this one: nothing to retry (counted; one log line
            # per SNAPSHOT_FAILURE_LOG_S while it goes on).
            self.metrics.produce_errors.labels(
                self.topics.model_updates, err.name(), "dropped"
            ).inc()
            now = time.monotonic()
            if now - self._snapshot_failure_logged >= SNAPSHOT_FAILURE_LOG_S:
                log.warning("snapshot v%d not published: %s", snap.version, err.str())
                self._snapshot_failure_logged = now
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
            # Labelled (explicit or late) over resolved (labelled or matured) transactions;
            # an override re-learns a resolved transaction: in neither.
            matured, late = self.label_counts.get("matured", 0), self.label_counts.get("late", 0)
            overridden = self.label_counts.get("overridden", 0)
            resolved = learned - late - overridden
            if resolved > 0:
                self.metrics.label_coverage.set((learned - matured - overridden) / resolved)
        for name, table in self.label_state.tables.items():
            self.metrics.label_state_values.labels(name).set(len(table))
            self.metrics.label_state_evicted.labels(name).set(table.evicted)
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
        for outcome, total in (("confirmed", j.confirming_labels), ("replaced", j.replaced_labels)):
            seen = self._evictions_reported.get(("override", outcome), 0)
            if total > seen:
                self.metrics.label_overrides.labels(outcome).inc(total - seen)
                self._evictions_reported[("override", outcome)] = total
        for side, buffer in (("score", self.joiner.scores), ("label", self.joiner.labels)):
            for cause, total in (
                ("full", buffer.evicted_full),
                ("expired", buffer.evicted_expired),
            ):
                seen = self._evictions_reported.get((side, cause), 0)
                if total > seen:
                    self.metrics.join_evicted.labels(side, cause).inc(total - seen)
                    self._evictions_reported[(side, cause)] = total
