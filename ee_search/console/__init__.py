"""What the commands print: tables and summaries (tables), and the run's live progress (progress)."""

from ee_search.console.exported import print_exported
from ee_search.console.progress import LiveProgress, PlainProgress, is_live_terminal, run_progress
from ee_search.console.progress_state import ProgressState
from ee_search.console.tables import print_run_summary, print_space, print_status, print_trial_line

__all__ = ["LiveProgress", "PlainProgress", "ProgressState", "is_live_terminal", "print_exported", "print_run_summary",
           "print_space", "print_status", "print_trial_line", "run_progress"]
