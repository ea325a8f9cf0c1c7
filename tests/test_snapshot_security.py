"""Safe snapshots: a SHA-256 always, an HMAC signature when `FRAUDSTREAM_SNAPSHOT_KEY` is set;
tampered, unsigned (with a key) or incompatible snapshots are refused and counted before
anything is unpickled, and the scorer keeps serving the model it has."""

from __future__ import annotations

import base64
import hashlib
import pickle
import threading
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from infra.config import load_settings
from infra.metrics import Metrics
from infra.model_updates import ModelWatcher
from producer.run import ProduceOptions, run_producer
from schemas.snapshot import (
    FORMAT,
    Snapshot,
    SnapshotError,
    challenger_snapshot,
    decode_snapshot,
    encode_snapshot,
    make_snapshot,
)
from scorer.model import build_pipeline
from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process, read_topic
from tests.test_mlflow_lifecycle import log_count, metric, metrics_port, wait_for
from trainer.tracking import config_params

KEY = b"test-key-not-secret"
UNPICKLED: list[str] = []


def _record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Payload:
    """Unpickling this runs `_record_unpickling`: stands in for a malicious pickle."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_record_unpickling, ("payload ran",))


def _trained(seed: float = 1.0):
    pipeline = build_pipeline()
    pipeline.learn_one({"amount": 100.0 * seed, "hour": 3.0}, True)
    pipeline.learn_one({"amount": 5.0, "hour": 12.0}, False)
    return pipeline


def _snapshot(version: int = 1, key: bytes | None = KEY) -> Snapshot:
    return make_snapshot(
        _trained(),
        "fraudstream-fraud",
        version,
        2,
        {"scores": {"0": 10}},
        {"scores": {"0": 12}},
        {"roc_auc": 0.9},
        label_counts={"fraud": 1, "legit": 1},
        key=key,
    )


def _tamper(snapshot: Snapshot, **fields: object) -> bytes:
    record = orjson.loads(encode_snapshot(snapshot))
    record.update(fields)
    return orjson.dumps(record)


def _evil_model_fields() -> dict[str, str]:
    raw = pickle.dumps(Payload())
    return {"model_b64": base64.b64encode(raw).decode(), "sha256": hashlib.sha256(raw).hexdigest()}


# -- the wire format --------------------------------------------------------------------------


def test_signed_snapshot_round_trips_and_verifies() -> None:
    snap = _snapshot()
    assert snap.signature and len(snap.signature) == 64
    decoded = decode_snapshot(encode_snapshot(snap))
    decoded.verify(KEY)
    decoded.check_compatible()
    assert decoded.load_model()["logreg"].weights == snap.load_model()["logreg"].weights
    assert decoded.library_versions["river"] and decoded.format == FORMAT
    # Without a key the checksum is still checked; the signature cannot be.
    decoded.verify(None)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"version": 99}, "bad_signature"),
        ({"labels_learned": 10_000}, "bad_signature"),
        ({"processed_offsets": {"scores": {"0": 0}}}, "bad_signature"),
        ({"metrics": {"roc_auc": 1.0}}, "bad_signature"),
        ({"signature": None}, "unsigned"),
        ({"signature": "00" * 32}, "bad_signature"),
        # Another model with a matching checksum: the signature covers the checksum.
        ("evil", "bad_signature"),
        # Model bytes altered, checksum not: caught even without a key.
        ({"model_b64": base64.b64encode(b"garbage").decode()}, "checksum"),
    ],
)
def test_tampered_snapshots_are_refused_before_unpickling(fields: object, reason: str) -> None:
    UNPICKLED.clear()
    snap = _snapshot()
    update = _evil_model_fields() if fields == "evil" else fields
    tampered = decode_snapshot(_tamper(snap, **update))  # type: ignore[arg-type]
    with pytest.raises(SnapshotError) as err:
        tampered.verify(KEY)
    assert err.value.reason == reason
    assert not UNPICKLED


def test_a_snapshot_signed_with_another_key_is_refused() -> None:
    snap = decode_snapshot(encode_snapshot(_snapshot(key=b"someone else")))
    with pytest.raises(SnapshotError, match="signature mismatch"):
        snap.verify(KEY)


def test_incompatible_versions_fail_with_one_clear_line() -> None:
    snap = _snapshot()
    older = decode_snapshot(
        _tamper(snap, library_versions={**snap.library_versions, "river": "0.19.0"})
    )
    with pytest.raises(SnapshotError) as err:
        older.load_model()
    message = str(err.value)
    assert err.value.reason == "incompatible" and "\n" not in message
    assert "written with river 0.19.0" in message and "this process has river" in message

    newer = decode_snapshot(_tamper(snap, format="river-pickle/2"))
    with pytest.raises(SnapshotError, match="has format 'river-pickle/2'"):
        newer.load_model()

    unknown = decode_snapshot(_tamper(snap, library_versions={}))
    with pytest.raises(SnapshotError, match="does not say which river version"):
        unknown.load_model()


def test_the_key_is_a_secret_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_SNAPSHOT_KEY", "s3cret")
    settings = load_settings()
    assert settings.snapshot_key is not None
    assert settings.snapshot_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(config_params(settings))
    monkeypatch.setenv("FRAUDSTREAM_SNAPSHOT_KEY", "")
    assert load_settings().snapshot_key is None


# -- the watcher (what the scorer runs) -------------------------------------------------------


def test_watcher_refuses_and_counts_and_keeps_the_model_it_has() -> None:
    settings = load_settings(snapshot_key=KEY.decode(), registry={"warm_start": False})
    metrics = Metrics()
    loaded: list[int] = []
    watcher = ModelWatcher(settings, lambda s: loaded.append(s.version), metrics=metrics)
    name = settings.model.name.encode()

    watcher._handle(name, encode_snapshot(_snapshot(1)))
    UNPICKLED.clear()
    watcher._handle(name, _tamper(_snapshot(2), labels_learned=5))
    watcher._handle(name, encode_snapshot(_snapshot(3, key=None)))
    watcher._handle(name, _tamper(_snapshot(4), **_evil_model_fields()))
    watcher._handle(name, b"{not json")
    assert loaded == [1] and watcher.version == 1
    assert not UNPICKLED
    counts = {
        reason: metrics.registry.get_sample_value(
            "fraudstream_snapshots_refused_total", {"reason": reason}
        )
        for reason in ("bad_signature", "unsigned", "invalid")
    }
    assert counts == {"bad_signature": 2.0, "unsigned": 1.0, "invalid": 1.0}
    assert watcher.rejected == 4
    # A valid one after all that is taken.
    watcher._handle(name, encode_snapshot(_snapshot(5)))
    assert loaded == [1, 5]


def test_watcher_refuses_a_tampered_challenger_before_unpickling() -> None:
    """Challengers are signed with the champion: another pickle in their place, even with a
    matching checksum, refuses the whole snapshot and nothing is unpickled."""
    settings = load_settings(snapshot_key=KEY.decode(), registry={"warm_start": False})
    metrics = Metrics()
    loaded: list[int] = []
    watcher = ModelWatcher(settings, lambda s: loaded.append(s.version), metrics=metrics)
    name = settings.model.name.encode()

    def with_challenger(version: int) -> Snapshot:
        steady = challenger_snapshot("steady", _trained(2.0), {"learning_rate": 0.1})
        return _snapshot(version).model_copy(update={"challengers": [steady]}).sign(KEY)

    watcher._handle(name, encode_snapshot(with_challenger(1)))
    UNPICKLED.clear()
    record = orjson.loads(encode_snapshot(with_challenger(2)))
    record["challengers"][0].update(_evil_model_fields())
    watcher._handle(name, orjson.dumps(record))
    assert loaded == [1] and not UNPICKLED
    assert metrics.registry.get_sample_value(
        "fraudstream_snapshots_refused_total", {"reason": "bad_signature"}
    )


def test_watcher_counts_into_the_metrics_of_the_object_it_serves() -> None:
    """The scorer passes its bound `_load_snapshot`: refusals land in the scorer's metrics."""

    class Owner:
        def __init__(self) -> None:
            self.metrics = Metrics()

        def load(self, snapshot: Snapshot) -> None:
            snapshot.load_model()

    owner = Owner()
    settings = load_settings(snapshot_key=KEY.decode(), registry={"warm_start": False})
    watcher = ModelWatcher(settings, owner.load)
    watcher._handle(None, encode_snapshot(_snapshot(1, key=None)))
    assert owner.metrics.registry.get_sample_value(
        "fraudstream_snapshots_refused_total", {"reason": "unsigned"}
    )


