"""A hostile corpus, published by an outside client (kafka-python: pure Python, not librdkafka)
to a running system: one broker, one `fraudstream score`, one `fraudstream train` for the whole
module.

Each attack states what the system does with it (`Attack.outcome`) and the test checks it:
a dead letter with its reason, a drop counted under its reason, a Score, or nothing learned.
Around every attack valid transactions are published; at the end every one of them must have
its Score, both processes must still be the ones started (alive, never restarted), the scorer
must have committed past everything published (no spinning), and the trainer must have
learned exactly the valid labels (no garbage reached the model).
"""

from __future__ import annotations

import base64
import hashlib
import pathlib
import pickle
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from infra.broker import free_port
from infra.config import Settings
from tests.conftest import TEST_SIGNING_KEY, TEST_VERIFY_KEY, isolated_settings, settings_env
from tests.kafka_helpers import fraudstream_process
from tests.records import score_record

pytestmark = pytest.mark.integration

JOIN_BUFFER = 2000  # the trainer's join buffer here: small, so a label flood overflows it
WAIT_S = 60.0

Headers = list[tuple[str, bytes]]


def tx(tid: str, card: str = "card-ok", **fields: Any) -> dict[str, Any]:
    return {
        "transaction_id": tid,
        "card_id": card,
        "amount": 12.5,
        "merchant_category": "grocery",
        "timestamp": "2026-11-22T12:00:00Z",
        **fields,
    }


def js(obj: Any) -> bytes:
    return orjson.dumps(obj)


@dataclass(frozen=True)
class Rec:
    value: bytes | None
    key: bytes | None = b"card-x"
    headers: Headers | None = None
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Attack:
    """Records published to one topic, what the system does with them, and how it is seen.

    expect: ("dlq", reason): each record on the topic's dead-letter topic with that reason;
    ("counted", reason): each dropped and counted in fraudstream_dlq_total{topic,reason} of
    the process reading the topic; ("scored",): each record gets a Score.
    """

    name: str
    topic: str  # a key of Topics: transactions, labels, scores
    records: list[Rec]
    outcome: str
    expect: tuple[str, ...]
    # Labels published after the records (scores attacks: join the bad Score so it is learned).
    labels: list[bytes] = field(default_factory=list)


def _score(tid: str, features: Any, **extra: Any) -> bytes:
    return js(score_record(tid, features, **extra))


def _label(tid: str, is_fraud: bool = True) -> bytes:
    return js({"transaction_id": tid, "is_fraud": is_fraud})


def _nested(depth: int) -> bytes:
    return js(tx("deep"))[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}"


def _fields(n: int) -> bytes:
    return js(tx("wide"))[:-1] + b"," + b",".join(b'"f%d":0' % i for i in range(n)) + b"}"


