"""The tracking server as the spool sees it: whether a URI is one (HTTP), whether it answers, and
whether an error means "not now" (retry) or "never" (drop the write and say so)."""

from __future__ import annotations

import os
import time

# MLflow retries a failed HTTP call by itself, 7 times with a backoff factor of 2 (0, 4, 8, ..., 120 s:
# about 4 minutes) and waits 120 s for an answer. Behind the spool that would hold a write (or a trial
# waiting for its run) for minutes after the server is back: our own backoff retries instead, so each
# call fails within seconds. A value the user exported wins.
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
STARTUP_ATTEMPTS = (0.0, 1.0, 2.0)  # seconds before each start-up probe: a server restarting is given ~3 s
PROBE_TIMEOUT_S = 2.0


def is_remote(tracking_uri: str) -> bool:
    """A tracking server reached over HTTP: the stores that go down while a study runs. A local
    `sqlite:` or file store is written directly (nothing to wait for, and nothing slower)."""
    return tracking_uri.startswith(("http://", "https://"))


def quicken_mlflow_http() -> None:
    for name, value in QUICK_HTTP.items():
        os.environ.setdefault(name, value)


def unreachable_reason(tracking_uri: str) -> str | None:
    """None if the server answers HTTP at all (any status: a 401 is the store's own error to report);
    else why not, after a few seconds of short probes."""
    import requests

    url = tracking_uri.rstrip("/") + "/health"
    why = "no answer"
    for pause in STARTUP_ATTEMPTS:
        time.sleep(pause)
        try:
            requests.get(url, timeout=PROBE_TIMEOUT_S, allow_redirects=False)
            return None
        except requests.exceptions.Timeout:
            why = f"no answer within {PROBE_TIMEOUT_S:g} s"
        except requests.exceptions.ConnectionError as error:
            why = _connection_reason(error)
        except requests.exceptions.RequestException as error:
            return f"{type(error).__name__}"  # not a network failure: a bad URL the store reports itself
    return why


def _connection_reason(error: Exception) -> str:
    text = str(error)
    for known in ("Connection refused", "Name or service not known", "No route to host",
                  "Temporary failure in name resolution", "Network is unreachable", "timed out"):
        if known in text:
            return known.lower()
    return "connection failed"


def is_transient(error: BaseException) -> bool:
    """The server may take this write later: it was unreachable, timed out, or answered 5xx / 429.
    A 4xx answer (a bad value, a deleted run) will not change by waiting."""
    import requests
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(error, (requests.exceptions.RequestException, ConnectionError, TimeoutError)):
        return True
    if isinstance(error, RestException):
        status = error.get_http_status_code()
        return status >= 500 or status == 429
    if isinstance(error, MlflowException):
        # MLflow wraps a failed connection (after its own retries) as "API request to ... failed with
        # exception ..." without an HTTP status of its own.
        return "API request to" in error.message
    return False
