"""One typed settings object per process: env `FRAUDSTREAM_*` over `params.yaml` over defaults.

Nested fields use `__` in the environment, e.g. `FRAUDSTREAM_SCORER__BATCH_SIZE=2000`.
Any librdkafka property passes through to every client as `FRAUDSTREAM_KAFKA_<PROP>`
(`FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL` -> `security.protocol`), or in YAML under
`kafka:` with its real dotted name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from core.durations import parse_duration
from core.errors import FraudstreamError
from core.model_settings import ModelSettings

ENV_PREFIX = "FRAUDSTREAM_"
KAFKA_ENV_PREFIX = "FRAUDSTREAM_KAFKA_"
DEFAULT_CONFIG_FILE = "params.yaml"
EMBEDDED_BOOTSTRAP = "127.0.0.1:9092"


class ConfigError(FraudstreamError, ValueError):
    """A configuration problem, reported as one line naming the culprit."""


# Every duration setting: plain seconds or "90d", "168h", "30m", "45s".
Seconds = Annotated[float, BeforeValidator(parse_duration)]
WholeSeconds = Annotated[int, BeforeValidator(parse_duration)]


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
    poll_timeout_s: Seconds = Field(0.005, gt=0, le=10)
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
    snapshot_every_s: Seconds = Field(1.0, gt=0)
    # The trainer's fetch wait (the scorer keeps the short top-level one): labels tolerate
    # 100 ms, and a broker answering 8 partitions' fetches every 10 ms spends its CPU on them
    # (Tansu: climbs to 1.4 cores within 30 s of `fraudstream up`, scoring halves).
    fetch_wait_max_ms: int = Field(100, ge=1)
    mlflow_every_s: Seconds = Field(30.0, ge=0)
    join_buffer_size: int = Field(500_000, ge=1)
    join_ttl_s: Seconds = Field(3 * 24 * 3600.0, gt=0)
    quality_window: int = Field(5000, ge=10)
    # Metric points kept for MLflow while the tracking server is unreachable (oldest dropped).
    mlflow_backlog: int = Field(100_000, ge=1)
    # Longest wait between two attempts to reach an unreachable tracking server.
    mlflow_retry_max_s: Seconds = Field(30.0, gt=0)
    # Maturation window, in stream (event) time: a scored transaction with no label once the
    # newest event time seen is this far past its own is learned as legitimate, once. 0: off
    # (only explicit labels are learned), the default because it asserts something only the
    # operator knows: that the label feed reports every fraud within the window. Seconds, or
    # a duration such as "90d", "36h", "15m". A real chargeback window is 30-120 days; the join
    # buffer must then hold that window's unlabelled scores (`join_buffer_size`).
    maturation_s: Seconds = Field(0.0, ge=0)


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
    request_timeout_s: WholeSeconds = Field(10, ge=1)


class GuardrailSettings(BaseModel):
    """A snapshot is published only if it passes these checks; otherwise it is held back."""

    enabled: bool = True
    # Recent serving-time feature vectors each candidate scores before it is published.
    reference_size: int = Field(1000, ge=10)
    # Bounds on the candidate's scores over that sample. The lower ones catch a model taught
    # that nothing is fraud (a flood of "legitimate" labels); 0 turns a lower bound off.
    max_flag_rate: float = Field(0.5, ge=0, le=1)
    max_mean_score: float = Field(0.6, ge=0, le=1)
    min_flag_rate: float = Field(0.0, ge=0, le=1)
    min_mean_score: float = Field(0.0001, ge=0, le=1)
    # Held back if its rolling ROC AUC is more than this below the served model's (the scores
    # the scorers gave the same labelled transactions), once both saw `min_labels` labels.
    # Both are measured on labels from trusted and authoritative sources (and matured
    # transactions) only: a low-trust feed cannot vouch for the model it taught.
    max_auc_drop: float = Field(0.1, ge=0, le=1)
    min_labels: int = Field(500, ge=1)


class CandidateSettings(BaseModel):
    """A challenger: a learner trained beside the champion, with these model settings changed."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    learning_rate: float | None = Field(None, gt=0, le=10)
    l2: float | None = Field(None, ge=0)
    fraud_weight: float | None = Field(None, gt=0)
    average_labels: int | None = Field(None, ge=1, le=10_000_000)


class ChallengerSettings(BaseModel):
    """Champion and challengers: every candidate learns the same joined stream and is evaluated
    progressively; the champion is served. A challenger is promoted when its rolling ROC AUC
    beats the champion's by `margin` at `checks` consecutive snapshots, both having evaluated
    `min_labels` labels, and `min_labels` labels after the last promotion (hysteresis)."""

    candidates: list[CandidateSettings] = Field(default_factory=list)
    margin: float = Field(0.01, ge=0, le=1)
    checks: int = Field(3, ge=1)
    min_labels: int = Field(1000, ge=1)


# How far a label source is believed (see trainer/label_trust.py). Ranked: a label from a
# higher level overrides an earlier contradicting one from a lower level.
TrustLevel = Literal["low", "trusted", "authoritative"]


class LabelSourceSettings(BaseModel):
    trust: TrustLevel
    # Labels/s admitted from this source (token bucket); None: its trust level's rate.
    rate_per_s: float | None = Field(None, ge=0)


