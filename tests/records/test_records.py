"""The trial's vocabulary (ee_search.records) against Optuna's and MLflow's own: round trips through a
real Optuna storage, the ending's mapping against Optuna's TrialState and MLflow's RunStatus, and a
scan of the package proving no attribute key or artifact path is spelled outside records."""

from __future__ import annotations

import ast
from pathlib import Path

import optuna
import pytest
import torch
from mlflow.entities import RunStatus
from optuna.trial import TrialState

import ee_search
from ee_search.errors import CorruptArtifact
from ee_search.records import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    LAST_CHECKPOINT_ALT,
    STUDY_CONFIG,
    TRADEOFF_CSV,
    TRIAL_CONFIG,
    VAL_LOGITS,
    Ending,
    StudyRecord,
    TrialRecord,
    load_best_checkpoint,
    load_val_logits,
    save_val_logits,
    state_counts,
)

PACKAGE = Path(ee_search.__file__).parent


def test_a_record_written_in_pieces_reads_back_whole_from_a_real_storage(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db", directions=["maximize", "minimize"])
    trial = study.ask()
    TrialRecord(mlflow_run_id="abc", monitor="val_loss").write(trial)
    TrialRecord(monitor_history=[1.5, None], best_epoch=1).write(trial)
    TrialRecord(accuracy=0.9, avg_exit_depth=0.4, operating_points=[[[0.5], 0.9, 0.4, 0.3]]).write(trial)
    study.tell(trial, [0.9, 0.4])
    frozen = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path}/o.db").trials[0]
    record = TrialRecord.read(frozen)
    assert frozen.user_attrs == {"mlflow_run_id": "abc", "monitor": "val_loss", "monitor_history": [1.5, None],
                                 "best_epoch": 1, "accuracy": 0.9, "avg_exit_depth": 0.4,
                                 "operating_points": [[[0.5], 0.9, 0.4, 0.3]]}  # None fields are not written
    assert record.has_result and record.stop_reason is None and record.final_metrics() == {
        "accuracy": 0.9, "avg_exit_depth": 0.4}
    (point,) = record.points()
    assert (point.thresholds, point.accuracy, point.avg_exit_depth, point.relative_flops) == ([0.5], 0.9, 0.4, 0.3)
    StudyRecord(mlflow_parent_run_id="p").write(study)
    assert StudyRecord.read(study) == StudyRecord(mlflow_parent_run_id="p")


def test_a_trial_from_outside_ee_search_has_no_result():
    trial = optuna.trial.create_trial(state=TrialState.COMPLETE, value=1.0)
    assert not TrialRecord.read(trial).has_result and TrialRecord.read(trial).points() == []


@pytest.mark.parametrize("ending, state, status", [
    (Ending.COMPLETE, TrialState.COMPLETE, RunStatus.FINISHED),
    (Ending.PRUNED, TrialState.PRUNED, RunStatus.KILLED),
    (Ending.FAILED, TrialState.FAIL, RunStatus.FAILED),
    (Ending.INTERRUPTED, TrialState.FAIL, RunStatus.KILLED),
])
def test_an_ending_names_real_optuna_states_and_mlflow_statuses(ending, state, status):
    assert TrialState[ending.optuna_state] == state
    assert RunStatus.from_string(ending.run_status) == status
    assert ending.final == (ending is not Ending.INTERRUPTED)


def test_state_counts_agree_with_optuna():
    trials = [optuna.trial.create_trial(state=s, value=0.0 if s == TrialState.COMPLETE else None)
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED, TrialState.FAIL)]
    trials.append(optuna.trial.create_trial(state=TrialState.WAITING))
    expected = {name: sum(t.state == TrialState[name] for t in trials) for name in ("COMPLETE", "PRUNED", "FAIL")}
    assert state_counts(trials) == expected == {"COMPLETE": 1, "PRUNED": 2, "FAIL": 1}


def test_val_logits_round_trip_and_a_foreign_file_is_refused(tmp_path):
    logits, labels = torch.randn(2, 5, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 1, 0], dtype=torch.int32)
    save_val_logits(tmp_path / "v.pt", logits, labels, [0.4, 1.0], "entropy")
    loaded = load_val_logits(tmp_path / "v.pt")
    assert loaded["logits"].dtype == torch.float32 and torch.equal(loaded["logits"], logits.float())
    assert loaded["labels"].dtype == torch.int64 and torch.equal(loaded["labels"], labels.long())
    assert (loaded["relative_flops"], loaded["criterion"]) == ([0.4, 1.0], "entropy")
    torch.save({"logits": logits}, tmp_path / "other.pt")
    with pytest.raises(CorruptArtifact, match=f"^{VAL_LOGITS} cannot be read: .* lacks"):
        load_val_logits(tmp_path / "other.pt")


@pytest.mark.parametrize("load, artifact", [(load_best_checkpoint, BEST_CHECKPOINT), (load_val_logits, VAL_LOGITS)])
def test_an_unreadable_file_is_named_by_its_artifact_not_by_the_temporary_copy(tmp_path, load, artifact):
    (tmp_path / "downloaded.pt").write_bytes(b"PK\x03\x04 not a whole zip")
    with pytest.raises(CorruptArtifact) as caught:
        load(tmp_path / "downloaded.pt")
    assert caught.value.file == artifact and str(tmp_path) not in str(caught.value)


# ---------------------------------------------------------------------------- nothing spelled twice
_ATTR_CALLS = {"set_user_attr"}
_ATTR_DICTS = {"user_attrs", "system_attrs"}
_PATHS = {BEST_CHECKPOINT, LAST_CHECKPOINT, LAST_CHECKPOINT_ALT, VAL_LOGITS, TRADEOFF_CSV, TRIAL_CONFIG, STUDY_CONFIG}


def _literal_attr_uses(tree: ast.AST) -> list[str]:
    """`set_user_attr("k", ...)`, `user_attrs["k"]`, `user_attrs.get("k")` (and the same on
    `system_attrs`) with a literal key."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            key = node.args[0]
            owner = node.func.value
            if isinstance(key, ast.Constant) and isinstance(key.value, str) and (
                    node.func.attr in _ATTR_CALLS
                    or (node.func.attr == "get" and isinstance(owner, ast.Attribute) and owner.attr in _ATTR_DICTS)):
                found.append(f"{node.lineno}: {key.value}")
        if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
                and node.value.attr in _ATTR_DICTS and isinstance(node.slice, ast.Constant)):
            found.append(f"{node.lineno}: {node.slice.value}")
    return found


def test_no_attribute_key_or_artifact_path_is_spelled_outside_records():
    offenders = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "benchmarks").glob("*.py")]):
        if path.parent.name == "records":
            continue
        source = path.read_text()
        tree = ast.parse(source)
        offenders += [f"{path.relative_to(PACKAGE.parent)}:{use}" for use in _literal_attr_uses(tree)]
        offenders += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value}" for node in ast.walk(tree)
                      if isinstance(node, ast.Constant) and node.value in _PATHS]
        offenders += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value.value}" for node in tree.body
                      if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                      and node.value.value in TrialRecord.keys()]  # a key kept under another name
    assert offenders == []


def test_the_scan_finds_what_it_looks_for():
    tree = ast.parse('t.set_user_attr("a", 1)\nx = t.user_attrs["b"]\ny = t.user_attrs.get("c")\nz = {}.get("d")')
    assert _literal_attr_uses(tree) == ["1: a", "2: b", "3: c"]
