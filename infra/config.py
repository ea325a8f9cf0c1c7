"""One typed settings object per process: env `FRAUDSTREAM_*` over `params.yaml` over defaults.

Nested fields use `__` in the environment, e.g. `FRAUDSTREAM_SCORER__BATCH_SIZE=2000`.
Any librdkafka property passes through to every client as `FRAUDSTREAM_KAFKA_<PROP>`
(`FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL` -> `security.protocol`), or in YAML under
`kafka:` with its real dotted name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
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
    # How long one consume() waits for a batch to fill (librdkafka returns early only when the
    # batch is full): at low load every record waits up to this long, so keep it short.
    poll_timeout_s: float = Field(0.005, gt=0, le=10)
    threshold: float = Field(0.5, ge=0, le=1)
    # Scores produced but not yet acknowledged; above this the scorer stops consuming.
    max_in_flight: int = Field(100_000, ge=1)
    # Per partition owned; the least recently seen card's state is dropped beyond it.
    max_cards: int = Field(1_000_000, ge=1)
    # Features that pushed each score up most, sent with the Score (0: none).
    reasons: int = Field(3, ge=0, le=20)
    # Shadow scoring: also score each transaction with the challengers the served snapshot
    # carries, sent as the Score's `challenger_scores` (never used for `flagged`).
    shadow: bool = False


class TrainerSettings(BaseModel):
    group_id: str = "fraudstream-trainer"
    batch_size: int = Field(5000, ge=1, le=100_000)
    # Whichever comes first. The seconds bound the label-to-serving delay (bench: p99 ~1.1 s at
    # 1 s); the label count bounds snapshot overhead at high label rates.
    snapshot_every_labels: int = Field(10_000, ge=1)
    snapshot_every_s: float = Field(1.0, gt=0)
    # The trainer's fetch wait (the scorer keeps the short top-level one): labels tolerate
    # 100 ms, and a broker answering 8 partitions' fetches every 10 ms spends its CPU on them
    # (Tansu: climbs to 1.4 cores within 30 s of `fraudstream up`, scoring halves).
    fetch_wait_max_ms: int = Field(100, ge=1)
    mlflow_every_s: float = Field(30.0, ge=0)
    join_buffer_size: int = Field(500_000, ge=1)
    join_ttl_s: float = Field(3 * 24 * 3600.0, gt=0)
    quality_window: int = Field(5000, ge=10)
    # Metric points kept for MLflow while the tracking server is unreachable (oldest dropped).
    mlflow_backlog: int = Field(100_000, ge=1)
    # Longest wait between two attempts to reach an unreachable tracking server.
    mlflow_retry_max_s: float = Field(30.0, gt=0)
    # Maturation window, in stream (event) time: a scored transaction with no label once the
    # newest event time seen is this far past its own is learned as legitimate, once. 0: off
    # (only explicit labels are learned), the default because it asserts something only the
    # operator knows: that the label feed reports every fraud within the window. Seconds, or
    # a duration such as "90d", "36h", "15m". A real chargeback window is 30-120 days; the join
    # buffer must then hold that window's unlabelled scores (`join_buffer_size`).
    maturation_s: float = Field(0.0, ge=0)

    @field_validator("maturation_s", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        """Accept "90d", "36h", "15m", "30s" as well as plain seconds."""
        if isinstance(value, str):
            text = value.strip().lower()
            units = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
            if text and text[-1] in units:
                try:
                    return float(text[:-1]) * units[text[-1]]
                except ValueError:
                    raise ValueError(
                        f"not a duration: {value!r} (e.g. 90d, 36h, 15m, 30)"
                    ) from None
        return value


class ModelSettings(BaseModel):
    name: str = "fraudstream-fraud"
    # 0.005: best pre- and post-drift AUC in `fraudstream evaluate` (0.02 was noisier).
    learning_rate: float = Field(0.005, gt=0, le=10)
    l2: float = Field(0.0, ge=0)
    # Weight of a fraud label in learn_one: fraud is rare, so each one counts more.
    fraud_weight: float = Field(5.0, gt=0)
    # Expected share of fraud; the untrained model's intercept starts there.
    prior_fraud_rate: float = Field(0.01, gt=0, lt=1)


class RegistrySettings(BaseModel):
    """The MLflow Model Registry: every model logged becomes a version of one registered model."""

    enabled: bool = True
    # Registered model name (default: model.name).
    name: str | None = None
    champion_alias: str = "champion"
    # Versions kept; older ones (never an aliased one) are deleted with their artifacts. 0: all.
    keep_versions: int = Field(20, ge=0)
    # With model-updates empty (a new or restarted broker), start from the champion.
    warm_start: bool = True
    # Per HTTP request to a tracking server (one retry); a server down never blocks learning.
    request_timeout_s: int = Field(10, ge=1)


class GuardrailSettings(BaseModel):
    """A snapshot is published only if it passes these checks; otherwise it is held back."""

    enabled: bool = True
    # Recent serving-time feature vectors each candidate scores before it is published.
    reference_size: int = Field(1000, ge=10)
    # Bounds on the candidate's scores over that sample.
    max_flag_rate: float = Field(0.5, ge=0, le=1)
    max_mean_score: float = Field(0.6, ge=0, le=1)
    # Held back if its rolling ROC AUC is more than this below the served model's (the scores
    # the scorers gave the same labelled transactions), once both saw `min_labels` labels.
    max_auc_drop: float = Field(0.1, ge=0, le=1)
    min_labels: int = Field(500, ge=1)


class CandidateSettings(BaseModel):
    """A challenger: a learner trained beside the champion, with these model settings changed."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    learning_rate: float | None = Field(None, gt=0, le=10)
    l2: float | None = Field(None, ge=0)
    fraud_weight: float | None = Field(None, gt=0)


