"""The Kafka-free core: what turns a transaction into a score and a label into learning.

The contracts, decoders, features, vocabulary, label-fed state, the model and the snapshot
format, each compiled mirror beside its reference (`docs/design.md`, "Package layout").
"""
