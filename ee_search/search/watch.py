"""The study's progress read from its storage, as the events a running study would send (events.py).

The parent of local worker processes (workers.py) trains nothing itself, so no trial calls it back:
it polls the shared storage instead and turns what changed into the same hooks, so the one live
area the CLI draws for a single process shows the whole study. A running trial's epochs come from
its `monitor_history` (the value early stopping watches, written after every validation); the other
per-epoch metrics stay in the trial's MLflow run.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from ee_search.records import TrialRecord
from ee_search.search.budget import counted_trials
from ee_search.search.events import StudyEvents


class StudyWatcher:
    def __init__(self, study: optuna.Study, events: StudyEvents, monitor: str, max_epochs: int) -> None:
        self.study, self.events, self.monitor, self.max_epochs = study, events, monitor, max_epochs
        self.done_before: set[int] = set()  # finished when the watch began: earlier runs' trials
        self.ended: list[int] = []  # trials that finished since, in the order seen
        self._epochs: dict[int, int] = {}  # running trial -> epochs shown

    def start(self, target: int | None, to_start: int | None) -> None:
        self.done_before = {t.number for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()}
        self.events.study_started(self.study, target, to_start)

    def poll(self) -> None:
        for trial in self.study.get_trials(deepcopy=False):
            if trial.state == TrialState.RUNNING:
                self._running(trial)
            elif trial.state.is_finished() and trial.number not in self.done_before \
                    and trial.number not in self.ended:
                self._running(trial)  # the epochs it finished between two polls
                self._epochs.pop(trial.number, None)
                self.ended.append(trial.number)
                self.events.trial_ended(trial)

    def counted(self) -> int:
        return len(counted_trials(self.study))

    def _running(self, trial: FrozenTrial) -> None:
        record = TrialRecord.read(trial)
        if trial.number not in self._epochs:
            resumed = record.resumed_at_epoch or 0
            self._epochs[trial.number] = resumed
            if trial.state == TrialState.RUNNING:
                self.events.trial_started(trial.number, int(trial.params.get("train.max_epochs", self.max_epochs)),
                                          resumed)
        history = record.monitor_history or []
        for epoch in range(self._epochs[trial.number] + 1, len(history) + 1):
            value = history[epoch - 1]
            self.events.epoch_ended(trial.number, epoch, {} if value is None else {self.monitor: value})
        self._epochs[trial.number] = max(self._epochs[trial.number], len(history))
