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


def test_curve_hypervolume_as_the_single_objective_with_optunas_pruner(tiny_study, workdir):
    """Oracle: each trial's value is the hypervolume of the operating points it stored, those points
    are recomputed bit for bit from its logged `exits/val_logits.pt`, and Optuna's pruner received
    the per-epoch `val_curve_hypervolume` that MLflow holds."""
    import torch

    from ee_search.exits import evaluate, hypervolume

    result = runner.invoke(app, [
        "run", str(tiny_study), "--n-trials", "3", "--set", "search.objectives=[curve_hypervolume]",
        "--set", "train.early_stopping.monitor=val_curve_hypervolume", "--set", "train.max_epochs=3",
        "--set", "search.pruner={type: median, n_startup_trials: 1, n_warmup_epochs: 0}",
        "--set", "search.space={train.lr: {type: float, low: 0.01, high: 0.1, log: true}}",
    ])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE and study.metric_names == ["curve_hypervolume"]
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert completed
    for t in study.trials:
        run_id = t.user_attrs["mlflow_run_id"]
        history = [m.value for m in client.get_metric_history(run_id, "val_curve_hypervolume")]
        assert history and [t.intermediate_values[s] for s in sorted(t.intermediate_values)] == pytest.approx(history)
    for t in completed:
        points = t.user_attrs["operating_points"]
        assert t.values[0] == pytest.approx(hypervolume([(a, d) for _, a, d, _ in points]))
        assert client.get_run(t.user_attrs["mlflow_run_id"]).data.metrics["curve_hypervolume"] == pytest.approx(t.values[0])
        logits_file = client.download_artifacts(t.user_attrs["mlflow_run_id"], "exits/val_logits.pt", str(workdir))
        cached = torch.load(logits_file, weights_only=True)
        assert set(cached) == {"logits", "labels", "relative_flops", "criterion"}
        for thresholds, accuracy, depth, flops in points:
            ref = evaluate(cached["logits"], cached["labels"], thresholds, cached["criterion"], cached["relative_flops"])
            assert (ref.accuracy, ref.avg_exit_depth) == (accuracy, depth)
            assert ref.relative_flops == pytest.approx(flops)