ATTACKS: list[Attack] = [
    # -- transactions, read by the scorer ---------------------------------------------------
    Attack(
        "key_and_value_near_the_message_limit",
        "transactions",
        [Rec(js(tx("big", note="v" * 490 * 1024)), key=b"k" * 512 * 1024)],
        "dead letter key_too_large (key cut to 4 KiB, the letter fits a message)",
        ("dlq", "key_too_large"),
    ),
    Attack(
        "oversized_key",
        "transactions",
        [Rec(js(tx("k2")), key=b"k" * 2048)],
        "dead letter key_too_large",
        ("dlq", "key_too_large"),
    ),
    Attack(
        "oversized_value",
        "transactions",
        [Rec(js(tx("v2", note="x" * 2_000_000)))],
        "dead letter too_large (value cut to 512 KiB, original.size kept)",
        ("dlq", "too_large"),
    ),
    Attack(
        "many_headers",
        "transactions",
        [Rec(js(tx("h1")), headers=[(f"h{i}", b"v") for i in range(1000)])],
        "dead letter headers_too_large",
        ("dlq", "headers_too_large"),
    ),
    Attack(
        "one_huge_header",
        "transactions",
        [Rec(js(tx("h2")), headers=[("h", b"x" * 200_000)])],
        "dead letter headers_too_large",
        ("dlq", "headers_too_large"),
    ),
    Attack(
        "a_few_small_headers",
        "transactions",
        [Rec(js(tx("h3")), headers=[("trace", b"abc"), ("x", b"")])],
        "scored: headers within limits are ignored",
        ("scored",),
    ),
    Attack(
        "invalid_utf8_key",
        "transactions",
        [Rec(js(tx("u1")), key=b"\xff\xfe\xc3(card")],
        "scored: a key is opaque bytes (copied to the Score's key)",
        ("scored",),
    ),
    Attack(
        "invalid_utf8_in_value",
        "transactions",
        [Rec(js(tx("u2")).replace(b"card-ok", b"card-\xff\xfe"))],
        "dead letter not_json",
        ("dlq", "not_json"),
    ),
    Attack(
        "deep_nesting",
        "transactions",
        [Rec(_nested(20_000))],
        "dead letter not_json (nesting beyond the parser's depth limit)",
        ("dlq", "not_json"),
    ),
    Attack(
        "ten_thousand_fields",
        "transactions",
        [Rec(_fields(10_000))],
        "dead letter too_large (over 64 KiB: refused before parsing)",
        ("dlq", "too_large"),
    ),
    Attack(
        "four_thousand_unknown_fields",
        "transactions",
        [Rec(_fields(4000))],
        "scored: unknown fields are ignored",
        ("scored",),
    ),
    Attack(
        "duplicate_json_keys",
        "transactions",
        [Rec(js(tx("dup"))[:-1] + b',"amount":-5}')],
        "dead letter invalid: the last duplicate wins (amount -5 < 0)",
        ("dlq", "invalid"),
    ),
    Attack(
        "huge_numbers",
        "transactions",
        [
            Rec(js(tx("n1", amount=1e308))),
            Rec(js(tx("n2")).replace(b"12.5", b"1e400")),
            Rec(js(tx("n3")).replace(b"12.5", b"1" + b"0" * 40)),
        ],
        "dead letter invalid (amount > 1e9) or not_json (beyond a double)",
        ("dlq", "invalid|not_json"),
    ),
    Attack(
        "tiny_numbers",
        "transactions",
        [Rec(js(tx("t1", amount=5e-324))), Rec(js(tx("t2")).replace(b"12.5", b"1e-400"))],
        "scored: a denormal or underflowing amount is a valid amount near 0",
        ("scored",),
    ),
    Attack(
        "nan_and_infinity_tokens",
        "transactions",
        [Rec(js(tx(f"nan{i}")).replace(b"12.5", t)) for i, t in enumerate((b"NaN", b"Infinity"))],
        "dead letter invalid or not_json (JSON has no NaN)",
        ("dlq", "invalid|not_json"),
    ),
    Attack(
        "event_timestamps_far_in_the_past_and_future",
        "transactions",
        [
            Rec(js(tx("ts1", card="card-ts1", timestamp="0001-01-01T00:00:00Z"))),
            Rec(js(tx("ts2", card="card-ts2", timestamp="9999-12-31T23:59:59Z"))),
        ],
        "scored: any valid instant is an event time",
        ("scored",),
    ),
    Attack(
        "record_timestamps_far_in_the_past_and_future",
        "transactions",
        [Rec(js(tx("rt1")), timestamp_ms=1), Rec(js(tx("rt2")), timestamp_ms=253_402_300_799_000)],
        "scored: the Kafka record timestamp is not used",
        ("scored",),
    ),
    Attack(
        "wrong_types",
        "transactions",
        [
            Rec(js(tx("w1", amount="12.5"))),
            Rec(js(tx("w2", card_id=123))),
            Rec(js(tx("w4", merchant_category=None))),
        ],
        "dead letter invalid",
        ("dlq", "invalid"),
    ),
    Attack(
        "timestamp_as_a_number",
        "transactions",
        [Rec(js(tx("tn", card="card-tn", timestamp=1700000000)))],
        "scored: a number is taken as Unix time (pydantic's datetime rule)",
        ("scored",),
    ),
    Attack("null_value", "transactions", [Rec(None)], "dead letter empty", ("dlq", "empty")),
    Attack("empty_value", "transactions", [Rec(b"")], "dead letter empty", ("dlq", "empty")),
    Attack(
        "not_an_object",
        "transactions",
        [Rec(b"[1,2,3]"), Rec(b'"a string"'), Rec(b"null")],
        "dead letter not_object",
        ("dlq", "not_object"),
    ),
    Attack(
        "binary_garbage",
        "transactions",
        [Rec(bytes(range(256)) * 4)],
        "dead letter not_json",
        ("dlq", "not_json"),
    ),
    # -- labels, read by the trainer ------------------------------------------------------------
    Attack(
        "label_garbage",
        "labels",
        [Rec(b"\x00garbage", key=b"t"), Rec(b"{", key=b"t")],
        "dead letter on labels.dlq, not_json",
        ("dlq", "not_json"),
    ),
    Attack(
        "label_wrong_types",
        "labels",
        [
            Rec(b'{"transaction_id": "t1", "is_fraud": "yes"}', key=b"t"),
            Rec(b'{"transaction_id": 5, "is_fraud": true}', key=b"t"),
        ],
        "dead letter on labels.dlq, invalid",
        ("dlq", "invalid"),
    ),
    Attack(
        "label_oversized_key",
        "labels",
        [Rec(_label("lk"), key=b"k" * 4096)],
        "dead letter on labels.dlq, key_too_large",
        ("dlq", "key_too_large"),
    ),
    Attack(
        "label_many_headers",
        "labels",
        [Rec(_label("lh"), key=b"lh", headers=[(f"h{i}", b"v") for i in range(500)])],
        "dead letter on labels.dlq, headers_too_large",
        ("dlq", "headers_too_large"),
    ),
    Attack(
        "label_oversized_value",
        "labels",
        [Rec(js({"transaction_id": "lv", "is_fraud": True, "pad": "x" * 2_000_000}), key=b"lv")],
        "dead letter on labels.dlq, too_large",
        ("dlq", "too_large"),
    ),
    Attack(
        "label_deep_nesting",
        "labels",
        [Rec(_label("ld")[:-1] + b',"x":' + b"[" * 20_000 + b"]" * 20_000 + b"}", key=b"ld")],
        "dead letter on labels.dlq, not_json",
        ("dlq", "not_json"),
    ),
    Attack(
        "label_null_value",
        "labels",
        [Rec(None, key=b"ln")],
        "dead letter on labels.dlq, empty",
        ("dlq", "empty"),
    ),
    # -- scores, read by the trainer (joined with a label, so they would be learned) ----------
    Attack(
        "scores_not_json",
        "scores",
        [Rec(b"\x00\x01 not json")],
        "dropped, counted invalid_score",
        ("counted", "invalid_score"),
    ),
    Attack(
        "scores_oversized_key",
        "scores",
        [Rec(_score("sk", {"amount": 1.0}), key=b"k" * 4096)],
        "dropped, counted key_too_large",
        ("counted", "key_too_large"),
    ),
    Attack(
        "scores_oversized_value",
        "scores",
        [Rec(_score("sv", {"amount": 1.0}, pad="x" * 300_000))],
        "dropped, counted too_large (never buffered)",
        ("counted", "too_large"),
    ),
    Attack(
        "scores_ten_thousand_features",
        "scores",
        [Rec(_score("sf", {f"f{i}": 1.0 for i in range(10_000)}))],
        "joined with its label, then refused before learning: too_many_features",
        ("counted", "too_many_features"),
        labels=[_label("sf")],
    ),
    Attack(
        "scores_huge_feature_value",
        "scores",
        [Rec(_score("sh", {"amount": 1e300}))],
        "joined, refused before learning: feature_too_large",
        ("counted", "feature_too_large"),
        labels=[_label("sh")],
    ),
    Attack(
        "scores_feature_wrong_type",
        "scores",
        [Rec(_score("st", {"amount": "12"})), Rec(_score("sn", {"amount": None}))],
        "joined, refused before learning: feature_not_a_number",
        ("counted", "feature_not_a_number"),
        labels=[_label("st"), _label("sn")],
    ),
    Attack(
        "scores_deep_nesting",
        "scores",
        [Rec(_score("sd", {"amount": 1.0})[:-1] + b',"x":' + b"[" * 20_000 + b"]" * 20_000 + b"}")],
        "joined, refused before learning: invalid_score (nesting beyond the parser's limit)",
        ("counted", "invalid_score"),
        labels=[_label("sd")],
    ),
    Attack(
        "scores_long_feature_name",
        "scores",
        [Rec(_score("sl", {"x" * 10_000: 1.0}))],
        "joined, refused before learning: feature_name_too_long",
        ("counted", "feature_name_too_long"),
        labels=[_label("sl")],
    ),
]


