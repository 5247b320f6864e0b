"""The `ee-search` application object and what every command shares: the options, the consoles, and
reading the study the same way (file, `--set` overrides, then the flag overrides). All checking happens
before anything is created: a mistake in user input prints one line naming the file, the field and the
fix, exits with code 2, and leaves no database, run or file behind."""

from __future__ import annotations

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
          devices: str | None = None, ray: str | None = None):
    """Validate everything a command needs; nothing is created here."""
    from ee_search.config import load_study_file
    from ee_search.config.urls import absolute_sqlite, check_storage_url, check_tracking_uri

    overrides = list(sets or [])
    for path, value in (("search.storage", storage), ("tracking.uri", tracking_uri), ("device", device),
                        ("search.n_trials", n_trials), ("search.workers", workers), ("search.devices", devices),
                        ("search.ray", ray)):
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
