"""A trial's ending in words: the description (`mlflow.note.content`) on its MLflow run page.

The tags say the same in codes (optuna.trial_state, ee_search.stop_reason); this is what a person
reads first on the run's Overview, so it says why the trial ended, after how many epochs, with what
values, and which Optuna trial of which study it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from ee_search.config import StudyConfig
from ee_search.train import MAX_EPOCHS, NON_FINITE_LOSS, PATIENCE_EXHAUSTED

_STOPS = {
    PATIENCE_EXHAUSTED: "early stopping: {monitor} did not improve by more than {tol:g} for {patience} epochs",
    MAX_EPOCHS: "reached train.max_epochs ({max_epochs})",
    NON_FINITE_LOSS: "the loss became non-finite (diverged)",
}


def stop_in_words(stop_reason: str | None, config: StudyConfig) -> str | None:
    if stop_reason is None:
        return None
    es = config.train.early_stopping
    template = _STOPS.get(stop_reason, stop_reason.replace("_", " "))
    return template.format(monitor=es.monitor, tol=es.tol, patience=es.patience, max_epochs=config.train.max_epochs)


def describe_ending(trial_number: int, config: StudyConfig, state: str, epochs: int, stop_reason: str | None = None,
                    values: Sequence[float] | None = None, detail: str | None = None) -> str:
    """`state` is the objective's Ending state: COMPLETE, PRUNED, FAIL or INTERRUPTED."""
    who = f"Optuna trial {trial_number} of study `{config.name}`"
    trained = f"{epochs} epoch{'s' if epochs != 1 else ''}"
    if state == "COMPLETE":
        shown = ", ".join(f"{name} {value:.4f}" for name, value in zip(config.search.objectives, values or []))
        stop = stop_in_words(stop_reason, config)
        return f"**Complete** after {trained}" + (f" ({stop})" if stop else "") + f": {shown}. {who}."
    if state == "PRUNED":
        why = stop_in_words(stop_reason, config) if stop_reason != "pruned" else None
        return f"**Pruned** after {trained}: {why or detail or 'pruned'}. {who}."
    if state == "FAIL":
        return f"**Failed** after {trained}: {detail or 'error'}. {who}."
    return (f"**Interrupted** after {trained} ({detail or 'stopped'}); saved to resume: the next "
            f"`ee-search run` of this study continues this run. {who}.")


def describe_study(name: str, counts: dict[str, int], target: int | None, front_points: int, front_trials: int,
                   front_hypervolume: float | None) -> str:
    """The study run's description: where the study stands, rewritten after every finished trial."""
    done = sum(counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL"))
    text = (f"Study `{name}`: {done}{f' of {target}' if target else ''} trials finished ({counts.get('COMPLETE', 0)} "
            f"complete, {counts.get('PRUNED', 0)} pruned, {counts.get('FAIL', 0)} failed)")
    if front_hypervolume is not None:
        text += (f"; dense front: {front_points} operating points from {front_trials} trials, hypervolume "
                 f"{front_hypervolume:.4f} (accuracy vs average exit depth, reference 0, 1)")
    return text + ". Trials are the nested runs; the study's figures are in `figures/`, its front in `pareto/`."
