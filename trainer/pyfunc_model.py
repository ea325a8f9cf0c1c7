"""The code of the logged MLflow model (MLflow's models-from-code): MLflow runs this file to
load the model, so loading unpickles nothing. The model itself is the signed snapshot artifact
(`trainer.pyfunc.FraudModel.load_context` verifies it and rebuilds the pipeline from data)."""

import mlflow

from trainer.pyfunc import FraudModel

mlflow.models.set_model(FraudModel())
