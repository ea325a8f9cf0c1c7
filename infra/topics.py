"""Topic administration: create the product's topics before anyone subscribes."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from infra.config import Settings
from infra.kafka import common_config

log = logging.getLogger(__name__)

# Largest snapshot record: the label-fed state it carries is ~80 bytes per merchant, category
# or country (`model.label_state_max_keys` per table), above Kafka's 1 MB default.
SNAPSHOT_MAX_BYTES = 16 * 1024 * 1024


def topic_specs(settings: Settings, partitions: int | None = None) -> list[NewTopic]:
    n = partitions or settings.partitions
    rf = settings.replication_factor
    t = settings.topics
    return [
        NewTopic(t.transactions, n, rf),
        NewTopic(t.scores, n, rf),
        NewTopic(t.labels, n, rf),
        NewTopic(t.transactions_dlq, 1, rf),
        NewTopic(t.labels_dlq, 1, rf),
        # One partition: the model name is the key, and the latest snapshot must be easy to find.
        NewTopic(
            t.model_updates,
            1,
            rf,
            config={"cleanup.policy": "compact", "max.message.bytes": str(SNAPSHOT_MAX_BYTES)},
        ),
    ]


def create_topics(
    settings: Settings, partitions: int | None = None, timeout_s: float = 15.0
) -> dict[str, str]:
    """Create the topics; existing ones are left as they are. Returns name -> 'created'|'exists'."""
    admin = AdminClient(common_config(settings))
    futures = admin.create_topics(
        topic_specs(settings, partitions), operation_timeout=timeout_s, request_timeout=timeout_s
    )
    result: dict[str, str] = {}
    for name, fut in futures.items():
        try:
            fut.result()
            result[name] = "created"
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                result[name] = "exists"
            else:
                raise
    log.info("topics: %s", ", ".join(f"{k} ({v})" for k, v in sorted(result.items())))
    return result
