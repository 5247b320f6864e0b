"""The spool (docs/design.md §5, "Tracking outages") against a real MLflow SQL store: writes come
back at once whatever the server does, are sent in order, survive the process (a killed process's
file is sent by the next one, with no step twice after a crash between a send and its removal), and
the outage clock stops a caller past the limit. An unreachable server is simulated by a client that
raises what MLflow raises for a refused connection."""

from __future__ import annotations

import time

import pytest
import requests
from mlflow import MlflowClient
from mlflow.entities import Metric

from ee_search.spool import Spool, SpoolFile, TrackingUnavailable, spool_folder
from ee_search.spool.writer import send


class Flaky:
    """A real client that refuses every call while `down` is set, as a stopped server does."""

    def __init__(self, client: MlflowClient) -> None:
        self.client, self.down = client, False

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.down:
                raise requests.exceptions.ConnectionError("Connection refused")
            return attr(*args, **kwargs)
        return call


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # One store for the module: creating an MLflow database takes seconds (its migrations).
    client = MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db")
    experiment = client.create_experiment("spool")
    return client, experiment


def _steps(client, run_id, key="val_loss"):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _metric(step):
    return [Metric("val_loss", 1.0 / step, 1_700_000_000_000 + step, step)]


def test_writes_return_at_once_during_an_outage_and_arrive_in_order_after_it(store, tmp_path):
    client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    flaky = Flaky(client)
    spool = Spool(flaky, spool_folder(tmp_path / "spool", "http://server"), max_outage_s=60)
    flaky.down = True
    started = time.monotonic()
    for step in range(1, 6):
        spool.log_batch(run_id, metrics=_metric(step))
    (tmp_path / "last.pt").write_bytes(b"state")
    spool.log_artifact(run_id, tmp_path / "last.pt", "checkpoints")
    spool.set_terminated(run_id, "FINISHED")
    assert time.monotonic() - started < 1.0  # nothing waited on the server
    time.sleep(1.0)
    assert spool.outage_seconds() > 0 and _steps(client, run_id) == []
    flaky.down = False
    assert spool.close(wait_s=30) == 0
    assert _steps(client, run_id) == [1, 2, 3, 4, 5]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/last.pt"]
    assert list(spool.folder.iterdir()) == []  # sent: the file is gone


def test_a_killed_process_file_is_sent_by_the_next_with_no_step_twice(store, tmp_path):
    client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    folder = spool_folder(tmp_path / "spool", "http://server")
    dead = SpoolFile.create(folder)  # the killed process's file
    for step in range(1, 5):
        dead.append(run_id, "batch", {"metrics": [[m.key, m.value, m.timestamp, m.step] for m in _metric(step)],
                                      "params": [], "tags": []})
    dead.append(run_id, "terminate", {"status": "KILLED", "end_time": 1_700_000_100_000})
    # Killed after epochs 1-2 were sent but before they were removed from its file.
    for entry in dead.head()[:2]:
        send(client, entry)
    dead.close(delete=False)  # the process is gone: its lock is free
    live = SpoolFile.create(folder)  # a process still running: its file is not taken
    live.append(run_id, "batch", {"metrics": [], "params": [], "tags": [["kept", "1"]]})

    next_run = Spool(client, folder, max_outage_s=60)
    assert next_run.drain_orphans() == 5
    assert _steps(client, run_id) == [1, 2, 3, 4]
    assert client.get_run(run_id).info.status == "KILLED"
    assert "kept" not in client.get_run(run_id).data.tags
    assert sorted(p.name for p in folder.glob("*.db")) == [live.path.name]
    live.close(delete=True)


def test_past_the_limit_a_caller_is_told_and_the_file_stays(store, tmp_path):
    client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    flaky = Flaky(client)
    spool = Spool(flaky, spool_folder(tmp_path / "spool", "http://server"), max_outage_s=1.0)
    flaky.down = True
    spool.log_batch(run_id, metrics=_metric(1))
    with pytest.raises(TrackingUnavailable):
        spool.call(lambda: flaky.get_run(run_id))
    assert spool.expired()
    assert spool.close() == 1  # returns at once past the limit; the write is kept for the next run
    flaky.down = False
    assert Spool(client, spool.folder, 60).drain_orphans() == 1
    assert _steps(client, run_id) == [1]


def test_a_write_the_store_refuses_for_good_is_dropped_and_the_rest_go_on(store, tmp_path, caplog):
    client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    spool = Spool(client, spool_folder(tmp_path / "spool", "http://server"), max_outage_s=60)
    spool.log_batch("no-such-run", metrics=_metric(1))
    spool.log_batch(run_id, metrics=_metric(2))
    assert spool.close(wait_s=30) == 0
    assert _steps(client, run_id) == [2]
    assert "refused a batch write to run no-such-run for good" in caplog.text


def test_a_retry_reopened_by_a_running_worker_sees_the_killed_workers_unsent_epochs(store, tmp_path):
    """A worker killed with epoch 3 still in its spool; another worker, already running (its own start
    drained nothing), takes the retry: reopening the run sends the dead file first, so the retry
    knows epoch 3 is logged and does not log it again (the step logged twice seen with Ray)."""
    from ee_search.tracking import StudyTracker

    client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    folder = spool_folder(tmp_path / "spool", "http://server")
    running = StudyTracker(client.tracking_uri, "spool")
    running.spool = Spool(client, folder, max_outage_s=60)  # as over an http server (white box: same store)
    for step in (1, 2):  # sent before the kill
        client.log_batch(run_id, metrics=_metric(step))
    dead = SpoolFile.create(folder)  # the killed worker's file, epoch 3 not yet sent
    dead.append(run_id, "batch", {"metrics": [[m.key, m.value, m.timestamp, m.step] for m in _metric(3)],
                                  "params": [], "tags": []})
    dead.close(delete=False)
    running.reopen_trial(run_id, 7)
    assert _steps(client, run_id) == [1, 2, 3]
    assert list(folder.glob("*.db")) == []
    running.spool.close(wait_s=10)
