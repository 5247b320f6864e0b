"""Your own model and data end to end through the command line (docs/design.md §11), on tiny files the
test writes itself: a network function defined here, on a folder of PNGs, is searched by
`ee-search run`, its dense front exported by `ee-search pareto` (each row recomputed from the trial's
cached logits) and an operating point shipped by `ee-search export-model`; CIFAR-10, MNIST and
Fashion-MNIST in their real formats each run a trial; and every mistake exits 2 with one line naming
the file and the field, creating no store."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
import uuid
from pathlib import Path
from typing import NamedTuple

import optuna
import pytest
import torch
from mlflow import MlflowClient
from ee_search.deploy import load_program
from ee_search.exits import evaluate
from ee_search.train import load_checkpoint
from tests.conftest import cli, download_best, write_study
from tests.data.dataset_files import register_cifar10, write_cifar10, write_image_folder, write_mnist


# The user's network: 3 exits, a width and an option read from the model section.
NET = """
from torch import nn

def build(in_channels, num_classes, config):
    w, hidden = config["width"], config["options"]["hidden"]

    def stage(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

    def head(c):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, hidden), nn.ReLU(),
                             nn.Linear(hidden, num_classes))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stages = nn.ModuleList([stage(in_channels, w), stage(w, 2 * w), stage(2 * w, 2 * w)])
            self.heads = nn.ModuleList([head(w), head(2 * w), head(2 * w)])

        def forward(self, x):
            out = []
            for s, h in zip(self.stages, self.heads):
                x = s(x)
                out.append(h(x))
            return out

    return Net()
"""

STUDY = """\
name: {name}
seed: 1
data: {data}
model: {model}
train:
  max_epochs: {epochs}
  lr: 0.05
  batch_size: 8
  early_stopping: {{monitor: val_loss, patience: 2, tol: 0.0}}
exits: {exits}
search:
  n_trials: 1
  objectives: [accuracy, avg_exit_depth]
  sampler: {{type: random, seed: 1}}
  pruner: {{type: none}}
"""
FOLDER_DATA = "{dataset: image_folder, root: imgs, image_size: 16, val_fraction: 0.25, augment: {crop: 12, rotation: 0}}"
STORES = ("optuna.db", "mlflow.db", "mlruns")


@pytest.fixture
def user_net(workdir, monkeypatch):
    """The network module, written into the working directory under a fresh name (imports are cached
    per process); the cwd that loading appends to sys.path is undone afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    name = f"my_nets_{uuid.uuid4().hex[:10]}"
    (workdir / f"{name}.py").write_text(textwrap.dedent(NET))
    yield name
    sys.modules.pop(name, None)


