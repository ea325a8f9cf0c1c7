"""Safe snapshots: the model is data (nothing is unpickled, ever), every snapshot is signed with
the trainer's Ed25519 key and verified with the public key only; unsigned, tampered, pickled,
other-model and absurdly numbered snapshots are refused and counted, and the scorer keeps
serving the model it has. A process that reads snapshots does not start without the key."""

from __future__ import annotations

import base64
import builtins
import hashlib
import pickle
import stat
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.model import build_pipeline, served_weights
from core.snapshot import (
    FORMAT,
    Snapshot,
    SnapshotError,
    challenger_snapshot,
    decode_snapshot,
    encode_snapshot,
    make_snapshot,
)
from fraudstream.cli import main
from infra.config import ConfigError, load_settings
from infra.metrics import Metrics
from infra.model_updates import ModelWatcher
from infra.signing import (
    SIGNING_ENV,
    VERIFY_ENV,
    key_id,
    parse_private_key,
    parse_public_key,
    private_pem,
    public_bytes,
    require_signing_key,
    verify_key,
)
from producer.run import ProduceOptions, run_producer
from tests.conftest import TEST_SIGNING_KEY, TEST_VERIFY_KEY, SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process, read_topic, wait_for
from tests.test_mlflow_lifecycle import log_count, metric, metrics_port
from trainer.lineage import config_params

PRIVATE = parse_private_key(TEST_SIGNING_KEY, "test key")
PUBLIC = parse_public_key(TEST_VERIFY_KEY, "test key")
MODEL = "fraudstream-fraud"


