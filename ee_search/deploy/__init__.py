"""The exported early-exit model (docs/design.md §10): the standalone TorchScript program (program.py),
its MLflow pyfunc wrapper (pyfunc.py), and the `export-model` command's work (model_export.py)."""

from ee_search.deploy.model_export import CARD_FILE, export_model
from ee_search.deploy.program import PROGRAM_FILE, DeployedEarlyExit, Normalise, load_program, save_program

__all__ = ["CARD_FILE", "PROGRAM_FILE", "DeployedEarlyExit", "Normalise", "export_model", "load_program",
           "save_program"]
