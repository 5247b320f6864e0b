"""`ee-search ui` and `dashboard`: the MLflow UI and optuna-dashboard over the study's stores."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from ee_search.cli.common import SetOpt, StorageOpt, StudyArg, TrackingOpt, _fail, _load, app, console, err_console
from ee_search.errors import UserInputError


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
