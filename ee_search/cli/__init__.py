"""`ee-search`: commands only; the work is done in the modules they call.

One module per group of commands (run; validate/pareto/status; export-model; ui/dashboard), all on the
one typer app of `common`, which also holds how every command reads the study."""

from __future__ import annotations

import logging
import os

# Importing a command module registers its commands on `app`, in this order in `--help`.
from ee_search.cli import run, study_views, export, browse  # noqa: F401, I001
from ee_search.cli.browse import _experiment_id  # noqa: F401 - used by the browser test
from ee_search.cli.common import _fail, _load, app  # noqa: F401 - the application and its error path

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
    # Optuna's records go through the root handler, whose filter keeps tracebacks (a failed trial's)
    # off the terminal: one line each, the traceback in a log file (docs/design.md §2).
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    from ee_search.cli.crash_log import keep_tracebacks_off_the_terminal

    keep_tracebacks_off_the_terminal()
    # Heartbeats, metric names and some samplers are "experimental" in Optuna; users cannot act on it.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # MLflow's own loggers are quietened by _load, once the study file is valid: ee_search.tracking
    # imports torch, and a refused file must cost neither its seconds nor its hundreds of MB.
    try:
        app()
    except Exception as error:  # noqa: BLE001 - no traceback for users: one line, the rest in a file
        from ee_search.cli.crash_log import report

        raise SystemExit(report(error)) from None

