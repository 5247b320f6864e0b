"""A completed trial's network as an MLflow LoggedModel (docs/design.md §5): its name, type, params and
files, so the study's Models tab lists every trained network without anyone knowing the run's layout.

    MLmodel    MLflow's model file: flavor `ee_search` names the weights file and what rebuilds it
    best.pt    the kept weights, the same bytes as the run's checkpoints/best.pt (BestCheckpointFile)
"""

from __future__ import annotations

from ee_search.records.artifacts import BEST_CHECKPOINT, file_name

MODEL_CHECKPOINT = file_name(BEST_CHECKPOINT)  # at the top of the LoggedModel's artifacts
MODEL_TYPE = "ee-search early-exit network"  # MLflow's free-form `model_type`, shown in the Models tab
MODEL_FLAVOR = "ee_search"  # the MLmodel's flavor entry
# How to rebuild the network from MODEL_CHECKPOINT, written into the flavor for a reader of the MLmodel.
MODEL_LOADER = "ee_search.checkpoints.model_from_checkpoint(torch.load('best.pt', weights_only=True))"
# The model's own params, beside the trial's sampled values (Optuna's param names, e.g. `train.lr`).
MODEL_TRIAL_PARAM = "trial_number"
MODEL_BEST_EPOCH_PARAM = "best_epoch"


def model_name(trial_number: int) -> str:
    """The LoggedModel's name: the trial's run is named the same (`trial-<number>`)."""
    return f"trial-{trial_number}"
