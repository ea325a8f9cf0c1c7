"""Broker fixtures: the embedded Tansu broker by default, an Apache Kafka container when
`FRAUDSTREAM_TEST_KAFKA=container` (needs Docker), or an external cluster when
`FRAUDSTREAM_TEST_BOOTSTRAP_SERVERS` is set. Every test gets its own topics and groups."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.config import Settings, Topics, load_settings
from infra.signing import SIGNING_ENV, VERIFY_ENV, generate_pair
from infra.topics import create_topics

# One snapshot key pair for the whole test session, as `fraudstream up` makes one per run.
TEST_SIGNING_KEY, TEST_VERIFY_KEY = generate_pair()


def _container_bootstrap() -> Iterator[str]:
    try:
        from testcontainers.kafka import KafkaContainer
    except ImportError:
        pytest.fail("FRAUDSTREAM_TEST_KAFKA=container needs `pip install testcontainers[kafka]`")
    with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    external = os.environ.get("FRAUDSTREAM_TEST_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    if os.environ.get("FRAUDSTREAM_TEST_KAFKA") == "container":
        yield from _container_bootstrap()
        return
    from infra.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap


SettingsFactory = Callable[..., Settings]


def _set_test_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SIGNING_ENV, TEST_SIGNING_KEY)
    monkeypatch.setenv(VERIFY_ENV, TEST_VERIFY_KEY)


@pytest.fixture(autouse=True)
def snapshot_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test signs and verifies snapshots with the session's key pair (settings loaded
    from the environment, `fraudstream` subprocesses, the MLflow pyfunc)."""
    _set_test_keys(monkeypatch)


def isolated_settings(
    bootstrap: str, work_dir: Path, partitions: int = 4, **overrides: Any
) -> Settings:
    """Settings on the test broker with uuid topic names and groups, topics created; `scorer`
    and `trainer` overrides are merged with the uuid group ids."""
    suffix = uuid.uuid4().hex[:10]
    topics = Topics(**{name: f"{value}-{suffix}" for name, value in Topics().model_dump().items()})
    settings = load_settings(
        bootstrap_servers=bootstrap,
        partitions=partitions,
        topics=topics.model_dump(),
        mlflow_tracking_uri=f"sqlite:///{work_dir}/mlflow-{suffix}.db",
        scorer={"group_id": f"scorer-{suffix}", **overrides.pop("scorer", {})},
        trainer={"group_id": f"trainer-{suffix}", **overrides.pop("trainer", {})},
        **overrides,
    )
    create_topics(settings)
    return settings


@pytest.fixture
def make_settings(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> SettingsFactory:
    """Settings on the test broker with uuid topic names and groups, topics created; the
    environment holds no FRAUDSTREAM_ setting but the test keys."""
    for key in list(os.environ):
        if key.startswith("FRAUDSTREAM_") and not key.startswith("FRAUDSTREAM_TEST_"):
            monkeypatch.delenv(key)
    _set_test_keys(monkeypatch)

    def factory(partitions: int = 4, **overrides: object) -> Settings:
        return isolated_settings(
            bootstrap, tmp_path, partitions, trainer={"snapshot_every_s": 1.0}, **overrides
        )

    return factory


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a `fraudstream` subprocess use these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    env["FRAUDSTREAM_BOOTSTRAP_SERVERS"] = settings.bootstrap
    env["FRAUDSTREAM_PARTITIONS"] = str(settings.partitions)
    env["FRAUDSTREAM_MLFLOW_TRACKING_URI"] = settings.mlflow_uri()
    for name, value in settings.topics.model_dump().items():
        env[f"FRAUDSTREAM_TOPICS__{name.upper()}"] = value
    env["FRAUDSTREAM_SCORER__GROUP_ID"] = settings.scorer.group_id
    env["FRAUDSTREAM_TRAINER__GROUP_ID"] = settings.trainer.group_id
    env["FRAUDSTREAM_TRAINER__SNAPSHOT_EVERY_S"] = str(settings.trainer.snapshot_every_s)
    env["FRAUDSTREAM_TRAINER__MLFLOW_EVERY_S"] = str(settings.trainer.mlflow_every_s)
    if settings.snapshot_signing_key is not None:
        env[SIGNING_ENV] = settings.snapshot_signing_key.get_secret_value()
    if settings.snapshot_verify_key is not None:
        env[VERIFY_ENV] = settings.snapshot_verify_key
    return env
