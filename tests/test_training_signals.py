"""Training signals end to end through the CLI with --set overrides (issue: early stopping you can
trust, a pruner for multi-objective studies, weight averaging, divergence)."""

from __future__ import annotations

import optuna
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from ee_search.cli import app

runner = CliRunner()
NO_SPACE = "search.space={}"


def run(study, *sets, n_trials=3):
    args = ["run", str(study), "--n-trials", str(n_trials)]
    for s in sets:
        args += ["--set", s]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")


def client(workdir):
    return MlflowClient(f"sqlite:///{workdir}/mlflow.db")


def test_patience_1_tol_10_trains_exactly_two_epochs(tiny_study):
    study = run(tiny_study, "train.max_epochs=6", "train.early_stopping.patience=1", "train.early_stopping.tol=10")
    for t in study.trials:
        assert t.state.name == "COMPLETE"
        assert t.user_attrs["epochs_trained"] == 2 and t.user_attrs["stop_reason"] == "patience_exhausted"


def test_patience_50_tol_0_reaches_max_epochs(tiny_study, workdir):
    study = run(tiny_study, "train.max_epochs=3", "train.early_stopping.patience=50", "train.early_stopping.tol=0")
    mlflow = client(workdir)
    for t in study.trials:
        assert t.user_attrs["epochs_trained"] == 3 and t.user_attrs["stop_reason"] == "max_epochs"
        assert mlflow.get_run(t.user_attrs["mlflow_run_id"]).data.tags["ee_search.stop_reason"] == "max_epochs"


def test_multi_objective_pruner_prunes_some_trials_and_their_runs_are_killed(tiny_study, workdir):
    study = run(
        tiny_study,
        "train.max_epochs=4",
        "train.early_stopping.patience=3",
        "train.early_stopping.tol=1e-3",
        "search.pruner={type: early_stopping, n_startup_trials: 3, n_warmup_epochs: 1}",
        "search.sampler={type: random, seed: 5}",
        "search.space={train.lr: {type: float, low: 1.0e-7, high: 3.0e-2, log: true}}",
        n_trials=12,
    )
    states = [t.state.name for t in study.trials]
    assert 0 < states.count("PRUNED") < len(states) and "COMPLETE" in states and "FAIL" not in states
    mlflow = client(workdir)
    for t in study.trials:
        if t.state.name != "PRUNED":
            continue
        assert t.user_attrs["stop_reason"] == "pruned" and t.user_attrs["epochs_trained"] >= 2
        run_ = mlflow.get_run(t.user_attrs["mlflow_run_id"])
        assert run_.info.status == "KILLED" and run_.data.tags["optuna.trial_state"] == "PRUNED"
        history = mlflow.get_metric_history(run_.info.run_id, "val_loss")
        assert len(history) == t.user_attrs["epochs_trained"]  # metrics kept
        assert [f.path for f in mlflow.list_artifacts(run_.info.run_id, "checkpoints")] == ["checkpoints/best.pt"]
    # The tiny learning rates are the ones pruned.
    pruned_lr = [t.params["train.lr"] for t in study.trials if t.state.name == "PRUNED"]
    assert max(pruned_lr) < 1e-3


@pytest.mark.parametrize("method", ["ema", "swa", "t_adema"])
def test_each_averaging_method_completes_a_trial(tiny_study, method):
    study = run(tiny_study, NO_SPACE, f"train.averaging={{method: {method}, decay: 0.9, update_every: 2}}", n_trials=1)
    t = study.trials[0]
    assert t.state.name == "COMPLETE" and 0.0 <= t.values[0] <= 1.0


def test_divergence_ends_pruned_with_non_finite_loss_and_the_study_finishes(tiny_study, workdir):
    study = run(tiny_study, NO_SPACE, "train.lr=1e12", "train.max_epochs=3", n_trials=2)
    mlflow = client(workdir)
    assert len(study.trials) == 2
    for t in study.trials:
        assert t.state.name == "PRUNED" and t.user_attrs["stop_reason"] == "non_finite_loss"
        run_ = mlflow.get_run(t.user_attrs["mlflow_run_id"])
        assert run_.info.status == "KILLED" and run_.data.tags["ee_search.stop_reason"] == "non_finite_loss"
