"""benchmarks/gpu_workers.py at its --tiny size: two `ee-search run` workers share one study (journal
storage, one MLflow store) and the record's rates are recomputed from its own counts. The GPU figures
come from benchmarks/gpu.sh on a GPU machine."""

from __future__ import annotations

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from ee_search.records import TrialRecord
from tests.benchmarks.tiny import run_tiny


@pytest.mark.slow
def test_gpu_workers(tmp_path):
    work = tmp_path / "work"
    record, proc = run_tiny("gpu_workers", tmp_path, "--device", "cpu", "--workers", "2", "--work", str(work))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert record["exit_codes"] == [0, 0] and record["states"] == {"COMPLETE": 2}
    # The counts are the study's own: read it back from the journal the workers shared.
    study = optuna.load_study(study_name="gpu_workers",
                              storage=JournalStorage(JournalFileBackend(str(work / "optuna.journal"))))
    epochs = sum(len(TrialRecord.read(t).monitor_history) for t in study.trials)
    assert record["epochs"] == epochs == 2 * record["sizes"]["epochs"]
    assert record["train_images_per_second"] == pytest.approx(record["train_images_seen"] / record["wall_seconds"],
                                                              rel=0.01)
    assert record["trials_per_hour"] == pytest.approx(2 * 3600 / record["wall_seconds"], rel=0.01)
    assert record["gpu"] is None  # no nvidia-smi here
