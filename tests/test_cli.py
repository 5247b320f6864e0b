"""End to end through the command line, on tiny data (seconds): a study on digits with BranchyNet's
LeNet, the entropy criterion and a random sampler (none of which the quickstart uses) must leave
everything DESIGN.md §5 lists in real Optuna and MLflow SQLite stores; `pareto` must export exactly
the non-dominated completed trials; mistakes exit 2 and create nothing."""

from __future__ import annotations

import csv
import json
import sys
import urllib.request

import optuna
import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

from ee_search.cli import app
from ee_search.experiment import model_from_checkpoint
from ee_search.train.checkpoint import load_checkpoint

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture
def ran(tiny_study, workdir):
    result = invoke("run", tiny_study, "--set", "search.n_trials=3")
    assert result.exit_code == 0, result.output
    return tiny_study, result


def test_run_leaves_the_contract_in_optuna_and_mlflow(ran, workdir, tmp_path):
    _, result = ran
    assert "Pareto front" in result.output and "trial   2" in result.output
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny")
    parents = client.search_runs([experiment.experiment_id], "tags.`ee_search.role` = 'study'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    for trial in trials:
        assert len(trial.values) == 2
        attrs = trial.user_attrs
        assert attrs["stop_reason"] in ("max_epochs", "patience_exhausted")
        assert attrs["epochs_trained"] in (1, 2)
        run = client.get_run(attrs["mlflow_run_id"])
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["ee_search.trial_number"] == str(trial.number)
        assert tags["optuna.trial_state"] == "COMPLETE" and run.info.status == "FINISHED"
        params = run.data.params
        assert float(params["train.lr"]) == pytest.approx(trial.params["train.lr"])
        assert params["model.name"] == "branchy_lenet" and params["exits.criterion"] == "entropy"
        assert json.loads(params["exits.thresholds"]) == pytest.approx([trial.params["exits.thresholds.0"]])
        metrics = run.data.metrics
        assert metrics["accuracy"] == pytest.approx(trial.values[0])
        assert metrics["avg_exit_depth"] == pytest.approx(trial.values[1])
        assert 0 < metrics["relative_flops"] < 1.5
        for name in ("train_loss", "val_loss", "val_accuracy", "val_accuracy_exit_1", "val_accuracy_exit_2", "lr", "epoch_seconds"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
            assert steps == list(range(1, attrs["epochs_trained"] + 1)), name
        files = {f.path for d in ("checkpoints", "exits", "config") for f in client.list_artifacts(run.info.run_id, d)}
        assert files == {"checkpoints/best.pt", "exits/tradeoff.csv", "exits/tradeoff.html", "config/trial.yaml"}
    # The checkpoint rebuilds the model without unpickling code.
    local = client.download_artifacts(trials[0].user_attrs["mlflow_run_id"], "checkpoints/best.pt", str(tmp_path))
    model = model_from_checkpoint(load_checkpoint(local))
    assert len(model(torch.zeros(2, 1, 28, 28))) == 2
    curve = client.download_artifacts(trials[0].user_attrs["mlflow_run_id"], "exits/tradeoff.csv", str(tmp_path))
    with open(curve) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 101 and set(rows[0]) >= {"threshold", "accuracy", "avg_exit_depth", "relative_flops"}


def test_pareto_exports_exactly_the_nondominated_trials(ran, workdir):
    study_path, _ = ran
    result = invoke("pareto", study_path, "--out", workdir / "front", "--split", "test")
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    expected = {t.number for t in study.best_trials}
    rows = list(csv.DictReader((workdir / "front" / "pareto.csv").open()))
    assert {int(r["trial_number"]) for r in rows} == expected
    for row in rows:
        trial = study.trials[int(row["trial_number"])]
        assert float(row["accuracy"]) == pytest.approx(trial.values[0])
        assert row["mlflow_run_id"] == trial.user_attrs["mlflow_run_id"]
        assert json.loads(row["params"]) == pytest.approx(trial.params)
        assert 0.0 <= float(row["test_accuracy"]) <= 1.0  # --split test adds held-out metrics
    doc = json.loads((workdir / "front" / "pareto.json").read_text())
    assert {p["trial_number"] for p in doc["front"]} == expected
    assert "plotly" in (workdir / "front" / "pareto.html").read_text()


def test_resume_runs_only_the_missing_trials_and_reuses_the_parent_run(ran, workdir):
    study_path, _ = ran
    result = invoke("run", study_path, "--n-trials", "4")
    assert result.exit_code == 0, result.output
    assert "1 trial(s) this run" in result.output
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    assert len(study.trials) == 4
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny")
    assert len(client.search_runs([experiment.experiment_id], "tags.`ee_search.role` = 'study'")) == 1
    assert len(client.search_runs([experiment.experiment_id], "tags.`ee_search.role` = 'trial'")) == 4
    again = invoke("run", study_path, "--n-trials", "4")
    assert again.exit_code == 0 and "0 trial(s) this run" in again.output


def test_status_lists_every_trial(ran, workdir):
    study_path, _ = ran
    result = invoke("status", study_path)
    assert result.exit_code == 0
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    for t in study.trials:
        assert t.user_attrs["mlflow_run_id"] in result.output


def test_validate_prints_the_space(tiny_study):
    result = invoke("validate", tiny_study)
    assert result.exit_code == 0
    assert "train.lr" in result.output and "x1" in result.output  # per_item over one threshold


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "missing.yaml"], "no such file"),
        (["run", "{study}", "--set", "train.lr=-1"], "train.lr"),
        (["run", "{study}", "--set", "model.name=nope"], "model.name"),
        (["run", "{study}", "--set", "exits.thresholds=[0.5, 0.5]"], "exits.thresholds"),
        (["run", "{study}", "--set", "search.space.train.lr={type: float, low: 1, high: 0}"], "low"),
        (["run", "{study}", "--set", "search.sampler.options={nope: 1}"], "search.sampler.options"),
        (["run", "{study}", "--storage", "nope://x"], "search.storage"),
        (["run", "{study}", "--tracking-uri", "bogus://x"], "tracking.uri"),
        (["run", "{study}", "--set", "data.dataset=svhn", "--set", "data.root=nowhere"], "train_32x32.mat"),
        (["status", "{study}"], "no study named"),
        (["pareto", "{study}", "--out", "front"], "no study named"),
        (["validate", "{study}", "--set", "search.objectives=[accuracy, speed]"], "search.objectives"),
        (["validate", "{study}", "--set", "search.heartbeat={interval_s: 5, grace_period_s: 5}"], "grace_period_s"),
    ],
)
def test_mistakes_exit_2_with_one_line_and_create_nothing(tiny_study, workdir, args, words):
    before = sorted(p.name for p in workdir.iterdir())
    result = runner.invoke(app, [a.replace("{study}", str(tiny_study)) for a in args])
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert words in message and "Traceback" not in message
    assert sorted(p.name for p in workdir.iterdir()) == before  # no database, run or file


