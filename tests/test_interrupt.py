"""A crash mid-study loses no finished trial and no metric already logged; running again resumes."""

from __future__ import annotations

import optuna
from mlflow import MlflowClient
from typer.testing import CliRunner

from ee_search.cli import app
from ee_search.train.trainer import Trainer

runner = CliRunner()


def test_ctrl_c_in_the_third_trial_keeps_the_first_two_and_resume_finishes(tiny_study, workdir, monkeypatch):
    real_epoch = Trainer.train_epoch
    calls = {"n": 0}

    def interrupted_epoch(self):
        calls["n"] += 1
        if calls["n"] == 6:  # trials 0 and 1 take two epochs each; this is trial 2's second epoch
            raise KeyboardInterrupt
        return real_epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_epoch)
    result = runner.invoke(app, ["run", str(tiny_study), "--n-trials", "4"])
    assert result.exit_code == 130 and "resume" in result.output

    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL"]
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    broken = client.get_run(study.trials[2].user_attrs["mlflow_run_id"])
    assert broken.info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(broken.info.run_id, "val_loss")] == [1]  # epoch 1 kept
    parent = client.search_runs([broken.info.experiment_id], "tags.`ee_search.role` = 'study'")[0]
    assert parent.info.status == "KILLED"

    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    again = runner.invoke(app, ["run", str(tiny_study), "--n-trials", "4"])
    assert again.exit_code == 0, again.output
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert client.get_run(study.trials[0].user_attrs["mlflow_run_id"]).info.status == "FINISHED"
