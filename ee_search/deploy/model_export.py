"""`ee-search export-model`: one operating point (a trial, and thresholds) as a deployable model.

DIR is an MLflow pyfunc model (signature, input example) over the `torch.export` program, and holds
for users without MLflow:
- `program/`: one `torch.export` program per stage and its head, the operating point's exit rule and
  the torch-only routine that runs them (program.py);
- `onnx/`: the same stages as ONNX graphs, the dense all-exits graph `model.onnx`, and a numpy routine
  that runs either under onnxruntime (onnx_export.py; needs the `onnx` extra);
- `card.json`: what the model is and how it performs: the operating point's validation metrics, from
  the trial's cached `exits/val_logits.pt`; the same measured again by running the exported program over
  the validation split (they must agree: a model that does not reproduce its point is not written) and
  by onnxruntime over the ONNX graphs; batch-1 and batch-256 CPU latency of the program against
  full-depth inference of the network.

Nothing half-written: DIR is built in a sibling temporary folder and renamed into place at the end.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ee_search.config import LoadedStudy, StudyConfig
from ee_search.deploy.early_exit_onnx import DENSE_FILE
from ee_search.deploy.latency import latency
from ee_search.deploy.onnx_export import ONNX_DIR, export_onnx, measure_onnx, missing_packages
from ee_search.deploy.onnx_export import RUNNER_FILE as ONNX_RUNNER
from ee_search.deploy.program import (
    PROGRAM_DIR,
    Normalise,
    example_batch,
    exit_stages,
    export_stages,
    full_depth,
    load_program,
    save_program,
)
from ee_search.deploy.program import RUNNER_FILE as PROGRAM_RUNNER
from ee_search.errors import UserInputError
from ee_search.models import is_user_model
from ee_search.records import (
    BEST_CHECKPOINT,
    MODEL_CHECKPOINT,
    VAL_LOGITS,
    TrialRecord,
    load_best_checkpoint,
    load_val_logits,
)
from ee_search.tracking_models import download_model_file, trial_model

CARD_FILE = "card.json"


def export_model(study_file: LoadedStudy, trial_number: int, out_dir: Path, thresholds: list[float] | None = None,
                 register: str | None = None) -> dict:
    """Write DIR and return the card."""
    from mlflow import MlflowClient

    from ee_search.search import load_existing

    config = study_file.config
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserInputError("--out", None, f"{out_dir} exists and is not empty: choose a new directory or remove it")
    study = load_existing(config, study_file.path, config.search.storage)
    trial = _completed_trial(study, trial_number, study_file.path)
    client = MlflowClient(tracking_uri=config.tracking.uri)
    run_id = TrialRecord.read(trial).mlflow_run_id
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent if out_dir.parent.exists() else None))
    try:
        card = _build(study_file, trial, client, run_id, thresholds, staging)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(out_dir))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if register:
        card["registered"] = _register(client, run_id, out_dir, register, trial_number)
        (out_dir / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return card


def _completed_trial(study, number: int, source: str):
    from optuna.trial import TrialState

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise UserInputError(source, "--trial", f"study '{study.study_name}' has no trial {number} "
                             f"(it has 0..{len(trials) - 1}; see ee-search status)")
    trial = trials[number]
    if trial.state != TrialState.COMPLETE or TrialRecord.read(trial).mlflow_run_id is None:
        raise UserInputError(source, "--trial", f"trial {number} is {trial.state.name}, not a completed "
                             "ee-search trial: export one from ee-search pareto or status")
    return trial


def _build(study_file: LoadedStudy, trial, client, run_id: str, thresholds, staging: Path) -> dict:
    from ee_search.checkpoints import model_from_checkpoint
    from ee_search.exits import evaluate
    from ee_search.search import values_from_params

    with tempfile.TemporaryDirectory(prefix="ee-search-export-") as tmp:
        network_file, model_id = _network_file(client, trial, run_id, Path(tmp))
        payload = load_best_checkpoint(network_file)
        cached = load_val_logits(client.download_artifacts(run_id, VAL_LOGITS, tmp))
    meta = payload["metadata"]
    network = model_from_checkpoint(payload).to(memory_format=torch.channels_last).eval()
    sampled = TrialRecord.read(trial).thresholds
    chosen = list(sampled if sampled is not None else meta["thresholds"]) if thresholds is None else thresholds
    _check_thresholds(chosen, network.num_exits, meta["criterion"], study_file.path)
    point = evaluate(cached["logits"], cached["labels"], chosen, meta["criterion"], cached["relative_flops"])
    normalise = Normalise(meta["mean"], meta["std"]).eval()
    images, labels = validation_inputs(study_file.with_values(values_from_params(study_file.config, trial.params)), meta)

    started = time.perf_counter()
    programs = export_programs(exit_stages(network, normalise), example_batch(images), meta["model"]["name"],
                                study_file.path)
    save_program(programs, chosen, meta["criterion"], staging / PROGRAM_DIR)
    seconds = {"program": time.perf_counter() - started}
    program = load_program(staging / PROGRAM_DIR)
    outputs = program(images)
    measured = _reproduced(outputs, labels, network.num_exits, point)

    card = _card(trial.number, run_id, chosen, meta, network.num_exits, point)
    card["mlflow_model_id"] = model_id
    card["validation_measured_by_program"] = measured | {"samples": int(len(labels))}
    card["onnx"] = _onnx(programs, chosen, meta, staging, (images, labels, outputs), seconds)
    card["latency_ms_cpu"] = latency(program, full_depth(network, normalise), images)
    card["export_seconds"] = seconds
    card["torch_version"] = torch.__version__
    _save_pyfunc(program, staging / PROGRAM_DIR, images[:2].numpy(), staging)
    (staging / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return card


def _network_file(client, trial, run_id: str, into: Path) -> tuple[Path, str | None]:
    """The trial's best.pt from its LoggedModel (docs/design.md §5) where it has one, else from its run's
    checkpoints/best.pt (a study logged before LoggedModels, or MLflow < 3); and the model's id."""
    model = trial_model(client, run_id, TrialRecord.read(trial).mlflow_model_id)
    if model is None:
        return Path(client.download_artifacts(run_id, BEST_CHECKPOINT, str(into))), None
    return download_model_file(client, model, MODEL_CHECKPOINT, into / model.model_id), model.model_id


