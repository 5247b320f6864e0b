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


@pytest.fixture
def serve():
    """Start a server process (built from the port it should listen on, on 127.0.0.1), wait until its
    /health answers, and return its base URL; every server started is stopped after the test."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    started: list[subprocess.Popen] = []

    def start(command_for_port, timeout_s: float = 180.0) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # Servers such as `mlflow models serve` start further programs (uvicorn) by name, so the
        # interpreter's bin directory goes first on PATH: the suite must not depend on an activated venv.
        env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
        proc = subprocess.Popen(command_for_port(port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True, env=env)
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
            assert proc.poll() is None, proc.stdout.read()
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


@pytest.fixture
def postgres(tmp_path_factory):
    """Started for the test (databases `optuna` and `mlflow` made) and stopped afterwards."""
    import pgserver  # in the dev extra: a missing one is an error here, not a skip
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    pg = Postgres(server)
    pg.create_database("optuna")
    pg.create_database("mlflow")
    yield pg
    server.cleanup()