# -- the running system ---------------------------------------------------------------------


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _sum(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
         **labels: str) -> float:  # fmt: skip
    return sum(
        v
        for (n, lbls), v in samples.items()
        if n == name and all(dict(lbls).get(k) == val for k, val in labels.items())
    )


class Collector:
    """Reads the output topics from the start, in the background: Scores by transaction id,
    dead letters by their source (topic, partition, offset)."""

    def __init__(self, settings: Settings) -> None:
        self.topics = settings.topics
        self.scores: dict[str, int] = {}
        self.dead: dict[tuple[str, int, int], dict[str, bytes]] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap,
                "group.id": f"corpus-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
                "fetch.message.max.bytes": 2_000_000,
            }
        )
        parts = []
        for topic in (self.topics.scores, self.topics.transactions_dlq, self.topics.labels_dlq):
            meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
            parts += [TopicPartition(topic, p, 0) for p in meta.partitions]
        self.consumer.assign(parts)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self.consumer.consume(1000, 0.2):
                if msg.error() is not None:
                    continue
                with self.lock:
                    if msg.topic() == self.topics.scores:
                        try:  # (the corpus writes garbage to `scores` too)
                            tid = orjson.loads(msg.value())["transaction_id"]
                        except (orjson.JSONDecodeError, KeyError, TypeError):
                            continue
                        if isinstance(tid, str):
                            self.scores[tid] = self.scores.get(tid, 0) + 1
                    else:
                        h = {k: v for k, v in msg.headers() or []}
                        src = (h["source.topic"].decode(), int(h["source.partition"]),
                               int(h["source.offset"]))  # fmt: skip
                        self.dead[src] = h

    def close(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.consumer.close()


@dataclass
class System:
    settings: Settings
    score: subprocess.Popen[bytes]
    train: subprocess.Popen[bytes]
    score_port: int
    train_port: int
    collector: Collector
    outside: KafkaProducer
    tmp: Path
    valid: list[str] = field(default_factory=list)
    labelled: set[str] = field(default_factory=set)
    published: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset
    pids: tuple[int, int] = (0, 0)
    trainer_snapshot: dict[str, Any] | None = None

    def send(self, topic: str, rec: Rec) -> tuple[int, int]:
        meta = self.outside.send(
            topic, value=rec.value, key=rec.key, headers=rec.headers, timestamp_ms=rec.timestamp_ms
        ).get(timeout=30)
        tp = (topic, meta.partition)
        self.published[tp] = max(self.published.get(tp, 0), meta.offset + 1)
        return meta.partition, meta.offset

    def send_valid(self, n: int = 2) -> None:
        for _ in range(n):
            tid = f"valid-{uuid.uuid4().hex[:12]}"
            self.valid.append(tid)
            self.send(self.settings.topics.transactions, Rec(js(tx(tid, card=tid[-4:]))))

    def label_valid(self) -> int:
        """Label (legitimate) every valid transaction not labelled yet; how many were."""
        todo = [t for t in self.valid if t not in self.labelled]
        for tid in todo:
            self.send(self.settings.topics.labels, Rec(_label(tid, False), key=tid.encode()))
            self.labelled.add(tid)
        return len(todo)

    def wait(self, what: str, cond: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            self.assert_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}")
            time.sleep(0.2)

    def assert_alive(self) -> None:
        assert self.score.poll() is None, "the scorer died"
        assert self.train.poll() is None, "the trainer died"
        assert (self.score.pid, self.train.pid) == self.pids, "a process was restarted"

    def scored(self, tids: list[str]) -> bool:
        with self.collector.lock:
            return all(t in self.collector.scores for t in tids)


@pytest.fixture(scope="module")
def system(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("corpus")
    settings = isolated_settings(
        bootstrap,
        tmp,
        partitions=2,
        trainer={"snapshot_every_s": 1.0},
        # Module-scoped: the per-test key fixture is not active yet.
        snapshot_signing_key=TEST_SIGNING_KEY,
        snapshot_verify_key=TEST_VERIFY_KEY,
    )
    env = settings_env(settings)
    env["FRAUDSTREAM_TRAINER__JOIN_BUFFER_SIZE"] = str(JOIN_BUFFER)
    score_port, train_port = free_port(), free_port()
    outside = KafkaProducer(
        bootstrap_servers=settings.bootstrap, max_request_size=10_000_000, acks="all"
    )
    with (
        fraudstream_process(
            ["score", "--metrics-port", str(score_port)], env, tmp / "score.log"
        ) as score,
        fraudstream_process(
            ["train", "--no-mlflow", "--metrics-port", str(train_port)], env, tmp / "train.log"
        ) as train,
    ):
        collector = Collector(settings)
        sys_ = System(settings, score, train, score_port, train_port, collector, outside, tmp)
        sys_.pids = (score.pid, train.pid)
        sys_.send_valid(4)
        sys_.wait("the first scores", lambda: sys_.scored(sys_.valid), 90)
        try:
            yield sys_
        finally:
            collector.close()
            outside.close()


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_handled_as_stated(system: System, attack: Attack) -> None:
    topic = getattr(system.settings.topics, attack.topic)
    port = system.score_port if attack.topic == "transactions" else system.train_port
    kind = attack.expect[0]
    reasons = attack.expect[1].split("|") if len(attack.expect) > 1 else []
    before = _metrics(port)
    system.send_valid()
    sent = [system.send(topic, rec) for rec in attack.records]
    for raw in attack.labels:
        system.send(system.settings.topics.labels, Rec(raw, key=b"label"))
    system.send_valid()
    c = system.collector

    if kind == "dlq":

        def all_dead() -> bool:
            with c.lock:
                return all((topic, p, o) in c.dead for p, o in sent)

        system.wait(f"{attack.name}: dead letters", all_dead)
        for p, o in sent:
            h = c.dead[(topic, p, o)]
            assert h["error"].decode() in reasons, (attack.name, h["error"], h["error.detail"])
            assert h["error.detail"]
        counted = sum(_sum(_metrics(port), "fraudstream_dlq_total", topic=topic, reason=r) -
                      _sum(before, "fraudstream_dlq_total", topic=topic, reason=r)
                      for r in reasons)  # fmt: skip
        assert counted == len(sent), attack.name
    elif kind == "counted":
        reason = reasons[0]

        def counted() -> bool:
            now = _sum(_metrics(port), "fraudstream_dlq_total", topic=topic, reason=reason)
            return now - _sum(before, "fraudstream_dlq_total", topic=topic, reason=reason) >= len(
                sent
            )

        system.wait(f"{attack.name}: {reason} counted", counted)
    else:
        tids = [orjson.loads(rec.value or b"{}")["transaction_id"] for rec in attack.records]
        system.wait(f"{attack.name}: scores", lambda: system.scored(tids))
    system.wait(f"{attack.name}: the valid transactions around it scored",
                lambda: system.scored(system.valid))  # fmt: skip
    system.assert_alive()


def test_a_label_flood_is_bounded_and_counted(system: System) -> None:
    """Labels for transactions nobody scored: buffered up to trainer.join_buffer_size, the
    oldest then evicted and counted; nothing is learned from them."""
    before = _metrics(system.train_port)
    flood = 3 * JOIN_BUFFER
    for i in range(flood):
        system.outside.send(system.settings.topics.labels, value=_label(f"flood-{i}"), key=b"f")
    system.outside.flush(30)
    system.send_valid()

    def evicted() -> bool:
        m = _metrics(system.train_port)
        name = "fraudstream_join_evicted_total"
        return (
            _sum(m, name, side="label", cause="full")
            - _sum(before, name, side="label", cause="full")
            >= flood - JOIN_BUFFER
        )

    system.wait("label flood evictions counted", evicted)
    m = _metrics(system.train_port)
    assert _sum(m, "fraudstream_join_pending", side="label") <= JOIN_BUFFER
    assert _sum(m, "fraudstream_labels_learned_total") == _sum(
        before, "fraudstream_labels_learned_total"
    )
    system.assert_alive()


# -- model-updates: snapshot attacks ----------------------------------------------------------


class _Touch:
    """A pickle that creates a file when it is loaded: the proof that a snapshot ran code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def _latest_snapshot(system: System) -> dict[str, Any]:
    """A record the trainer published on model-updates, as JSON: the newest one before any
    snapshot attack (later records may be the attacks')."""
    if system.trainer_snapshot is not None:
        return system.trainer_snapshot
    if _sum(_metrics(system.train_port), "fraudstream_snapshots_total") < 1:
        system.wait("valid scored", lambda: system.scored(system.valid))
        system.label_valid()
        system.wait(
            "a snapshot from the trainer",
            lambda: _sum(_metrics(system.train_port), "fraudstream_snapshots_total") >= 1,
        )
    topic = system.settings.topics.model_updates
    consumer = Consumer({"bootstrap.servers": system.settings.bootstrap, "group.id": "x",
                         "enable.auto.commit": False})  # fmt: skip
    consumer.assign([TopicPartition(topic, 0, 0)])
    last = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msgs = consumer.consume(1000, 0.5)
        if not msgs and last is not None:
            break
        for m in msgs:
            if m.error() is None and m.value():
                last = m.value()
    consumer.close()
    assert last is not None
    system.trainer_snapshot = orjson.loads(last)
    assert system.trainer_snapshot["origin"] == "trainer"
    return system.trainer_snapshot


def _with_payload(record: dict[str, Any], marker: Path, **changes: Any) -> bytes:
    """The record carrying a pickle that would create `marker` when unpickled, in the old
    pickled-model format (with a matching checksum), as an attacker would send it."""
    raw = pickle.dumps(_Touch(marker))
    out = {**record, **changes, "format": "river-pickle/1"}
    out["model_b64"] = base64.b64encode(raw).decode()
    out["sha256"] = hashlib.sha256(raw).hexdigest()
    return js(out)


def _serving_version(system: System) -> float:
    return _sum(_metrics(system.score_port), "fraudstream_model_version")


def _refused(system: System) -> float:
    return _sum(_metrics(system.score_port), "fraudstream_snapshots_refused_total")


def _publish_snapshot(system: System, raw: bytes) -> None:
    system.send(
        system.settings.topics.model_updates, Rec(raw, key=system.settings.model.name.encode())
    )


def test_snapshot_garbage_is_refused_and_counted(system: System) -> None:
    before = _refused(system)
    _publish_snapshot(system, b"\x00 not a snapshot")
    _publish_snapshot(system, js({"model_name": system.settings.model.name, "version": "x"}))
    system.wait("refusals counted", lambda: _refused(system) >= before + 2)
    system.assert_alive()


def test_a_replayed_old_snapshot_is_ignored(system: System) -> None:
    record = _latest_snapshot(system)
    system.wait("the scorer serving the trainer's model",
                lambda: _serving_version(system) >= record["version"])  # fmt: skip
    old = {**record, "version": 1}
    _publish_snapshot(system, js(old))
    system.send_valid()
    system.wait("valid scored", lambda: system.scored(system.valid))
    assert _serving_version(system) >= record["version"]
    system.assert_alive()


@pytest.mark.parametrize(
    ("bad", "changes", "step"),
    [("forged", {"signature": None}, 1000), ("tampered", {}, 2000)],
    ids=["forged-unsigned", "tampered-signed"],
)
def test_a_bad_snapshot_runs_no_code_and_is_not_served(
    system: System, bad: str, changes: dict[str, Any], step: int
) -> None:
    """Unsigned, or still carrying the signature of another payload: refused unread."""
    record = _latest_snapshot(system)
    marker = system.tmp / f"{bad}-ran"
    version = int(_serving_version(system)) + step
    before = _refused(system)
    _publish_snapshot(system, _with_payload(record, marker, version=version, **changes))
    system.wait(f"the {bad} snapshot read", lambda: _refused(system) > before or marker.exists()
                or _serving_version(system) == version, 20)  # fmt: skip
    assert not marker.exists(), "a snapshot ran code in the scorer"
    assert _serving_version(system) != version
    system.assert_alive()


def test_a_forged_rollback_runs_no_code_in_the_trainer(system: System) -> None:
    record = _latest_snapshot(system)
    marker = system.tmp / "rollback-ran"
    version = int(_serving_version(system)) + 3000
    _publish_snapshot(
        system, _with_payload(record, marker, version=version, origin="rollback", signature=None)
    )
    deadline = time.monotonic() + 10  # the trainer's rollback watcher reads it in about 1 s
    while time.monotonic() < deadline and not marker.exists():
        time.sleep(0.2)
    assert not marker.exists(), "a rollback snapshot ran code in the trainer"
    system.assert_alive()


def test_a_snapshot_with_an_absurd_version_does_not_freeze_the_scorers(system: System) -> None:
    record = _latest_snapshot(system)
    before = _refused(system)
    _publish_snapshot(system, js({**record, "version": 2**62}))
    system.wait("the absurd version read", lambda: _refused(system) > before
                or _serving_version(system) >= 2**62, 20)  # fmt: skip
    assert _serving_version(system) < 2**62
    system.assert_alive()


# -- the whole run ---------------------------------------------------------------------------


def test_no_crash_no_valid_transaction_without_a_score_and_commits_went_on(system: System) -> None:
    system.send_valid(4)
    system.wait("every valid transaction scored", lambda: system.scored(system.valid))
    # Each valid transaction scored once: no batch was repeated (nothing crashed or rewound).
    with system.collector.lock:
        assert {t: system.collector.scores[t] for t in system.valid} == dict.fromkeys(
            system.valid, 1
        )
    # The scorer committed past everything published to `transactions`: it never spun on a
    # record it could not handle.
    topic = system.settings.topics.transactions
    consumer = Consumer({"bootstrap.servers": system.settings.bootstrap,
                         "group.id": system.settings.scorer.group_id})  # fmt: skip
    want = {p: off for (t, p), off in system.published.items() if t == topic}

    def committed() -> bool:
        got = consumer.committed([TopicPartition(topic, p) for p in want], timeout=10)
        return all(tp.offset >= want[tp.partition] for tp in got)

    try:
        system.wait("the scorer's commits past everything published", committed)
    finally:
        consumer.close()
    # The trainer learns the valid labels, exactly: none of the garbage reached the model.
    learned_before = _sum(_metrics(system.train_port), "fraudstream_labels_learned_total")
    target = learned_before + system.label_valid()
    system.wait(
        "the valid labels learned",
        lambda: _sum(_metrics(system.train_port), "fraudstream_labels_learned_total") >= target,
    )
    assert _sum(_metrics(system.train_port), "fraudstream_labels_learned_total") == target
    system.assert_alive()
