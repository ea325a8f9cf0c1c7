"""The batch Score encoder (`core.score_encode`) writes what the pydantic `Score` of each record
writes: reasons and challenger scores included, hostile strings, floats bit for bit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from core.contracts import Reason, Score
from core.features import DENSE_FEATURES, FeatureBatch
from core.model_compiled import CompiledModel
from core.score_encode import ScoreEncoder

K = len(DENSE_FEATURES)
HOSTILE = ['a"b', "back\\slash", '","', '\\","\\', "é€😀", "line\nbreak", "\x00\x1f", "", "]}"]
SPARSE_KEYS = ["merchant_category=grocery", 'channel=we"b', "merchant_category=other"]
Entities = tuple[list[str | None], list[str | None], list[str | None]]


def hostile_columns(n: int) -> tuple[list[str], list[str], list[datetime], list[tuple[str, ...]]]:
    """A batch's transaction and card ids (strings JSON must escape), event times (in UTC and
    at +02:00) and one-hot keys (none to all three of `SPARSE_KEYS`)."""
    tids = [f"t{i}" + HOSTILE[i % len(HOSTILE)] for i in range(n)]
    cards = [HOSTILE[(i * 7) % len(HOSTILE)] + str(i % 13) for i in range(n)]
    t0 = datetime(2026, 11, 23, 10, tzinfo=UTC)
    plus2 = timezone(timedelta(hours=2))
    times = [t0 + timedelta(microseconds=i) if i % 2 else t0.astimezone(plus2) for i in range(n)]
    sparse = [tuple(SPARSE_KEYS[j] for j in range(i % 3)) for i in range(n)]
    return tids, cards, times, sparse


def hostile_entities(n: int) -> Entities:
    """Merchant ids, categories and countries, some null, some to escape."""
    return (
        [None if i % 4 == 0 else HOSTILE[i % len(HOSTILE)] + "m" for i in range(n)],
        ["food" if i % 3 else None for i in range(n)],
        [HOSTILE[(i * 5) % len(HOSTILE)] if i % 2 else None for i in range(n)],
    )


def reference(
    tids: list[str],
    cards: list[str],
    times: list[datetime],
    probs: np.ndarray,
    threshold: float,
    version: int,
    now: datetime,
    dense: np.ndarray,
    sparse: list[tuple[str, ...]],
    reasons: list[list[tuple[str, float]]] | None,
    shadow: dict[str, np.ndarray] | None = None,
    entities: tuple[list[str | None], list[str | None], list[str | None]] | None = None,
) -> list[dict[str, object]]:
    merchants, categories, countries = entities or ([None] * len(tids),) * 3
    out = []
    for i, row in enumerate(dense.tolist()):
        features = dict(zip(DENSE_FEATURES, row, strict=True))
        for key in sparse[i]:
            features[key] = 1.0
        score = Score(
            transaction_id=tids[i],
            card_id=cards[i],
            merchant_id=merchants[i],
            merchant_category=categories[i],
            country=countries[i],
            score=float(probs[i]),
            flagged=bool(probs[i] >= threshold),
            threshold=threshold,
            model_version=version,
            event_time=times[i],
            scored_at=now,
            features=features,
            reasons=[Reason(feature=f, contribution=c) for f, c in reasons[i]]
            if reasons is not None
            else [],
            challenger_scores={name: float(col[i]) for name, col in shadow.items()}
            if shadow
            else None,
        )
        # The contract's own JSON: null entities written, an absent challenger map left out.
        record = score.model_dump(
            mode="json", exclude={"challenger_scores"} if not shadow else set()
        )
        out.append(record)
    return out


def model(rng: np.random.Generator, sparse_keys: list[str]) -> CompiledModel:
    return CompiledModel(
        version=7,
        mean=rng.normal(size=K),
        inv_std=np.abs(rng.normal(size=K)),
        weight=rng.normal(size=K),
        intercept=-4.0,
        sparse={
            k: float(v) for k, v in zip(sparse_keys, rng.normal(size=len(sparse_keys)), strict=True)
        },
    )


def test_matches_dict_encoding_with_hostile_strings_and_reasons() -> None:
    rng = np.random.default_rng(3)
    n = 400
    tids, cards, times, sparse = hostile_columns(n)
    dense = rng.normal(scale=50.0, size=(n, K))
    dense[::5, 3] = 0.0
    dense[::7, 0] = 1e9
    compiled = model(rng, SPARSE_KEYS)
    batch = FeatureBatch(dense, sparse)
    probs = compiled.predict_proba(batch)
    now = datetime.now(UTC)
    enc = ScoreEncoder(reasons=3)
    contrib = compiled.scaled(dense) * compiled.weight
    reasons = enc.reason_columns(contrib, sparse, compiled.sparse)
    shadow = {"fast": probs / 2, 'we"ird': probs / 3}
    entities = hostile_entities(n)
    for with_shadow in (None, shadow):
        got = enc.encode(
            tids, cards, times, probs, 0.5, 7, now, dense, sparse, reasons, with_shadow, entities
        )
        want = reference(
            tids, cards, times, probs, 0.5, 7, now, dense, sparse,
            compiled.reasons(batch, 3), with_shadow, entities,
        )  # fmt: skip
        assert len(got) == n
        for raw, expected in zip(got, want, strict=True):
            parsed = orjson.loads(raw)
            # The same record to the contract, and the same JSON but for how the scoring time
            # spells UTC (`+00:00` here, `Z` in pydantic's dump).
            assert Score.model_validate_json(raw) == Score.model_validate(expected)
            assert parsed == {**expected, "scored_at": now.isoformat()}
    assert any(orjson.loads(r)["flagged"] for r in got) and not all(
        orjson.loads(r)["flagged"] for r in got
    )


def test_reasons_keep_only_positive_contributions_in_order() -> None:
    enc = ScoreEncoder(reasons=3)
    contrib = np.zeros((3, K))
    contrib[0, 5] = 2.0
    contrib[0, 1] = 3.0
    contrib[0, 2] = -1.0
    contrib[1, :] = -1.0
    contrib[2, 4] = 0.5
    sparse = [(), ("channel=pos",), ("channel=pos",)]
    bodies = enc.reason_columns(contrib, sparse, {"channel=pos": 1.5})
    got = [orjson.loads(b"[" + body + b"]") for body in bodies]
    assert got[0] == [
        {"feature": DENSE_FEATURES[1], "contribution": 3.0},
        {"feature": DENSE_FEATURES[5], "contribution": 2.0},
    ]
    assert got[1] == [{"feature": "channel=pos", "contribution": 1.5}]
    assert got[2] == [
        {"feature": "channel=pos", "contribution": 1.5},
        {"feature": DENSE_FEATURES[4], "contribution": 0.5},
    ]
    assert enc.reason_columns(contrib, sparse, {}) is not None


def test_empty_batch_and_no_reasons() -> None:
    enc = ScoreEncoder(reasons=0)
    now = datetime.now(UTC)
    assert enc.encode([], [], [], np.zeros(0), 0.5, 1, now, np.zeros((0, K)), []) == []
    one = enc.encode(["t"], ["c"], [datetime(2026, 1, 1, tzinfo=UTC)], np.array([0.9]), 0.5, 1, now,
                     np.ones((1, K)), [()])  # fmt: skip
    assert orjson.loads(one[0])["reasons"] == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=20),
            st.text(min_size=1, max_size=20),
            st.lists(
                st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=K, max_size=K
            ),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_any_strings_and_floats_round_trip(rows: list[tuple[str, str, list[float]]]) -> None:
    tids = [r[0] for r in rows]
    cards = [r[1] for r in rows]
    dense = np.array([r[2] for r in rows], dtype=np.float64)
    probs = np.linspace(0.0, 1.0, len(rows))
    now = datetime.now(UTC)
    times = [datetime(2026, 1, 1, tzinfo=UTC)] * len(rows)
    sparse: list[tuple[str, ...]] = [()] * len(rows)
    got = ScoreEncoder(reasons=0).encode(tids, cards, times, probs, 0.5, 2, now, dense, sparse)
    want = reference(tids, cards, times, probs, 0.5, 2, now, dense, sparse, None)
    assert [orjson.loads(r) for r in got] == [{**w, "scored_at": now.isoformat()} for w in want]
