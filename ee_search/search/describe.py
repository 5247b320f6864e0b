"""The study run's description (`mlflow.note.content`): where the study stands, in words.

A trial's own description comes from its ending (records.Ending.describe).
"""

from __future__ import annotations

def describe_study(name: str, counts: dict[str, int], target: int | None, front_points: int, front_trials: int,
                   front_hypervolume: float | None) -> str:
    """The study run's description: where the study stands, rewritten after every finished trial.
    `counts` are records.state_counts of the study's trials."""
    done = sum(counts.values())
    text = (f"Study `{name}`: {done}{f' of {target}' if target else ''} trials finished ({counts.get('COMPLETE', 0)} "
            f"complete, {counts.get('PRUNED', 0)} pruned, {counts.get('FAIL', 0)} failed)")
    if front_hypervolume is not None:
        text += (f"; dense front: {front_points} operating points from {front_trials} trials, hypervolume "
                 f"{front_hypervolume:.4f} (accuracy vs average exit depth, reference 0, 1)")
    return text + ". Trials are the nested runs; the study's figures are in `figures/`, its front in `pareto/`."