def export_programs(stages, example: torch.Tensor, model_name: str, source: str) -> list:
    try:
        return export_stages(stages, example)
    except Exception as exc:  # torch.export's errors have no common type (UserError, RuntimeError, ...)
        if not is_user_model(model_name):
            raise  # a built-in family that does not export is a bug, with its traceback
        detail = " ".join(str(exc).split())[:300]
        raise UserInputError(source, "model.name", f"the stages and heads of {model_name} cannot be traced by "
                             f"torch.export, which export-model needs ({type(exc).__name__}: {detail}): keep "
                             "their forward methods free of Python control flow on tensor values") from None


def _reproduced(outputs, labels: torch.Tensor, k_exits: int, point) -> dict:
    """Accuracy and depth of the exported program on the validation split: they must be the operating
    point's, or nothing is written."""
    predicted, exits, _ = outputs
    measured = {"accuracy": float(predicted.eq(labels).double().mean()),
                "avg_exit_depth": float(exits.double().mean() / k_exits)}
    if abs(measured["accuracy"] - point.accuracy) > 1e-9 or abs(measured["avg_exit_depth"] - point.avg_exit_depth) > 1e-9:
        raise RuntimeError(f"the exported program gives {measured} on the validation split, not the operating "
                           f"point's accuracy {point.accuracy} and avg exit depth {point.avg_exit_depth}")
    return measured


def _card(trial_number: int, run_id: str, chosen: list[float], meta: dict, k_exits: int, point) -> dict:
    return {
        "trial_number": trial_number,
        "mlflow_run_id": run_id,
        "thresholds": chosen,
        "criterion": meta["criterion"],
        "num_exits": k_exits,
        "in_channels": meta["in_channels"],
        "input_size": meta["input_size"],
        "num_classes": meta["num_classes"],
        "mean": meta["mean"],
        "std": meta["std"],
        "input": "float32 [B, C, H, W] in [0, 1] (pixel / 255), not normalised; quantised to 8-bit levels",
        "outputs": {"prediction": "int64 class", "exit": "int64 exit taken, 1..K",
                    "confidence": "float32 max softmax at the exit taken"},
        "validation": {"accuracy": point.accuracy, "avg_exit_depth": point.avg_exit_depth,
                       "relative_flops": point.relative_flops, "exit_fractions": point.exit_fractions},
        "program": {"dir": f"{PROGRAM_DIR}/", "runner": f"{PROGRAM_DIR}/{PROGRAM_RUNNER}",
                    "stages": [f"{PROGRAM_DIR}/stage_{k}.pt2" for k in range(1, k_exits + 1)]},
    }


