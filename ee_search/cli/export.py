"""`ee-search export-model`: one operating point as a deployable model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ee_search.cli.common import SetOpt, StorageOpt, StudyArg, TrackingOpt, _fail, _load, app, console
from ee_search.errors import CorruptArtifact, UserInputError


# ---------------------------------------------------------------------------------- export-model
@app.command("export-model")
def export_model(
    study: StudyArg,
    trial: Annotated[int, typer.Option("--trial", min=0, help="The trial whose network to export (a row of pareto.csv).")],
    out: Annotated[Path, typer.Option("--out", help="New directory for the MLflow model, program/, onnx/ and card.json.")],
    thresholds: Annotated[str | None, typer.Option("--thresholds", help="JSON list, one per side exit (default: the trial's own).")] = None,
    register: Annotated[str | None, typer.Option("--register", help="Also register it under this name in the model registry.")] = None,
    set_: SetOpt = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Export one operating point (trial + thresholds) as a deployable early-exit model."""
    import json

    from ee_search.deploy import export_model

    try:
        chosen = None
        if thresholds is not None:
            try:
                chosen = json.loads(thresholds)
            except (json.JSONDecodeError, RecursionError):  # RecursionError: '[[[[…' nested deeper than the stack
                raise UserInputError("--thresholds", None, "must be a JSON list such as '[0.9, 0.8]'") from None
            if not isinstance(chosen, list):
                raise UserInputError("--thresholds", None, "must be a JSON list such as '[0.9, 0.8]'")
        loaded = _load(study, set_, storage, tracking_uri)
        card = export_model(loaded, trial, out, chosen, register)
    except UserInputError as error:
        _fail(error)
    except CorruptArtifact as error:  # the trial's best.pt or val_logits.pt: another trial can still be exported
        _fail(error.naming(trial=trial, fix="export another trial of the front (ee-search pareto)"))
    from ee_search.console import print_exported

    print_exported(console, card, out)
