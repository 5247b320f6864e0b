"""The objective registry: what each name in `search.objectives` measures and which way is better.

The schema's choices (`ObjectiveName`) and each study's Optuna directions are read from this table,
so adding an objective here is all the study file needs; the trial computes its value from the
validation split's early-exit outcomes (`exits/`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ObjectiveSpec:
    direction: Literal["maximize", "minimize"]
    meaning: str  # one line, for documentation and help


OBJECTIVES: dict[str, ObjectiveSpec] = {
    "accuracy": ObjectiveSpec(
        "maximize", "share of validation images classified correctly at the trial's exit thresholds"),
    "avg_exit_depth": ObjectiveSpec(
        "minimize", "mean exit index over validation images divided by the number of exits, in (0, 1]"),
    "relative_flops": ObjectiveSpec(
        "minimize", "mean compute per validation image as a share of running the whole network"),
    # It ranks training recipes, whatever thresholds the trial sampled.
    "curve_hypervolume": ObjectiveSpec(
        "maximize", "area the trial's own (accuracy, avg_exit_depth) points over all thresholds dominate"),
}

ObjectiveName = Literal[tuple(OBJECTIVES)]
DIRECTIONS: dict[str, str] = {name: spec.direction for name, spec in OBJECTIVES.items()}
