"""`ee-search validate`, `pareto` and `status`: read a study without training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ee_search.cli.common import (DeviceOpt, SetOpt, StorageOpt, StudyArg, TrackingOpt, _fail, _load, _warn,
                                  app, console)
from ee_search.errors import UserInputError, quote


# -------------------------------------------------------------------------------------- validate
@app.command()
def validate(study: StudyArg, set_: SetOpt = None, storage: StorageOpt = None, tracking_uri: TrackingOpt = None) -> None:
    """Check the study file and print the resolved search space (exit 0, or 2 on a mistake)."""
    try:
        loaded = _load(study, set_, storage, tracking_uri)
    except UserInputError as error:
        _fail(error)
    from ee_search.console import print_space

    print_space(console, loaded)


# ---------------------------------------------------------------------------------------- pareto
@app.command()
def pareto(
    study: StudyArg,
    out: Annotated[Path, typer.Option("--out", help="Directory for pareto.csv, pareto.json, pareto.html.")],
    split: Annotated[str, typer.Option("--split", help="val, or test to add held-out test metrics of the front.")] = "val",
    front: Annotated[str, typer.Option("--front", help="dense: every trial's operating points; sampled: the trials at their own thresholds.")] = "dense",
    set_: SetOpt = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    device: DeviceOpt = None,
    latency: Annotated[str | None, typer.Option("--latency", help="cpu or cuda: time the front trials' exported stages there and add each point's expected latency (latency_ms_b<B>) and the accuracy-vs-latency fronts.")] = None,
    batch: Annotated[str | None, typer.Option("--batch", help="With --latency: the batch sizes, comma-separated (default 1,256).")] = None,
) -> None:
    """Write the Pareto front (accuracy vs average exit depth, and vs latency with --latency) of completed trials."""
    from ee_search.pareto_export import export_front

    try:
        if split not in ("val", "test"):
            raise UserInputError("--split", None, f"must be 'val' or 'test', got {split!r}")
        if front not in ("dense", "sampled"):
            raise UserInputError("--front", None, f"must be 'dense' or 'sampled', got {front!r}")
        batches = _latency_request(latency, batch)
        loaded = _load(study, set_, storage, tracking_uri, device)
        paths, n_front, n_trials = export_front(loaded, out, split, front, warn=_warn, latency=latency, batches=batches)
    except UserInputError as error:
        _fail(error)
    what = "operating point(s) on the dense front" if front == "dense" else "trial(s) on the sampled front"
    console.print(f"{n_front} {what} of {n_trials} completed trial(s); wrote:")
    for path in paths.values():
        console.print(f"  {path}")


def _latency_request(latency: str | None, batch: str | None) -> tuple[int, ...]:
    """The batch sizes to time at, checked with the device before anything is read."""
    from ee_search.pareto_export import LATENCY_BATCHES, MAX_BATCH

    if latency is None:
        if batch is not None:
            raise UserInputError("--batch", None, "only applies with --latency cpu|cuda: add --latency or drop --batch")
        return LATENCY_BATCHES
    if latency not in ("cpu", "cuda"):
        raise UserInputError("--latency", None, f"must be 'cpu' or 'cuda', got {latency!r}")
    if latency == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserInputError("--latency", None, "cuda was asked for but torch sees no CUDA device: use --latency cpu")
    if batch is None:
        return LATENCY_BATCHES
    parts = [part.strip() for part in batch.split(",")]
    if not all(part.isdigit() and 1 <= int(part) <= MAX_BATCH for part in parts):
        raise UserInputError("--batch", None, f"give batch sizes from 1 to {MAX_BATCH}, comma-separated, such as "
                             f"1,256; got {quote(batch)}")
    return tuple(sorted({int(part) for part in parts}))


# ---------------------------------------------------------------------------------------- status
@app.command()
def status(study: StudyArg, set_: SetOpt = None, storage: StorageOpt = None, tracking_uri: TrackingOpt = None) -> None:
    """Table of trials: number, state, values, stop/prune reason, MLflow run id."""
    from ee_search.console import print_status
    from ee_search.search.study import load_existing

    try:
        loaded = _load(study, set_, storage, tracking_uri)
        optuna_study = load_existing(loaded.config, str(study), loaded.config.search.storage)
    except UserInputError as error:
        _fail(error)
    print_status(console, optuna_study)
