"""How a trial ended, and what that means to Optuna, to MLflow and to a person (docs/design.md §5).

Decided once per trial; the recorder then writes the Optuna state, the run's status, its tags and the
run page's description from it, so they can never disagree:

| ending      | Optuna state | MLflow run status | next                                   |
|-------------|--------------|-------------------|----------------------------------------|
| COMPLETE    | COMPLETE     | FINISHED          | final                                  |
| PRUNED      | PRUNED       | KILLED            | final                                  |
| FAILED      | FAIL         | FAILED            | final                                  |
| INTERRUPTED | FAIL         | KILLED            | a WAITING retry resumes it from last.pt |
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum

from ee_search.config import StudyConfig
from ee_search.train.outcome import MAX_EPOCHS, NON_FINITE_LOSS, PATIENCE_EXHAUSTED

PRUNED_BY_PRUNER = "pruned"  # the stop reason of a trial the pruner stopped (beside the train's own)
FINISHED_STATE_NAMES = ("COMPLETE", "PRUNED", "FAIL")  # Optuna's finished TrialState names

_STOPS = {
    PATIENCE_EXHAUSTED: "early stopping: {monitor} did not improve by more than {tol:g} for {patience} epochs",
    MAX_EPOCHS: "reached train.max_epochs ({max_epochs})",
    NON_FINITE_LOSS: "the loss became non-finite (diverged)",
}


class Ending(Enum):
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAILED = "FAIL"
    INTERRUPTED = "INTERRUPTED"  # Optuna records FAIL; the run waits, KILLED, for its retry

    @property
    def optuna_state(self) -> str:
        """The name of the optuna.trial.TrialState the trial ends in."""
        return "FAIL" if self is Ending.INTERRUPTED else self.value

    @property
    def run_status(self) -> str:
        """The MLflow RunStatus the trial's run is terminated with."""
        return _RUN_STATUS[self]

    @property
    def final(self) -> bool:
        """Nothing will resume the trial: its last.pt can go."""
        return self is not Ending.INTERRUPTED

    def describe(self, trial_number: int, config: StudyConfig, epochs: int, stop_reason: str | None = None,
                 values: Sequence[float] | None = None, detail: str | None = None) -> str:
        """The run page's description (Markdown): why the trial ended, after how many epochs, with what
        values, and which Optuna trial of which study it is."""
        who = f"Optuna trial {trial_number} of study `{config.name}`"
        trained = f"{epochs} epoch{'s' if epochs != 1 else ''}"
        if self is Ending.COMPLETE:
            shown = ", ".join(f"{name} {value:.4f}" for name, value in zip(config.search.objectives, values or []))
            stop = stop_in_words(stop_reason, config)
            return f"**Complete** after {trained}" + (f" ({stop})" if stop else "") + f": {shown}. {who}."
        if self is Ending.PRUNED:
            why = stop_in_words(stop_reason, config) if stop_reason != PRUNED_BY_PRUNER else None
            return f"**Pruned** after {trained}: {why or detail or 'pruned'}. {who}."
        if self is Ending.FAILED:
            return f"**Failed** after {trained}: {detail or 'error'}. {who}."
        return (f"**Interrupted** after {trained} ({detail or 'stopped'}); saved to resume: the next "
                f"`ee-search run` of this study continues this run. {who}.")


_RUN_STATUS = {Ending.COMPLETE: "FINISHED", Ending.PRUNED: "KILLED", Ending.FAILED: "FAILED",
               Ending.INTERRUPTED: "KILLED"}


def stop_in_words(stop_reason: str | None, config: StudyConfig) -> str | None:
    if stop_reason is None:
        return None
    es = config.train.early_stopping
    template = _STOPS.get(stop_reason, stop_reason.replace("_", " "))
    return template.format(monitor=es.monitor, tol=es.tol, patience=es.patience, max_epochs=config.train.max_epochs)


def state_counts(trials: Iterable) -> dict[str, int]:
    """Finished trials by Optuna state name (COMPLETE, PRUNED, FAIL), every name present."""
    names = [t.state.name for t in trials]
    return {state: names.count(state) for state in FINISHED_STATE_NAMES}
