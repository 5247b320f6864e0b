"""A durable local spool between a trial and a remote MLflow tracking server (docs/design.md §5,
"Tracking outages"): writes are queued on disk and sent by a background thread, so an outage costs
neither an epoch nor a metric, and a killed process's writes are sent by the next run."""

from ee_search.spool.queue import SpoolFile, spool_folder
from ee_search.spool.server import is_remote, is_transient, quicken_mlflow_http, unreachable_reason
from ee_search.spool.writer import Spool, TrackingUnavailable, delete_artifacts

__all__ = ["Spool", "SpoolFile", "TrackingUnavailable", "delete_artifacts", "is_remote", "is_transient",
           "quicken_mlflow_http", "spool_folder", "unreachable_reason"]