class ChallengerSettings(BaseModel):
    """Champion and challengers: every candidate learns the same joined stream and is evaluated
    progressively; the champion is served. A challenger is promoted when its rolling ROC AUC
    beats the champion's by `margin` at `checks` consecutive snapshots, both having evaluated
    `min_labels` labels, and `min_labels` labels after the last promotion (hysteresis)."""

    candidates: list[CandidateSettings] = Field(default_factory=list)
    margin: float = Field(0.01, ge=0, le=1)
    checks: int = Field(3, ge=1)
    min_labels: int = Field(1000, ge=1)


class ApiClientSettings(BaseModel):
    """One caller of `fraudstream api`: its secret is stored only as a SHA-256 hex digest
    (secrets are generated, high-entropy strings, so a fast hash is enough)."""

    secret_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[Literal["score", "label", "admin"]] = Field(min_length=1)
    # Requests per second and burst for this client (default: api.rate_per_s, api.burst).
    rate_per_s: float | None = Field(None, gt=0)
    burst: int | None = Field(None, ge=1)


class ApiSettings(BaseModel):
    """`fraudstream api`: the HTTP edge over the topics (fraudstream/api/)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # How long POST /v1/transactions waits for the Score before answering 202.
    deadline_ms: int = Field(500, ge=1, le=60_000)
    # Bodies above this are refused (413) before they are read whole.
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    max_batch_labels: int = Field(1000, ge=1)
    # Client id -> credentials. JSON in the environment:
    # FRAUDSTREAM_API__CLIENTS='{"checkout": {"secret_sha256": "...", "scopes": ["score"]}}'
    clients: dict[str, ApiClientSettings] = Field(default_factory=dict)
    # Signs access tokens (HS256). Unset: a random key per process, so a token is honoured
    # only by the replica that issued it; set one shared key for several replicas.
    token_key: SecretStr | None = None
    token_ttl_s: int = Field(900, ge=10, le=86_400)
    rate_per_s: float = Field(200.0, gt=0)
    burst: int = Field(400, ge=1)
    # Recent Scores kept by each replica for GET /v1/scores/{id} (every replica reads every
    # Score, so any replica answers for a recent one).
    score_cache: int = Field(100_000, ge=100)
    # The Score reader's fetch wait: the reply latency floor on a broker that holds fetches.
    fetch_wait_max_ms: int = Field(10, ge=1)

    @field_validator("token_key")
    @classmethod
    def _token_key_or_none(cls, v: SecretStr | None) -> SecretStr | None:
        return v if v is not None and v.get_secret_value() else None


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
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    guardrails: GuardrailSettings = Field(default_factory=GuardrailSettings)
    challengers: ChallengerSettings = Field(default_factory=ChallengerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    # HMAC key for model-updates: the trainer signs snapshots, scorers refuse unsigned or
    # tampered ones. Unset: snapshots carry a SHA-256 only.
    snapshot_key: SecretStr | None = None

    @field_validator("bootstrap_servers")
    @classmethod
    def _non_blank(cls, v: str | None) -> str | None:
        return v.strip() or None if v is not None else None

    @field_validator("snapshot_key")
    @classmethod
    def _key_or_none(cls, v: SecretStr | None) -> SecretStr | None:
        return v if v is not None and v.get_secret_value() else None

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
    except SettingsError as exc:
        # A structured value (e.g. FRAUDSTREAM_API__CLIENTS) that is not valid JSON.
        raise ConfigError(f"{exc} (structured settings are JSON in the environment)") from None
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
