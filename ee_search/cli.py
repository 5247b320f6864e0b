"""`ee-search`: commands only; the work is done in the modules they call.

Every command reads the study the same way (file, `--set` overrides, then the flag overrides), and
all checking happens before anything is created: a mistake in user input prints one line naming the
file, the field and the fix, exits with code 2, and leaves no database, run or file behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ee_search.errors import CorruptArtifact, UserInputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hyperparameter search and experiment tracking for early-exit networks.")
# Piped output (logs, CI) gets wide lines instead of rich's 80-column default.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(highlight=False, width=_WIDTH, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, width=_WIDTH)

StudyArg = Annotated[Path, typer.Argument(help="The study file (YAML).", show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a field: PATH=VALUE (YAML value). Repeatable.")]
StorageOpt = Annotated[str | None, typer.Option("--storage", help="Optuna storage URL (overrides search.storage).")]
TrackingOpt = Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (overrides tracking.uri).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda (overrides device).")]


def _load(study: Path, sets: list[str] | None, storage: str | None = None, tracking_uri: str | None = None,
          device: str | None = None, n_trials: int | None = None, workers: int | None = None,
          devices: str | None = None):
    """Validate everything a command needs; nothing is created here."""
    from ee_search.config import load_study_file
    from ee_search.config.urls import absolute_sqlite, check_storage_url, check_tracking_uri

    overrides = list(sets or [])
    for path, value in (("search.storage", storage), ("tracking.uri", tracking_uri), ("device", device),
                        ("search.n_trials", n_trials), ("search.workers", workers), ("search.devices", devices)):
        if value is not None:
            overrides.append(f"{path}={value}" if not isinstance(value, str) else f"{path}={_yaml_str(value)}")
    loaded = load_study_file(study, overrides)
    check_storage_url(loaded.config.search.storage, str(study))
    check_tracking_uri(loaded.config.tracking.uri, str(study))
    storage_abs = absolute_sqlite(loaded.config.search.storage)
    tracking_abs = absolute_sqlite(loaded.config.tracking.uri)
    if (storage_abs, tracking_abs) != (loaded.config.search.storage, loaded.config.tracking.uri):
        # Written into the loaded study, not by loading the file again: it is parsed once per command.
        loaded = loaded.overridden({"search.storage": storage_abs, "tracking.uri": tracking_abs})
    # Imported only for a file that passed the checks above: these bring in torch and MLflow (seconds,
    # and more memory than the file itself may take), which refusing a hostile file must not cost.
    from ee_search.search.study import check_search_components
    from ee_search.tracking import quiet_mlflow_logging

    quiet_mlflow_logging()  # a program-wide setting, made here rather than in main(): see there
    check_search_components(loaded.config, str(study))
    return loaded


def _yaml_str(value: str) -> str:
    import json

    return json.dumps(value)  # a JSON string is a YAML string: keeps ':' and '#' in URLs literal


def _fail(error: UserInputError | CorruptArtifact) -> None:
    from rich.markup import escape

    # escape: a message such as "pip install 'ee-search[postgres]'" is text, not rich markup.
    err_console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
    raise typer.Exit(code=error.exit_code)


def _warn(line: str) -> None:
    from rich.markup import escape

    err_console.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)


def _locating_flags(set_: list[str] | None, storage: str | None, tracking_uri: str | None) -> str:
    """The flags of this command that decide where the study lives (its name, storage, tracking store),
    so the follow-up commands printed at the end find the same study. Passwords stay redacted."""
    import shlex

    from ee_search.config import redact

    flags = [f"--set {shlex.quote(item)}" for item in set_ or []
             if item.split("=", 1)[0].strip() in ("name", "search.storage", "tracking.uri")]
    if storage:
        flags.append(f"--storage {shlex.quote(storage)}")
    if tracking_uri:
        flags.append(f"--tracking-uri {shlex.quote(tracking_uri)}")
    return redact(" ".join(flags))


def _same_command(study: Path, flags: dict[str, object], sets: list[str] | None) -> str:
    """This `run` command again, from its own arguments (passwords redacted)."""
    import shlex

    from ee_search.config import redact

    words = ["ee-search", "run", str(study)]
    for item in sets or []:
        words += ["--set", item]
    for flag, value in flags.items():
        if value is not None:
            words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return redact(shlex.join(words))


# ------------------------------------------------------------------------------------------- run
def _device_and_data(study: Path, config):
    """The device (and the worker processes' devices), and the data loaded before any store exists,
    so a missing dataset creates nothing."""
    from ee_search.data import prepare_data
    from ee_search.device import resolve_device
    from ee_search.search.devices import plan_workers

    try:
        torch_device = resolve_device(config.device)
    except RuntimeError as exc:
        raise UserInputError(str(study), "device", str(exc)) from None
    slots = plan_workers(config, str(study)) if config.search.workers > 1 else []
    try:
        return torch_device, prepare_data(config.data, config.seed), slots
    except UserInputError as exc:
        raise UserInputError(str(study), exc.field, exc.message) from None


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
) -> None:
    """Create or resume the study, run trials, print a summary.

    On a terminal a live area shows the study and each running trial; piped, one plain line per epoch."""
    try:
        loaded = _load(study, set_, storage, tracking_uri, device, n_trials, workers, devices)
        torch_device, prepared, slots = _device_and_data(study, loaded.config)
    except UserInputError as error:
        _fail(error)
    config = loaded.config
    from ee_search.console import print_run_summary, run_progress
    from ee_search.config import redact
    from ee_search.search.signals import StudyInterrupted
    from ee_search.search.study import run_study
    from ee_search.search.workers import run_local_workers  # search.workers > 1: processes, not this one

    if not quiet:
        console.print(
            f"[bold]{config.name}[/]: {config.model.name} on {config.data.dataset} "
            f"({len(prepared.train)} train / {len(prepared.val)} val images), "
            f"{'; '.join(f'worker {w.index} on {w.describe()}' for w in slots) or f'device {torch_device}'}, "
            f"objectives {' & '.join(config.search.objectives)}; "
            f"Optuna {redact(config.search.storage)}, MLflow {redact(config.tracking.uri)}"
        )
    shared = {"--n-trials": n_trials, "--storage": storage, "--tracking-uri": tracking_uri}
    again = _same_command(study, {**shared, "--device": device, "--timeout": timeout, "--workers": workers,
                                  "--devices": devices}, set_)
    timeout_s = timeout if timeout is not None else config.search.timeout_s
    try:
        # The live area is gone (erased) before anything below prints: the summary or the interruption.
        with run_progress(console, config.name, config.search.objectives, config.directions,
                          config.train.early_stopping.monitor, config.search.n_jobs * max(1, len(slots)),
                          quiet) as events:
            summary = (run_local_workers(loaded, slots, study, set_, shared, timeout_s, events) if slots
                       else run_study(loaded, torch_device, config.search.n_trials, timeout_s, events=events))
    except UserInputError as error:
        _fail(error)
    except StudyInterrupted as stopped:
        saved = f"trial(s) {', '.join(map(str, stopped.trials))} saved and queued" if stopped.trials else "nothing to save"
        err_console.print(f"interrupted ({stopped}): {saved}; to resume, run: {again}", soft_wrap=True)
        raise typer.Exit(code=stopped.exit_code) from None
    except KeyboardInterrupt:
        err_console.print(f"interrupted: finished trials are kept; to resume, run: {again}", soft_wrap=True)
        raise typer.Exit(code=130) from None
    print_run_summary(console, loaded, summary, _locating_flags(set_, storage, tracking_uri))
    states = [t.state.name for t in summary.trials()]
    if states and all(s == "FAIL" for s in states):
        err_console.print("[bold red]every trial of this run failed[/]: see the errors above")
        raise typer.Exit(code=1)


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
) -> None:
    """Write the Pareto front (accuracy vs average exit depth) of completed trials."""
    from ee_search.pareto_export import export_front

    try:
        if split not in ("val", "test"):
            raise UserInputError("--split", None, f"must be 'val' or 'test', got {split!r}")
        if front not in ("dense", "sampled"):
            raise UserInputError("--front", None, f"must be 'dense' or 'sampled', got {front!r}")
        loaded = _load(study, set_, storage, tracking_uri, device)
        paths, n_front, n_trials = export_front(loaded, out, split, front, warn=_warn)
    except UserInputError as error:
        _fail(error)
    what = "operating point(s) on the dense front" if front == "dense" else "trial(s) on the sampled front"
    console.print(f"{n_front} {what} of {n_trials} completed trial(s); wrote:")
    for path in paths.values():
        console.print(f"  {path}")


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


# ---------------------------------------------------------------------------------- export-model
@app.command("export-model")
def export_model(
    study: StudyArg,
    trial: Annotated[int, typer.Option("--trial", min=0, help="The trial whose network to export (a row of pareto.csv).")],
    out: Annotated[Path, typer.Option("--out", help="New directory for the MLflow model, program/, onnx/ and card.json.")],
    thresholds: Annotated[str | None, typer.Option("--thresholds", help="JSON list, one per side exit (default: the trial's own).")] = None,
    register: Annotated[str | None, typer.Option("--register", help="Also register it under this name in the model registry.")] = None,
    set_: SetOpt = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Export one operating point (trial + thresholds) as a deployable early-exit model."""
    import json

    from ee_search.deploy import export_model

    try:
        chosen = None
        if thresholds is not None:
            try:
                chosen = json.loads(thresholds)
            except (json.JSONDecodeError, RecursionError):  # RecursionError: '[[[[…' nested deeper than the stack
                raise UserInputError("--thresholds", None, "must be a JSON list such as '[0.9, 0.8]'") from None
            if not isinstance(chosen, list):
                raise UserInputError("--thresholds", None, "must be a JSON list such as '[0.9, 0.8]'")
        loaded = _load(study, set_, storage, tracking_uri)
        card = export_model(loaded, trial, out, chosen, register)
    except UserInputError as error:
        _fail(error)
    except CorruptArtifact as error:  # the trial's best.pt or val_logits.pt: another trial can still be exported
        _fail(error.naming(trial=trial, fix="export another trial of the front (ee-search pareto)"))
    from ee_search.console import print_exported

    print_exported(console, card, out)


# -------------------------------------------------------------------------------------------- ui
@app.command()
def ui(
    study: Annotated[Path | None, typer.Argument(help="Study file whose tracking.uri to serve.")] = None,
    set_: SetOpt = None,
    tracking_uri: TrackingOpt = None,
    host: Annotated[str, typer.Option(help="Interface to bind; loopback unless you mean to share it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5000,
) -> None:
    """Open the MLflow UI over the study's tracking store (bound to 127.0.0.1)."""
    from ee_search.config import redact

    name = None
    try:
        if study is not None:
            config = _load(study, set_, tracking_uri=tracking_uri).config
            uri, name = config.tracking.uri, config.name
        else:
            uri = tracking_uri or "sqlite:///mlflow.db"
    except UserInputError as error:
        _fail(error)
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]warning:[/] binding to {host}: anyone who can reach it sees every run")
    link = f"http://{host}:{port}/"
    experiment_id = _experiment_id(uri, name) if name else None
    if experiment_id is not None:
        from ee_search.tracking import experiment_route

        # The experiment's runs table, the trials nested under the study's run (MLflow 3 would
        # otherwise open on its GenAI screens).
        link += experiment_route(experiment_id)
    console.print(f"MLflow UI for {redact(uri)}: open {link}  (Ctrl-C to stop)", soft_wrap=True)
    os.execv(mlflow, [mlflow, "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)])


def _experiment_id(uri: str, name: str) -> str | None:
    """The study's experiment in the store, if both exist; never creates a store (a SQLite file is
    only opened when it is there)."""
    from sqlalchemy.engine import make_url

    if uri.startswith("sqlite") and not Path(make_url(uri).database or "").is_file():
        return None
    try:
        from mlflow import MlflowClient

        found = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    except Exception:  # noqa: BLE001 - only the link's precision depends on it; the UI starts anyway
        return None
    return None if found is None else found.experiment_id


# ------------------------------------------------------------------------------------- dashboard
@app.command()
def dashboard(
    study: StudyArg,
    set_: SetOpt = None,
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="Interface to bind; loopback unless you mean to share it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
) -> None:
    """Open optuna-dashboard on the study's Optuna storage (bound to 127.0.0.1; needs the dashboard extra)."""
    from ee_search.dashboard import LOOPBACK, open_named_study, require_dashboard, serve

    try:
        require_dashboard()
        loaded = _load(study, set_, storage)
        optuna_study = open_named_study(loaded.config, str(study))
        if host not in LOOPBACK:
            err_console.print(f"[yellow]warning:[/] binding to {host}: anyone who can reach it sees every trial "
                              "and can edit the study", soft_wrap=True)
        serve(optuna_study, loaded.config.search.storage, host, port,
              lambda line: console.print(line, markup=False, soft_wrap=True))
    except UserInputError as error:
        # Not _fail: it reads the message as rich markup, which would eat "[dashboard]" in the install line.
        from rich.text import Text

        err_console.print(Text.assemble(("error:", "bold red"), f" {error}"), soft_wrap=True)
        raise typer.Exit(code=error.exit_code) from None


def main() -> None:
    """The console entry point: process-wide settings belong to the program, not to the library, so
    they are made here and nowhere else (importing ee_search changes no logger and no filter)."""
    import warnings

    import optuna

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # MLflow's "Downloading artifacts" bars would interleave with our own output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Over an HTTP tracking server MLflow writes "View run ... at: URL" to stdout as each run ends, in the
    # middle of our lines (and of --quiet); each trial's line names its run, its mlflow_run_url the page.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats, metric names and some samplers are "experimental" in Optuna; users cannot act on it.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # MLflow's own loggers are quietened by _load, once the study file is valid: ee_search.tracking
    # imports torch, and a refused file must cost neither its seconds nor its hundreds of MB.
    app()


if __name__ == "__main__":
    main()
