"""The small study every fault driver runs (faults.py, faults_storage.py, faults_disk.py): a random
search over the learning rate of a BranchyNet-LeNet, no pruning and no early stop, so that each trial
trains all its epochs and what a fault cost can be counted epoch by epoch. Only what each driver varies
is a parameter."""

from __future__ import annotations

import yaml


def fault_study(name: str, data: dict, *, width: int, batch_size: int, max_epochs: int, n_trials: int, seed: int,
                search: dict | None = None, tracking_uri: str | None = None) -> str:
    """The study file's text; `search` adds to (or replaces) fields of its search section."""
    study = {
        "name": name, "seed": 0, "device": "cpu", "data": data,
        "model": {"name": "branchy_lenet", "width": width},
        "train": {"max_epochs": max_epochs, "lr": 0.05, "batch_size": batch_size,
                  "early_stopping": {"monitor": "val_loss", "patience": 100, "tol": 0.0}},
        "exits": {"criterion": "entropy", "thresholds": [0.8]},
        "search": {"n_trials": n_trials, "objectives": ["accuracy", "avg_exit_depth"],
                   "sampler": {"type": "random", "seed": seed}, "pruner": {"type": "none"}, **(search or {}),
                   "space": {"train.lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True}}},
    }
    if tracking_uri is not None:
        study["tracking"] = {"uri": tracking_uri}
    return yaml.safe_dump(study, sort_keys=False)
