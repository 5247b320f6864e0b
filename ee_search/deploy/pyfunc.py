"""The MLflow pyfunc face of an exported operating point: `mlflow.pyfunc.load_model(DIR).predict(x)`.

A "model from code" file: `mlflow.pyfunc.save_model(python_model=<this file>)` copies it into the
model and runs it at load time, so nothing is unpickled and the model needs only mlflow, numpy,
pandas and torch, not ee-search. It holds no network code of its own: it imports the torch-only
routine shipped in the model's `program` artifact (`early_exit_torch.py`, see program.py) and calls
it on the `torch.export` programs beside it, so the pyfunc, the standalone program and
`mlflow models serve` all run the very same compacted inference.
"""

import importlib.util
import warnings
from pathlib import Path

import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch


def _load_runner(directory: Path):
    """The program folder's own early_exit_torch.py, imported from its file (not from ee_search)."""
    spec = importlib.util.spec_from_file_location("early_exit_torch", directory / "early_exit_torch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load(directory)


with warnings.catch_warnings():
    # MLflow suggests type hints on `predict` for its own input validation; the model's signature
    # (a float32 tensor spec, saved with it) already validates the input.
    warnings.simplefilter("ignore", UserWarning)

    class EarlyExitPyfunc(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            self.program = _load_runner(Path(context.artifacts["program"]))

        def predict(self, context, model_input, params=None):
            x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
            prediction, exit_, top = self.program(x)
            return pd.DataFrame({"prediction": prediction.numpy(), "exit": exit_.numpy(),
                                 "confidence": top.numpy()})


mlflow.models.set_model(EarlyExitPyfunc())
