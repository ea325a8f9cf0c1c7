"""The per-card features and state update, one record after another, compiled by Numba.

Records of the same card must see each other in order, so the numpy path in `core/features.py`
processes a batch in rounds (round r: each card's r-th record of the batch). With card-testing
bursts a batch needs many rounds, each paying ~100 numpy calls: half the feature time went
there. This kernel walks the batch once in order instead, the plain sequential definition of the
same features. `tests/test_features_compiled_mirror.py` checks it agrees with the numpy path
(1e-12) on streams with many records per card in one batch.

Column layouts are those of `core/features.py` (passed in, not imported, to avoid a cycle).
"""

from __future__ import annotations

import math

import numba
import numpy as np

# State columns (numeric): see core/features.py.
_LAST_TS, _LAST_AMOUNT, _V1, _V24, _S24, _MEAN, _VAR, _GAP_MEAN, _N, _HC, _HS = range(11)


@numba.njit(cache=True, nogil=True)
def card_features(
    out: np.ndarray,
    slots: np.ndarray,
    first: np.ndarray,
    ts: np.ndarray,
    amount: np.ndarray,
    log_amount: np.ndarray,
    hour_cos: np.ndarray,
    hour_sin: np.ndarray,
    country: np.ndarray,
    merchant: np.ndarray,
    numeric: np.ndarray,
    keys: np.ndarray,
    n_countries: int,
    n_merchants: int,
    first_seen_gap_s: float,
    tau_s: float,
    day_tau_s: float,
    habit_alpha: float,
    amount_var_floor: float,
    habit_after: float,
    outlier_z: float,
) -> None:
    """Fill columns 5 and 7-16 of `out` and update `numeric` / `keys` rows in place."""
    c0 = 1  # first column of the recent-countries list in `keys`
    m0 = 1 + n_countries  # first column of the recent-merchants list
    for i in range(slots.shape[0]):
        s = slots[i]
        seen = not first[i]
        t = ts[i]
        amt = amount[i]
        la = log_amount[i]
        hc = hour_cos[i]
        hs = hour_sin[i]
        if not seen:
            for j in range(keys.shape[1]):
                keys[s, j] = 0
        # Out-of-order events give a negative gap: treat them as simultaneous.
        gap = max(t - numeric[s, _LAST_TS], 0.0) if seen else 0.0
        e24 = math.exp(gap / -day_tau_s)
        if seen:
            v1 = numeric[s, _V1] * math.exp(gap / -tau_s) + 1.0
            v24 = numeric[s, _V24] * e24 + 1.0
            s24 = numeric[s, _S24] * e24 + amt
        else:
            v1 = 1.0
            v24 = 1.0
            s24 = amt
        mean = numeric[s, _MEAN]
        var = numeric[s, _VAR]
        gap_mean = numeric[s, _GAP_MEAN]
        d = la - mean
        lg = math.log1p(gap)
        out[i, 5] = math.log1p(min(gap, first_seen_gap_s) if seen else first_seen_gap_s)
        out[i, 7] = la - math.log1p(numeric[s, _LAST_AMOUNT]) if seen else 0.0
        out[i, 8] = v1
        out[i, 10] = v24
        out[i, 11] = math.log1p(s24)
        out[i, 12] = d / math.sqrt(var + amount_var_floor) if seen else 0.0
        out[i, 13] = lg - gap_mean if seen and gap_mean >= 0.0 else 0.0
        # Clamped: rounding can leave -1e-17 where the hour is exactly the usual one.
        out[i, 14] = max(1.0 - hc * numeric[s, _HC] - hs * numeric[s, _HS], 0.0) if seen else 0.0

        ct = country[i]
        last_country = keys[s, 0]
        known_c = False
        for j in range(n_countries):
            if keys[s, c0 + j] == ct:
                known_c = True
        out[i, 9] = 1.0 if seen and ct != 0 and last_country != 0 and ct != last_country else 0.0
        out[i, 15] = 1.0 if seen and ct != 0 and not known_c and keys[s, c0] != 0 else 0.0
        mt = merchant[i]
        known_m = False
        for j in range(n_merchants):
            if keys[s, m0 + j] == mt:
                known_m = True
        out[i, 16] = 1.0 if seen and mt != 0 and not known_m and keys[s, m0] != 0 else 0.0

        # New state. Running habits: a plain mean for the first transactions, then exponential.
        if seen:
            a = max(1.0 / (numeric[s, _N] + 1.0), habit_alpha)
            numeric[s, _LAST_TS] = max(t, numeric[s, _LAST_TS])
            # Winsorised once the card has a habit: a spree of outliers (a stolen card) does
            # not become the card's habit, so it keeps standing out.
            if numeric[s, _N] >= habit_after:
                bound = outlier_z * math.sqrt(var + amount_var_floor)
                d = min(max(d, -bound), bound)
            numeric[s, _MEAN] = mean + a * d
            numeric[s, _VAR] = (1.0 - a) * (var + a * d * d)
            numeric[s, _GAP_MEAN] = lg if gap_mean < 0.0 else gap_mean + a * (lg - gap_mean)
            numeric[s, _N] += 1.0
            numeric[s, _HC] += a * (hc - numeric[s, _HC])
            numeric[s, _HS] += a * (hs - numeric[s, _HS])
        else:
            numeric[s, _LAST_TS] = t
            numeric[s, _MEAN] = la
            numeric[s, _VAR] = 0.0
            numeric[s, _GAP_MEAN] = -1.0
            numeric[s, _N] = 1.0
            numeric[s, _HC] = hc
            numeric[s, _HS] = hs
        numeric[s, _LAST_AMOUNT] = amt
        numeric[s, _V1] = v1
        numeric[s, _V24] = v24
        numeric[s, _S24] = s24

        # A new value goes in front of its recent list; a known one leaves the list as is.
        if ct != 0:
            keys[s, 0] = ct
            if not (known_c and seen):
                for j in range(n_countries - 1, 0, -1):
                    keys[s, c0 + j] = keys[s, c0 + j - 1]
                keys[s, c0] = ct
        if mt != 0 and not (known_m and seen):
            for j in range(n_merchants - 1, 0, -1):
                keys[s, m0 + j] = keys[s, m0 + j - 1]
            keys[s, m0] = mt


def warm_up() -> None:
    """Load (or compile) the kernel now, not on the first batch: loading it takes ~0.3 s."""
    numeric = np.zeros((1, 11))
    keys = np.zeros((1, 13), dtype=np.int32)
    one = np.zeros(1)
    card_features(
        np.zeros((1, 20)), np.zeros(1, dtype=np.int64), np.ones(1, dtype=np.bool_), one, one,
        one, one, one, np.zeros(1, dtype=np.int32), np.zeros(1, dtype=np.int32), numeric, keys,
        4, 8, 1.0, 1.0, 1.0, 0.05, 0.1, 5.0, 2.0,
    )  # fmt: skip
