"""Names of the per-epoch validation metrics that early stopping and the pruner may watch, and the
direction each one improves in.

Declared once, below both the study-file schema (which checks `train.early_stopping.monitor` at load
time) and the trainer's early stopping (which judges it every epoch), so the two cannot disagree.
"""

from __future__ import annotations

import re

# val_loss | val_accuracy | val_curve_hypervolume | val_accuracy_exit_<k> (k = 1..K, one exit alone).
MONITOR_PATTERN = r"^(val_loss|val_accuracy|val_curve_hypervolume|val_accuracy_exit_[1-9][0-9]*)$"
MONITOR_HINT = "use val_loss, val_accuracy, val_curve_hypervolume, or val_accuracy_exit_<k> for one exit's accuracy"
_MONITOR = re.compile(MONITOR_PATTERN)


def monitor_mode(monitor: str) -> str:
    """'min' for val_loss; 'max' for the accuracies and val_curve_hypervolume.

    val_accuracy is measured at the trial's own exit thresholds, so it is not comparable between
    trials that chose different thresholds; val_loss, val_accuracy_exit_k and val_curve_hypervolume
    (the area under the network's whole trade-off curve) do not depend on them."""
    if not _MONITOR.match(monitor):
        raise ValueError(f"monitor must be val_loss, val_accuracy, val_curve_hypervolume or "
                         f"val_accuracy_exit_<k> but got {monitor!r}")
    return "min" if monitor == "val_loss" else "max"


def monitored_exit(monitor: str) -> int | None:
    """The exit number k of `val_accuracy_exit_<k>`, or None for the other monitors."""
    monitor_mode(monitor)
    return int(monitor.rsplit("_", 1)[1]) if monitor.startswith("val_accuracy_exit_") else None
