"""The model as MLflow logs it: a pyfunc wrapping the River pipeline and the feature code.

`predict` takes a pandas DataFrame either of feature vectors (columns as in `Score.features`;
the same probabilities as the live scorer) or of raw transactions in the wire format (then
features are built with empty per-card history and the snapshot's label-fed state, as the
scorers serve it). It returns the probability of fraud.

It is logged as code (`trainer/pyfunc_model.py`, MLflow's models-from-code): no pickle. Its
model is the artifact `snapshot.json`, the exact signed `model-updates` record it was logged
from; loading verifies its signature with the trainer's public key
(`FRAUDSTREAM_SNAPSHOT_VERIFY_KEY` or `FRAUDSTREAM_SNAPSHOT_VERIFY_KEY_FILE`: without one the
model does not load) and rebuilds the River pipeline from its data.

The signature lists every column either form may have, all optional: the raw transaction
fields, the dense features, and the one-hot features the model has weights for (a one-hot
column the model never saw carries no weight, so MLflow dropping it changes nothing).

`log_pyfunc_model` packages a snapshot as that model: the code, the `snapshot.json` and
`lineage.json` artifacts, the signature, an input example and pinned pip requirements.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, Schema, TensorSpec
from mlflow.types.schema import AnyType

from core.contracts import Transaction
from core.features import FeatureBuilder
from core.label_state import LabelState
from core.model import feature_names, predict_one
from core.snapshot import Snapshot, SnapshotError, decode_snapshot, encode_snapshot

# The MLflow model's code (models-from-code).
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")

RAW_COLUMNS = {"transaction_id", "card_id", "amount", "merchant_category", "timestamp"}
RAW_STRINGS = (
    "transaction_id",
    "card_id",
    "merchant_category",
    "timestamp",
    "currency",
    "merchant_id",
    "country",
    "channel",
)
INPUT_EXAMPLE = {
    "transaction_id": "t1",
    "card_id": "c1",
    "amount": 950.0,
    "merchant_category": "jewelry",
    "timestamp": "2026-11-22T03:10:00Z",
    "country": "BR",
    "channel": "online",
}


def model_features(pipeline: Any) -> list[str]:
    """Every feature the model scores with: the dense ones, then one-hot keys it learned."""
    return [str(k) for k in feature_names(pipeline)]


def model_signature(pipeline: Any) -> ModelSignature:
    cols: list[ColSpec | TensorSpec] = [
        ColSpec("string", name, required=False) for name in RAW_STRINGS
    ]
    # `amount` is in both forms; a transaction's JSON amount may be an integer (int64 column),
    # which MLflow would refuse to convert to double.
    cols.append(ColSpec(AnyType(), "amount", required=False))
    cols += [
        ColSpec("double", name, required=False)
        for name in model_features(pipeline)
        if name != "amount"
    ]
    return ModelSignature(inputs=Schema(cols), outputs=Schema([ColSpec("double")]))


def input_example() -> pd.DataFrame:
    return pd.DataFrame([INPUT_EXAMPLE])


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    pkgs = ["mlflow", "river", "pandas", "numpy", "pydantic", "orjson", "fraudstream"]
    out = []
    for p in pkgs:
        try:
            out.append(f"{p}=={version(p)}")
        except Exception:  # noqa: BLE001,S112  not installed as a distribution: leave unpinned
            out.append(p)
    return out


def log_pyfunc_model(snapshot: Snapshot, pipeline: Any, info: dict[str, Any]) -> Any:
    """Log `snapshot` (its model is `pipeline`, its lineage `info`) to the active MLflow run."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        snap_path = Path(tmp) / "snapshot.json"
        snap_path.write_bytes(encode_snapshot(snapshot))
        lineage_path = Path(tmp) / "lineage.json"
        lineage_path.write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))
        return mlflow.pyfunc.log_model(
            name="model",
            # Logged as code, not pickled: loading it unpickles nothing.
            python_model=str(PYFUNC_CODE),
            artifacts={"snapshot": str(snap_path), "lineage": str(lineage_path)},
            signature=model_signature(pipeline),
            input_example=input_example(),
            pip_requirements=_pip_requirements(),
            metadata={
                "fraudstream_version": snapshot.version,
                "labels_learned": snapshot.labels_learned,
            },
            params={k: str(v) for k, v in info["hyperparameters"].items()},
            step=snapshot.labels_learned,
        )


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and v is not pd.NA


def _feature_rows(df: pd.DataFrame) -> list[dict[str, float]]:
    # One-hot columns absent from a record arrive as NaN: the record did not have them.
    return [
        {str(k): float(v) for k, v in record.items() if _present(v)}
        for record in df.to_dict(orient="records")
    ]


def _raw_rows(df: pd.DataFrame, labels: LabelState) -> list[dict[str, float]]:
    txs = [
        Transaction.model_validate({k: v for k, v in r.items() if _present(v)})
        for r in df.to_dict(orient="records")
    ]
    return FeatureBuilder(labels=labels).build(txs).dicts()


class FraudModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from infra.config import load_settings
        from infra.signing import verify_key

        artifacts = context.artifacts
        if "snapshot" not in artifacts:
            raise SnapshotError(
                "this MLflow model has no snapshot.json: logged by an older fraudstream (a "
                "pickled pipeline), which is never unpickled",
                "incompatible",
            )
        key = verify_key(load_settings())
        snapshot = decode_snapshot(Path(artifacts["snapshot"]).read_bytes())
        snapshot.verify(key)
        self.pipeline = snapshot.load_model()
        self.version: int | None = snapshot.version
        self.labels = (  # served with the weights, as scorers do
            LabelState.from_data(snapshot.label_state)
            if snapshot.label_state is not None
            else LabelState()
        )

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        if RAW_COLUMNS.issubset(model_input.columns):
            rows = _raw_rows(model_input, self.labels)
        else:
            rows = _feature_rows(model_input)
        return np.array([predict_one(self.pipeline, x) for x in rows], dtype=np.float64)
