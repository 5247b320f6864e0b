"""A trial's description in words (the MLflow run's note): how it ended and why, and which trial it is."""

from __future__ import annotations

from ee_search.search.describe import describe_ending
from tests.conftest import tiny_config


def test_a_pruned_or_failed_trial_says_why_in_its_description():
    config = tiny_config()
    pruned = describe_ending(4, config, "PRUNED", 3, "pruned", detail="val_loss 1.2 is worse than the 50th percentile")
    assert pruned == ("**Pruned** after 3 epochs: val_loss 1.2 is worse than the 50th percentile. "
                      "Optuna trial 4 of study `tiny`.")
    diverged = describe_ending(5, config, "PRUNED", 1, "non_finite_loss", detail="training diverged")
    assert diverged.startswith("**Pruned** after 1 epoch: the loss became non-finite")
    failed = describe_ending(6, config, "FAIL", 0, detail="RuntimeError: CUDA out of memory")
    assert failed == "**Failed** after 0 epochs: RuntimeError: CUDA out of memory. Optuna trial 6 of study `tiny`."
