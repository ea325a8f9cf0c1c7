"""The model as MLflow logs it: a pyfunc wrapping the River pipeline and the feature code.

`predict` takes a pandas DataFrame either of feature vectors (columns as in `Score.features`;
the same probabilities as the live scorer) or of raw transactions in the wire format (then
features are built with empty per-card history). It returns the probability of fraud.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from schemas import Transaction
from scorer.features import FeatureBuilder
from scorer.model import predict_one

RAW_COLUMNS = {"transaction_id", "card_id", "amount", "merchant_category", "timestamp"}


def _feature_rows(df: pd.DataFrame) -> list[dict[str, float]]:
    rows = []
    for record in df.to_dict(orient="records"):
        # One-hot columns absent from a record arrive as NaN: the record did not have them.
        rows.append(
            {
                str(k): float(v)
                for k, v in record.items()
                if v is not None and not (isinstance(v, float) and math.isnan(v))
            }
        )
    return rows


def _raw_rows(df: pd.DataFrame) -> list[dict[str, float]]:
    records = df.to_dict(orient="records")
    txs = [
        Transaction.model_validate(
            {k: v for k, v in r.items() if not (isinstance(v, float) and math.isnan(v))}
        )
        for r in records
    ]
    return FeatureBuilder().build(txs).dicts()


class FraudModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        with open(context.artifacts["pipeline"], "rb") as f:
            self.pipeline = pickle.load(f)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        if RAW_COLUMNS.issubset(model_input.columns):
            rows = _raw_rows(model_input)
        else:
            rows = _feature_rows(model_input)
        return np.array([predict_one(self.pipeline, x) for x in rows], dtype=np.float64)
