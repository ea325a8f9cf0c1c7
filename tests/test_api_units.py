"""Pure parts of the API: the rate limiter's arithmetic, label batch parsing, and the 422
error shape taken from the wire contract's decode errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.codec import DecodeError, decode_transaction
from fraudstream.api.app import _parse_labels
from fraudstream.api.auth import hash_secret
from fraudstream.api.errors import ApiError, invalid_body
from fraudstream.api.ratelimit import RateLimiter
from infra.config import ConfigError, load_settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_allows_the_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert [limiter.take("c", 2.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("c", 2.0, 3) == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.take("c", 2.0, 3) == 0.0
    assert limiter.take("c", 2.0, 3) > 0
    # Clients have buckets of their own; an idle one refills up to the burst only.
    assert limiter.take("other", 2.0, 3) == 0.0
    clock.now += 100
    assert [limiter.take("c", 2.0, 3) for _ in range(4)][-1] > 0


def test_invalid_transaction_error_names_the_field_and_reason() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_transaction(
            b'{"transaction_id": "t", "card_id": "c", "amount": -1, '
            b'"merchant_category": "g", "timestamp": "2026-01-01T00:00:00Z"}'
        )
    err = invalid_body(caught.value, "transaction")
    assert (err.status, err.code) == (422, "invalid_transaction")
    assert err.extra == {"reason": "invalid", "field": "amount"}


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (b'{"labels": []}', "labels", None),
        (b'{"labels": {"transaction_id": "t"}}', "labels", None),
        (
            b'{"labels": [{"transaction_id": "t", "is_fraud": true}, {"is_fraud": true}]}',
            "labels.1.transaction_id",
            "invalid",
        ),
        (b'{"transaction_id": "t", "is_fraud": "true"}', "is_fraud", "invalid"),
        (b"[]", None, "not_object"),
        (b"{", None, "not_json"),
    ],
)
def test_label_bodies_refused_with_the_culprit(
    body: bytes, field: str | None, reason: str | None
) -> None:
    with pytest.raises(ApiError) as caught:
        _parse_labels(body, limit=10)
    assert caught.value.status == 422
    assert caught.value.extra.get("field") == field
    assert caught.value.extra.get("reason") == reason


def test_label_batch_and_single_label_parse() -> None:
    one = _parse_labels(b'{"transaction_id": "t", "is_fraud": true, "source": "x"}', 10)
    assert [(lb.transaction_id, lb.is_fraud) for lb in one] == [("t", True)]
    batch = _parse_labels(
        b'{"labels": [{"transaction_id": "a", "is_fraud": false}, '
        b'{"transaction_id": "b", "is_fraud": true}]}',
        10,
    )
    assert [lb.transaction_id for lb in batch] == ["a", "b"]
    with pytest.raises(ApiError):
        _parse_labels(
            b'{"labels": ['
            + b",".join([b'{"transaction_id": "a", "is_fraud": true}'] * 11)
            + b"]}",
            10,
        )


def test_api_settings_errors_are_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FRAUDSTREAM_API__CLIENTS", "not json")
    with pytest.raises(ConfigError, match='field "api"'):
        load_settings()
    monkeypatch.setenv(
        "FRAUDSTREAM_API__CLIENTS", '{"c": {"secret_sha256": "abc", "scopes": ["score"]}}'
    )
    with pytest.raises(ConfigError, match=r"api\.clients\.c\.secret_sha256"):
        load_settings()
    monkeypatch.setenv(
        "FRAUDSTREAM_API__CLIENTS",
        '{"c": {"secret_sha256": "' + hash_secret("s") + '", "scopes": ["everything"]}}',
    )
    with pytest.raises(ConfigError, match=r"api\.clients\.c\.scopes"):
        load_settings()
    monkeypatch.setenv(
        "FRAUDSTREAM_API__CLIENTS",
        '{"c": {"secret_sha256": "' + hash_secret("s") + '", "scopes": ["score", "label"]}}',
    )
    assert load_settings().api.clients["c"].scopes == ["score", "label"]