class FileCreator:
    """Unpickling this creates `path`: stands in for a malicious pickle (any code would run)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (builtins.open, (str(self.path), "w"))


def _trained(seed: float = 1.0):
    pipeline = build_pipeline()
    pipeline.learn_one({"amount": 100.0 * seed, "hour": 3.0}, True)
    pipeline.learn_one({"amount": 5.0, "hour": 12.0}, False)
    return pipeline


def _snapshot(
    version: int = 1, key: Ed25519PrivateKey | None = PRIVATE, model_name: str = MODEL
) -> Snapshot:
    return make_snapshot(
        _trained(),
        model_name,
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


def _pickled_record(version: int, marker: Path) -> bytes:
    """A snapshot as fraudstream wrote them when models were pickled, with a payload that
    creates `marker` if it is ever unpickled."""
    raw = pickle.dumps(FileCreator(marker))
    return orjson.dumps(
        {
            "model_name": MODEL,
            "version": version,
            "created_at": "2026-12-01T00:00:00Z",
            "format": "river-pickle/1",
            "library_versions": {"river": "0.23.0"},
            "sha256": hashlib.sha256(raw).hexdigest(),
            "model_b64": base64.b64encode(raw).decode(),
        }
    )


# -- the wire format --------------------------------------------------------------------------


def test_signed_snapshot_round_trips_and_verifies_with_the_public_key() -> None:
    snap = _snapshot()
    assert snap.signer == key_id(PUBLIC)
    assert len(base64.b64decode(snap.signature or "")) == 64  # an Ed25519 signature
    decoded = decode_snapshot(encode_snapshot(snap))
    decoded.verify(PUBLIC)
    assert decoded.format == FORMAT == "fraudstream-model/3"
    assert decoded.load_model()["logreg"].weights == _trained()["logreg"].weights
    # Plain JSON data, no bytes to unpickle.
    record = orjson.loads(encode_snapshot(snap))
    assert set(record["model"]) == {"scaler", "logreg"}
    assert "model_b64" not in record


def test_a_snapshot_of_the_previous_format_loads_and_serves_its_raw_weights() -> None:
    """fraudstream-model/2 had no averaged weights: it is read, signed as it was, and its
    model scores with the weights it learned."""
    record = orjson.loads(encode_snapshot(_snapshot()))
    record["format"] = "fraudstream-model/2"
    del record["model"]["logreg"]["averaged"]
    old = Snapshot.model_validate({k: v for k, v in record.items() if k != "signature"})
    decoded = decode_snapshot(encode_snapshot(old.sign(PRIVATE)), PUBLIC)
    model = decoded.load_model()
    assert served_weights(model["logreg"]) == (
        dict(_trained()["logreg"].weights),
        _trained()["logreg"].intercept,
    )
    # This version writes /3.
    assert orjson.loads(encode_snapshot(_snapshot()))["format"] == "fraudstream-model/3"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"version": 99}, "bad_signature"),
        ({"labels_learned": 10_000}, "bad_signature"),
        ({"processed_offsets": {"scores": {"0": 0}}}, "bad_signature"),
        ({"metrics": {"roc_auc": 1.0}}, "bad_signature"),
        ({"label_state": {"trusted": ["anyone"]}}, "bad_signature"),
        ({"model_name": "other"}, "bad_signature"),
        ({"unknown_field": 1}, "bad_signature"),
        ({"signature": None}, "unsigned"),
        ({"signature": "AAAA"}, "bad_signature"),
        ({"signature": "not base64!"}, "bad_signature"),
        ("weights", "bad_signature"),
    ],
)
def test_tampered_snapshots_are_refused(fields: object, reason: str) -> None:
    snap = _snapshot()
    if fields == "weights":
        record = orjson.loads(encode_snapshot(snap))
        record["model"]["logreg"]["weights"]["amount"] = 50.0
        raw = orjson.dumps(record)
    else:
        raw = _tamper(snap, **fields)  # type: ignore[arg-type]
    with pytest.raises(SnapshotError) as err:
        decode_snapshot(raw).verify(PUBLIC)
    assert err.value.reason == reason


def test_a_snapshot_signed_with_another_key_names_both_keys() -> None:
    other = Ed25519PrivateKey.generate()
    snap = decode_snapshot(encode_snapshot(_snapshot(key=other)))
    with pytest.raises(SnapshotError, match="signature mismatch") as err:
        snap.verify(PUBLIC)
    assert key_id(other.public_key()) in str(err.value) and key_id(PUBLIC) in str(err.value)


def test_a_pickled_snapshot_is_refused_with_one_line_and_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(SnapshotError) as err:
        decode_snapshot(_pickled_record(7, marker))
    message = str(err.value)
    assert err.value.reason == "incompatible" and "\n" not in message
    assert "'river-pickle/1', a pickled River model" in message and "never unpickles" in message
    # Claiming the current format does not help: the model is data or nothing.
    record = orjson.loads(_pickled_record(8, marker))
    record["format"] = FORMAT
    with pytest.raises(SnapshotError, match="invalid snapshot: model: Field required"):
        decode_snapshot(orjson.dumps(record))
    with pytest.raises(SnapshotError, match="has format 'fraudstream-model/9'"):
        decode_snapshot(_tamper(_snapshot(), format="fraudstream-model/9"))
    assert not marker.exists()


def test_no_pickle_in_the_model_path() -> None:
    root = Path(__file__).resolve().parents[1]
    sources = [
        p
        for d in ("core", "schemas", "scorer", "trainer", "infra", "fraudstream")
        for p in (root / d).rglob("*.py")
    ]
    users = [p.name for p in sources if "import pickle" in p.read_text()]
    assert sources and users == []


# -- keys and settings ------------------------------------------------------------------------


def test_keys_are_settings_and_the_private_one_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert key_id(verify_key(settings)) == key_id(PUBLIC)
    assert key_id(require_signing_key(settings, "test").public_key()) == key_id(PUBLIC)
    secret = TEST_SIGNING_KEY.splitlines()[1]
    assert secret not in repr(settings) and secret not in str(config_params(settings))
    # The raw 32 bytes in base64 work as well as PEM.
    monkeypatch.setenv(VERIFY_ENV, base64.b64encode(public_bytes(PUBLIC)).decode())
    assert key_id(verify_key(load_settings())) == key_id(PUBLIC)


@pytest.mark.parametrize("env", [SIGNING_ENV, VERIFY_ENV, VERIFY_ENV + "_FILE"])
def test_an_empty_key_is_an_error_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str
) -> None:
    monkeypatch.setenv(env, "  ")
    with pytest.raises(ConfigError, match=f"\\[{env}\\].*is empty") as err:
        load_settings()
    assert "\n" not in str(err.value)


def test_missing_mismatched_or_malformed_keys_are_one_line_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(SIGNING_ENV)
    monkeypatch.delenv(VERIFY_ENV)
    with pytest.raises(ConfigError, match=f"no snapshot verification key: set {VERIFY_ENV}"):
        verify_key(load_settings())
    with pytest.raises(ConfigError, match=f"the trainer signs snapshots: set {SIGNING_ENV}"):
        require_signing_key(load_settings(), "the trainer")
    monkeypatch.setenv(VERIFY_ENV, "bm90IGEga2V5")
    with pytest.raises(ConfigError, match=f"{VERIFY_ENV} is not an Ed25519 public key"):
        verify_key(load_settings())
    monkeypatch.setenv(VERIFY_ENV, TEST_VERIFY_KEY)
    monkeypatch.setenv(SIGNING_ENV, private_pem(Ed25519PrivateKey.generate()))
    with pytest.raises(ConfigError, match="are not one key pair"):
        require_signing_key(load_settings(), "the trainer")
    monkeypatch.delenv(VERIFY_ENV)
    monkeypatch.setenv(VERIFY_ENV + "_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="cannot read .*missing.pem"):
        verify_key(load_settings())


def test_keys_generate_writes_a_pair_for_operators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["keys", "generate", "--out", str(tmp_path)]) == 0
    private, public = tmp_path / "snapshot-signing.pem", tmp_path / "snapshot-verify.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    monkeypatch.delenv(SIGNING_ENV)
    monkeypatch.delenv(VERIFY_ENV)
    monkeypatch.setenv(SIGNING_ENV + "_FILE", str(private))
    monkeypatch.setenv(VERIFY_ENV + "_FILE", str(public))
    settings = load_settings()
    snap = _snapshot(key=require_signing_key(settings, "test"))
    decode_snapshot(encode_snapshot(snap)).verify(verify_key(settings))
    # Never overwrites a key.
    with pytest.raises(SystemExit):
        main(["keys", "generate", "--out", str(tmp_path)])


# -- the watcher (what the scorer runs) -------------------------------------------------------


def _refused(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "fraudstream_snapshots_refused_total", {"reason": reason}
    )
    return value or 0.0


def test_watcher_refuses_and_counts_and_keeps_the_model_it_has(tmp_path: Path) -> None:
    settings = load_settings(registry={"warm_start": False})
    metrics = Metrics()
    loaded: list[int] = []
    watcher = ModelWatcher(settings, lambda s: loaded.append(s.version), metrics=metrics)
    watcher.ready.set()  # caught up: each snapshot is loaded as it comes
    name = settings.model.name.encode()
    marker = tmp_path / "pwned"

    watcher._handle(name, encode_snapshot(_snapshot(1)))
    watcher._handle(name, _tamper(_snapshot(2), labels_learned=5))
    watcher._handle(name, encode_snapshot(_snapshot(3, key=None)))
    watcher._handle(name, _pickled_record(4, marker))
    watcher._handle(name, encode_snapshot(_snapshot(5, model_name="another-model")))
    watcher._handle(name, encode_snapshot(_snapshot(2**62)))
    watcher._handle(name, b"{not json")
    assert loaded == [1] and watcher.version == 1
    assert not marker.exists()
    reasons = ("bad_signature", "unsigned", "incompatible", "wrong_model", "version_jump")
    assert {r: _refused(metrics, r) for r in (*reasons, "invalid")} == dict.fromkeys(
        (*reasons, "invalid"), 1.0
    )
    assert watcher.rejected == 6
    # A valid one after all that is taken.
    watcher._handle(name, encode_snapshot(_snapshot(6)))
    assert loaded == [1, 6]


def test_catching_up_checks_every_snapshot_and_loads_only_the_newest() -> None:
    settings = load_settings(registry={"warm_start": False})
    metrics = Metrics()
    loaded: list[int] = []
    watcher = ModelWatcher(settings, lambda s: loaded.append(s.version), metrics=metrics)
    name = settings.model.name.encode()
    for version in (1, 2, 3):
        watcher._handle(name, encode_snapshot(_snapshot(version)))
    watcher._handle(name, encode_snapshot(_snapshot(4, key=None)))  # refused, counted
    assert loaded == [] and _refused(metrics, "unsigned") == 1.0
    watcher._load_pending()
    assert loaded == [3] and watcher.version == 3


def test_watcher_refuses_a_tampered_challenger() -> None:
    """Challengers are signed with the champion: altering one refuses the whole snapshot."""
    settings = load_settings(registry={"warm_start": False})
    metrics = Metrics()
    loaded: list[int] = []
    watcher = ModelWatcher(settings, lambda s: loaded.append(s.version), metrics=metrics)
    watcher.ready.set()
    name = settings.model.name.encode()

    def with_challenger(version: int) -> Snapshot:
        steady = challenger_snapshot("steady", _trained(2.0), {"learning_rate": 0.1})
        return _snapshot(version).model_copy(update={"challengers": [steady]}).sign(PRIVATE)

    watcher._handle(name, encode_snapshot(with_challenger(1)))
    record = orjson.loads(encode_snapshot(with_challenger(2)))
    record["challengers"][0]["model"]["logreg"]["intercept"] = 9.0
    watcher._handle(name, orjson.dumps(record))
    assert loaded == [1]
    assert _refused(metrics, "bad_signature") == 1


def test_watcher_counts_into_the_metrics_of_the_object_it_serves() -> None:
    """The scorer passes its bound `_load_snapshot`: refusals land in the scorer's metrics."""

    class Owner:
        def __init__(self) -> None:
            self.metrics = Metrics()

        def load(self, snapshot: Snapshot) -> None:
            snapshot.load_model()

    owner = Owner()
    settings = load_settings(registry={"warm_start": False})
    watcher = ModelWatcher(settings, owner.load)
    watcher._handle(None, encode_snapshot(_snapshot(1, key=None)))
    assert _refused(owner.metrics, "unsigned") == 1


