"""Wire contracts and the codec that turns bytes into validated models."""

from schemas.codec import (
    DecodeError,
    decode,
    decode_label,
    decode_score,
    decode_transaction,
    dumps,
    encode,
    loads,
)
from schemas.models import Label, Score, Transaction

__all__ = [
    "DecodeError",
    "Label",
    "Score",
    "Transaction",
    "decode",
    "decode_label",
    "decode_score",
    "decode_transaction",
    "dumps",
    "encode",
    "loads",
]