DEFAULT_SOURCES: dict[str, TrustLevel | LabelSourceSettings] = {
    "chargeback": "authoritative",
    "investigation": "authoritative",
    "customer": "low",
}
DEFAULT_RATES: dict[TrustLevel, float] = {"authoritative": 0.0, "trusted": 0.0, "low": 10.0}


class LabelSettings(BaseModel):
    """Who may teach the model. A label names its `source`; only configured sources are
    learned, each at its trust level. The name is a claim made by whoever writes `labels`:
    it separates the feeds you configured from the ones you did not; who may write the topic
    at all is the broker's ACLs."""

    sources: dict[str, TrustLevel | LabelSourceSettings] = Field(
        default_factory=lambda: dict(DEFAULT_SOURCES)
    )
    # A label without a source (a plain replay file, an older feed) is learned at this level:
    # `trusted` by default, so any configured authoritative source overrides it, and
    # `refuse` where every feed names itself. (A claimed name is no stronger proof than a
    # missing one: who may write `labels` at all is the broker's ACLs.)
    missing_source: TrustLevel | Literal["refuse"] = "trusted"
    # Per-source token bucket, by trust level: labels/s (0: unlimited) and burst (seconds of
    # that rate the bucket holds). The clock is the labels' own record timestamps.
    rate_per_s: dict[TrustLevel, float] = Field(default_factory=lambda: dict(DEFAULT_RATES))
    burst_s: Seconds = Field(60.0, gt=0)
    # Refused labels (unconfigured source, no source, over the rate) go to `labels.dlq`.
    dead_letter_refused: bool = True
    # Distinct refused source names counted by name in metrics; the rest as "(other)".
    max_tracked_sources: int = Field(100, ge=1, le=10_000)

    @field_validator("rate_per_s")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        for level, rate in v.items():
            if rate < 0:
                raise ValueError(f"rate of {level} must be >= 0, got {rate}")
        return v

    @field_validator("sources")
    @classmethod
    def _names(
        cls, v: dict[str, TrustLevel | LabelSourceSettings]
    ) -> dict[str, TrustLevel | LabelSourceSettings]:
        for name in v:
            if not name or len(name) > 256:
                raise ValueError(f"a source name must have 1-256 characters: {name!r}")
        return v


class ApiClientSettings(BaseModel):
    """One caller of `fraudstream api`: its secret is stored only as a SHA-256 hex digest
    (secrets are generated, high-entropy strings, so a fast hash is enough)."""

    secret_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[Literal["score", "label", "admin"]] = Field(min_length=1)
    # Requests per second and burst for this client (default: api.rate_per_s, api.burst).
    rate_per_s: float | None = Field(None, gt=0)
    burst: int | None = Field(None, ge=1)
    # The `source` its labels carry (default: the client id): the trainer learns them at the
    # trust `labels.sources` gives that name, and refuses them if it is not listed.
    label_source: str | None = Field(None, min_length=1, max_length=256)


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
    token_ttl_s: WholeSeconds = Field(900, ge=10, le=86_400)
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
    # Where /metrics listens: loopback unless configured (a container sets 0.0.0.0 for a
    # Prometheus on its network).
    metrics_host: str = "127.0.0.1"
    scorer: ScorerSettings = Field(default_factory=ScorerSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    guardrails: GuardrailSettings = Field(default_factory=GuardrailSettings)
    challengers: ChallengerSettings = Field(default_factory=ChallengerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    labels: LabelSettings = Field(default_factory=LabelSettings)
    # Ed25519 keys for model-updates (infra/signing.py): the trainer signs with the private
    # key; every process that reads snapshots verifies with the public one and does not start
    # without it. Each as PEM or base64 of the 32 raw bytes, or in a file.
    snapshot_signing_key: SecretStr | None = None
    snapshot_signing_key_file: Path | None = None
    snapshot_verify_key: str | None = None
    snapshot_verify_key_file: Path | None = None
    # A snapshot numbered more than this above the one in service is refused (version_jump):
    # one with a huge version would otherwise freeze readers on it.
    snapshot_max_version_jump: int = Field(1_000_000, ge=1)

    def __repr_args__(self) -> Any:
        # Client properties may hold credentials (sasl.password, ...): never in a repr or log.
        for name, value in super().__repr_args__():
            yield name, redact_kafka(value) if name == "kafka" else value

    @field_validator("bootstrap_servers")
    @classmethod
    def _non_blank(cls, v: str | None) -> str | None:
        return v.strip() or None if v is not None else None

    @field_validator(
        "snapshot_signing_key",
        "snapshot_signing_key_file",
        "snapshot_verify_key",
        "snapshot_verify_key_file",
        mode="before",
    )
    @classmethod
    def _key_not_empty(cls, v: object) -> object:
        # An empty key is a mistake (a variable set from nothing), never "no signing".
        text = v.get_secret_value() if isinstance(v, SecretStr) else v
        if isinstance(text, str) and not text.strip():
            raise ValueError("is empty: give a key, or leave the setting unset")
        return v

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


# librdkafka properties that hold a secret (passwords, keys, tokens, JAAS configurations).
_SECRET_PROPERTY = re.compile(r"password|secret|token|jaas|credential|\.pem$|key$", re.IGNORECASE)
REDACTED = "[redacted]"


def redact_kafka(props: dict[str, Any]) -> dict[str, Any]:
    """Client properties with every secret value replaced by REDACTED."""
    return {k: REDACTED if _SECRET_PROPERTY.search(k) else v for k, v in props.items()}


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