def test_a_reader_without_a_verification_key_does_not_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SIGNING_ENV)
    monkeypatch.delenv(VERIFY_ENV)
    with pytest.raises(ConfigError, match=VERIFY_ENV):
        ModelWatcher(load_settings(), lambda s: None)


# -- over a real broker: scorer processes -----------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    ("command", "drop", "empty", "message"),
    [
        (
            "score",
            (SIGNING_ENV, VERIFY_ENV),
            None,
            f"no snapshot verification key: set {VERIFY_ENV}",
        ),
        ("score", (SIGNING_ENV,), VERIFY_ENV, f"[{VERIFY_ENV}]"),
        ("train", (SIGNING_ENV,), None, f"the trainer signs snapshots: set {SIGNING_ENV}"),
    ],
)
def test_processes_refuse_to_start_without_their_key(
    make_settings: SettingsFactory,
    command: str,
    drop: tuple[str, ...],
    empty: str | None,
    message: str,
) -> None:
    env = settings_env(make_settings(partitions=1))
    for name in drop:
        env.pop(name)
    if empty is not None:
        env[empty] = ""
    done = subprocess.run(
        [sys.executable, "-m", "fraudstream.cli", command, "--metrics-port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fraudstream: error: "), done.stderr
    assert message in lines[0]


@pytest.mark.integration
def test_scorer_refuses_forged_snapshots_and_keeps_serving(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(partitions=1)
    env = settings_env(settings)
    # The scorer holds the public key only: it could not sign a snapshot if it wanted to.
    env.pop(SIGNING_ENV)
    topic, name = settings.topics.model_updates, settings.model.name.encode()
    producer = Producer({"bootstrap.servers": settings.bootstrap})
    marker = tmp_path / "pwned"

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
        wait_for("signed v1 served", lambda: log_count(log, r"model v1 loaded"), 120, procs)

        publish(_tamper(_snapshot(2), labels_learned=7))  # altered after signing
        publish(encode_snapshot(_snapshot(3, key=None)))  # forged: unsigned
        publish(_pickled_record(4, marker))  # a pickle that would create a file
        publish(encode_snapshot(_snapshot(5, model_name="another-model")))  # replayed elsewhere
        publish(encode_snapshot(_snapshot(2**62)))  # would freeze the scorer on it
        wait_for(
            "five refusals counted",
            lambda: metric(port, "fraudstream_snapshots_refused_total") >= 5,
            30,
            procs,
        )
        for reason in ("bad_signature", "unsigned", "incompatible", "wrong_model", "version_jump"):
            assert metric(port, "fraudstream_snapshots_refused_total", f'reason="{reason}"') == 1
        produce(100, seed=41)
        scores = read_topic(settings, settings.topics.scores, lambda m: len(m) >= 100, 90)
        assert len(scores) >= 100, log.read_text()[-3000:]
        assert {orjson.loads(m.value())["model_version"] for m in scores} == {1}
        assert metric(port, "fraudstream_model_version") == 1
        text = log.read_text()
        assert "(bad_signature): snapshot v2: signature mismatch" in text
        assert "(unsigned): snapshot v3 is not signed; still serving v1" in text
        assert "refused a record (incompatible)" in text and "a pickled River model" in text

        # The scorer is alive and takes the next properly signed snapshot.
        publish(encode_snapshot(_snapshot(6)))
        wait_for("signed v6 served", lambda: log_count(log, r"model v6 loaded"), 30, procs)
    assert score.returncode == 0, log.read_text()[-3000:]
    assert not marker.exists()
