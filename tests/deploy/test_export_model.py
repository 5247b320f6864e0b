"""`ee-search export-model` on a real study: every format it writes, run in a fresh process where
ee_search cannot be imported (the `torch.export` program with its torch-only routine, the MLflow
pyfunc over it, the ONNX stage graphs and the dense `model.onnx` under onnxruntime), and a real
`mlflow models serve`, gives the dense all-exits forward of the trial's checkpoint with the exit rule
applied (ONNX within float rounding of its confidences, exits identical), and a front row exported
reproduces its validation accuracy and average exit depth in each format."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from mlflow import MlflowClient

from ee_search.config import load_study_file
from ee_search.data import build_batches, prepare_data
from ee_search.data.augment import BatchTransform
from ee_search.deploy import early_exit_onnx, early_exit_torch
from ee_search.exits import exit_predictions, score_logits
from ee_search.records import BEST_CHECKPOINT, VAL_LOGITS, TrialRecord, load_val_logits
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
        with warnings.catch_warnings():
            # The acceptance: nothing on the export path is deprecated (torch.jit warned so).
            warnings.simplefilter("error", FutureWarning)
            result = cli("export-model", "deploy.yaml", "--trial", row["trial_number"], "--thresholds",
                         row["thresholds"], "--out", "model", "--register", "digits-ee")
        assert result.exit_code == 0, result.output
        yield root, row, result.output


@pytest.fixture(scope="module")
def oracle(study):
    root, row, _ = study
    return _inputs_and_oracle(root, row)


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


# Run in a fresh interpreter (-I: no PYTHONPATH, no working directory on sys.path) in which any import
# of ee_search fails, so each format shows it needs only what it says: torch for program/, numpy and
# onnxruntime for onnx/, mlflow for the pyfunc; and in which a FutureWarning (a deprecated API on the
# loading path, as torch.jit.load was) is an error. One process for all four keeps the module's cost low.
FRESH = """
import sys
sys.modules["ee_search"] = None  # any import of ee_search now fails
sys.dont_write_bytecode = True  # leave the model folder as export wrote it
import numpy as np, torch, mlflow.pyfunc
model, x = sys.argv[1], np.load(sys.argv[2])
sys.path[:0] = [model + "/program", model + "/onnx"]
import early_exit_torch, early_exit_onnx

def save(name, outputs):
    np.save(name + ".npy", np.stack([np.asarray(o, dtype=np.float64) for o in outputs]))

program = early_exit_torch.load(model + "/program")
save("program", [o.numpy() for o in program(torch.from_numpy(x))])
save("program_one", [o.numpy() for o in program(torch.from_numpy(x[:1]))])  # a batch of one
frame = mlflow.pyfunc.load_model(model).predict(x)
save("pyfunc", [frame["prediction"], frame["exit"], frame["confidence"]])
save("onnx_stages", early_exit_onnx.load_stages(model + "/onnx")(x))
save("onnx_model", early_exit_onnx.load_dense(model + "/onnx")(x))
try:
    import ee_search
except ImportError:
    print("ee_search not importable")
