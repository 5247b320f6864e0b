"""optuna-dashboard over a study's own Optuna storage (`ee-search dashboard`).

The study must exist (nothing is created for a name that is not there), and its objectives carry
their names: a study made before the names were recorded gets them from the study file, since the
dashboard otherwise labels them "Objective 0", "Objective 1". The server runs in this process on the
storage opened here, so the storage URL (and any password in it) never reaches a command line that
`ps` would show. optuna-dashboard is an optional extra: `pip install 'ee-search[dashboard]'`.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from ee_search.config import StudyConfig, redact
from ee_search.errors import UserInputError
from ee_search.search.study import load_existing

INSTALL_HINT = "optuna-dashboard is not installed: pip install 'ee-search[dashboard]'"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def require_dashboard() -> None:
    """Fails with the install line when the optional extra is missing (before anything is opened)."""
    try:
        import optuna_dashboard  # noqa: F401
    except ImportError:
        raise UserInputError("ee-search dashboard", None, INSTALL_HINT) from None


def open_named_study(config: StudyConfig, source: str) -> optuna.Study:
    """The existing study, with its objective names recorded if it had none."""
    study = load_existing(config, source, config.search.storage)
    if study.metric_names is None and len(study.directions) == len(config.search.objectives):
        study.set_metric_names(list(config.search.objectives))
    return study


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection does not keep Ctrl-C from ending the server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - wsgiref's signature
        """One stderr line per request (the dashboard polls every few seconds) would bury ours."""


def serve(study: optuna.Study, storage_url: str, host: str, port: int, announce: Callable[[str], None]) -> None:
    """Serve the dashboard until Ctrl-C; `announce` gets the address once the port is bound."""
    import optuna_dashboard

    # The storage load_existing opened (Optuna has no public accessor for it): one connection pool.
    app = optuna_dashboard.wsgi(study._storage)
    server_class = type("Server", (_ThreadingServer,), {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
    try:
        httpd = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    except OSError as exc:  # port taken, address not on this machine
        raise UserInputError("--port" if exc.errno == errno.EADDRINUSE else "--host", None,
                             f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    study_id = study._storage.get_study_id_from_name(study.study_name)
    where = f"[{host}]" if ":" in host else host
    try:
        announce(f"optuna-dashboard for study '{study.study_name}' ({', '.join(study.metric_names or [])}) in "
                 f"{redact(storage_url)} at http://{where}:{httpd.server_port}/dashboard/studies/{study_id}  "
                 "(Ctrl-C to stop)")
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
