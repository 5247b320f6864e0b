"""`ee-search run`: create or resume the study and run its trials."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ee_search.cli.common import (DeviceOpt, SetOpt, StorageOpt, StudyArg, TrackingOpt, _fail, _load,
                                  _locating_flags, _same_command, app, console, err_console)
from ee_search.errors import UserInputError


# ------------------------------------------------------------------------------------------- run
def _device_and_data(study: Path, config):
    """The device (and the worker processes' devices), and the data loaded before any store exists,
    so a missing dataset creates nothing; then the tracking server must answer."""
    from ee_search.data import prepare_data
    from ee_search.device import resolve_device
    from ee_search.search.devices import plan_workers
    from ee_search.search.disk_full import quiet_disk_full_logs

    quiet_disk_full_logs()  # a full disk is told in one line (`_exit_if_disk_full`), not in loggers' tracebacks
    if config.search.ray is not None:
        torch_device, slots = None, _check_ray(study, config)
    else:
        try:
            torch_device = resolve_device(config.device)
        except RuntimeError as exc:
            raise UserInputError(str(study), "device", str(exc)) from None
        slots = plan_workers(config, str(study)) if config.search.workers > 1 else []
    try:
        prepared = prepare_data(config.data, config.seed)
    except UserInputError as exc:
        raise UserInputError(str(study), exc.field, exc.message) from None
    _check_tracking_server(study, config.tracking.uri)  # last: a server that just started gets the most time
    return torch_device, prepared, slots


def _check_tracking_server(study: Path, uri: str) -> None:
    """An HTTP tracking server must answer before anything is created (a few seconds of probes,
    docs/design.md §5): otherwise one line naming it and the fix, exit 2, no store touched."""
    from ee_search.config import redact
    from ee_search.spool import is_remote, unreachable_reason

    if is_remote(uri) and (why := unreachable_reason(uri)) is not None:
        raise UserInputError(str(study), "tracking.uri", f"the MLflow tracking server at {redact(uri)} does not "
                             f"answer ({why}): start it (mlflow server), or point tracking.uri / --tracking-uri "
                             "at one that runs")


def _exit_if_disk_full(error: Exception, config, again: str) -> None:
    """A full disk, wherever it showed up: one line naming it and the command that resumes, exit 75
    (docs/design.md §9). Returns for any other error, which the caller re-raises."""
    from ee_search.search.disk_full import DISK_FULL_EXIT, stop_line

    line = stop_line(error, config, again)
    if line is not None:
        err_console.print(line, soft_wrap=True)
        raise typer.Exit(code=DISK_FULL_EXIT) from None


def _check_ray(study: Path, config):
    """`--ray`: the extra is installed, every node can share the stores, and the device matches the
    GPUs asked of Ray (this machine's own devices do not matter: it trains nothing)."""
    import importlib.util

    from ee_search.config.urls import check_cluster_stores

    if importlib.util.find_spec("ray") is None:
        raise UserInputError(str(study), "search.ray", "Ray is not installed: pip install 'ee-search[ray]'")
    check_cluster_stores(config.search.storage, config.tracking.uri, config.tracking.artifact_location, str(study))
    gpus = config.search.gpus_per_trial
    if (config.device == "cuda" and gpus == 0) or (config.device == "cpu" and gpus > 0):
        raise UserInputError(str(study), "search.gpus_per_trial", f"is {gpus:g} but device is {config.device}: "
                             "set search.gpus_per_trial above 0 to train on GPUs (1, or 0.5 to share one), 0 for the CPU")
    from ee_search.search.ray_workers import probe, ray_slots

    probe(config.search.ray, str(study))  # before the data and the tracking server: nothing else to wait for
    return ray_slots(config)


def _header(config, prepared, slots, torch_device) -> str:
    from ee_search.config import redact

    search = config.search
    if search.ray is not None:
        where = (f"{search.workers} worker(s) on the Ray cluster {search.ray}, each {search.cpus_per_trial:g} CPU + "
                 f"{search.gpus_per_trial:g} GPU per trial")
    else:
        where = '; '.join(f'worker {w.index} on {w.describe()}' for w in slots) or f'device {torch_device}'
    return (f"[bold]{config.name}[/]: {config.model.name} on {config.data.dataset} "
            f"({len(prepared.train)} train / {len(prepared.val)} val images), {where}, "
            f"objectives {' & '.join(search.objectives)}; Optuna {redact(search.storage)}, MLflow {redact(config.tracking.uri)}")


def _run(loaded, torch_device, slots, study: Path, sets, shared: dict, timeout_s, events):
    """This process's trials, local worker processes (search.workers > 1), or Ray tasks (search.ray)."""
    if loaded.config.search.ray is not None:
        from ee_search.search.ray_workers import run_ray_workers

        return run_ray_workers(loaded, study, sets, shared, timeout_s, events)
    if slots:
        from ee_search.search.workers import run_local_workers

        return run_local_workers(loaded, slots, study, sets, shared, timeout_s, events)
    from ee_search.search.study import run_study

    return run_study(loaded, torch_device, loaded.config.search.n_trials, timeout_s, events=events)


@app.command()
def run(
    study: StudyArg,
    set_: SetOpt = None,
    n_trials: Annotated[int | None, typer.Option("--n-trials", min=1, help="Trials the study should have in total.")] = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    device: DeviceOpt = None,
    timeout: Annotated[float | None, typer.Option("--timeout", min=1, help="Stop starting trials after this many seconds.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the run summary (and errors).")] = False,
    workers: Annotated[int | None, typer.Option("--workers", help="Worker processes on this machine (overrides search.workers).")] = None,
    devices: Annotated[str | None, typer.Option("--devices", help="all | cpu | cuda:0,cuda:1 (overrides search.devices).")] = None,
    ray: Annotated[str | None, typer.Option("--ray", help="Run the workers on a Ray cluster: auto | HOST:PORT "
                                            "(overrides search.ray; extra ee-search[ray]).")] = None,
) -> None:
    """Create or resume the study, run trials, print a summary.

    On a terminal a live area shows the study and each running trial; piped, one plain line per epoch."""
    shared = {"--n-trials": n_trials, "--storage": storage, "--tracking-uri": tracking_uri}
    again = _same_command(study, {**shared, "--device": device, "--timeout": timeout, "--workers": workers,
                                  "--devices": devices, "--ray": ray}, set_)
    loaded = None
    try:
        loaded = _load(study, set_, storage, tracking_uri, device, n_trials, workers, devices, ray)
        torch_device, prepared, slots = _device_and_data(study, loaded.config)  # a data cache may fill a disk
    except UserInputError as error:
        _fail(error)
    except Exception as error:
        _exit_if_disk_full(error, loaded and loaded.config, again)
        raise
    config = loaded.config
    from ee_search.console import print_run_summary, run_progress
    from ee_search.search.signals import StudyInterrupted
    from ee_search.spool import TrackingUnavailable  # the tracking server away past tracking.max_outage_s

    if not quiet:
        console.print(_header(config, prepared, slots, torch_device))
    timeout_s = timeout if timeout is not None else config.search.timeout_s
    try:
        # The live area is gone (erased) before anything below prints: the summary or the interruption.
        with run_progress(console, config.name, config.search.objectives, config.directions,
                          config.train.early_stopping.monitor, config.search.n_jobs * max(1, len(slots)),
                          quiet) as events:
            summary = _run(loaded, torch_device, slots, study, set_, shared, timeout_s, events)
    except UserInputError as error:
        _fail(error)
    except StudyInterrupted as stopped:
        err_console.print(f"interrupted ({stopped}): {stopped.resume_note()}; to resume, run: {again}", soft_wrap=True)
        raise typer.Exit(code=stopped.exit_code) from None
    except TrackingUnavailable as outage:
        _outage_exit(outage, config.tracking.uri, again)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: finished trials are kept; to resume, run: {again}", soft_wrap=True)
        raise typer.Exit(code=130) from None
    except Exception as error:
        _exit_if_disk_full(error, config, again)
        raise
    print_run_summary(console, loaded, summary, _locating_flags(set_, storage, tracking_uri))
    _exit_if_all_failed(summary)


def _exit_if_all_failed(summary) -> None:
    states = [t.state.name for t in summary.trials()]
    if states and all(s == "FAIL" for s in states):
        err_console.print("[bold red]every trial of this run failed[/]: see the errors above")
        raise typer.Exit(code=1)


def _outage_exit(outage, uri: str, again: str) -> None:
    """The tracking server stayed away past tracking.max_outage_s: one line, exit 75 (docs/design.md §5)."""
    from rich.markup import escape

    from ee_search.config import redact

    saved = f"trial(s) {', '.join(map(str, outage.trials))} saved and queued; " if outage.trials else ""
    line = (f"the MLflow tracking server at {redact(uri)} has been unreachable for {outage.seconds:.0f} s "
            f"(tracking.max_outage_s): {saved}its unsent writes wait in {outage.folder}; once it answers "
            f"again, run: {again}")
    err_console.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True)
    raise typer.Exit(code=outage.exit_code) from None
