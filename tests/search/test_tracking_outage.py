"""Tracking-server outages (docs/design.md §5, "Tracking outages"), over a real `mlflow server`: an
unreachable server at start is one line and exit 2 with nothing created; an outage mid-trial costs
no epoch and no metric; one past `tracking.max_outage_s` leaves the trial resumable (exit 75, one
line) and the next run completes it, every epoch in its run once. No traceback reaches the terminal.

The outage is a cut link (tests/search/cuttable.py) between the study and the real server, so the
server does not have to start again (tens of seconds); benchmarks/faults_tracking.py stops the
server itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import cli, tiny_raw
from tests.search.cuttable import CuttableLink

EPOCH_KEYS = ("val_loss", "train_loss", "val_accuracy")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `mlflow server` (SQL store, proxied artifacts) on loopback, for the module."""
    import urllib.request

    work = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen([mlflow, "server", "--backend-store-uri", f"sqlite:///{work}/server.db",
                             "--serve-artifacts", "--artifacts-destination", str(work / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
    yield port
    os.killpg(proc.pid, signal.SIGKILL)  # nothing of it is checked after the tests
    proc.wait(timeout=30)


def _start(study: Path, uri: str, **env_vars: str) -> subprocess.Popen:
    """`ee-search run` as a user starts it (its own process: what it prints is what a user sees)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                                     os.environ.get("PYTHONPATH")])), **env_vars}
    return subprocess.Popen([sys.executable, "-m", "ee_search.cli", "run", str(study), "--tracking-uri", uri,
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=study.parent, env=env)


def _wait_for(proc: subprocess.Popen, text: str, lines: list[str]) -> None:
    for line in proc.stdout:
        lines.append(line)
        if text in line:
            return
    raise AssertionError(f"never printed {text!r}:\n{''.join(lines)}")


def _histories(uri: str, name: str) -> dict[str, dict[str, list[int]]]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`ee_search.role` = 'trial'")
    return {r.info.run_name: {k: sorted(m.step for m in client.get_metric_history(r.info.run_id, k))
                              for k in EPOCH_KEYS} | {"status": r.info.status} for r in runs}


def _study(directory: Path, name: str, **dotted) -> Path:
    raw = tiny_raw(**{"train.max_epochs": 3, "search.n_trials": 2, "train.early_stopping.patience": 10, **dotted})
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**raw, "name": name}, sort_keys=False))
    return path


def test_an_unreachable_server_at_start_is_one_line_exit_2_and_creates_nothing(workdir):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    result = cli("run", _study(workdir, "down"), "--tracking-uri", f"http://user:secret@127.0.0.1:{port}")
    assert result.exit_code == 2, result.output
    assert time.monotonic() - started < 20
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert f"tracking.uri: the MLflow tracking server at http://user:***@127.0.0.1:{port} does not answer" in lines[0]
    assert "secret" not in result.output
    assert sorted(p.name for p in workdir.iterdir()) == ["down.yaml"]  # no optuna.db, no spool


@pytest.mark.slow
def test_an_outage_mid_trial_costs_no_epoch_and_no_metric(server, workdir):
    link = CuttableLink(server)
    study = _study(workdir, "outage")
    proc, lines = _start(study, link.url), []
    _wait_for(proc, "epoch 1/3", lines)
    link.cut()
    time.sleep(15)
    link.restore()
    out, _ = proc.communicate(timeout=300)
    output = "".join(lines) + out
    assert proc.returncode == 0, output
    assert "Traceback" not in output and "WARNING urllib3" not in output
    trials = optuna.load_study(study_name="outage", storage=f"sqlite:///{workdir}/optuna.db").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for run, history in _histories(link.url, "outage").items():
        assert history == {**{k: [1, 2, 3] for k in EPOCH_KEYS}, "status": "FINISHED"}, run
    assert not list((workdir / ".ee-search" / "spool").rglob("*.db"))  # everything sent


@pytest.mark.slow
def test_an_outage_past_the_limit_leaves_the_trial_resumable_and_the_next_run_completes_it(server, workdir):
    link = CuttableLink(server)
    # The outage is counted from the first failed write, which fails once its request times out: with
    # a 1 s request timeout (a user's MLFLOW_HTTP_REQUEST_TIMEOUT wins over ours) and 60 epochs none stopped
    # early, it outlasts 2 s mid-trial even on an idle machine, where one epoch takes 0.2 s.
    study = _study(workdir, "limit", **{"tracking.max_outage_s": 2, "search.n_trials": 1, "train.max_epochs": 60,
                                        "train.early_stopping.patience": 60})
    proc, lines = _start(study, link.url, MLFLOW_HTTP_REQUEST_TIMEOUT="1"), []
    _wait_for(proc, "epoch 1/60", lines)
    link.cut()
    out, _ = proc.communicate(timeout=300)
    output = "".join(lines) + out
    assert proc.returncode == 75, output
    assert "Traceback" not in output
    last = output.strip().splitlines()[-1]
    assert "unreachable for" in last and "trial(s) 0 saved and queued" in last and "run: ee-search run" in last
    assert list((workdir / ".ee-search" / "spool").rglob("*.db"))  # last.pt and the epochs wait there

    link.restore()
    again = _start(study, link.url)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    trials = optuna.load_study(study_name="limit", storage=f"sqlite:///{workdir}/optuna.db").trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]  # the stopped trial, then its retry
    assert trials[1].user_attrs["resumed_from"] == 0 and trials[1].user_attrs["resumed_at_epoch"] >= 1
    (run, history), = _histories(link.url, "limit").items()
    assert history == {**{k: list(range(1, 61)) for k in EPOCH_KEYS}, "status": "FINISHED"}