# -- over a real broker: a scorer process with a key ------------------------------------------


@pytest.mark.integration
def test_scorer_refuses_tampered_and_unsigned_snapshots_and_keeps_serving(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(partitions=1)
    env = settings_env(settings)
    env["FRAUDSTREAM_SNAPSHOT_KEY"] = KEY.decode()
    topic, name = settings.topics.model_updates, settings.model.name.encode()
    producer = Producer({"bootstrap.servers": settings.bootstrap})

    def publish(value: bytes) -> None:
        producer.produce(topic, value, name)
        assert producer.flush(10) == 0

    def produce(count: int, seed: int) -> None:
        opts = ProduceOptions(rate=2000, count=count, seed=seed, label_coverage=0.0)
        run_producer(settings, opts, Metrics(), threading.Event())

    publish(encode_snapshot(_snapshot(1)))
    log = tmp_path / "score.log"
    with fraudstream_process(["score", "--metrics-port", "0"], env, log) as score:
        procs = {log: score}
        port = metrics_port(log, procs)
        wait_for("signed v1 served", lambda: log_count(log, r"model v1 loaded"), 30, procs)

        publish(_tamper(_snapshot(2), labels_learned=7))  # altered after signing
        publish(encode_snapshot(_snapshot(3, key=None)))  # unsigned
        publish(_tamper(_snapshot(4), **_evil_model_fields()))  # another model
        wait_for(
            "three refusals counted",
            lambda: metric(port, "fraudstream_snapshots_refused_total") >= 3,
            30,
            procs,
        )
        assert metric(port, "fraudstream_snapshots_refused_total", 'reason="unsigned"') == 1
        assert metric(port, "fraudstream_snapshots_refused_total", 'reason="bad_signature"') == 2
        produce(100, seed=41)
        scores = read_topic(settings, settings.topics.scores, lambda m: len(m) >= 100, 30)
        assert {orjson.loads(m.value())["model_version"] for m in scores} == {1}
        assert metric(port, "fraudstream_model_version") == 1
        text = log.read_text()
        assert "refused snapshot v2 (bad_signature)" in text and "still serving v1" in text
        assert "refused snapshot v3 (unsigned)" in text

        # The scorer is alive and takes the next properly signed snapshot.
        publish(encode_snapshot(_snapshot(5)))
        wait_for("signed v5 served", lambda: log_count(log, r"model v5 loaded"), 30, procs)
    assert score.returncode == 0, log.read_text()[-3000:]
