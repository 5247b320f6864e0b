"""A trial that raises fails alone: its Optuna state is FAIL, its MLflow run FAILED with the error
recorded, and the study goes on, whether training or the logging of results raised."""

from __future__ import annotations

import optuna
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from ee_search.cli import app
from ee_search.search.objective import Objective
from ee_search.train.trainer import Trainer

runner = CliRunner()


@pytest.mark.parametrize("where", ["training", "logging"])
def test_one_failing_trial_does_not_stop_the_study(tiny_study, workdir, monkeypatch, where):
    calls = {"n": 0}
    if where == "training":
        real = Trainer.train_epoch

        def flaky(self):
            calls["n"] += 1
            if calls["n"] == 3:  # trial 1's first epoch
                raise RuntimeError("simulated CUDA error")
            return real(self)

        monkeypatch.setattr(Trainer, "train_epoch", flaky)
    else:
        real_curve = Objective._log_curve

        def flaky_curve(self, number, run, config, result):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("simulated artifact store outage")
            return real_curve(self, number, run, config, result)

        monkeypatch.setattr(Objective, "_log_curve", flaky_curve)

    result = runner.invoke(app, ["run", str(tiny_study), "--n-trials", "3"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    failed = study.trials[1]
    assert "simulated" in failed.user_attrs["error"]
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    run = client.get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["optuna.trial_state"] == "FAIL"
    assert "simulated" in run.data.tags["ee_search.error"]
