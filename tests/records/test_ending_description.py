"""A trial's description in words (the MLflow run's note): how it ended and why, and which trial it is."""

from __future__ import annotations

from ee_search.records import Ending
from tests.conftest import tiny_config


def test_a_pruned_or_failed_trial_says_why_in_its_description():
    config = tiny_config()
    pruned = Ending.PRUNED.describe(4, config, 3, "pruned", detail="val_loss 1.2 is worse than the 50th percentile")
    assert pruned == ("**Pruned** after 3 epochs: val_loss 1.2 is worse than the 50th percentile. "
                      "Optuna trial 4 of study `tiny`.")
    diverged = Ending.PRUNED.describe(5, config, 1, "non_finite_loss", detail="training diverged")
    assert diverged.startswith("**Pruned** after 1 epoch: the loss became non-finite")
    failed = Ending.FAILED.describe(6, config, 0, detail="RuntimeError: CUDA out of memory")
    assert failed == "**Failed** after 0 epochs: RuntimeError: CUDA out of memory. Optuna trial 6 of study `tiny`."


def test_an_interrupted_or_complete_trial_says_what_happens_next():
    config = tiny_config()
    interrupted = Ending.INTERRUPTED.describe(7, config, 2, detail="SIGTERM")
    assert interrupted.startswith("**Interrupted** after 2 epochs (SIGTERM); saved to resume")
    complete = Ending.COMPLETE.describe(8, config, 3, "max_epochs", values=[0.91234, 0.5])
    assert complete.startswith(f"**Complete** after 3 epochs (reached train.max_epochs ({config.train.max_epochs})): "
                               f"{config.search.objectives[0]} 0.9123")
