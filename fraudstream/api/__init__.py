"""`fraudstream api`: an HTTP edge over the same Kafka topics the scorer and trainer use.

No second scoring path: a transaction posted here is published to `transactions` and its
Score read back from `scores`, exactly as any other producer's.
"""
