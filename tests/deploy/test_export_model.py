"""`ee-search export-model` on a real study: the MLflow pyfunc (loaded in a fresh process), the
standalone TorchScript program (with ee_search not importable) and a real `mlflow models serve` all
give exactly the dense all-exits forward of the trial's checkpoint with the exit rule applied, and a
front row exported reproduces its validation accuracy and average exit depth."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from mlflow import MlflowClient

from ee_search.config import load_study_file
from ee_search.data import build_batches, prepare_data
from ee_search.data.augment import BatchTransform
from ee_search.exits import exit_predictions
from ee_search.records import VAL_LOGITS, TrialRecord, load_val_logits
from ee_search.search import values_from_params
from tests.conftest import best_model, cli, mlflow_client

STUDY = """\
name: deploy
seed: 5
data: {dataset: digits, val_fraction: 0.2, augment: {crop: 28, rotation: 0}}
model: {name: branchy_lenet, width: 64}
train: {max_epochs: 3, lr: 0.05, batch_size: 64, early_stopping: {monitor: val_loss, patience: 3, tol: 0.0}}
exits: {criterion: max_softmax, thresholds: [0.8]}
search:
  n_trials: 2
  sampler: {type: random, seed: 2}
  pruner: {type: none}
  space: {exits.thresholds: {type: float, low: 0.5, high: 0.99, per_item: true}}
