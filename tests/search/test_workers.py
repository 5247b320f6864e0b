"""Two `ee-search run` processes on one study: they share `search.n_trials`, one parent run, and the
storage. Either as several workers on one machine would (a journal file, or SQLite, with a SQLite
tracking store), or as workers on several machines would: a real PostgreSQL for Optuna (pip-installed
`pgserver`, started here) and a real `mlflow server` process, backed by PostgreSQL and serving the
artifacts, that the workers reach over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import cli

pytestmark = pytest.mark.slow  # worker processes, a PostgreSQL server and an mlflow server
SMALL = ["--set", "train.max_epochs=1", "--set", "data.train_subset=256"]  # the sharing matters, not the fit


def _worker(study, storage, tracking, n_trials, cwd):
    cmd = [sys.executable, "-m", "ee_search.cli", "run", str(study), "--n-trials", str(n_trials),
           "--storage", storage, "--tracking-uri", tracking, *SMALL]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.fixture
def stores(request, workdir):
    if request.param == "journal":
        return f"journal:{workdir}/optuna.journal", f"sqlite:///{workdir}/mlflow.db"
    postgres = request.getfixturevalue("postgres")
    url, _ = request.getfixturevalue("mlflow_server")
    return postgres.url("optuna"), url


# SQLite shared by worker processes is proved by tests/search/test_local_workers.py (`run --workers 2`):
# here the journal file and PostgreSQL + an mlflow server, with workers started by hand.
@pytest.mark.parametrize("stores", ["journal", "postgres_and_mlflow_server"], indirect=True)
def test_two_workers_share_one_study(tiny_study, workdir, stores):
    storage, tracking = stores
    # Create the stores first, as an operator would, so the workers race only over trials.
    first = cli("run", tiny_study, "--n-trials", "1", "--storage", storage, "--tracking-uri", tracking,
                *SMALL, catch_exceptions=True)
    assert first.exit_code == 0, first.output
    workers = [_worker(tiny_study, storage, tracking, 5, workdir) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    assert all("trial(s) this run" in o for o in outputs)

    if storage.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        opened = JournalStorage(JournalFileBackend(str(workdir / "optuna.journal")))
    else:
        opened = storage
    study = optuna.load_study(study_name="tiny", storage=opened)
    finished = [t for t in study.trials if t.state.is_finished()]
    # Exactly 5: on one machine the workers check the target and create their next trial one at a
    # time (search/gate.py), so two that finish together do not both start the last trial.
    assert len(finished) == 5 and all(t.state.name == "COMPLETE" for t in finished)
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("tiny")
    parents = client.search_runs([experiment.experiment_id], "tags.`ee_search.role` = 'study'")
    assert len(parents) == 1
    children = client.search_runs([experiment.experiment_id], "tags.`ee_search.role` = 'trial'")
    assert len(children) == len(finished)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(int(r.data.tags["ee_search.trial_number"]) for r in children) == sorted(t.number for t in finished)
    for trial in finished:  # every trial's artifacts reached the tracking store (over HTTP for the server)
        files = {f.path for f in client.list_artifacts(trial.user_attrs["mlflow_run_id"], "exits")}
        assert files == {"exits/tradeoff.csv", "exits/tradeoff.html", "exits/tradeoff.png", "exits/val_logits.pt"}
