"""What the commands print: tables and summaries (tables), and the run's live progress (progress)."""

from ee_search.console.tables import TrialLines, print_run_summary, print_space, print_status, print_trial_line

__all__ = ["TrialLines", "print_run_summary", "print_space", "print_status", "print_trial_line"]
