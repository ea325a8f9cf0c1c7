"""Getters of Transaction fields: a batch's column is `list(map(GETTER, txs))`, which reads
every record at C speed (no Python call per record)."""

from __future__ import annotations

from operator import attrgetter

TRANSACTION_ID = attrgetter("transaction_id")
CARD_ID = attrgetter("card_id")
TIMESTAMP = attrgetter("timestamp")
AMOUNT = attrgetter("amount")
COUNTRY = attrgetter("country")
MERCHANT_ID = attrgetter("merchant_id")
CATEGORY = attrgetter("merchant_category")
CHANNEL = attrgetter("channel")
