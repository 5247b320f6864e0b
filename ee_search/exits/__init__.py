"""Exits: cached logits -> decisions, threshold sweep, trade-off curve, FLOPs per exit, and
inference that drops samples once they leave."""

from ee_search.exits.flops import ExitCosts, exit_costs, training_flops_per_image
from ee_search.exits.inference import (
    CompactedEarlyExit,
    EarlyExitPrediction,
    predict_dense,
    predict_early_exit,
)
from ee_search.exits.logits import ExitLogits, collect_exit_logits
from ee_search.exits.operating_points import (
    OperatingPoint,
    curve_hypervolume,
    front_indices,
    hypervolume,
    operating_points,
)
from ee_search.exits.policy import (
    CRITERIA,
    ExitOutcome,
    Outcomes,
    ExitPolicy,
    criterion_score,
    evaluate,
    exit_index,
    exit_predictions,
    may_leave,
    outcomes,
    per_exit_accuracy,
    score_logits,
    scores_and_correct,
)
from ee_search.exits.sweep import threshold_grid, tradeoff_curve

__all__ = [
    "CRITERIA",
    "CompactedEarlyExit",
    "EarlyExitPrediction",
    "ExitCosts",
    "ExitLogits",
    "ExitOutcome",
    "OperatingPoint",
    "Outcomes",
    "ExitPolicy",
    "collect_exit_logits",
    "criterion_score",
    "curve_hypervolume",
    "evaluate",
    "exit_costs",
    "exit_index",
    "exit_predictions",
    "front_indices",
    "hypervolume",
    "operating_points",
    "may_leave",
    "outcomes",
    "per_exit_accuracy",
    "score_logits",
    "scores_and_correct",
    "predict_dense",
    "predict_early_exit",
    "threshold_grid",
    "tradeoff_curve",
    "training_flops_per_image",
]
