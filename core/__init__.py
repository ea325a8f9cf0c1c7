"""The Kafka-free core of fraudstream: what needs no broker to run or to test."""
