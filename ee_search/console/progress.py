"""The live progress of `ee-search run`, drawn from the study's events (search/events.py).

- On a terminal: a rich Live area at the bottom, a study line (trials done of the target, pruned,
  failed, running, elapsed, ETA, best of each objective) and a line per running trial (its epoch,
  latest validation metrics, best monitor value, epoch time); each finished trial's line is printed
  above it as the trial ends, and the area is erased at the end, where the summary takes over.
- Anywhere else (a file, CI, a scheduler's log): one plain line per epoch, the finished-trial lines
  and the study line after each of them. No cursor movement, no carriage return: a log stays a log.
- `--quiet`: nothing (the command still prints its summary).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import optuna
from optuna.trial import FrozenTrial
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from ee_search.console.progress_state import ProgressState
from ee_search.console.tables import print_trial_line
from ee_search.search import StudyEvents
from ee_search.search.budget import counted_trials


class _Progress(StudyEvents):
    """Feeds the state; the subclasses decide what is printed when."""

    def __init__(self, console: Console, state: ProgressState) -> None:
        self.console = console
        self.state = state

    def study_started(self, study: optuna.Study, target: int | None, to_start: int | None) -> None:
        self.state.start(study.get_trials(deepcopy=False), len(counted_trials(study)), target, to_start)

    def trial_started(self, trial_number: int, max_epochs: int, resumed_at_epoch: int) -> None:
        self.state.trial_started(trial_number, max_epochs, resumed_at_epoch)

    def epoch_ended(self, trial_number: int, epoch: int, metrics: Mapping[str, float]) -> None:
        self.state.epoch_ended(trial_number, epoch, metrics)

    def trial_ended(self, trial: FrozenTrial) -> None:
        self.state.trial_ended(trial)
        # Printed outside the state's lock: rich takes its own locks (and the Live area's) here.
        print_trial_line(self.console, trial, self.state.objectives)


class PlainProgress(_Progress):
    """One line per epoch and per finished trial, for output that is not a terminal."""

    def epoch_ended(self, trial_number: int, epoch: int, metrics: Mapping[str, float]) -> None:
        self._plain(self.state.epoch_ended(trial_number, epoch, metrics))

    def trial_ended(self, trial: FrozenTrial) -> None:
        super().trial_ended(trial)
        self._plain(self.state.study_line())  # where the study stands, ETA included, once per trial

    def _plain(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)


class LiveProgress(_Progress):
    """The Live area; a context manager (started on entry, erased on exit)."""

    REFRESH_PER_SECOND = 2  # the elapsed time and ETA tick; cheap next to a training step

    def __init__(self, console: Console, state: ProgressState) -> None:
        super().__init__(console, state)
        self.live = Live(get_renderable=self._render, console=console, refresh_per_second=self.REFRESH_PER_SECOND,
                         transient=True, redirect_stdout=True, redirect_stderr=True)
        self._moved: list[tuple[logging.StreamHandler, object]] = []

    def __enter__(self) -> LiveProgress:
        self.live.start()
        # Log records would be written straight to the terminal under the Live area and leave stale
        # copies of it behind; through Live's stderr proxy they are printed above it. (MLflow's own
        # handler looks sys.stderr up on each write, so the proxy catches it without this.)
        loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                           if isinstance(lg, logging.Logger))]
        for handler in {h for lg in loggers for h in lg.handlers}:
            if type(handler) is logging.StreamHandler and handler.stream in (sys.__stderr__, sys.__stdout__):
                self._moved.append((handler, handler.setStream(sys.stderr)))
        return self

    def __exit__(self, *exc) -> None:
        for handler, stream in self._moved:
            handler.setStream(stream)
        self._moved.clear()
        self.live.stop()

    # Drawn at once, not at the next tick: a short epoch would otherwise never be seen.
    def trial_started(self, trial_number: int, max_epochs: int, resumed_at_epoch: int) -> None:
        super().trial_started(trial_number, max_epochs, resumed_at_epoch)
        self.live.refresh()

    def epoch_ended(self, trial_number: int, epoch: int, metrics: Mapping[str, float]) -> None:
        super().epoch_ended(trial_number, epoch, metrics)
        self.live.refresh()

    def _render(self) -> Group:
        # One screen line each: a long line is cut with an ellipsis rather than wrapped, which
        # would shift the area the Live redraws.
        lines = [Text(self.state.study_line(), style="bold", no_wrap=True, overflow="ellipsis")]
        lines += [Text(line, no_wrap=True, overflow="ellipsis") for line in self.state.trial_lines()]
        return Group(*lines)


def is_live_terminal(console: Console) -> bool:
    """A Live area only on a real interactive terminal: rich's own test (TERM=dumb, TTY_INTERACTIVE=0
    say no), and the file must be a TTY even when FORCE_COLOR makes rich treat it as a terminal,
    since cursor movement in a log file is garbage."""
    isatty = getattr(console.file, "isatty", None)
    try:
        return bool(console.is_interactive and isatty is not None and isatty())
    except ValueError:  # a closed file
        return False


@contextmanager
def run_progress(console: Console, name: str, objectives: Sequence[str], directions: Sequence[str],
                 monitor: str, n_jobs: int = 1, quiet: bool = False) -> Iterator[StudyEvents]:
    """The events object for `run_study`, live while the block runs."""
    if quiet:
        yield StudyEvents()
        return
    state = ProgressState(name, objectives, directions, monitor, n_jobs)
    if not is_live_terminal(console):
        yield PlainProgress(console, state)
        return
    with LiveProgress(console, state) as live:
        yield live
