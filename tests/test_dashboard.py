"""`ee-search dashboard`: the real optuna-dashboard server on a tiny study's storage, asked through its
JSON API (the one its web page reads) for the study, its objective names, its trials and their
MLflow links; a study without objective names gets them; mistakes and a missing extra exit 2 and
create nothing; a password in the storage URL is never printed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import create_trial

from ee_search.config import load_study_file
from ee_search.dashboard import open_named_study, serve
from tests.conftest import TINY_STUDY, cli

EE_SEARCH = str(Path(sys.executable).with_name("ee-search"))


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> Path:
    """The tiny study run (2 trials of 1 epoch) in a directory of its own."""
    directory = tmp_path_factory.mktemp("dashboard")
    (directory / "tiny.yaml").write_text(TINY_STUDY)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        result = cli("run", "tiny.yaml", "--set", "train.max_epochs=1", "--quiet", catch_exceptions=True)
        assert result.exit_code == 0, result.output
    return directory


@pytest.fixture
def made(workdir, tiny_study) -> Path:
    """A study named like the file's, made by hand in the file's storage (no training: fast)."""
    study = optuna.create_study(study_name="tiny", storage=f"sqlite:///{workdir}/optuna.db",
                                directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "avg_exit_depth"])
    return workdir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def dashboard_server(ran):
    """`ee-search dashboard` started as a user would, polled until its API answers; killed afterwards."""
    port = _free_port()
    proc = subprocess.Popen([EE_SEARCH, "dashboard", "tiny.yaml", "--port", str(port)], cwd=ran,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                _get(f"{url}/api/meta")
                break
            except OSError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the dashboard did not answer within 120 s"
            time.sleep(0.3)
        yield url, proc
    finally:
        if proc.poll() is None:  # the test may have stopped it to read its output
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow  # a training run and a server process: about 40 s on 2 cores
def test_the_dashboard_serves_the_study_with_its_objective_names_trials_and_mlflow_links(ran, dashboard_server):
    url, proc = dashboard_server
    stored = optuna.load_study(study_name="tiny", storage=f"sqlite:///{ran}/optuna.db")
    summaries = _get(f"{url}/api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries] == ["tiny"]
    study_id = summaries[0]["study_id"]
    detail = _get(f"{url}/api/studies/{study_id}")
    assert detail["name"] == "tiny" and detail["directions"] == ["maximize", "minimize"]
    assert detail["objective_names"] == ["accuracy", "avg_exit_depth"]  # not "Objective 0", "Objective 1"
    trials = {t["number"]: t for t in detail["trials"]}
    assert sorted(trials) == [t.number for t in stored.trials] == [0, 1]
    for trial in stored.trials:
        shown = {a["key"]: a["value"] for a in trials[trial.number]["user_attrs"]}
        assert shown["mlflow_run_id"] == trial.user_attrs["mlflow_run_id"]
        # The run's page: with a local store, the route to append to `ee-search ui`'s address.
        assert shown["mlflow_run_url"] == trial.user_attrs["mlflow_run_url"]
        assert f"/runs/{trial.user_attrs['mlflow_run_id']}" in shown["mlflow_run_url"]
        assert trials[trial.number]["state"] == "Complete"
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    banner = proc.stdout.read()
    # Bound to loopback by default, and the banner links straight to the study.
    assert f"at http://127.0.0.1:{url.rsplit(':', 1)[1]}/dashboard/studies/{study_id}" in banner, banner
    assert "warning" not in banner


def test_a_study_without_objective_names_gets_them_from_the_study_file(workdir, tiny_study):
    storage = f"sqlite:///{workdir}/optuna.db"
    old = optuna.create_study(study_name="tiny", storage=storage, directions=["maximize", "minimize"])
    old.add_trial(create_trial(values=[0.5, 0.7]))
    assert old.metric_names is None  # as a study made before the names were recorded
    config = load_study_file(tiny_study, [f"search.storage={storage}"]).config
    assert open_named_study(config, str(tiny_study)).metric_names == ["accuracy", "avg_exit_depth"]
    assert optuna.load_study(study_name="tiny", storage=storage).metric_names == ["accuracy", "avg_exit_depth"]


def test_a_missing_study_exits_2_and_creates_nothing(workdir, tiny_study):
    before = sorted(p.name for p in workdir.iterdir())
    result = cli("dashboard", str(tiny_study), catch_exceptions=True)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: {tiny_study}: name: no study named 'tiny' in sqlite:///{workdir}/optuna.db: run it first "
        "(ee-search run) or pass the right --storage"]
    assert sorted(p.name for p in workdir.iterdir()) == before  # no optuna.db


def test_an_unknown_study_name_in_an_existing_storage_is_not_created(made):
    result = cli("dashboard", "tiny.yaml", "--set", "name=other", catch_exceptions=True)
    assert result.exit_code == 2 and "no study named 'other'" in result.output, result.output
    assert optuna.get_all_study_names(f"sqlite:///{made}/optuna.db") == ["tiny"]


def test_without_optuna_dashboard_installed_one_line_names_the_extra(workdir, tiny_study, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # `import optuna_dashboard` now fails
    result = cli("dashboard", str(tiny_study), catch_exceptions=True)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: ee-search dashboard: optuna-dashboard is not installed: pip install 'ee-search[dashboard]'"]


class _Announced(Exception):
    pass


def test_the_banner_never_shows_the_storage_password(workdir):
    storage = f"sqlite:///{workdir}/optuna.db"
    study = optuna.create_study(study_name="tiny", storage=storage, directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "avg_exit_depth"])
    lines: list[str] = []

    def announce(line: str) -> None:
        lines.append(line)
        raise _Announced  # stop before serving: the line is what is checked

    with pytest.raises(_Announced):
        serve(study, "postgresql://ml:s3cret@db.example/optuna", "127.0.0.1", 0, announce)
    assert "s3cret" not in lines[0] and "postgresql://ml:***@db.example/optuna" in lines[0]
    assert "study 'tiny' (accuracy, avg_exit_depth)" in lines[0]


def test_binding_beyond_loopback_warns(made, monkeypatch):
    import ee_search.dashboard as dashboard

    served: list[tuple[str, int]] = []
    monkeypatch.setattr(dashboard, "serve", lambda study, url, host, port, announce: served.append((host, port)))
    quiet = cli("dashboard", "tiny.yaml", catch_exceptions=True)
    loud = cli("dashboard", "tiny.yaml", "--host", "0.0.0.0", "--port", "9000", catch_exceptions=True)
    assert quiet.exit_code == loud.exit_code == 0, quiet.output + loud.output
    assert served == [("127.0.0.1", 8080), ("0.0.0.0", 9000)]
    assert "warning" not in quiet.output and "warning: binding to 0.0.0.0" in loud.output
