"""The scorer loop: consume a batch -> validate -> features -> score the batch -> produce.

Offsets are committed only for records whose Score (or dead letter) the broker acknowledged,
so a crash or rebalance can repeat scores but never skip one (at-least-once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import repeat
from operator import length_hint

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from core import transaction_fields as tx_field
from core.codec import DecodeError
from core.codec_compiled import CARD, CATEGORY, COUNTRY, MERCHANT, TX_ID, configure_numba
from core.codec_compiled import warm_up as warm_up_parser
from core.features import FeatureBatch, FeatureBuilder
from core.features_compiled import warm_up
from core.label_state import LabelState
from core.model import build_pipeline
from core.model_compiled import CompiledModel
from core.score_encode import ScoreEncoder
from core.score_encode_compiled import ScoreWriter, round_features
from core.shadow import ShadowModels
from core.snapshot import Snapshot, empty_label_state, label_state_of
from core.vocabulary import Vocabulary
from infra.config import Settings
from infra.delivery import Delivery, is_permanent
from infra.dlq import dead_letter
from infra.gc_tuning import quiet_gc
from infra.kafka import make_consumer, make_producer
from infra.metrics import Metrics
from infra.model_updates import ModelWatcher
from scorer.decoded import DecodedRecords, build_features
from scorer.offsets import Batch, OffsetTracker

log = logging.getLogger(__name__)

DLQ_LOG_EVERY_S = 10.0
# The fields a Score carries for the trainer's label-fed state, in the writer's order.
_ENTITY_FIELDS = [MERCHANT, CATEGORY, COUNTRY]
_ERROR = Message.error
_drain: partial[deque[object]] = partial(deque, maxlen=0)  # runs an iterator to its end at C speed
_PARTITION = Message.partition


@dataclass
class ServingModel:
    """The model in use. Replaced as a whole (one reference swap) when a new version loads."""

    compiled: CompiledModel
    loaded_at: float = field(default_factory=time.time)
    # When the model was trained (snapshot time); the untrained start model counts from start.
    trained_at: float = field(default_factory=time.time)
    # Challengers shadow-scoring every batch (`core.shadow`), if the snapshot carries any.
    shadow: ShadowModels | None = None
    # The label-fed state learned with the weights (the label-fed features read it).
    labels: LabelState = field(default_factory=LabelState)


@dataclass
class ScoredRun:
    """The Score records of one partition's run, ready to produce."""

    keys: list[bytes]
    values: list[bytes]
    flagged: int
    scored_at: float
    event_ts: np.ndarray


@dataclass
class PreparedBatch:
    """A consumed batch, scored: what the loop thread produces and tracks."""

    positions: dict[tuple[str, int], int]  # next offset per partition, once all is delivered
    size: int  # records to deliver: Scores and dead letters
    dead: list[tuple[Message, DecodeError]]
    scored: list[ScoredRun] = field(default_factory=list)


