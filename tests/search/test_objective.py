"""A trial that raises fails alone: its Optuna state is FAIL, its MLflow run FAILED with the error
recorded, and the study goes on, whether training (a user network that raises) or the logging of
results (an artifact store that fails) raised. A trial's value can be its curve's hypervolume."""

from __future__ import annotations

import sys
import textwrap
import uuid

import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import cli, mlflow_client, tiny_variant

# A user network that breaks in training when it is built 5 wide (the search samples the width), as
# a CUDA error would; the protocol check's dummy batch of 2 passes, so the study file is valid.
FLAKY_NET = """
from torch import nn

def build(in_channels, num_classes, config):
    width = config["width"]

    class Stage(nn.Module):  # the stages are run one by one (never Net.forward): one of them breaks
        def __init__(self, cin):
            super().__init__()
            self.conv = nn.Conv2d(cin, width, 3, padding=1)

        def forward(self, x):
            if self.training and width == 5 and x.shape[0] > 2:
                raise RuntimeError("simulated CUDA error")
            return self.conv(x).relu()

    def head():
        return nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, num_classes))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stages = nn.ModuleList([Stage(in_channels), Stage(width)])
            self.heads = nn.ModuleList([head(), head()])

        def forward(self, x):
            out = []
            for stage, head_ in zip(self.stages, self.heads):
                x = stage(x)
                out.append(head_(x))
            return out

    return Net()
"""


def _assert_failed_alone(study, failed, workdir):
    states = [t.state.name for t in study.trials]
    assert [t.number for t in study.trials if t.state.name == "FAIL"] == [failed.number]
    assert states[failed.number + 1:] and set(states[failed.number + 1:]) == {"COMPLETE"}  # the study went on
    assert "simulated" in failed.user_attrs["error"]
    run = mlflow_client(workdir).get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["optuna.trial_state"] == "FAIL"
    assert "simulated" in run.data.tags["ee_search.error"]


def test_a_trial_whose_training_raises_fails_alone(workdir, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    module = f"flaky_net_{uuid.uuid4().hex[:10]}"
    (workdir / f"{module}.py").write_text(textwrap.dedent(FLAKY_NET))
    study_file = tiny_variant(workdir, **{
        "model": {"name": f"{module}:build", "width": 4}, "train.max_epochs": 1, "data.train_subset": 256,
        "search.objectives": ["accuracy"], "search.sampler": {"type": "random", "seed": 14},  # draws 6, 5, 4
        "search.space": {"model.width": {"type": "categorical", "choices": [4, 5, 6]}}})
    try:
        result = cli("run", study_file, "--n-trials", "3", catch_exceptions=True)
    finally:
        sys.modules.pop(module, None)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    for t in study.trials:  # exactly the 5-wide network failed
        assert t.state.name == ("FAIL" if t.params["model.width"] == 5 else "COMPLETE"), t.params
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) == 1, "the sampler seed must draw width 5 once, before a later trial"
    _assert_failed_alone(study, failed[0], workdir)


def test_a_trial_whose_results_cannot_be_logged_fails_alone(tiny_study, workdir, monkeypatch):
    """The artifact store goes down while the second trial logs its trade-off curve."""
    seen: list[str] = []

    def outage(real):
        def log(self, run_id, local_path, artifact_path=None, *args, **kwargs):
            if (artifact_path or "").startswith("exits"):
                if run_id not in seen:
                    seen.append(run_id)
                if seen.index(run_id) == 1:
                    raise RuntimeError("simulated artifact store outage")
            return real(self, run_id, local_path, artifact_path, *args, **kwargs)
        return log

    monkeypatch.setattr(MlflowClient, "log_artifact", outage(MlflowClient.log_artifact))
    monkeypatch.setattr(MlflowClient, "log_artifacts", outage(MlflowClient.log_artifacts))
    result = cli("run", tiny_study, "--n-trials", "3", "--set", "train.max_epochs=1", catch_exceptions=True)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    _assert_failed_alone(study, study.trials[1], workdir)


def test_curve_hypervolume_as_the_single_objective_with_optunas_pruner(tiny_study, workdir):
    """Oracle: each trial's value is the hypervolume of the operating points it stored, those points
    are recomputed bit for bit from its logged `exits/val_logits.pt`, and Optuna's pruner received
    the per-epoch `val_curve_hypervolume` that MLflow holds."""
    import torch

    from ee_search.exits import evaluate, hypervolume

    result = cli(
        "run", tiny_study, "--n-trials", "3", "--set", "search.objectives=[curve_hypervolume]",
        "--set", "train.early_stopping.monitor=val_curve_hypervolume", "--set", "train.max_epochs=3",
        "--set", "search.pruner={type: median, n_startup_trials: 1, n_warmup_epochs: 0}",
        "--set", "search.space={train.lr: {type: float, low: 0.01, high: 0.1, log: true}}",
    )
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