def test_ui_serves_the_study_through_a_real_mlflow_server(ran, workdir, serve):
    """`ee-search ui` execs a real MLflow server over the study's store, bound to loopback; an HTTP
    client sees the experiment, the parent and trial runs and their artifacts."""
    study_path, _ = ran
    base = serve(lambda port: [sys.executable, "-m", "ee_search.cli", "ui", str(study_path), "--port", str(port)])
    with urllib.request.urlopen(f"{base}/", timeout=10) as response:
        assert response.status == 200 and "<html" in response.read().decode().lower()
    client = MlflowClient(base)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    roles = sorted(r.data.tags["ee_search.role"] for r in runs)
    assert roles == ["study", "trial", "trial", "trial"]
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    served = {r.data.tags.get("ee_search.trial_number"): r.info.run_id for r in runs}
    for t in study.trials:
        assert served[str(t.number)] == t.user_attrs["mlflow_run_id"]
    exits = {f.path for f in client.list_artifacts(served["0"], "exits")}
    assert exits == {"exits/tradeoff.csv", "exits/tradeoff.html"}


def test_the_follow_up_commands_printed_find_the_same_study(tiny_study, workdir):
    result = invoke("run", tiny_study, "--set", "name=renamed", "--set", "search.n_trials=1",
                    "--storage", "sqlite:///elsewhere.db")
    assert result.exit_code == 0, result.output
    hint = result.output.split("Next:", 1)[1]
    status_cmd = hint.split("ee-search status ", 1)[1].split()
    assert status_cmd == [str(tiny_study), "--set", "name=renamed", "--storage", "sqlite:///elsewhere.db"]
    status = invoke("status", *status_cmd)
    assert status.exit_code == 0 and "COMPLETE" in status.output
