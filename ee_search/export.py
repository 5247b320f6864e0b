"""`ee-search pareto`: read the study, build the front, optionally report it on the test split, write
the three files. With `--split test`, each front trial's best checkpoint is fetched from MLflow and
evaluated on the held-out test split at that trial's thresholds; those numbers are reported next to
the validation ones and never used to choose anything."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ee_search.config import LoadedStudy
from ee_search.errors import UserInputError
from ee_search.pareto import collect_points, front, write_front


def export_front(study_file: LoadedStudy, out_dir: Path, split: str = "val") -> tuple[dict[str, Path], int, int]:
    from ee_search.search.study import load_existing

    config = study_file.config
    study = load_existing(config, study_file.path, config.search.storage)
    points = collect_points(study)
    if not points:
        raise UserInputError(study_file.path, "name", f"study '{config.name}' has no completed trial yet: "
                             "nothing to export (see ee-search status)")
    best = front(points)
    if split == "test":
        _add_test_metrics(study_file, study, best)
    return write_front(points, out_dir, config.name), len(best), len(points)


def _add_test_metrics(study_file: LoadedStudy, study, best) -> None:
    from mlflow import MlflowClient

    from ee_search.experiment import evaluate_checkpoint, resolve_device
    from ee_search.search.space import values_from_params
    from ee_search.train.checkpoint import load_checkpoint

    config = study_file.config
    client = MlflowClient(tracking_uri=config.tracking.uri)
    device = resolve_device(config.device)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for point in best:
        if not point.mlflow_run_id:
            continue
        trial_config = study_file.with_values(values_from_params(config, trials[point.trial_number].params))
        with tempfile.TemporaryDirectory(prefix="ee-search-front-") as tmp:
            local = client.download_artifacts(point.mlflow_run_id, "checkpoints/best.pt", tmp)
            payload = load_checkpoint(local)
        point.test = evaluate_checkpoint(payload, trial_config, "test", device)
