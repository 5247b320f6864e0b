"""The exported early-exit model (docs/design.md §10): the `torch.export` programs and the torch-only
routine that runs them (program.py, early_exit_torch.py), the ONNX graphs and their numpy routine
(onnx_export.py, early_exit_onnx.py), the MLflow pyfunc over the program (pyfunc.py), and the
`export-model` command's work (model_export.py)."""

from ee_search.deploy.model_export import CARD_FILE, export_model
from ee_search.deploy.onnx_export import ONNX_DIR
from ee_search.deploy.program import PROGRAM_DIR, Normalise, load_program

__all__ = ["CARD_FILE", "ONNX_DIR", "PROGRAM_DIR", "Normalise", "export_model", "load_program"]