"""
FORMATS = ("program", "pyfunc", "onnx_stages", "onnx_model")


@pytest.fixture(scope="module")
def fresh(study, oracle, tmp_path_factory):
    """Each format's (prediction, exit, confidence) on the validation images, from the fresh process."""
    root, _, _ = study
    out = tmp_path_factory.mktemp("fresh")
    np.save(out / "x.npy", oracle[0].numpy())
    command = [sys.executable, "-I", "-W", "error::FutureWarning", "-c", FRESH, str(root / "model"),
               str(out / "x.npy")]
    done = subprocess.run(command, cwd=out, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ee_search not importable" in done.stdout
    return {name: np.load(out / f"{name}.npy") for name in (*FORMATS, "program_one")}


def test_export_writes_every_format_and_the_card(study):
    root, row, output = study
    model_dir = root / "model"
    assert {"MLmodel", "card.json", "input_example.json", "program", "onnx"} <= {p.name for p in model_dir.iterdir()}
    assert not list(model_dir.rglob("*.ts"))  # no TorchScript any more
    assert {p.name for p in (model_dir / "program").iterdir()} == {
        "stage_1.pt2", "stage_2.pt2", "exit_rule.json", "early_exit_torch.py"}
    assert {p.name for p in (model_dir / "onnx").iterdir()} == {
        "stage_1.onnx", "stage_2.onnx", "model.onnx", "exit_rule.json", "early_exit_onnx.py"}
    card = json.loads((model_dir / "card.json").read_text())
    assert card["trial_number"] == int(row["trial_number"]) and card["thresholds"] == json.loads(row["thresholds"])
    assert {"criterion", "num_exits", "in_channels", "input_size", "mean", "std"} <= set(card)
    for path in (*card["program"]["stages"], card["program"]["runner"], *card["onnx"]["stages"],
                 card["onnx"]["model"], card["onnx"]["runner"]):
        assert (model_dir / path).is_file(), path
    assert set(card["export_seconds"]) == {"program", "onnx"}
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
        # Recomputed from the card's own pairs (alternated, so drift cancels in each ratio): a speedup
        # taken from the wrong side or from unpaired times would differ. Exact, so no timing can flake it.
        early, full = timing["early_exit_ms_all"], timing["full_depth_ms_all"]
        assert len(early) == len(full) == timing["repeats"]
        ratios = [f / e for e, f in zip(early, full)]
        assert timing["speedup"] == statistics.median(ratios)
        assert (timing["speedup_min"], timing["speedup_max"]) == (min(ratios), max(ratios))
        assert (timing["early_exit_ms"], timing["full_depth_ms"]) == (statistics.median(early), statistics.median(full))
    assert "CPU latency batch 1" in output and "onnxruntime: stages accuracy" in output


def test_the_graphs_take_any_batch_size(study, fresh):
    """A dynamic batch dimension in every graph: the ONNX inputs are symbolic, and the program gives
    one image alone what it gave it in the full validation batch."""
    import onnx

    root, _, _ = study
    for path in sorted((root / "model" / "onnx").glob("*.onnx")):
        graph = onnx.load(str(path)).graph
        assert [i.name for i in graph.input] == ["x"]
        assert graph.input[0].type.tensor_type.shape.dim[0].dim_param, path.name  # a name, not a size
    dense = onnx.load(str(root / "model" / "onnx" / "model.onnx")).graph
    assert [o.name for o in dense.output] == ["logits_1", "logits_2"]
    assert np.array_equal(fresh["program_one"][:2, 0], fresh["program"][:2, 0])


def test_the_card_holds_what_the_program_and_onnxruntime_measure(study, oracle, fresh):
    """Oracle: the outputs of the fresh process, accuracy and depth counted by hand."""
    root, _, _ = study
    labels = oracle[1].numpy()
    card = json.loads((root / "model" / "card.json").read_text())
    measured = {"program": card["validation_measured_by_program"]}
    measured |= {f"onnx_{route}": m for route, m in card["onnx"]["validation_measured_by_onnxruntime"].items()}
    assert measured["program"]["samples"] == len(labels)
    for name, m in measured.items():
        prediction, exits = fresh[name][0], fresh[name][1]
        assert m["accuracy"] == pytest.approx(float((prediction == labels).mean()), abs=1e-12)
        assert m["avg_exit_depth"] == pytest.approx(exits.mean() / card["num_exits"], abs=1e-12)
    for route in ("onnx_stages", "onnx_model"):
        assert measured[route]["exits_differing_from_program"] == 0


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_equals_the_dense_forward_and_reproduces_the_point(study, oracle, fresh, name):
    root, _, _ = study
    _, labels, dense_pred, dense_taken, confidence = oracle
    assert 0 < int((dense_taken == 0).sum()) < len(labels)  # both exits are used
    prediction, exits, top = fresh[name]
    assert np.array_equal(prediction, dense_pred.numpy()) and np.array_equal(exits, dense_taken.numpy() + 1)
    # The softmax of the exit taken, recomputed: torch's own arithmetic for program/ and the pyfunc,
    # onnxruntime's convolutions and numpy's softmax for the ONNX routes.
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if name in ("program", "pyfunc") else {"rtol": 1e-4, "atol": 1e-5}
    assert np.allclose(top, confidence.numpy(), **tolerance)
    card = json.loads((root / "model" / "card.json").read_text())
    assert float((prediction == labels.numpy()).mean()) == pytest.approx(card["validation"]["accuracy"], abs=1e-12)
    assert exits.mean() / card["num_exits"] == pytest.approx(card["validation"]["avg_exit_depth"], abs=1e-12)


@pytest.mark.parametrize("criterion", ["max_softmax", "entropy"])
def test_the_shipped_exit_rules_are_the_policys(criterion):
    """The routines shipped in program/ and onnx/ carry copies of policy.score_logits (they must run
    without ee_search): torch's copy is bit for bit the same, numpy's within float rounding."""
    logits = torch.randn(500, 10, generator=torch.Generator().manual_seed(0)) * 4
    max_softmax = criterion == "max_softmax"
    expected = score_logits(logits, max_softmax)
    assert torch.equal(early_exit_torch.confidence_score(logits, max_softmax), expected)
    assert np.allclose(early_exit_onnx.confidence_score(logits.numpy(), max_softmax), expected.numpy(),
                       rtol=1e-5, atol=1e-6)


def test_no_torch_jit_in_the_package():
    package = Path(early_exit_torch.__file__).parents[1]
    assert [p for p in package.rglob("*.py") if "torch.jit" in p.read_text()] == []


def test_register_links_the_version_to_the_trials_run(study):
    root, row, _ = study
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    versions = client.search_model_versions("name = 'digits-ee'")
    assert len(versions) == 1
    trial = optuna.load_study(study_name="deploy", storage=f"sqlite:///{root}/optuna.db").trials[int(row["trial_number"])]
    assert versions[0].run_id == trial.user_attrs["mlflow_run_id"]
    assert versions[0].tags["ee_search.trial_number"] == row["trial_number"]


def test_export_reads_the_network_through_the_trials_logged_model(study, tmp_path):
    """The card names the trial's LoggedModel, the network's source; with the run's checkpoints/best.pt
    moved away, export still finds the same weights, through the model."""
    from mlflow.utils.file_utils import local_file_uri_to_path

    from ee_search.deploy.model_export import _network_file

    root, row, _ = study
    trial = optuna.load_study(study_name="deploy", storage=f"sqlite:///{root}/optuna.db").trials[int(row["trial_number"])]
    record = TrialRecord.read(trial)
    card = json.loads((root / "model" / "card.json").read_text())
    assert record.mlflow_model_id and card["mlflow_model_id"] == record.mlflow_model_id
    client = mlflow_client(root)
    stored = Path(local_file_uri_to_path(client.get_run(record.mlflow_run_id).info.artifact_uri)) / BEST_CHECKPOINT
    original = stored.read_bytes()
    moved = stored.rename(tmp_path / "moved.pt")
    try:
        path, model_id = _network_file(client, trial, record.mlflow_run_id, tmp_path / "got")
    finally:
        moved.rename(stored)
    assert model_id == record.mlflow_model_id and path.read_bytes() == original


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
def test_served_by_a_real_mlflow_models_serve(study, oracle, serve):
    root, _, _ = study
    x, _, dense_pred, dense_taken, _ = oracle
    expected, exits = dense_pred[:5], dense_taken[:5] + 1
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    base = serve(lambda port: [mlflow, "models", "serve", "-m", str(root / "model"), "--env-manager", "local",
                               "--host", "127.0.0.1", "--port", str(port)])
    body = json.dumps({"inputs": x[:5].tolist()}).encode()
    request = urllib.request.Request(f"{base}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        rows = json.loads(response.read())["predictions"]
    assert [r["prediction"] for r in rows] == expected.tolist()
    assert [r["exit"] for r in rows] == exits.tolist()
