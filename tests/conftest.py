"""Shared fixtures and helpers: a tiny study file on scikit-learn's digits (and variants of it), a
working directory per test so every SQLite store, MLflow artifact and cache lands in tmp_path, the
CLI run in-process, the stores a study leaves, and a trial's best checkpoint fetched from MLflow."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

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


def tiny_raw(**dotted: Any) -> dict:
    """TINY_STUDY as a dict with `dotted` paths replaced, e.g. `tiny_raw(**{"train.max_epochs": 1})`."""
    raw = yaml.safe_load(TINY_STUDY)
    for path, value in dotted.items():
        *parents, leaf = path.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return raw


def tiny_config(**dotted: Any):
    """The validated config of `tiny_raw(**dotted)`."""
    from ee_search.config import validate_raw

    return validate_raw(tiny_raw(**dotted), "tiny.yaml")


def tiny_variant(directory: Path, name: str = "tiny.yaml", **dotted: Any) -> Path:
    """A study file: TINY_STUDY with `dotted` paths replaced."""
    path = directory / name
    path.write_text(yaml.safe_dump(tiny_raw(**dotted), sort_keys=False))
    return path


def cli(*args: Any, catch_exceptions: bool = False):
    """`ee-search ARGS` in this process (typer's CliRunner): the click Result, whatever the exit code."""
    from typer.testing import CliRunner

    from ee_search.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=catch_exceptions)


def run_study(study: Path, *sets: str, n_trials: int | None = None, directory: Path | None = None):
    """`ee-search run STUDY --set ...` that must exit 0; returns the Optuna study from the default store
    (optuna.db in `directory`, by default the working directory)."""
    import optuna

    args: list[Any] = ["run", study]
    if n_trials is not None:
        args += ["--n-trials", n_trials]
    for s in sets:
        args += ["--set", s]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return optuna.load_study(study_name=None, storage=f"sqlite:///{(directory or Path.cwd()).resolve()}/optuna.db")


def mlflow_client(directory: Path | None = None):
    """The MLflow client of the default tracking store (mlflow.db in `directory`, default the cwd)."""
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{(directory or Path.cwd()).resolve()}/mlflow.db")


def download_best(client, trial, into: Path) -> dict:
    """The payload of the trial's `checkpoints/best.pt`, fetched from its MLflow run into a folder of
    its own under `into` (so two trials' files never overwrite each other)."""
    from ee_search.train import load_checkpoint

    run_id = trial.user_attrs["mlflow_run_id"]
    folder = Path(into) / "best" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    return load_checkpoint(client.download_artifacts(run_id, "checkpoints/best.pt", str(folder)))


def best_model(client, trial, into: Path):
    """The network rebuilt from the trial's `checkpoints/best.pt` (no code unpickled)."""
    from ee_search.checkpoints import model_from_checkpoint

    return model_from_checkpoint(download_best(client, trial, into))


@pytest.fixture
def serve():
    """Start a server process (built from the port it should listen on, on 127.0.0.1), wait until its
    /health answers, and return its base URL; every server started is stopped after the test."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request

    started: list[subprocess.Popen] = []

    def _read(log) -> str:
        log.seek(0)
        return log.read()

    def start(command_for_port, timeout_s: float = 180.0) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # Servers such as `mlflow models serve` start further programs (uvicorn) by name, so the
        # interpreter's bin directory goes first on PATH: the suite must not depend on an activated venv.
        env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
        # Its output goes to a file, not a pipe: nothing reads a pipe while the server runs, and a server
        # that logs every request (mlflow server) blocks once the pipe's 64 KiB are full.
        log = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen(command_for_port(port), stdout=log, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True, env=env)
        proc.log = log
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        return url
            except OSError:
                pass
            assert proc.poll() is None, _read(proc.log)
            assert time.monotonic() < deadline, f"server did not come up within {timeout_s:g} s"
            time.sleep(0.5)

    yield start
    for proc in started:
        if proc.poll() is not None:  # it already exited (the failure, if any, was reported above)
            continue
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


class Postgres:
    """A real PostgreSQL server (the pip-installed `pgserver`) in a temporary folder, on a Unix socket."""

    def __init__(self, server) -> None:
        self.server = server
        self.socket_dir = server.get_uri().split("host=", 1)[1]  # postgresql://postgres:@/postgres?host=<dir>

    def psql(self, sql: str) -> str:
        return self.server.psql(sql)

    def create_database(self, name: str, owner: str = "postgres") -> None:
        self.psql(f"CREATE DATABASE {name} OWNER {owner};")

    def url(self, database: str, user: str = "postgres", password: str = "") -> str:
        return f"postgresql://{user}:{password}@/{database}?host={self.socket_dir}"

    def stop(self) -> None:
        """An outage as clients see one: a fast shutdown (SIGINT to the postmaster, what `pg_ctl stop -m
        fast` sends; pg_ctl itself, run as pgserver's user, cannot enter pytest's folders when root runs
        the tests) ends every connection and refuses new ones."""
        import psutil

        process = psutil.Process(self.server.get_pid())
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)

    def start(self) -> None:
        self.server.ensure_pgdata_inited()  # lets pgserver's user through the parent folders again (no initdb)
        self.server.ensure_postgres_running()  # the same data and socket


@pytest.fixture
def postgres():
    """Started for the test (databases `optuna` and `mlflow` made) and stopped afterwards.

    Its data lives outside pytest's temporary tree: run as root, pgserver lets its own user through
    the parent folders (o+rx), but every pytest session that starts meanwhile on the machine resets
    /tmp/pytest-of-root to 0700, and initdb then failed with "Permission denied" (seen in CI)."""
    import shutil
    import tempfile

    import pgserver  # in the dev extra: a missing one is an error here, not a skip

    folder = Path(tempfile.mkdtemp(prefix="ee-search-pg-", dir="/tmp"))
    server = pgserver.get_server(folder / "pg", cleanup_mode="stop")
    try:
        pg = Postgres(server)
        pg.create_database("optuna")
        pg.create_database("mlflow")
        yield pg
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def mlflow_server(postgres, serve, tmp_path_factory):
    """A real `mlflow server` over PostgreSQL, proxying artifacts to a local folder, on loopback."""
    import sys

    artifacts = tmp_path_factory.mktemp("artifacts")
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    url = serve(lambda port: [mlflow, "server", "--backend-store-uri", postgres.url("mlflow"),
                              "--artifacts-destination", str(artifacts), "--host", "127.0.0.1",
                              "--port", str(port), "--workers", "1"])
    return url, artifacts
