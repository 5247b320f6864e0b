"""`ee-search pareto`: read the study, build the front (dense by default, or the sampled one),
optionally report it on the test split and give its points their expected latency on a device, write
its files (pareto.csv, .json, .html, .png, and plotly.min.js beside them).

With `--split test`, each trial on the front has its best checkpoint fetched from MLflow and run over
the held-out test split once; every one of its front points is then evaluated on those logits at
exactly its thresholds. Those numbers are reported next to the validation ones and never used to
choose anything. A trial whose best.pt cannot be read keeps its (validation) points on the front
without test numbers, and one warning line names it: the other trials are unaffected.

With `--latency cpu|cuda --batch 1,256`, each trial on the front is exported as export-model exports it
and its stages are timed once on that device (deploy/stage_latency.py); every operating point of
those trials then gets `latency_ms_b<B>`, its expected milliseconds per call on B samples, from its
exit fractions on the validation split, and the fronts of accuracy against each latency are written
beside the depth front (docs/design.md §3, §4)."""

from __future__ import annotations

import logging
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from ee_search.config import LoadedStudy
from ee_search.errors import CorruptArtifact, UserInputError
from ee_search.pareto import FRONTS, FrontPoint, collect_operating_points, collect_points, front, latency_column, write_front

logger = logging.getLogger(__name__)
LATENCY_BATCHES = (1, 256)
MAX_BATCH = 65536  # --batch: beyond this, one call's activations would not fit most machines


def export_front(study_file: LoadedStudy, out_dir: Path, split: str = "val", kind: str = "dense",
                 warn: Callable[[str], None] = logger.warning, latency: str | None = None,
                 batches: Sequence[int] = LATENCY_BATCHES) -> tuple[dict[str, Path], int, int]:
    """Returns the files written, the number of points on the front and of completed trials; `warn`
    gets one line per trial whose files could not be read. `latency`: the device to time the front
    trials on (cpu or cuda), at `batches`."""
    from ee_search.search import load_existing

    if kind not in FRONTS:
        raise UserInputError("--front", None, f"must be one of {', '.join(FRONTS)}, got {kind!r}")
    config = study_file.config
    study = load_existing(config, study_file.path, config.search.storage)
    sampled = collect_points(study)
    if not sampled:
        raise UserInputError(study_file.path, "name", f"study '{config.name}' has no completed trial yet: "
                             "nothing to export (see ee-search status)")
    points = sampled if kind == "sampled" else collect_operating_points(study)
    if not points:
        raise UserInputError(study_file.path, "name", f"the completed trials of '{config.name}' carry no "
                             "operating points (made by an older ee-search): use --front sampled")
    best = front(points)
    if split == "test":
        add_test_metrics(study_file, study, best, warn)
    measured = add_latency(study_file, study, points, best, latency, batches, warn) if latency else None
    return write_front(points, out_dir, config.name, kind, sampled, measured), len(best), len(sampled)


def add_test_metrics(study_file: LoadedStudy, study, best, warn: Callable[[str], None] = logger.warning) -> None:
    """Fill `point.test` of the front points `best`: each trial's best.pt run once over the test split.
    A trial whose best.pt cannot be read is left without test numbers, told to `warn` in one line."""
    from mlflow import MlflowClient

    from ee_search.exits import evaluate
    from ee_search.checkpoints import checkpoint_logits
    from ee_search.device import resolve_device
    from ee_search.search import values_from_params
    from ee_search.records import BEST_CHECKPOINT, load_best_checkpoint

    config = study_file.config
    client = MlflowClient(tracking_uri=config.tracking.uri)
    device = resolve_device(config.device)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    by_trial = defaultdict(list)
    for point in best:
        if point.mlflow_run_id:
            by_trial[point.trial_number].append(point)
    for number, points in by_trial.items():
        trial_config = study_file.with_values(values_from_params(config, trials[number].params))
        with tempfile.TemporaryDirectory(prefix="ee-search-front-") as tmp:
            try:
                payload = load_best_checkpoint(client.download_artifacts(points[0].mlflow_run_id, BEST_CHECKPOINT, tmp))
            except CorruptArtifact as error:
                warn(f"{error.naming(trial=number)}; its {len(points)} front point(s) have no test metrics")
                continue
        logits, costs = checkpoint_logits(payload, trial_config, "test", device)  # once per trial
        criterion = payload["metadata"]["criterion"]
        for point in points:
            outcome = evaluate(logits.logits, logits.labels, point.thresholds, criterion, costs.relative)
            point.test = {"accuracy": outcome.accuracy, "avg_exit_depth": outcome.avg_exit_depth,
                          "relative_flops": outcome.relative_flops}


def add_latency(study_file: LoadedStudy, study, points: Sequence[FrontPoint], best: Sequence[FrontPoint], device: str,
                batches: Sequence[int], warn: Callable[[str], None] = logger.warning, repeats: int = 15) -> dict:
    """Fill `point.latency` (latency_ms_b<B> for each batch size) of every point in `points` whose trial
    has a point on the front `best`: its stages timed once on `device`, then each point's exit fractions
    on the validation split put into the expected-latency model. Returns what was measured, for
    pareto.json. A trial whose files cannot be read is told to `warn` and left without latencies."""
    from mlflow import MlflowClient

    from ee_search.deploy.stage_latency import stage_costs
    from ee_search.device import resolve_device
    from ee_search.exits import evaluate
    from ee_search.records import BEST_CHECKPOINT, VAL_LOGITS, load_best_checkpoint, load_val_logits
    from ee_search.search import values_from_params

    torch_device = resolve_device(device)
    config = study_file.config
    client = MlflowClient(tracking_uri=config.tracking.uri)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    measured: dict = {"device": device, "batches": list(batches), "trials": {}}
    for number in sorted({p.trial_number for p in best if p.mlflow_run_id}):
        mine = [p for p in points if p.trial_number == number]
        with tempfile.TemporaryDirectory(prefix="ee-search-front-") as tmp:
            try:
                payload = load_best_checkpoint(client.download_artifacts(mine[0].mlflow_run_id, BEST_CHECKPOINT, tmp))
                cached = load_val_logits(client.download_artifacts(mine[0].mlflow_run_id, VAL_LOGITS, tmp))
            except CorruptArtifact as error:
                warn(f"{error.naming(trial=number)}; its {len(mine)} operating point(s) have no latency")
                continue
        trial_config = study_file.with_values(values_from_params(config, trials[number].params))
        costs = stage_costs(payload, trial_config, torch_device, batches, study_file.path, repeats)
        measured["trials"][str(number)] = costs.as_dict()
        for point in mine:
            fractions = evaluate(cached["logits"], cached["labels"], point.thresholds or [],
                                 payload["metadata"]["criterion"]).exit_fractions
            point.latency = {latency_column(b): costs.expected_ms(fractions, b) for b in batches}
    return measured
