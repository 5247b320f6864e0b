"""Storage and tracking URLs: checked at load time, so a typo fails at once with one clear line
instead of after the first trial (and before anything is created), and for a cluster, that its nodes
can share them; and redacted wherever they are shown, so a password in one never reaches a console
line, a log record or a logged param."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

from ee_search.errors import UserInputError

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:)(?P<pw>[^@\s/]+)(?P<tail>@)")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&\s]+)", re.IGNORECASE)  # libpq style


def redact(text: str) -> str:
    """Replace the password of every `scheme://user:password@host` (or `?password=`) in `text` with ***."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}***{m['tail']}", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}***", text)


_TRACKING_SCHEMES = {"sqlite", "postgresql", "mysql", "mssql", "file", "http", "https", "databricks"}


def absolute_sqlite(url: str) -> str:
    """sqlite:///rel.db -> sqlite:////abs/rel.db (resolved against the working directory now).

    MLflow caches one store per URI string for the life of the process, so a relative path would
    keep pointing at the first directory's file after a chdir; an absolute one also says exactly
    which file a logged run used."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    path = url[len(prefix):]
    if not path or path == ":memory:" or path.startswith("/") or "?" in path:
        return url
    return prefix + str((Path.cwd() / path).resolve())


def check_storage_url(url: str, source: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    field = "search.storage"
    if url.startswith("journal:"):
        path = url.removeprefix("journal:")
        if not path:
            raise UserInputError(source, field, "journal: needs a file, e.g. journal:optuna.journal")
        _check_parent(Path(path), source, field)
        return
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        raise UserInputError(
            source, field, f"{redact(url)!r} is not a database URL: use sqlite:///optuna.db, "
            "postgresql://USER:PASSWORD@HOST/DB or journal:FILE",
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError:
        hint = "pip install 'ee-search[postgres]'" if parsed.get_backend_name() == "postgresql" else "install its driver"
        raise UserInputError(source, field, f"no driver for {parsed.drivername}: {hint}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        _check_parent(Path(parsed.database), source, field)


def check_tracking_uri(uri: str, source: str) -> None:
    field = "tracking.uri"
    scheme = urlparse(uri).scheme
    if scheme and len(scheme) > 1 and scheme.split("+")[0] not in _TRACKING_SCHEMES:
        raise UserInputError(
            source, field, f"{redact(uri)!r} has an unknown scheme '{scheme}': use sqlite:///mlflow.db, "
            "http://HOST:PORT (an MLflow server), postgresql://... or a directory",
        )
    if scheme.startswith("sqlite"):
        database = uri.split(":///", 1)[-1]
        if database and database != ":memory:":
            _check_parent(Path(database), source, field)


def _check_parent(path: Path, source: str, field: str) -> None:
    parent = path.expanduser().parent
    if not parent.is_dir():
        raise UserInputError(source, field, f"directory {parent} does not exist: create it or change the path")


def check_cluster_stores(storage: str, tracking_uri: str, artifact_location: str | None, source: str) -> None:
    """Workers on a cluster's nodes (`run --ray`) must all reach the same stores: a SQLite or journal
    file, a local MLflow file store or local artifact folder lives on one machine's disk, and each node
    would write its own copy (or fail to open it), so the study would split without a word."""
    scheme = storage.split(":", 1)[0].split("+")[0]
    if scheme in ("sqlite", "journal"):
        raise UserInputError(
            source, "search.storage", f"{redact(storage)!r} is a file on this machine that the cluster's nodes "
            "cannot share: use a database server, e.g. postgresql://USER:PASSWORD@HOST/DB",
        )
    tracking_scheme = urlparse(tracking_uri).scheme.split("+")[0]
    if tracking_scheme in ("http", "https", "databricks"):
        return
    if tracking_scheme not in _TRACKING_SCHEMES - {"sqlite", "file"} or len(tracking_scheme) <= 1:
        raise UserInputError(
            source, "tracking.uri", f"{redact(tracking_uri)!r} is a store on this machine that the cluster's "
            "nodes cannot share: use an MLflow tracking server, e.g. http://HOST:5000 (mlflow server)",
        )
    if artifact_location is None:  # MLflow's default then is ./mlruns, on each node's own disk
        raise UserInputError(
            source, "tracking.artifact_location", "with a database tracking store each node would keep the "
            "trials' artifacts (last.pt) in its own ./mlruns: set it to storage every node reaches (s3://BUCKET/PATH, "
            "a shared mount), or use an MLflow tracking server (http://HOST:5000)",
        )
