"""The study's moving parts end to end, one short run each: every sampler, a single-objective study
with one of Optuna's own pruners, trials run as threads (search.n_jobs), each optimizer, and bf16
autocast (the CPU takes the same code path CUDA does)."""

from __future__ import annotations

import optuna
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from ee_search.cli import app

runner = CliRunner()


def run(study, *sets, n_trials=2):
    args = ["run", str(study), "--n-trials", str(n_trials), "--set", "train.max_epochs=1"]
    for s in sets:
        args += ["--set", s]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "gp"])
def test_each_sampler_completes_trials(tiny_study, workdir, sampler):
    study = run(tiny_study, f"search.sampler={{type: {sampler}, seed: 3}}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.data.params["search.sampler.type"] == sampler


def test_single_objective_with_optuna_median_pruner(tiny_study):
    study = run(
        tiny_study,
        "search.objectives=[accuracy]",
        "search.pruner={type: median, n_startup_trials: 1, n_warmup_epochs: 0}",
        "train.max_epochs=2",
        n_trials=3,
    )
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    # Every trial reported its monitored value per epoch for the pruner to read.
    assert all(len(t.intermediate_values) >= 1 for t in study.trials)
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}


def test_trials_as_threads(tiny_study):
    study = run(tiny_study, "search.n_jobs=2", n_trials=4)
    assert len(study.trials) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert len({t.user_attrs["mlflow_run_id"] for t in study.trials}) == 4


@pytest.mark.parametrize("optimizer", ["rmsprop", "adamw"])
def test_other_optimizers(tiny_study, optimizer):
    study = run(tiny_study, f"train.optimizer={optimizer}", "train.lr=0.001", "search.space={}", n_trials=1)
    assert study.trials[0].state.name == "COMPLETE"


def test_bf16_autocast_path(tiny_study):
    study = run(tiny_study, "train.precision=bf16", "search.space={}", n_trials=1)
    assert study.trials[0].state.name == "COMPLETE" and 0.0 <= study.trials[0].values[0] <= 1.0
