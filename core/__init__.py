"""The Kafka-free core: what turns a transaction into a score and a label into learning."""
