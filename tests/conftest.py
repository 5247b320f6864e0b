"""Shared fixtures: a tiny study file on scikit-learn's digits, and a working directory per test so
every SQLite store, MLflow artifact and cache lands in tmp_path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

TINY_STUDY = """\
name: tiny
seed: 3
data:
  dataset: digits
  val_fraction: 0.2
  augment: {crop: 28, rotation: 10}
model: {name: branchy_lenet, width: 64}
train:
  max_epochs: 2
  lr: 0.05
  batch_size: 64
  early_stopping: {monitor: val_loss, patience: 2, tol: 0.0}
exits: {criterion: entropy, thresholds: [0.8]}
search:
  n_trials: 2
  objectives: [accuracy, avg_exit_depth]
  sampler: {type: random, seed: 1}
  pruner: {type: none}
  space:
    train.lr: {type: float, low: 0.01, high: 0.1, log: true}
    exits.thresholds: {type: float, low: 0.1, high: 2.0, per_item: true}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tiny_study(workdir: Path) -> Path:
    path = workdir / "tiny.yaml"
    path.write_text(TINY_STUDY)
    return path


def write_study(directory: Path, text: str, name: str = "study.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path