class Scorer:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.cfg = settings.scorer
        self.topics = settings.topics
        self.serving = ServingModel(
            CompiledModel.from_pipeline(build_pipeline(settings.model), 0),
            labels=empty_label_state(settings.model),
        )
        self.builders: dict[int, FeatureBuilder] = {}
        self.categories = Vocabulary("merchant_category")
        self.channels = Vocabulary("channel")
        self.tracker = OffsetTracker()
        self.writer = ScoreWriter(self.cfg.reasons)
        self.encoder = ScoreEncoder(self.cfg.reasons)  # for batches the writer cannot take
        self.scored = 0
        # perf_counter() when the first batch arrived (benchmarks time from here).
        self.first_batch_at: float | None = None
        # Evictions of stores already dropped (revoked partitions) stay counted.
        self._evicted_dropped = 0
        self._evicted_reported = 0
        self._stop = threading.Event()
        self.producer: Producer = make_producer(settings, "scorer producer")
        # A record that can never be delivered is dropped and counted settled: commits go on.
        self.delivery = Delivery(self.producer, metrics, settle=OffsetTracker.delivered)
        self.consumer: Consumer = make_consumer(
            settings, self.cfg.group_id, "scorer consumer", on_lag=metrics.set_lag
        )
        self.watcher = ModelWatcher(settings, self._load_snapshot, metrics=metrics)
        metrics.model_version.set(0)
        metrics.model_age.set_function(lambda: time.time() - self.serving.trained_at)
        # Dead letters are logged as a summary at most every DLQ_LOG_EVERY_S, not per record.
        self._dlq_counts: dict[str, int] = {}
        self._dlq_logged_at = 0.0

    # -- model -------------------------------------------------------------------------------

    def _load_snapshot(self, snapshot: Snapshot) -> None:
        compiled = CompiledModel.from_pipeline(snapshot.load_model(), snapshot.version)
        shadow = ShadowModels.from_snapshot(snapshot) if self.cfg.shadow else None
        labels = label_state_of(snapshot, self.settings.model)
        # One swap: weights and label state change together.
        self.serving = ServingModel(
            compiled, trained_at=snapshot.created_at.timestamp(), shadow=shadow, labels=labels
        )
        self.metrics.model_version.set(snapshot.version)
        if snapshot.last_label_at is not None and snapshot.origin == "trainer":
            delay = time.time() - snapshot.last_label_at
            self.metrics.label_to_serving.observe(max(delay, 0.0))
        log.info("model v%d loaded (%d labels learned)", snapshot.version, snapshot.labels_learned)

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self, model_wait_s: float = 10.0) -> None:
        self.metrics.state.state("compiling")  # loads the cached kernels (`fraudstream warm-up`)
        configure_numba()
        warm_up()
        warm_up_parser()
        self.writer.warm_up()
        self.metrics.state.state("loading_model")
        self.watcher.start()
        if not self.watcher.ready.wait(model_wait_s):
            log.warning(
                "model-updates not read within %.0f s; scoring with v0 meanwhile", model_wait_s
            )
        self.consumer.subscribe(
            [self.topics.transactions],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.metrics.state.state("joining_group")
        log.info("scorer consuming %s as group %s", self.topics.transactions, self.cfg.group_id)
        quiet_gc()
        try:
            while not self._stop.is_set():
                self._step()
        finally:
            self._shutdown()

    def _step(self) -> None:
        # Back-pressure: while too many scores wait for acknowledgement, stop consuming.
        if self.tracker.in_flight >= self.cfg.max_in_flight:
            self.producer.poll(0.05)
            self.delivery.retry_due()
            self._commit_ready()
            return
        msgs = self.consumer.consume(self.cfg.batch_size, self.cfg.poll_timeout_s)
        if msgs:
            self._process(msgs)
        self.producer.poll(0)
        self.delivery.retry_due()
        self._commit_ready()

    def _shutdown(self) -> None:
        self.metrics.state.state("stopping")
        log.info("scorer stopping: flushing scores and committing offsets")
        try:
            self.producer.flush(30)
            self._commit_ready(asynchronous=False)
        finally:
            self.consumer.close()
            self.watcher.stop()
        log.info("scorer stopped after %d scores", self.scored)

    # -- rebalance ---------------------------------------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            # Per-card state is rebuilt from the stream for partitions that move here.
            self.builders.setdefault(
                tp.partition,
                FeatureBuilder(self.cfg.max_cards, self.categories, self.channels),
            )
        self.metrics.state.state("running")
        log.info("assigned %s", _describe(partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Finish what was consumed from these partitions before another member takes them.
        self.producer.flush(30)
        self._commit_ready(asynchronous=False)
        self._drop(partitions)
        log.info("revoked %s", _describe(partitions))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop(partitions)
        log.warning("lost %s", _describe(partitions))

    def _drop(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            # Another member reports this partition's lag from now on.
            try:
                self.metrics.consumer_lag.remove(self.cfg.group_id, tp.topic, str(tp.partition))
            except KeyError:
                pass
            builder = self.builders.pop(tp.partition, None)
            if builder is not None:
                self._evicted_dropped += builder.store.evicted

    # -- the hot path ------------------------------------------------------------------------

    def _process(self, msgs: list[Message]) -> None:
        """Score a batch and produce its Scores, on this thread."""
        if self.first_batch_at is None:
            self.first_batch_at = time.perf_counter()
        self._send(self._prepare(msgs))

    def _prepare(self, msgs: list[Message]) -> PreparedBatch:
        """Everything but Kafka: decode, features, scores, Score records, on this thread (a
        second thread gains nothing: both would mostly wait for the GIL)."""
        runs = _partition_runs(msgs)
        decoded = [(p, DecodedRecords(run)) for p, run in runs.items()]
        prepared = PreparedBatch(
            positions={(run[-1].topic(), p): run[-1].offset() + 1 for p, run in runs.items()},
            size=sum(len(run) for run in runs.values()),
            dead=[d for _, records in decoded for d in records.dead],
        )
        serving = self.serving
        for partition, records in decoded:
            if not len(records):
                continue
            builder = self.builders.get(partition)
            if builder is None:  # a record from a partition assigned before our callback ran
                builder = self.builders.setdefault(
                    partition, FeatureBuilder(self.cfg.max_cards, self.categories, self.channels)
                )
            builder.labels = serving.labels
            batch = build_features(builder, records)
            # Features rounded to the 6 decimals the Score carries, so scored == logged; a
            # batch with a value that cannot be written so goes the slower shortest-form way.
            fixed = round_features(batch.dense)
            probs = serving.compiled.predict_proba(batch)
            prepared.scored.append(self._write(records, batch, fixed, probs, serving))
        return prepared

    def _send(self, prepared: PreparedBatch) -> None:
        if not prepared.positions:
            return
        on_delivery = self.tracker.open(prepared.positions, prepared.size, self._delivery_failed)
        for msg, exc in prepared.dead:
            self._dead_letter(msg, exc, on_delivery)
        for scored in prepared.scored:
            self._produce(scored, on_delivery)
        self._update_card_metrics()

    def _update_card_metrics(self) -> None:
        stores = [b.store for b in self.builders.values()]
        self.metrics.cards_tracked.set(sum(len(s) for s in stores))
        evicted = sum(s.evicted for s in stores) + self._evicted_dropped
        if evicted > self._evicted_reported:
            self.metrics.cards_evicted.inc(evicted - self._evicted_reported)
            self._evicted_reported = evicted

    def _write(
        self,
        records: DecodedRecords,
        batch: FeatureBatch,
        fixed: bool,
        probs: np.ndarray,
        serving: ServingModel,
    ) -> ScoredRun:
        threshold = self.cfg.threshold
        compiled = serving.compiled
        now = datetime.now(UTC)
        contrib = None
        if self.cfg.reasons:
            contrib = compiled.scaled(batch.dense) * compiled.weight
        shadow = None
        if serving.shadow is not None:
            # A diverged challenger (non-finite scores) is left out: JSON has no NaN.
            shadow = {
                name: col for name, col in serving.shadow.scores(batch).items()
                if np.isfinite(col).all()
            }  # fmt: skip
        version = compiled.version
        if fixed:
            onehot = batch.onehot if batch.onehot is not None else batch.sparse
            spans = records.spans
            values = self.writer.write_spans(
                records.arena, spans[:, TX_ID, :], spans[:, CARD, :], records.time_text,
                records.time_len, probs, threshold, version, now, batch.dense, onehot,
                contrib, compiled.sparse, shadow, spans[:, _ENTITY_FIELDS, :],
            )  # fmt: skip
        else:  # rare (a feature too large for 6 fixed decimals): the reference encoder
            txs = records.transactions()
            reasons = (
                self.encoder.reason_columns(contrib, batch.sparse, compiled.sparse)
                if contrib is not None
                else None
            )
            values = self.encoder.encode(
                list(map(tx_field.TRANSACTION_ID, txs)), list(map(tx_field.CARD_ID, txs)),
                list(map(tx_field.TIMESTAMP, txs)), probs, threshold, version, now, batch.dense,
                batch.sparse, reasons, shadow,
                (
                    list(map(tx_field.MERCHANT_ID, txs)), list(map(tx_field.CATEGORY, txs)),
                    list(map(tx_field.COUNTRY, txs)),
                ),
            )  # fmt: skip
        return ScoredRun(
            keys=records.keys(),
            values=values,
            flagged=int((probs >= threshold).sum()),
            scored_at=now.timestamp(),
            event_ts=records.ts,
        )

    def _produce(self, scored: ScoredRun, on_delivery: Batch) -> None:
        topic = self.topics.scores
        produce = self.producer.produce
        start = 0
        while True:
            values = iter(scored.values[start:] if start else scored.values)
            keys = scored.keys[start:] if start else scored.keys
            try:
                # One C-level loop of positional calls (partition -1: the partitioner's) rather
                # than a Python loop: the call is made once per record.
                _drain(map(produce, repeat(topic), values, keys, repeat(-1), repeat(on_delivery)))
                break
            except BufferError:
                # Local queue full: the record that did not fit was the last taken from
                # `values`. Serve deliveries until there is room (back-pressure), then resume.
                start = len(scored.values) - length_hint(values) - 1
                self.producer.poll(0.1)
            except KafkaException as exc:
                # That record was refused at once (too large, say): dropped if it never can be
                # delivered, else retried after a back-off; either way the rest go on.
                i = len(scored.values) - length_hint(values) - 1
                err: KafkaError = exc.args[0]
                if is_permanent(err):
                    self.delivery.drop(topic, err, on_delivery)
                else:
                    self.delivery.retry_later(
                        topic, scored.values[i], scored.keys[i], None, on_delivery, err
                    )
                start = i + 1
                if start >= len(scored.values):
                    break
        n = len(scored.values)
        self.scored += n
        self.metrics.scored.inc(n)
        self.metrics.flagged.inc(scored.flagged)
        self.metrics.fraud_rate_window.add(n, scored.flagged, scored.scored_at)
        self.metrics.score_latency.observe_many(np.maximum(scored.scored_at - scored.event_ts, 0.0))

    def _dead_letter(self, msg: Message, exc: DecodeError, on_delivery: Batch) -> None:
        topic = self.topics.transactions_dlq
        key, value, headers = dead_letter(msg, exc.reason, exc.detail)
        self.delivery.produce(topic, value, key, headers, on_delivery)
        self.metrics.dlq.labels(msg.topic(), exc.reason).inc()
        log.debug("dead letter %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), exc)
        self._dlq_counts[exc.reason] = self._dlq_counts.get(exc.reason, 0) + 1
        now = time.monotonic()
        if now - self._dlq_logged_at >= DLQ_LOG_EVERY_S:
            summary = ", ".join(f"{r}={n}" for r, n in sorted(self._dlq_counts.items()))
            log.warning(
                "dead letters to %s: %s (last: %s[%d]@%d: %s)",
                topic,
                summary,
                msg.topic(),
                msg.partition(),
                msg.offset(),
                exc,
            )
            self._dlq_counts.clear()
            self._dlq_logged_at = now

    def _delivery_failed(self, batch: Batch, err: KafkaError, msg: Message) -> None:
        # The producer already retried until message.timeout.ms. A retriable error: produced
        # again after a back-off, the batch uncommitted until then; a permanent one: dropped,
        # counted and settled (fraudstream_produce_errors_total), so commits go on.
        self.delivery.failed(err, msg, batch)

    def _commit_ready(self, asynchronous: bool = True) -> None:
        ready = self.tracker.ready()
        if not ready:
            return
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        offsets = [TopicPartition(t, p, off) for (t, p), off in ready.items() if (t, p) in owned]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=asynchronous)  # type: ignore[call-overload]
        except Exception as exc:  # noqa: BLE001  a failed commit only means records are repeated
            log.warning("offset commit failed: %s", exc)


def _partition_runs(msgs: list[Message]) -> dict[int, list[Message]]:
    """The records of each partition, in offset order; errors are logged and dropped."""
    if any(map(_ERROR, msgs)):
        for msg in msgs:
            err = msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error: %s", err.str())
        msgs = [m for m in msgs if m.error() is None]
    if not msgs:
        return {}
    parts = list(map(_PARTITION, msgs))
    if parts.count(parts[0]) == len(parts):
        return {parts[0]: msgs}
    runs: dict[int, list[Message]] = {}
    for p, msg in zip(parts, msgs, strict=True):
        run = runs.get(p)
        if run is None:
            run = runs[p] = []
        run.append(msg)
    return runs


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