class Own(NamedTuple):
    dir: Path
    study: Path
    module: str
    run_output: str


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """The acceptance study run once for the module: a network function defined by this test file, on
    a folder of PNGs, searched by `ee-search run` in a working directory of its own."""
    directory = tmp_path_factory.mktemp("own")
    module = f"my_nets_{uuid.uuid4().hex[:10]}"
    (directory / f"{module}.py").write_text(textwrap.dedent(NET))
    write_image_folder(directory / "imgs", per_class=12, size=20)
    model = f'{{name: "{module}:build", width: 4, options: {{hidden: 8}}}}'
    study = write_study(directory, STUDY.format(name="own", data=FOLDER_DATA, model=model, epochs=2,
                                                exits="{criterion: max_softmax, thresholds: [0.5, 0.5]}"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        patch.setattr(sys, "path", list(sys.path))
        result = cli("run", study)
        assert result.exit_code == 0, result.output
        yield Own(directory, study, module, result.output)
    sys.modules.pop(module, None)


def test_own_model_on_own_images_runs_and_exports_its_front(own):
    """The acceptance test: a function defined by the test, on image_folder data, through `run` and
    `pareto --out`; every exported row is recomputed from the trial's cached validation logits."""
    assert f"{own.module}:build on image_folder (27 train / 9 val images)" in own.run_output
    trial = optuna.load_study(study_name="own", storage=f"sqlite:///{own.dir}/optuna.db").trials[0]
    assert trial.state.name == "COMPLETE"
    client = MlflowClient(f"sqlite:///{own.dir}/mlflow.db")
    run_id = trial.user_attrs["mlflow_run_id"]
    run = client.get_run(run_id)
    assert run.data.params["model.name"] == f"{own.module}:build" and run.data.params["model.options.hidden"] == "8"
    assert run.data.params["data.dataset"] == "image_folder"
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["image_folder"]
    cached = load_checkpoint(client.download_artifacts(run_id, "exits/val_logits.pt", str(own.dir)))
    assert tuple(cached["logits"].shape) == (3, 9, 3)  # K exits x val images x classes (folders)
    assert cached["relative_flops"][0] < cached["relative_flops"][1] < cached["relative_flops"][2]

    result = cli("pareto", own.study, "--out", own.dir / "front")
    assert result.exit_code == 0, result.output
    with open(own.dir / "front" / "pareto.csv") as f:
        rows = list(csv.DictReader(f))
    document = json.loads((own.dir / "front" / "pareto.json").read_text())
    json_rows = document["front"]
    assert document["study"] == "own" and document["n_completed_trials"] == 1
    assert rows and len(json_rows) == len(rows)
    depths = [float(r["avg_exit_depth"]) for r in rows]
    assert depths == sorted(depths) and all(0 < d <= 1 for d in depths)  # shallowest first
    for row, same in zip(rows, json_rows):
        assert int(row["trial_number"]) == 0 and row["mlflow_run_id"] == run_id == same["mlflow_run_id"]
        thresholds = json.loads(row["thresholds"])
        assert len(thresholds) == 2 and thresholds == pytest.approx(same["thresholds"])  # one per side exit
        # Every exported operating point is exactly what the trial's cached logits give.
        point = evaluate(cached["logits"], cached["labels"], thresholds, cached["criterion"], cached["relative_flops"])
        assert float(row["accuracy"]) == pytest.approx(point.accuracy) == pytest.approx(same["accuracy"])
        assert float(row["avg_exit_depth"]) == pytest.approx(point.avg_exit_depth)
        assert float(row["relative_flops"]) == pytest.approx(point.relative_flops)


@pytest.mark.slow  # export-model times latency and writes an MLflow model: ~10 s more on 2 cores
def test_own_model_ships_through_export_model(own, monkeypatch):
    """export-model needs only stages and heads: torch.export traces the user's own modules, and
    export checks that the program reproduces the operating point on the validation split. Here as
    without the `onnx` extra (tests/deploy exports ONNX): everything else is written, and the card
    says how to get the ONNX graphs."""
    monkeypatch.setattr("ee_search.deploy.model_export.missing_packages", lambda: ["onnxruntime"])
    cached = load_checkpoint(MlflowClient(f"sqlite:///{own.dir}/mlflow.db").download_artifacts(
        optuna.load_study(study_name="own", storage=f"sqlite:///{own.dir}/optuna.db").trials[0]
        .user_attrs["mlflow_run_id"], "exits/val_logits.pt", str(own.dir)))
    chosen = [0.6, 0.7]
    point = evaluate(cached["logits"], cached["labels"], chosen, cached["criterion"], cached["relative_flops"])
    result = cli("export-model", own.study, "--trial", 0, "--thresholds", json.dumps(chosen),
                    "--out", own.dir / "model")
    assert result.exit_code == 0, result.output
    card = json.loads((own.dir / "model" / "card.json").read_text())
    assert card["num_exits"] == 3 and card["in_channels"] == 3 and card["input_size"] == 12
    assert card["thresholds"] == chosen and card["validation"]["accuracy"] == pytest.approx(point.accuracy)
    assert card["validation_measured_by_program"]["avg_exit_depth"] == pytest.approx(point.avg_exit_depth)
    assert "ee-search[onnx]" in card["onnx"]["skipped"] and not (own.dir / "model" / "onnx").exists()
    assert "no ONNX graphs" in result.output
    program = load_program(own.dir / "model" / "program")
    prediction, exit_, _ = program(torch.rand(5, 3, 12, 12))
    assert prediction.shape == (5,) and set(exit_.tolist()) <= {1, 2, 3}


# The same network with a stage torch.export cannot trace (Python control flow on a tensor's value):
# it trains, it cannot be exported.
UNTRACEABLE = NET.replace("from torch import nn\n", """from torch import nn

class Flip(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x
""").replace("nn.MaxPool2d(2))", "nn.MaxPool2d(2), Flip())")


@pytest.mark.slow  # a second run (~8 s on 2 cores)
def test_a_model_torch_export_cannot_trace_trains_but_export_says_why(own, monkeypatch):
    module = f"untraceable_{uuid.uuid4().hex[:10]}"
    (own.dir / f"{module}.py").write_text(textwrap.dedent(UNTRACEABLE))
    model = f'{{name: "{module}:build", width: 4, options: {{hidden: 8}}}}'
    study = write_study(own.dir, STUDY.format(name="untraceable", data=FOLDER_DATA, model=model, epochs=1,
                                              exits="{thresholds: [0.5, 0.5]}"), name="untraceable.yaml")
    try:
        assert cli("run", study).exit_code == 0
        result = cli("export-model", study, "--trial", "0", "--out", own.dir / "m2", catch_exceptions=True)
    finally:
        sys.modules.pop(module, None)
    assert result.exit_code == 2, result.output
    # Reading the study's stores prints Optuna's and MLflow's own notices first; the error is one line.
    (message,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert f"{study}: model.name: " in message and "torch.export" in message and "control flow" in message
    assert not (own.dir / "m2").exists() and not list(own.dir.glob(".m2.*"))  # nothing half-written


@pytest.mark.parametrize("dataset", ["cifar10", "mnist", "fashion_mnist"])
def test_each_torchvision_dataset_runs_a_trial_from_its_real_files(workdir, monkeypatch, dataset):
    if dataset == "cifar10":
        write_cifar10(workdir / "data", per_batch=8, test=10)
        register_cifar10(monkeypatch, workdir / "data")
        channels, size = 3, 28  # 32px images, the default crop of 28
    else:
        write_mnist(workdir / "data", "MNIST" if dataset == "mnist" else "FashionMNIST", train=40, test=10)
        channels, size = 1, 28
    data = f"{{dataset: {dataset}, root: data, val_fraction: 0.25}}"
    study = write_study(workdir, STUDY.format(name=dataset, data=data, model="{name: branchy_lenet, width: 8}",
                                              epochs=1, exits="{thresholds: [0.5]}"))
    result = cli("run", study)
    assert result.exit_code == 0, result.output
    trial = optuna.load_study(study_name=dataset, storage=f"sqlite:///{workdir}/optuna.db").trials[0]
    assert trial.state.name == "COMPLETE" and trial.user_attrs["epochs_trained"] == 1
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.data.params["data.dataset"] == dataset
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == dataset
    assert json.loads(dataset_input.dataset.profile) == {"train": 30, "val": 10, "test": 10}
    best = download_best(client, trial, workdir)
    assert (best["metadata"]["in_channels"], best["metadata"]["input_size"]) == (channels, size)


BROKEN_NETS = {
    "wrong_import_path": (None, "no module named 'not_my_nets'"),
    "no_such_function": ("def other(c, k, config):\n    pass\n", "has no attribute 'build'"),
    "function_raises": ("def build(c, k, config):\n    raise ValueError('width must be even')\n",
                        "raised ValueError: width must be even"),
    "not_a_module": ("def build(c, k, config):\n    return [1, 2]\n", "returned a list, not a torch.nn.Module"),
    "no_heads": ("from torch import nn\nclass N(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                 "        self.stages = nn.ModuleList([nn.Identity(), nn.Identity()])\n"
                 "def build(c, k, config):\n    return N()\n", "`heads` is none"),
    "unequal": (NET.replace("self.heads = nn.ModuleList([head(w), head(2 * w), head(2 * w)])",
                            "self.heads = nn.ModuleList([head(w), head(2 * w)])"), "3 stages but 2 heads"),
    "wrong_logits": (NET.replace("nn.Linear(hidden, num_classes)", "nn.Linear(hidden, 10)"),
                     "logits of shape [2, 10]"),
    "forward_not_a_list": (NET.replace("return out", "return out[0]"), "returned a Tensor"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_NETS))
def test_a_broken_model_is_one_line_on_model_name_and_creates_nothing(workdir, monkeypatch, case):
    monkeypatch.setattr(sys, "path", list(sys.path))
    source, words = BROKEN_NETS[case]
    module = f"broken_{uuid.uuid4().hex[:10]}"
    if source is not None:
        (workdir / f"{module}.py").write_text(source)
    else:
        module = "not_my_nets"
    write_image_folder(workdir / "imgs", per_class=2, size=16)
    model = f'{{name: "{module}:build", width: 4, options: {{hidden: 8}}}}'
    study = write_study(workdir, STUDY.format(name="broken", data=FOLDER_DATA, model=model, epochs=1,
                                              exits="{thresholds: [0.5, 0.5]}"))
    try:
        for command in ("run", "validate"):
            code, message, untouched = _refused(workdir, [command, study])
            assert code == 2 and untouched, message
            assert "\n" not in message and "Traceback" not in message, message
            assert f"{study}: model.name: " in message and words in message, message
    finally:
        sys.modules.pop(module, None)


def test_thresholds_for_the_wrong_k_fail_validate(user_net, workdir):
    write_image_folder(workdir / "imgs", per_class=2, size=16)
    model = f'{{name: "{user_net}:build", width: 4, options: {{hidden: 8}}}}'
    study = write_study(workdir, STUDY.format(name="k", data=FOLDER_DATA, model=model, epochs=1,
                                              exits="{thresholds: [0.5]}"))
    code, message, untouched = _refused(workdir, ["run", study])
    assert code == 2 and untouched, message
    assert "\n" not in message and "Traceback" not in message, message
    assert f"{study}: exits.thresholds: " in message and "has 2 side exits, so give 2 thresholds" in message


@pytest.mark.parametrize(
    ("setup", "data", "words"),
    [
        (lambda root: None, "{dataset: mnist, root: data}", "MNIST/raw"),
        (lambda root: write_cifar10(root), "{dataset: cifar10, root: data}", "md5"),  # not the official files
        (lambda root: write_mnist(root, "MNIST", size=20), "{dataset: mnist, root: data, augment: {crop: 20}}",
         "should be 1x28x28"),
        (lambda root: (write_image_folder(root, per_class=2), (root / "test" / "owl").rename(root / "test" / "emu")),
         "{dataset: image_folder, root: data}", "only in train/: ['owl']"),
        (lambda root: None, "{dataset: image_folder, root: data}", "train/ is missing"),
    ],
    ids=["mnist_missing", "cifar10_md5", "mnist_wrong_size", "folder_classes_differ", "folder_missing"],
)
def test_bad_data_is_one_line_on_data_root_and_creates_nothing(workdir, setup, data, words):
    setup(workdir / "data")
    study = write_study(workdir, STUDY.format(name="bad_data", data=data, model="{name: branchy_lenet, width: 8}",
                                              epochs=1, exits="{thresholds: [0.5]}"))
    code, message, untouched = _refused(workdir, ["run", study])
    assert code == 2 and untouched, message
    assert "\n" not in message and "Traceback" not in message, message
    assert f"{study}: data.root: " in message and words in message, message


def _refused(workdir: Path, args: list) -> tuple[int, str, bool]:
    """Runs the command; returns its exit code, its output (stripped) and whether the working
    directory is exactly as before, with no Optuna or MLflow store in it."""
    def listing() -> list[str]:
        # __pycache__ is Python's own byte-code cache of the user's module, not something ee-search makes.
        return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if "__pycache__" not in p.parts)

    before = listing()
    result = cli(*args, catch_exceptions=True)
    untouched = listing() == before and not any((workdir / s).exists() for s in STORES)
    return result.exit_code, result.output.strip(), untouched
