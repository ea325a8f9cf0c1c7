"""One typed settings object per process: env `FRAUDSTREAM_*` over `params.yaml` over defaults.

Nested fields use `__` in the environment, e.g. `FRAUDSTREAM_SCORER__BATCH_SIZE=2000`.
Any librdkafka property passes through to every client as `FRAUDSTREAM_KAFKA_<PROP>`
(`FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL` -> `security.protocol`), or in YAML under
`kafka:` with its real dotted name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "FRAUDSTREAM_"
KAFKA_ENV_PREFIX = "FRAUDSTREAM_KAFKA_"
DEFAULT_CONFIG_FILE = "params.yaml"
EMBEDDED_BOOTSTRAP = "127.0.0.1:9092"


class ConfigError(ValueError):
    """A configuration problem, reported as one line naming the culprit."""


class Topics(BaseModel):
    transactions: str = "transactions"
    scores: str = "scores"
    labels: str = "labels"
    model_updates: str = "model-updates"
    transactions_dlq: str = "transactions.dlq"
    labels_dlq: str = "labels.dlq"


class ScorerSettings(BaseModel):
    group_id: str = "fraudstream-scorer"
    batch_size: int = Field(5000, ge=1, le=100_000)
    # How long one consume() waits for a batch to fill; short keeps latency low.
    poll_timeout_s: float = Field(0.02, gt=0, le=10)
    threshold: float = Field(0.5, ge=0, le=1)
    # Scores produced but not yet acknowledged; above this the scorer stops consuming.
    max_in_flight: int = Field(100_000, ge=1)
    # Per partition owned; the least recently seen card's state is dropped beyond it.
    max_cards: int = Field(1_000_000, ge=1)


class TrainerSettings(BaseModel):
    group_id: str = "fraudstream-trainer"
    batch_size: int = Field(5000, ge=1, le=100_000)
    snapshot_every_labels: int = Field(1000, ge=1)
    snapshot_every_s: float = Field(5.0, gt=0)
    mlflow_every_s: float = Field(30.0, ge=0)
    join_buffer_size: int = Field(500_000, ge=1)
    join_ttl_s: float = Field(3 * 24 * 3600.0, gt=0)
    quality_window: int = Field(5000, ge=10)


class ModelSettings(BaseModel):
    name: str = "fraudstream-fraud"
    learning_rate: float = Field(0.02, gt=0, le=10)
    l2: float = Field(0.0, ge=0)
    # Weight of a fraud label in learn_one: fraud is rare, so each one counts more.
    fraud_weight: float = Field(5.0, gt=0)
    # Expected share of fraud; the untrained model's intercept starts there.
    prior_fraud_rate: float = Field(0.01, gt=0, lt=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
    )

    bootstrap_servers: str | None = None
    kafka: dict[str, str | int | float | bool] = Field(default_factory=dict)
    partitions: int = Field(4, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1, le=32)
    topics: Topics = Field(default_factory=Topics)
    session_timeout_ms: int = Field(6000, ge=1000)
    fetch_wait_max_ms: int = Field(10, ge=0)
    linger_ms: float = Field(5.0, ge=0)
    compression: str = "lz4"
    # See infra/kafka.py: recommended on a real cluster, where broker state survives restarts.
    idempotence: bool = False
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "fraudstream"
    metrics_port: int | None = Field(None, ge=0, le=65535)
    scorer: ScorerSettings = Field(default_factory=ScorerSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)

    @field_validator("bootstrap_servers")
    @classmethod
    def _non_blank(cls, v: str | None) -> str | None:
        return v.strip() or None if v is not None else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings

    @property
    def embedded(self) -> bool:
        """True when no cluster is configured: use (or, for `up`, start) the embedded broker."""
        return self.bootstrap_servers is None

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_servers or EMBEDDED_BOOTSTRAP

    def mlflow_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _kafka_env() -> dict[str, str]:
    return {
        key[len(KAFKA_ENV_PREFIX) :].lower().replace("_", "."): value
        for key, value in os.environ.items()
        if key.startswith(KAFKA_ENV_PREFIX)
    }


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    return data


def _describe(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    value = err.get("input")
    shown = f" (got {value!r})" if value is not None and not isinstance(value, dict) else ""
    env = ENV_PREFIX + "__".join(str(p) for p in err["loc"]).upper()
    return f"invalid setting {loc} [{env}]{shown}: {err['msg']}"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings: explicit overrides > environment > YAML file > defaults.

    Raises ConfigError with one line naming the bad value.
    """
    path = Path(config_file or os.environ.get(ENV_PREFIX + "CONFIG", DEFAULT_CONFIG_FILE))
    file_values: dict[str, Any] = {}
    if path.exists():
        file_values = _read_yaml(path)
    elif config_file is not None:
        raise ConfigError(f"config file {path} does not exist")
    try:
        settings = _build(file_values, overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    kafka = {**settings.kafka, **_kafka_env()}
    return settings.model_copy(update={"kafka": kafka})


def _build(file_values: dict[str, Any], overrides: dict[str, Any]) -> Settings:
    # The YAML file is the lowest layer; what the environment sets explicitly wins over it.
    from_env = Settings()
    merged = _deep_merge(file_values, from_env.model_dump(exclude_unset=True))
    merged = _deep_merge(merged, {k: v for k, v in overrides.items() if v is not None})
    return Settings.model_validate(merged) if merged else from_env


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
