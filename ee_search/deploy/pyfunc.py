"""The MLflow pyfunc face of an exported operating point: `mlflow.pyfunc.load_model(DIR).predict(x)`.

A "model from code" file: `mlflow.pyfunc.save_model(python_model=<this file>)` copies it into the
model and runs it at load time, so nothing is unpickled and the model needs only mlflow, numpy,
pandas and torch, not ee-search. It holds no network code of its own: it loads the TorchScript
program (`program.py`) from the model's artifacts and calls it, so the pyfunc, the standalone program
and `mlflow models serve` all run the very same compacted inference.
"""

import warnings

import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch


with warnings.catch_warnings():
    # MLflow suggests type hints on `predict` for its own input validation; the model's signature
    # (a float32 tensor spec, saved with it) already validates the input.
    warnings.simplefilter("ignore", UserWarning)

    class EarlyExitPyfunc(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
                self.program = torch.jit.load(context.artifacts["program"], map_location="cpu").eval()

        def predict(self, context, model_input, params=None):
            x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
            with torch.no_grad():
                prediction, exit_, top = self.program(x)
            return pd.DataFrame({"prediction": prediction.numpy(), "exit": exit_.numpy(),
                                 "confidence": top.numpy()})


mlflow.models.set_model(EarlyExitPyfunc())