"""


def _point_using_both_exits(root: Path) -> dict:
    """A front row's trial, at the threshold that sends half its validation samples out early.

    The dense front of so small a study can be the first exit alone (every sample leaves early), which
    proves nothing about routing; the median of the first exit's confidence splits the samples. The
    expected accuracy and depth are counted here, per sample, from the trial's cached logits."""
    row = next(csv.DictReader((root / "front" / "pareto.csv").open()))
    trial = optuna.load_study(study_name="deploy", storage=f"sqlite:///{root}/optuna.db").trials[int(row["trial_number"])]
    with tempfile.TemporaryDirectory() as tmp:
        cached = load_val_logits(mlflow_client(root).download_artifacts(
            TrialRecord.read(trial).mlflow_run_id, VAL_LOGITS, tmp))
    first_confidence = torch.softmax(cached["logits"][0].double(), dim=-1).amax(dim=-1)
    ranked = first_confidence.sort().values
    middle = len(ranked) // 2
    threshold = float((ranked[middle - 1] + ranked[middle]) / 2)  # between two samples, not on one
    early = first_confidence >= threshold
    predicted = torch.where(early, cached["logits"][0].argmax(-1), cached["logits"][1].argmax(-1))
    return {"trial_number": row["trial_number"], "thresholds": json.dumps([threshold]),
            "accuracy": float(predicted.eq(cached["labels"]).double().mean()),
            "avg_exit_depth": float(torch.where(early, 1.0, 2.0).double().mean() / 2)}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A trained two-trial study and an operating point of it that uses both exits, exported with --register."""
    root = tmp_path_factory.mktemp("deploy")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        (root / "deploy.yaml").write_text(STUDY)
        assert cli("run", "deploy.yaml").exit_code == 0
        assert cli("pareto", "deploy.yaml", "--out", "front").exit_code == 0
        row = _point_using_both_exits(root)
        result = cli("export-model", "deploy.yaml", "--trial", row["trial_number"], "--thresholds",
                     row["thresholds"], "--out", "model", "--register", "digits-ee")
        assert result.exit_code == 0, result.output
        yield root, row, result.output


def _inputs_and_oracle(root: Path, row: dict):
    """The validation images as the model's users feed them ([0, 1], NCHW), their labels, and the
    oracle: the prediction and 0-based exit of the checkpoint's dense all-exits forward, on the
    training pipeline's own normalised images, with the exit rule at the row's thresholds, and the
    max softmax probability of the exit taken."""
    trial_number = int(row["trial_number"])
    loaded = load_study_file(root / "deploy.yaml")
    storage = f"sqlite:///{root}/optuna.db"
    trial = optuna.load_study(study_name="deploy", storage=storage).trials[trial_number]
    config = loaded.with_values(values_from_params(loaded.config, trial.params))
    prepared = prepare_data(config.data, config.seed)
    data = build_batches(prepared, config.data.augment, torch.device("cpu"), 64, 4096, seed=0)
    normalised, labels = next(iter(data.val))
    unit = BatchTransform((0.0,), (1.0,), prepared.source.image_size, 28, 0.0, train=False)
    images = torch.from_numpy(np.ascontiguousarray(prepared.val.images.transpose(0, 2, 3, 1)))
    x = unit(images, torch.arange(len(images))).contiguous()
    model = best_model(mlflow_client(root), trial, root)
    with torch.no_grad():
        logits = torch.stack([z.float() for z in model(normalised)])
    dense_pred, dense_taken = exit_predictions(logits, json.loads(row["thresholds"]), "max_softmax")
    taken_logits = logits[dense_taken, torch.arange(len(labels))]
    confidence = torch.softmax(taken_logits, dim=-1).amax(dim=-1)
    return x, labels, dense_pred, dense_taken, confidence


def test_export_writes_the_mlflow_model_the_program_and_the_card(study):
    root, row, output = study
    model_dir = root / "model"
    assert {"MLmodel", "model.ts", "card.json", "input_example.json"} <= {p.name for p in model_dir.iterdir()}
    card = json.loads((model_dir / "card.json").read_text())
    assert card["trial_number"] == int(row["trial_number"]) and card["thresholds"] == json.loads(row["thresholds"])
    assert {"criterion", "num_exits", "in_channels", "input_size", "mean", "std"} <= set(card)
    # The operating point is reproduced from the cached logits.
    # Counted here in float64 against export's float32 rule: a sample within rounding of the threshold
    # may fall on the other side, no more.
    one_sample = 1.0 / card["validation_measured_by_program"]["samples"]
    assert card["validation"]["accuracy"] == pytest.approx(float(row["accuracy"]), abs=one_sample + 1e-12)
    assert card["validation"]["avg_exit_depth"] == pytest.approx(float(row["avg_exit_depth"]), abs=one_sample / 2 + 1e-12)
    latency = card["latency_ms_cpu"]
    assert (latency["batch_1"]["repeats"], latency["batch_256"]["repeats"]) == (50, 10)
    # 256 images cost more than one through the same full-depth network.
    assert latency["batch_256"]["full_depth_ms"] > latency["batch_1"]["full_depth_ms"]
    for timing in (latency["batch_1"], latency["batch_256"]):
        # The median of the paired ratios stays near the ratio of the median times (pairs alternate,
        # so drift cancels): a speedup computed from the wrong side or the wrong pairs falls outside.
        ratio_of_medians = timing["full_depth_ms"] / timing["early_exit_ms"]
        assert 0.5 * ratio_of_medians < timing["speedup"] < 2 * ratio_of_medians
    assert "CPU latency batch 1" in output


def test_the_card_holds_what_the_program_measures_on_the_validation_images(study):
    """Oracle: the program run here on the validation images, accuracy and depth counted by hand."""
    root, row, _ = study
    x, labels, _, _, _ = _inputs_and_oracle(root, row)
    program = torch.jit.load(str(root / "model" / "model.ts"))
    with torch.no_grad():
        prediction, exits, _ = program(x)
    card = json.loads((root / "model" / "card.json").read_text())
    measured = card["validation_measured_by_program"]
    assert measured["samples"] == len(labels)
    assert measured["accuracy"] == pytest.approx(float((prediction == labels).double().mean()), abs=1e-12)
    assert measured["avg_exit_depth"] == pytest.approx(float(exits.double().mean()) / card["num_exits"], abs=1e-12)


def test_the_program_equals_the_dense_forward_of_the_checkpoint(study):
    root, row, _ = study
    x, labels, dense_pred, dense_taken, confidence = _inputs_and_oracle(root, row)
    assert 0 < int((dense_taken == 0).sum()) < len(labels)  # both exits are used
    program = torch.jit.load(str(root / "model" / "model.ts"))
    with torch.no_grad():
        prediction, exits, top = program(x)
    assert torch.equal(prediction, dense_pred) and torch.equal(exits, dense_taken + 1)
    assert torch.allclose(top, confidence, rtol=1e-5, atol=1e-6)  # softmax of the exit taken, recomputed


def test_pyfunc_in_a_fresh_process_and_the_program_without_ee_search(study):
    root, row, _ = study
    x, _, dense_pred, dense_taken, _ = _inputs_and_oracle(root, row)
    np.save(root / "x.npy", x.numpy())
    pyfunc = textwrap.dedent(f"""
        import mlflow.pyfunc, numpy as np
        out = mlflow.pyfunc.load_model({str(root / 'model')!r}).predict(np.load({str(root / 'x.npy')!r}))
        np.save({str(root / 'pyfunc.npy')!r}, out[["prediction", "exit"]].to_numpy())
    """)
    subprocess.run([sys.executable, "-c", pyfunc], check=True, cwd=root, timeout=300)
    got = np.load(root / "pyfunc.npy")
    assert np.array_equal(got[:, 0], dense_pred.numpy()) and np.array_equal(got[:, 1], dense_taken.numpy() + 1)
    standalone = textwrap.dedent(f"""
        import sys
        sys.modules["ee_search"] = None  # any import of ee_search now fails
        import numpy as np, torch
        prediction, exits, _ = torch.jit.load({str(root / 'model' / 'model.ts')!r})(
            torch.from_numpy(np.load({str(root / 'x.npy')!r})))
        np.save({str(root / 'program.npy')!r}, torch.stack([prediction, exits], 1).numpy())
    """)
    subprocess.run([sys.executable, "-c", standalone], check=True, cwd=root, timeout=300)
    assert np.array_equal(np.load(root / "program.npy"), got)


def test_register_links_the_version_to_the_trials_run(study):
    root, row, _ = study
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    versions = client.search_model_versions("name = 'digits-ee'")
    assert len(versions) == 1
    trial = optuna.load_study(study_name="deploy", storage=f"sqlite:///{root}/optuna.db").trials[int(row["trial_number"])]
    assert versions[0].run_id == trial.user_attrs["mlflow_run_id"]
    assert versions[0].tags["ee_search.trial_number"] == row["trial_number"]


@pytest.mark.parametrize(("args", "words"), [
    (["--trial", "7"], "no trial 7"),
    (["--trial", "0", "--thresholds", "[0.5, 0.5]"], "1 numbers"),
    (["--trial", "0", "--thresholds", "[1.5]"], "[0, 1]"),
    (["--trial", "0", "--thresholds", "nope"], "JSON list"),
    (["--trial", "0", "--out", "model"], "not empty"),
])
def test_mistakes_exit_2_and_write_nothing(study, args, words):
    root, _, _ = study
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        before = sorted(p.name for p in root.iterdir())
        out = [] if "--out" in args else ["--out", "other"]
        result = cli("export-model", "deploy.yaml", *args, *out, catch_exceptions=True)
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output
        assert sorted(p.name for p in root.iterdir()) == before


@pytest.mark.slow  # a server process
def test_served_by_a_real_mlflow_models_serve(study, serve):
    root, row, _ = study
    x, _, _, _, _ = _inputs_and_oracle(root, row)
    program = torch.jit.load(str(root / "model" / "model.ts"))
    with torch.no_grad():
        expected, exits, _ = program(x[:5])
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    base = serve(lambda port: [mlflow, "models", "serve", "-m", str(root / "model"), "--env-manager", "local",
                               "--host", "127.0.0.1", "--port", str(port)])
    body = json.dumps({"inputs": x[:5].tolist()}).encode()
    request = urllib.request.Request(f"{base}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        rows = json.loads(response.read())["predictions"]
    assert [r["prediction"] for r in rows] == expected.tolist()
    assert [r["exit"] for r in rows] == exits.tolist()
