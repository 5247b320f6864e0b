"""The run's progress fed by hand: the state (counts, ETA from the median trial time, best so far in
either direction, one and two objectives) with a scripted clock, and the plain and live displays
writing to a string."""

from __future__ import annotations

import io
import re

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState, create_trial
from rich.console import Console

from ee_search.console import LiveProgress, PlainProgress, ProgressState, is_live_terminal, run_progress
from ee_search.search import StudyEvents

OBJECTIVES = ["accuracy", "avg_exit_depth"]
DIRECTIONS = ["maximize", "minimize"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def frozen(directions: list[str], *specs: dict) -> list[FrozenTrial]:
    """Trials numbered 0.. in the order given, each spec being create_trial's keyword arguments."""
    study = optuna.create_study(directions=directions)
    for spec in specs:
        study.add_trial(create_trial(**spec))
    return study.get_trials()


def run_trial(state: ProgressState, clock: Clock, trial: FrozenTrial, seconds: float) -> None:
    state.trial_started(trial.number, 4, 0)
    clock.now += seconds
    state.trial_ended(trial)


def state_for(clock: Clock, objectives=OBJECTIVES, directions=DIRECTIONS, monitor="val_loss", n_jobs=1):
    return ProgressState("demo", objectives, directions, monitor, n_jobs, clock=clock)


# ----------------------------------------------------------------------------------------- ETA
def test_eta_is_the_median_trial_time_times_the_trials_left():
    clock = Clock()
    state = state_for(clock)
    state.start([], 0, target=5, to_start=5)
    assert state.eta_seconds() is None and "ETA -" in state.study_line()  # nothing measured yet
    trials = frozen(DIRECTIONS, *[{"values": [0.5, 0.5]}] * 3)
    for trial, seconds in zip(trials, (10.0, 90.0, 20.0)):  # median 20: the 90 s outlier does not count
        run_trial(state, clock, trial, seconds)
    assert state.eta_seconds() == pytest.approx(2 * 20.0)
    assert "3/5 trials" in state.study_line() and "ETA 0m40s" in state.study_line()


def test_eta_divides_by_the_parallel_trials_and_credits_running_ones():
    clock = Clock()
    state = state_for(clock, n_jobs=2)
    state.start([], 0, target=6, to_start=6)
    trials = frozen(DIRECTIONS, *[{"values": [0.5, 0.5]}] * 2)
    run_trial(state, clock, trials[0], 20.0)
    run_trial(state, clock, trials[1], 20.0)
    state.trial_started(2, 4, 0)
    clock.now += 5.0  # trial 2 has run 5 s of its 20
    # 4 left: trial 2 needs 15 s more, 3 queued need 20 s each, 2 at a time: (15 + 60) / 2.
    assert state.eta_seconds() == pytest.approx(37.5)
    state.trial_started(3, 4, 0)
    clock.now += 10.0  # trial 2: 5 s left, trial 3: 10 s left, 2 queued
    assert state.eta_seconds() == pytest.approx((5 + 10 + 40) / 2)


def test_eta_is_at_least_what_the_slowest_running_trial_needs():
    clock = Clock()
    state = state_for(clock, n_jobs=4)
    state.start([], 0, target=3, to_start=3)
    run_trial(state, clock, frozen(DIRECTIONS, {"values": [0.5, 0.5]})[0], 40.0)
    state.trial_started(1, 4, 0)
    state.trial_started(2, 4, 0)
    clock.now += 10.0
    # (30 + 30) / min(4 jobs, 2 left) = 30, and each running trial needs 30 s on its own.
    assert state.eta_seconds() == pytest.approx(30.0)
    clock.now += 100.0  # both overran the median: no negative time left
    assert state.eta_seconds() == 0.0


def test_no_eta_without_a_target():
    clock = Clock()
    state = state_for(clock)
    state.start([], 0, target=None, to_start=None)  # a timeout decides when the run ends
    run_trial(state, clock, frozen(DIRECTIONS, {"values": [0.5, 0.5]})[0], 10.0)
    assert state.eta_seconds() is None
    assert "1 trials" in state.study_line() and "ETA -" in state.study_line()


# -------------------------------------------------------------------------------------- counts
def test_counts_start_from_the_study_and_skip_a_resumed_fail():
    clock = Clock()
    state = state_for(clock)
    assert "opening the study" in state.study_line()
    prior = frozen(DIRECTIONS, {"values": [0.9, 0.8]}, {"state": TrialState.PRUNED})
    state.start(prior, counted_before=2, target=8, to_start=6)
    mine = frozen(DIRECTIONS, {"values": [0.5, 0.5]}, {"state": TrialState.PRUNED}, {"state": TrialState.FAIL},
                  {"state": TrialState.FAIL, "user_attrs": {"resumed_by": 9}}, {"state": TrialState.PRUNED})
    for trial in mine:
        run_trial(state, clock, trial, 1.0)
    state.trial_started(7, 4, 0)
    line = state.study_line()
    # 2 before + 4 of mine (the FAIL resumed by trial 9 is not an outcome); pruned and failed are this run's.
    assert re.search(r"demo  6/8 trials  2 pruned  2 failed  1 running  elapsed 0m05s", line), line
    assert state.count(TrialState.PRUNED) == 2 and state.count(TrialState.COMPLETE) == 1


# ------------------------------------------------------------------------------------- best so far
def test_best_so_far_per_objective_in_its_own_direction_pruned_values_ignored():
    clock = Clock()
    state = state_for(clock)
    prior = frozen(DIRECTIONS, {"values": [0.70, 0.40]})
    state.start(prior, 1, target=5, to_start=4)
    assert "best accuracy 0.7000 (trial 0), avg_exit_depth 0.4000 (trial 0)" in state.study_line()
    mine = frozen(DIRECTIONS, {"values": [0.10, 0.90]}, {"values": [0.80, 0.60]}, {"values": [0.60, 0.30]},
                  {"state": TrialState.PRUNED, "values": [0.99, 0.01]})
    for trial in mine:
        run_trial(state, clock, trial, 1.0)
    # accuracy is maximised (trial 1's 0.80), depth minimised (trial 2's 0.30); the pruned trial's
    # values are Optuna's last report, not objectives.
    assert "best accuracy 0.8000 (trial 1), avg_exit_depth 0.3000 (trial 2)" in state.study_line()


@pytest.mark.parametrize("objective, direction, values, best", [
    ("avg_exit_depth", "minimize", [0.6, 0.2, 0.4], "avg_exit_depth 0.2000 (trial 1)"),
    ("curve_hypervolume", "maximize", [0.3, 0.5, 0.4], "curve_hypervolume 0.5000 (trial 1)"),
])
def test_best_so_far_single_objective(objective, direction, values, best):
    clock = Clock()
    state = state_for(clock, [objective], [direction])
    state.start([], 0, target=3, to_start=3)
    for trial in frozen([direction], *[{"value": v} for v in values]):
        run_trial(state, clock, trial, 1.0)
    assert state.study_line().endswith("best " + best)


# ------------------------------------------------------------------------------------ trial lines
def test_trial_line_shows_monitor_objectives_and_the_trials_best_monitor_value():
    clock = Clock()
    state = state_for(clock, monitor="val_loss")
    state.start([], 0, target=1, to_start=1)
    state.trial_started(4, 8, 0)
    assert state.trial_lines() == ["trial   4  starting, up to 8 epochs"]
    epoch = {"val_loss": 1.5, "val_accuracy": 0.4, "val_avg_exit_depth": 0.7, "train_loss": 1.6,
             "val_curve_hypervolume": 0.2, "lr": 0.1, "epoch_seconds": 12.34}
    line = state.epoch_ended(4, 1, epoch)
    assert line == ("trial   4  epoch 1/8  val_loss 1.5000 (best)  val_accuracy 0.4000  val_avg_exit_depth 0.7000  "
                    "train_loss 1.6000  12.3s")
    line = state.epoch_ended(4, 2, epoch | {"val_loss": 1.7})  # worse: val_loss is minimised
    assert "val_loss 1.7000 (best 1.5000 at epoch 1)" in line and line.startswith("trial   4  epoch 2/8")
    assert state.trial_lines() == [line]
    state.trial_ended(frozen(DIRECTIONS, {"values": [0.4, 0.7]})[0])  # number 0: trial 4 still runs
    assert state.trial_lines() == [line]


def test_trial_line_with_a_maximised_monitor_and_a_resumed_trial():
    clock = Clock()
    state = state_for(clock, ["curve_hypervolume"], ["maximize"], monitor="val_curve_hypervolume")
    state.start([], 0, target=1, to_start=1)
    state.trial_started(2, 10, 3)
    assert state.trial_lines() == ["trial   2  resumed after epoch 3/10"]
    state.epoch_ended(2, 4, {"val_curve_hypervolume": 0.30, "val_loss": 1.0})
    line = state.epoch_ended(2, 5, {"val_curve_hypervolume": 0.25, "val_loss": 0.9})
    # The monitor comes first; val_loss is shown but judged by nobody here.
    assert line == "trial   2  epoch 5/10  val_curve_hypervolume 0.2500 (best 0.3000 at epoch 4)  val_loss 0.9000"


# ------------------------------------------------------------------------------------- displays
def _study(directions: list[str]) -> optuna.Study:
    return optuna.create_study(directions=directions)


def _feed(events: StudyEvents, study: optuna.Study) -> None:
    events.study_started(study, 2, 2)
    trials = frozen(DIRECTIONS, {"values": [0.5, 0.6], "user_attrs": {"epochs_trained": 2}})
    events.trial_started(0, 2, 0)
    events.epoch_ended(0, 1, {"val_loss": 2.0, "val_accuracy": 0.3, "epoch_seconds": 1.0})
    events.epoch_ended(0, 2, {"val_loss": 1.0, "val_accuracy": 0.5, "epoch_seconds": 1.0})
    events.trial_ended(trials[0])


def test_plain_progress_prints_a_line_per_epoch_and_per_trial_without_control_characters():
    out = io.StringIO()
    console = Console(file=out, width=160, highlight=False)
    events = PlainProgress(console, state_for(Clock()))
    _feed(events, _study(DIRECTIONS))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("trial   0  epoch 1/2  val_loss 2.0000 (best)  val_accuracy 0.3000")
    assert lines[1].startswith("trial   0  epoch 2/2  val_loss 1.0000 (best)")
    assert lines[2].startswith("trial   0  COMPLETE  accuracy 0.5000  avg_exit_depth 0.6000  2 epochs")
    assert lines[3].startswith("demo  1/2 trials  0 pruned  0 failed  0 running")
    assert len(lines) == 4
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


def test_live_progress_draws_the_study_and_running_trials_and_prints_finished_ones_above():
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=True, force_interactive=True, highlight=False)
    study = _study(DIRECTIONS)
    with LiveProgress(console, state_for(Clock())) as live:
        live.study_started(study, 2, 2)
        live.trial_started(0, 2, 0)
        live.epoch_ended(0, 1, {"val_loss": 2.0, "val_accuracy": 0.3, "epoch_seconds": 1.0})
        live.live.refresh()
        drawn = out.getvalue()
        live.trial_ended(frozen(DIRECTIONS, {"values": [0.5, 0.6]})[0])
        live.live.refresh()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "demo  0/2 trials  0 pruned  0 failed  1 running" in plain
    assert "trial   0  epoch 1/2  val_loss 2.0000 (best)" in plain
    assert "trial   0  COMPLETE" in plain and "demo  1/2 trials" in plain
    assert "\x1b[?25l" in drawn  # a real Live area (cursor hidden), not plain lines
    # Between the two refreshes the running trial's line left the area.
    last = plain.rsplit("demo  1/2 trials", 1)[1]
    assert "epoch 1/2" not in last


def test_run_progress_chooses_by_terminal_and_quiet():
    forced = Console(file=io.StringIO(), force_terminal=True)  # FORCE_COLOR into a pipe: still no Live
    assert not is_live_terminal(forced)
    with run_progress(forced, "demo", OBJECTIVES, DIRECTIONS, "val_loss") as events:
        assert isinstance(events, PlainProgress)
    with run_progress(forced, "demo", OBJECTIVES, DIRECTIONS, "val_loss", quiet=True) as events:
        assert type(events) is StudyEvents