def _onnx(programs, chosen, meta: dict, staging: Path, validation, seconds: dict) -> dict:
    """The ONNX graphs and what onnxruntime measures with them, or why there are none."""
    missing = missing_packages()
    if missing:
        return {"skipped": f"{', '.join(missing)} not installed: pip install 'ee-search[onnx]'"}
    started = time.perf_counter()
    directory = staging / ONNX_DIR
    try:
        export_onnx(programs, chosen, meta["criterion"], directory)
    except Exception as exc:  # the converter's errors have no common type
        if not is_user_model(meta["model"]["name"]):
            raise
        shutil.rmtree(directory, ignore_errors=True)
        return {"skipped": f"torch.onnx cannot convert {meta['model']['name']}: {type(exc).__name__}: "
                           + " ".join(str(exc).split())[:300]}
    seconds["onnx"] = time.perf_counter() - started
    images, labels, outputs = validation
    k_exits = len(programs)
    return {"dir": f"{ONNX_DIR}/", "runner": f"{ONNX_DIR}/{ONNX_RUNNER}", "model": f"{ONNX_DIR}/{DENSE_FILE}",
            "stages": [f"{ONNX_DIR}/stage_{k}.onnx" for k in range(1, k_exits + 1)],
            "validation_measured_by_onnxruntime": measure_onnx(directory, images, labels, outputs)}


def _save_pyfunc(program, program_dir: Path, example: np.ndarray, staging: Path) -> None:
    """The MLflow model (pyfunc from code, see pyfunc.py) with its signature and input example, its
    files at DIR's top level beside program/ (its `program` artifact is a copy of that folder)."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    from ee_search.deploy import pyfunc

    prediction, exit_, top = program(torch.from_numpy(example))
    output = pd.DataFrame({"prediction": prediction.numpy(), "exit": exit_.numpy(), "confidence": top.numpy()})
    pyfunc_dir = staging / "pyfunc"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # hints about integer columns and type hints
        mlflow.pyfunc.save_model(
            path=str(pyfunc_dir), python_model=pyfunc.__file__, artifacts={"program": str(program_dir)},
            signature=infer_signature(example, output), input_example=example,
        )
    for entry in pyfunc_dir.iterdir():
        shutil.move(str(entry), str(staging / entry.name))
    pyfunc_dir.rmdir()


def _check_thresholds(thresholds: list[float], k_exits: int, criterion: str, source: str) -> None:
    if len(thresholds) != k_exits - 1 or not all(isinstance(t, (int, float)) for t in thresholds):
        raise UserInputError(source, "--thresholds", f"give a JSON list of {k_exits - 1} numbers, one per side exit")
    if criterion == "max_softmax" and not all(0.0 <= t <= 1.0 for t in thresholds):
        raise UserInputError(source, "--thresholds", "max_softmax thresholds lie in [0, 1]")
    if criterion == "entropy" and not all(t >= 0.0 for t in thresholds):
        raise UserInputError(source, "--thresholds", "entropy thresholds are >= 0")


def validation_inputs(config: StudyConfig, meta: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation split of the trial's `config` as the exported model's users feed it: centre-cropped
    to the input size, pixel / 255, NCHW float32 (the same images, in the same order, as the trial's val
    logits)."""
    from ee_search.data import prepare_data
    from ee_search.data.augment import BatchTransform

    prepared = prepare_data(config.data, config.seed)
    channels = meta["in_channels"]
    to_unit = BatchTransform((0.0,) * channels, (1.0,) * channels, prepared.source.image_size,
                             config.data.augment.crop, 0.0, train=False)
    images = torch.from_numpy(np.ascontiguousarray(prepared.val.images.transpose(0, 2, 3, 1)))
    x = to_unit(images, torch.arange(len(images)), None)
    return x.contiguous(), torch.from_numpy(prepared.val.labels)


def _register(client, run_id: str, out_dir: Path, name: str, trial_number: int) -> dict:
    """Register DIR in the tracking store's model registry, as a version linked to the trial's run
    (its files are logged to the run first, so the version's source lives in the tracking store)."""
    from mlflow.exceptions import MlflowException

    artifact_path = f"exported_models/{out_dir.name}"
    client.log_artifacts(run_id, str(out_dir), artifact_path)
    try:
        client.create_registered_model(name, description="Early-exit operating points exported by ee-search")
    except MlflowException:
        pass  # it exists already: add a version
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    version = client.create_model_version(name, source, run_id=run_id,
                                          tags={"ee_search.trial_number": str(trial_number)})
    return {"name": name, "version": version.version, "source": source}

