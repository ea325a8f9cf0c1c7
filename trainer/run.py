"""The trainer's Kafka loop: read scores and labels, feed the training state, learn what it
says to, publish snapshots.

The decisions are `TrainingState`'s (trainer/state.py: join, maturation, resume offsets,
snapshot timing); the model and its tallies are `Champion`'s (trainer/champion.py). This loop
polls, decodes, applies the state's decisions, and composes the model lifecycle: guardrails
(trainer/guardrails.py), challengers (trainer/arena.py) and rollbacks (trainer/rollback.py).
It is the single writer of the model; each snapshot records where to resume every input
partition and which records it had processed, so a restarted trainer learns each label once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import Counter

from core.codec import DecodeError
from core.codec_msgspec import decode_label_fast
from core.snapshot import Snapshot
from infra.config import Settings
from infra.delivery import Delivery
from infra.envelope import envelope_error
from infra.gc_tuning import quiet_gc
from infra.kafka import make_consumer, make_producer
from infra.metrics import Metrics
from infra.model_updates import read_latest_snapshot
from infra.signing import require_signing_key
from infra.topics import SNAPSHOT_MAX_BYTES
from trainer.arena import arena_of
from trainer.champion import Champion
from trainer.dead_letters import LabelDeadLetters
from trainer.gauges import TrainerGauges
from trainer.guardrails import diverged, guardrails_of
from trainer.join import Joined
from trainer.label_trust import LabelGate
from trainer.publisher import SnapshotPublisher
from trainer.quality import RollingQuality
from trainer.rollback import RollbackWatcher
from trainer.score_fetcher import ScoreFetcher
from trainer.score_key import score_key
from trainer.state import TrainingState
from trainer.tracking import MlflowLogger

log = logging.getLogger(__name__)


class Trainer:
    """One trainer process: `run` until `stop`, then a final snapshot."""

    def __init__(
        self, settings: Settings, metrics: Metrics, mlflow_logger: MlflowLogger | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.cfg = settings.trainer
        self.topics = settings.topics
        self.mlflow = mlflow_logger
        # The private key snapshots are signed with (ConfigError without one): first, so a
        # trainer without it stops before connecting anywhere.
        self.key = require_signing_key(settings, "the trainer")
        if mlflow_logger is not None:
            mlflow_logger.metrics = metrics
        self.state = TrainingState(self.cfg, self.topics.scores, self.topics.labels)
        # Model lifecycle: publish only sane snapshots, contest the champion, adopt rollbacks.
        self.guardrails = guardrails_of(settings, metrics, mlflow_logger)
        self.arena = arena_of(settings, metrics, mlflow_logger)
        self.rollbacks = RollbackWatcher(settings, metrics, mlflow_logger)
        self.champion = Champion(
            settings.model,
            self.cfg.quality_window,
            settings.scorer.threshold,
            self.guardrails,
            self.arena,
        )
        self.fetcher = ScoreFetcher(settings)
        # Who may teach the model (trainer/label_trust.py).
        self.gate = LabelGate(settings.labels)
        self.gauges = TrainerGauges(metrics)
        self._process_state = "starting"  # fraudstream_process_state
        self._stop = threading.Event()
        # When the first batch of records was handed to `_handle` (perf_counter; benchmarks).
        self.first_record_at: float | None = None
        self.producer: Producer = make_producer(
            settings, "trainer producer", **{"message.max.bytes": SNAPSHOT_MAX_BYTES}
        )
        # Dead letters that can never be delivered are dropped and counted; others retried.
        self.delivery = Delivery(self.producer, metrics)
        self.dead_letters = LabelDeadLetters(
            self.producer,
            self.delivery,
            metrics,
            self.topics.labels_dlq,
            settings.labels.dead_letter_refused,
        )
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
        self.publisher = SnapshotPublisher(
            self.producer,
            self.topics.model_updates,
            settings.model.name,
            metrics,
            self.consumer,
            mlflow_logger,
            self.cfg.mlflow_every_s,
        )

    # What callers watch while it runs (benchmarks, tests).

    @property
    def labels_learned(self) -> int:
        return self.champion.labels_learned

    @property
    def version(self) -> int:
        return self.champion.version

    @property
    def pipeline(self) -> Any:
        return self.champion.pipeline

    @property
    def quality(self) -> RollingQuality:
        return self.champion.quality

    # -- lifecycle ---------------------------------------------------------------------------

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
        watermark = self.champion.restore(snapshot)
        self.state.resume_from(snapshot.processed_offsets, snapshot.resume_offsets, watermark)
        self.metrics.model_version.set(snapshot.version)
        self.publisher.last = snapshot
        if snapshot.origin == "registry":
            log.info(
                "warm start: %s is empty; starting from the registry champion (version %s, "
                "snapshot v%d, %d labels learned)",
                self.topics.model_updates,
                snapshot.registry_version,
                snapshot.version,
                snapshot.labels_learned,
            )
            if self.mlflow is not None:
                self.mlflow.tags["warm_start.registry_version"] = str(snapshot.registry_version)
            return
        log.info(
            "resumed from snapshot v%d (%d labels learned)",
            snapshot.version,
            snapshot.labels_learned,
        )

    def run(self) -> None:
        self._set_state("loading_model")
        self.restore()
        self.champion.count_known_features()
        self.rollbacks.start(self.champion.version)
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
                if self._process_state == "catching_up" and not self.state.catching_up():
                    self._set_state("running")
                self.producer.poll(0)
                self.delivery.retry_due()
                self._maybe_snapshot()
        finally:
            self._shutdown()

    def _set_state(self, state: str) -> None:
        self._process_state = state
        self.metrics.state.state(state)

    def _shutdown(self) -> None:
        self._set_state("stopping")
        log.info("trainer stopping: final snapshot")
        try:
            self.gauges.report(self.champion, self.state.joiner)  # the last loop turn's
            self.snapshot(final=True)
            self.producer.flush(30)
        finally:
            self.consumer.close()
            self.fetcher.close()
            self.rollbacks.stop()
            if self.mlflow is not None:
                self.mlflow.close()
        log.info(
            "trainer stopped at v%d, %d labels learned",
            self.champion.version,
            self.champion.labels_learned,
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            offset = self.state.resume_offset(tp.topic, tp.partition)
            if offset is not None:
                tp.offset = offset
        consumer.assign(partitions)
        self._set_state("catching_up" if self.state.catching_up() else "running")
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
        topic = msg.topic()
        state = self.state
        state.read(topic, msg.partition(), msg.offset())
        refused = envelope_error(msg)
        if refused is not None:  # a key or headers over their limits: nothing else is read
            if topic == self.topics.labels:
                self.dead_letters.undecodable(msg, refused)
            else:
                self.metrics.dlq.labels(topic, refused.reason).inc()
            return
        if topic == self.topics.scores:
            joined = self._score(msg, now)
            if joined is not None:
                self._learn(joined)
            if state.maturation_us:
                for matured in state.mature(now):
                    self._learn(matured)
        else:
            joined = self._label(msg, now)
            if joined is not None:
                self._learn(joined)

    def _score(self, msg: Message, now: float) -> Joined | None:
        raw = msg.value() or b""
        key = score_key(raw, self.state.maturation_us > 0)
        if isinstance(key, str):
            self.metrics.dlq.labels(msg.topic(), key).inc()
            return None
        tid, event_us = key
        return self.state.add_score(tid, raw, now, msg.partition(), msg.offset(), event_us)

    def _label(self, msg: Message, now: float) -> Joined | None:
        try:
            label = decode_label_fast(msg.value())  # pydantic's rules, msgspec's speed
        except DecodeError as exc:
            self.dead_letters.undecodable(msg, exc)
            return None
        self.gauges.read_unreported[label.is_fraud] += 1
        ts_type, ts_ms = msg.timestamp()
        time_us = ts_ms * 1000 if ts_type != TIMESTAMP_NOT_AVAILABLE and ts_ms > 0 else 0
        verdict = self.gate.admit(label.source, time_us)
        if verdict.reason is not None:
            self.dead_letters.refused(msg, verdict.source, verdict.reason)
            return None
        return self.state.add_label(
            label.transaction_id,
            label.is_fraud,
            now,
            msg.partition(),
            msg.offset(),
            time_us,
            verdict.rank,
        )

    # -- learning ----------------------------------------------------------------------------

    def _learn(self, joined: Joined) -> None:
        if self.state.already_learned(joined):
            return
        if joined.kind == "late":
            if not joined.is_fraud:
                # A legitimate label confirms a matured transaction: nothing to learn.
                self.metrics.late_labels.labels("confirmed").inc()
                return
            self._relearn(joined, "late fraud label", self.metrics.late_labels, "honoured", "late")
            return
        if joined.kind == "override":
            self._relearn(
                joined, "overriding label", self.metrics.label_overrides, "corrected", "overridden"
            )
            return
        if self._fit(joined) and joined.kind == "matured":
            self.champion.count("matured")
            self.metrics.matured.inc()

    def _relearn(
        self, joined: Joined, what: str, outcomes: Counter, learned: str, kind: str
    ) -> None:
        """Learn a transaction learned before once more, with its new label: a late fraud
        label for one learned as legitimate at maturation, or a higher-trust label that
        contradicts the one learned (an investigator's verdict, a chargeback).

        The earlier update is not undone (SGD cannot unlearn exactly): its step stays in the
        model. It is small when the earlier label called a missed fraud legitimate (the step
        was proportional to the small fraud probability), larger for a false fraud label
        (fraud weight). The Score is re-read from the scores topic when it left memory; when
        it is gone, nothing is learned (`outcomes` "unmatched"). The transaction counts as
        `kind` in the label counts from then on.
        """
        raw = joined.score_raw
        if raw is None:
            raw = self.fetcher.fetch(*joined.score_at)
        if raw is None:
            log.warning(
                "%s for %s: its score %s[%d]@%d is gone; not learned",
                what,
                joined.transaction_id,
                self.topics.scores,
                *joined.score_at,
            )
            outcomes.labels("unmatched").inc()
            return
        if self._fit(replace(joined, score_raw=raw), correction=True):
            self.champion.count(kind)
            outcomes.labels(learned).inc()

    def _fit(self, joined: Joined, correction: bool = False) -> bool:
        refused = self.champion.fit(joined, correction)
        if refused is not None:
            self.metrics.dlq.labels(self.topics.scores, refused).inc()
            return False
        self.state.learned()
        return True

    # -- snapshots ---------------------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        rollback = self.rollbacks.take()
        if rollback is not None:
            self._adopt(rollback)
        due = self.state.snapshot_due()
        self.state.expire(time.time())
        self.gauges.report(self.champion, self.state.joiner)
        if due:
            self.snapshot()

    def _adopt(self, rollback: Snapshot) -> None:
        """An operator rolled back (`fraudstream model rollback`): learn on from that model,
        published at once."""
        try:
            self.champion.adopt(rollback)
        except Exception as exc:  # noqa: BLE001  a record that is not a model must not stop training
            log.warning("rollback v%d not adopted: %s", rollback.version, exc)
            return
        self.state.snapshot_now()
        self.rollbacks.adopted(rollback, self.champion.labels_learned)

    def snapshot(self, final: bool = False) -> None:
        """Publish a snapshot if anything was learned since the last one and the guardrails
        pass; `final`: the one at shutdown (also logs the run with its model)."""
        state, champion = self.state, self.champion
        if state.since_snapshot == 0 and not final:
            return
        if state.catching_up():
            # The restored snapshot stays the latest; a restart repeats the catch-up.
            if final:
                log.info("still re-reading after the restart: no final snapshot")
            return
        if state.since_snapshot and champion.contest():
            self.publisher.log_model_next()
        held = (
            self.guardrails.check(champion.pipeline, champion.fused.predict_many)
            if state.since_snapshot
            else []
        )
        if held:
            self.guardrails.hold(held, champion.labels_learned, champion.version)
            state.snapshot_taken()
            if diverged(held):
                champion.revert(self.publisher.last)
                log.error("non-finite model: reverted to v%d", champion.version)
        elif state.since_snapshot > 0:
            resume, processed = state.offsets()
            snap = champion.snapshot(
                self.settings.model.name, resume, processed, self.key, state.watermark_us
            )
            self.publisher.publish(snap)
            self.metrics.model_version.set(champion.version)
            state.snapshot_taken()
        self.publisher.to_mlflow(champion.pipeline, final)
