"""What the run's progress shows, as plain data and plain text: fed the study's events, it answers
the study line, a line per running trial and the per-epoch line. No terminal here (progress.py
draws it), so tests feed it events by hand and read the lines.

Hooks arrive from several threads when `search.n_jobs > 1`: every method takes the one lock, and
none calls out while holding it (the display's own lock is taken in the other order).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial, TrialState

from ee_search.metrics import monitor_mode
from ee_search.records import TrialRecord


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def shown_metrics(monitor: str, objectives: Sequence[str]) -> list[str]:
    """The per-epoch metrics worth a line: the early-stopping monitor first (what decides the trial),
    val_loss, the validation counterpart of each objective, then train_loss (beside val_loss it shows
    overfitting). `relative_flops` has no per-epoch counterpart and is skipped where absent."""
    names = [monitor, "val_loss", *(f"val_{o}" for o in objectives), "train_loss"]
    return list(dict.fromkeys(names))


@dataclass
class RunningTrial:
    number: int
    max_epochs: int
    started: float  # clock() at trial_started
    epoch: int = 0  # the last epoch with metrics (a resumed trial starts at its resumed epoch)
    resumed_at: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    best: float | None = None  # the trial's best monitor value so far, and its epoch
    best_epoch: int | None = None


@dataclass
class Best:
    value: float
    trial_number: int


class ProgressState:
    """The study's progress as this process sees it: trials finished toward the target (the study's,
    including earlier runs and trials other workers had finished when this run started), this run's
    pruned and failed trials, the running trials' latest epoch, the best value of each objective,
    and an ETA."""

    def __init__(self, name: str, objectives: Sequence[str], directions: Sequence[str], monitor: str,
                 n_jobs: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if len(objectives) != len(directions):
            raise ValueError(f"one direction per objective but got {objectives} and {directions}")
        self.name = name
        self.objectives = list(objectives)
        self.directions = list(directions)
        self.monitor = monitor
        self.monitor_mode = monitor_mode(monitor)
        self.n_jobs = max(1, n_jobs)
        self.clock = clock
        self.metric_names = shown_metrics(monitor, objectives)
        self._lock = threading.Lock()
        self.started = clock()  # elapsed counts from here: opening the stores is part of the wait
        self.opened = False  # study_started came
        self.target: int | None = None
        self.to_start: int | None = None
        self.finished_before = 0  # the study's counted trials when this run started
        self.ended: list[FrozenTrial] = []  # this run's, in the order they ended
        self.counted = 0  # of those, the ones that count toward the target
        self.durations: list[float] = []  # seconds from trial_started to trial_ended, this run
        self.running: dict[int, RunningTrial] = {}
        self.best: list[Best | None] = [None] * len(objectives)

    # ------------------------------------------------------------------ events
    def start(self, prior: Iterable[FrozenTrial], counted_before: int, target: int | None,
              to_start: int | None) -> None:
        """`prior`: the study's trials when this run starts (their best values count);
        `counted_before`: how many of them count toward the target."""
        with self._lock:
            self.opened = True
            self.target, self.to_start, self.finished_before = target, to_start, counted_before
            for trial in prior:
                self._take_best(trial)

    def trial_started(self, number: int, max_epochs: int, resumed_at_epoch: int) -> None:
        with self._lock:
            self.running[number] = RunningTrial(number, max_epochs, self.clock(), resumed_at_epoch, resumed_at_epoch)

    def epoch_ended(self, number: int, epoch: int, metrics: Mapping[str, float]) -> str:
        """Records the epoch and returns its one plain line."""
        with self._lock:
            trial = self.running.get(number)
            if trial is None:  # an epoch without trial_started (max_epochs unknown): show it all the same
                trial = self.running[number] = RunningTrial(number, 0, self.clock())
            trial.epoch, trial.metrics = epoch, dict(metrics)
            value = metrics.get(self.monitor)
            if value is not None and (trial.best is None or _better(value, trial.best, self.monitor_mode)):
                trial.best, trial.best_epoch = value, epoch
            return self._trial_text(trial)

    def trial_ended(self, trial: FrozenTrial) -> None:
        with self._lock:
            running = self.running.pop(trial.number, None)
            self.ended.append(trial)
            if not (trial.state == TrialState.FAIL and TrialRecord.read(trial).resumed_by is not None):
                self.counted += 1  # a FAIL that another trial resumes is not an outcome
            if running is not None:
                self.durations.append(self.clock() - running.started)
            self._take_best(trial)

    # ------------------------------------------------------------------ answers
    def count(self, state: TrialState) -> int:
        with self._lock:
            return sum(t.state == state for t in self.ended)

    def eta_seconds(self) -> float | None:
        with self._lock:
            return self._eta(self.clock())

    def study_line(self) -> str:
        with self._lock:
            now = self.clock()
            if not self.opened:
                return f"{self.name}  opening the study  elapsed {format_seconds(now - self.started)}"
            done = self.finished_before + self.counted
            parts = [self.name, f"{done}/{self.target} trials" if self.target is not None else f"{done} trials",
                     f"{sum(t.state == TrialState.PRUNED for t in self.ended)} pruned",
                     f"{sum(t.state == TrialState.FAIL for t in self.ended)} failed",
                     f"{len(self.running)} running",
                     f"elapsed {format_seconds(now - self.started)}",
                     f"ETA {format_seconds(self._eta(now))}"]
            best = [f"{name} {b.value:.4f} (trial {b.trial_number})"
                    for name, b in zip(self.objectives, self.best) if b is not None]
            if best:
                parts.append("best " + ", ".join(best))
            return "  ".join(parts)

    def trial_lines(self) -> list[str]:
        with self._lock:
            return [self._trial_text(t) for _, t in sorted(self.running.items())]

    # ------------------------------------------------------------------ internals (lock held)
    def _eta(self, now: float) -> float | None:
        """From the median of this run's trial times (a slow outlier does not swing it): the queued
        trials take a median each, a running one what the median leaves of it, and `n_jobs` trials
        run at a time; never less than the longest running trial still needs."""
        if self.to_start is None or not self.durations:
            return None  # no target (a timeout decides) or nothing measured yet
        left = max(self.to_start - len(self.ended), 0)
        if left == 0:
            return 0.0
        median = statistics.median(self.durations)
        running = [max(median - (now - t.started), 0.0) for t in self.running.values()]
        queued = max(left - len(running), 0)
        slots = min(self.n_jobs, left)
        return max((sum(running) + queued * median) / slots, max(running, default=0.0))

    def _take_best(self, trial: FrozenTrial) -> None:
        if trial.state != TrialState.COMPLETE or not trial.values or len(trial.values) != len(self.objectives):
            return  # a pruned trial's value is Optuna's last report, not an objective
        for i, (value, direction) in enumerate(zip(trial.values, self.directions)):
            current = self.best[i]
            if current is None or _better(value, current.value, "max" if direction == "maximize" else "min"):
                self.best[i] = Best(value, trial.number)

    def _trial_text(self, trial: RunningTrial) -> str:
        head = f"trial {trial.number:>3}"
        if not trial.metrics:
            what = (f"resumed after epoch {trial.resumed_at}/{trial.max_epochs}" if trial.resumed_at
                    else f"starting, up to {trial.max_epochs} epochs")
            return f"{head}  {what}"
        parts = [head, f"epoch {trial.epoch}/{trial.max_epochs or '?'}"]
        for name in self.metric_names:
            if name in trial.metrics:
                text = f"{name} {trial.metrics[name]:.4f}"
                if name == self.monitor and trial.best is not None:  # what early stopping judges
                    text += " (best)" if trial.best_epoch == trial.epoch else \
                        f" (best {trial.best:.4f} at epoch {trial.best_epoch})"
                parts.append(text)
        if "epoch_seconds" in trial.metrics:
            parts.append(f"{trial.metrics['epoch_seconds']:.1f}s")
        return "  ".join(parts)


def _better(value: float, than: float, mode: str) -> bool:
    return value < than if mode == "min" else value > than
