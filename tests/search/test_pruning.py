"""The early-stopping pruner: the pure rule, then scripted trials through `study.ask()` in a real
(multi-objective) Optuna study, and Optuna's own pruners in a single-objective one."""

from __future__ import annotations

import math

import optuna
import pytest

from ee_search.config import PrunerConfig
from ee_search.records import TrialRecord
from ee_search.search.pruning import (
    EarlyStoppingPruner,
    PruningCallback,
    best_so_far,
    decide_prune,
    is_rung,
)
from ee_search.search.pruners import build_optuna_pruner
from ee_search.train.early_stopping import EarlyStopping

RULE = dict(n_startup_trials=2, n_warmup_epochs=1, min_stale_epochs=1, percentile=50.0)


@pytest.mark.parametrize(
    ("kwargs", "prune", "words"),
    [
        (dict(epoch=3, own_best=2.0, stale_epochs=1, others_best=[1.0, 1.5], n_completed=1, mode="min"), False, "startup"),
        (dict(epoch=1, own_best=2.0, stale_epochs=1, others_best=[1.0, 1.5], n_completed=2, mode="min"), False, "warm-up"),
        (dict(epoch=3, own_best=2.0, stale_epochs=0, others_best=[1.0, 1.5], n_completed=2, mode="min"), False, "improving"),
        (dict(epoch=3, own_best=2.0, stale_epochs=1, others_best=[1.0, 1.5], n_completed=2, mode="min"), True, "worse than"),
        (dict(epoch=3, own_best=1.2, stale_epochs=1, others_best=[1.0, 1.5], n_completed=2, mode="min"), False, "not worse"),
        (dict(epoch=3, own_best=1.25, stale_epochs=1, others_best=[1.0, 1.5], n_completed=2, mode="min"), False, "not worse"),  # = median
        (dict(epoch=3, own_best=0.5, stale_epochs=2, others_best=[0.6, 0.9], n_completed=2, mode="max"), True, "worse than"),
        (dict(epoch=3, own_best=0.8, stale_epochs=2, others_best=[0.6, 0.9], n_completed=2, mode="max"), False, "not worse"),
        (dict(epoch=3, own_best=None, stale_epochs=2, others_best=[0.6], n_completed=2, mode="min"), True, "no finite"),
        (dict(epoch=3, own_best=2.0, stale_epochs=1, others_best=[], n_completed=2, mode="min"), False, "no other trial"),
    ],
)
def test_rule(kwargs, prune, words):
    decision = decide_prune(**kwargs, **{k: v for k, v in RULE.items()})
    assert decision.prune is prune and words in decision.reason


def test_min_stale_epochs_and_percentile_are_honoured():
    base = dict(epoch=4, own_best=1.35, others_best=[1.0, 1.2, 1.4, 1.6], n_completed=4, mode="min", n_startup_trials=0)
    assert not decide_prune(**base, stale_epochs=1, min_stale_epochs=2).prune
    assert decide_prune(**base, stale_epochs=2, min_stale_epochs=2).prune  # 1.35 > median 1.3
    assert not decide_prune(**base, stale_epochs=2, min_stale_epochs=2, percentile=75.0).prune  # bar 1.45


@pytest.mark.parametrize(("first", "factor", "rungs"), [
    (1, 3.0, [1, 3, 9]),  # successive halving's rungs for min_resource 1, reduction factor 3
    (2, 2.0, [2, 4, 8, 16]),
    (3, 1.5, [3, 4, 7, 10, 15]),  # 3, 4.5, 6.75, 10.1, 15.2 rounded
    (2, None, list(range(2, 21))),  # no factor: every epoch past the warm-up
])
def test_rungs(first, factor, rungs):
    assert [e for e in range(1, 21) if is_rung(e, first, factor)] == rungs
    # Off a rung, the rule never prunes, however bad the trial is.
    for epoch in range(1, 21):
        decision = decide_prune(epoch=epoch, own_best=9.0, stale_epochs=0, others_best=[1.0], n_completed=5,
                                mode="min", n_startup_trials=1, n_warmup_epochs=first - 1, min_stale_epochs=0,
                                rung_factor=factor)
        assert decision.prune is (epoch in rungs)


def test_reached_compares_with_every_trial_that_got_this_far():
    """Successive halving's rule: pruned and running trials count at the epochs they reached; shorter
    histories and the trial itself do not; startup counts the trials that reached the epoch."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    histories = {optuna.trial.TrialState.COMPLETE: [2.0, 1.0, 0.8], optuna.trial.TrialState.PRUNED: [2.0, 1.6],
                 optuna.trial.TrialState.RUNNING: [2.5, 1.4]}
    for state, history in histories.items():
        trial = study.ask()
        TrialRecord(monitor="val_loss", monitor_history=history).write(trial)
        if state == optuna.trial.TrialState.COMPLETE:
            study.tell(trial, [0.5, 0.5])
        elif state == optuna.trial.TrialState.PRUNED:
            study.tell(trial, state=state)
    short = study.ask()  # running, but only at epoch 1
    TrialRecord(monitor="val_loss", monitor_history=[3.0]).write(short)
    own = study.ask()
    TrialRecord(monitor="val_loss", monitor_history=[2.2, 1.5]).write(own)
    pruner = EarlyStoppingPruner(n_startup_trials=3, n_warmup_epochs=1, min_stale_epochs=0, percentile=50.0,
                                 compare_with="reached")
    decision = pruner.judge(study, 2, 1.5, 0, "val_loss", own_number=own.number)
    # The three that reached epoch 2 have bests 1.0, 1.6, 1.4: median 1.4 < 1.5, so pruned.
    assert decision.prune and "1.4 of 3 other trials" in decision.reason
    assert not pruner.judge(study, 2, 1.3, 0, "val_loss", own_number=own.number).prune
    # Counting only completed trials, the single one is below startup.
    completed = EarlyStoppingPruner(n_startup_trials=3, n_warmup_epochs=1, min_stale_epochs=0)
    assert not completed.judge(study, 2, 1.5, 0, "val_loss", own_number=own.number).prune


def test_best_so_far_carries_a_finished_trial_forward():
    assert best_so_far([3.0, 2.0, 2.5], 2, "min") == 2.0
    assert best_so_far([3.0, 2.0], 10, "min") == 2.0  # stopped at epoch 2: its best stands
    assert best_so_far([None, 0.4, math.nan], 3, "max") == 0.4
    assert best_so_far([None], 1, "min") is None


class FakeTrainer:
    should_stop = False
    max_epochs = 100


class _StopperView:
    """What PruningCallback reads of the trainer at fit start: its early stopper."""

    def __init__(self, stopper):
        self.stopper = stopper

    def find_callback(self, kind):
        assert kind is EarlyStopping
        return self.stopper


def _callback(trial, stopper, pruner):
    cb = PruningCallback(trial, pruner)
    cb.on_fit_start(_StopperView(stopper))
    return cb


def _epoch(cb, trainer, epoch, metrics):
    """The pruning callback's two hooks of one epoch: record at validation end, decide at epoch end."""
    cb.on_validation_end(trainer, epoch, metrics)
    cb.on_epoch_end(trainer, epoch, metrics)


def _complete(study, history, values=(0.5, 0.5)):
    trial = study.ask()
    TrialRecord(monitor_history=history).write(trial)
    trial.set_user_attr("monitor", "val_loss")
    study.tell(trial, list(values))


def test_scripted_trials_in_a_multi_objective_study():
    study = optuna.create_study(directions=["maximize", "minimize"])
    pruner = EarlyStoppingPruner(n_startup_trials=3, n_warmup_epochs=1, min_stale_epochs=1, percentile=50.0)
    for history in ([2.0, 1.0, 0.8], [2.0, 1.2, 0.9], [2.0, 1.1]):  # the third stopped early
        _complete(study, history)

    def feed(losses):
        trial = study.ask()
        stopper = EarlyStopping("val_loss", patience=10, tol=1e-3)
        cb = _callback(trial, stopper, pruner)
        for epoch, loss in enumerate(losses, start=1):
            metrics = {"val_loss": loss, "train_loss": loss}
            stopper.on_validation_end(FakeTrainer, epoch, metrics)
            try:
                _epoch(cb, FakeTrainer, epoch, metrics)
            except optuna.TrialPruned as pruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return epoch, str(pruned), trial
        study.tell(trial, [0.5, 0.5])
        return None, None, trial

    # A hopeless trial: stale at epoch 2 and worse than the median (1.1) of the others' bests there.
    epoch, reason, trial = feed([3.0, 3.0, 3.0])
    assert epoch == 2 and "50th percentile" in reason
    stored = TrialRecord.read(study.trials[trial.number]).monitor_history
    assert stored == [3.0, 3.0]  # written to the storage epoch by epoch, visible to other workers
    # Still improving every epoch, even though worse than everyone: never pruned.
    assert feed([3.0, 2.9, 2.8, 2.7])[0] is None
    # Good enough: stale at epoch 3 but its best (1.0) beats the median of the others at epoch 3.
    assert feed([2.0, 1.0, 1.05])[0] is None
    states = [t.state.name for t in study.trials]
    assert states.count("PRUNED") == 1 and states.count("COMPLETE") == 5


def test_stopping_anyway_wins_over_pruning():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for _ in range(3):
        _complete(study, [1.0, 0.5])
    trial = study.ask()
    stopper = EarlyStopping("val_loss", patience=1, tol=0.0)
    cb = _callback(trial, stopper, EarlyStoppingPruner(n_startup_trials=1))

    class Stopping:
        should_stop = False
        max_epochs = 100

        def request_stop(self, reason):
            self.should_stop = True

    t = Stopping()
    for epoch, loss in enumerate([5.0, 5.0], start=1):
        stopper.on_validation_end(t, epoch, {"val_loss": loss})
        _epoch(cb, t, epoch, {"val_loss": loss})  # no TrialPruned: patience ended it first
    assert t.should_stop


@pytest.mark.parametrize("own_pruner", [True, False])
def test_the_last_epoch_is_never_pruned(own_pruner):
    """Pruning at max_epochs saves nothing and would throw away a finished trial's result."""
    study = optuna.create_study(
        directions=["maximize", "minimize"] if own_pruner else ["maximize"],
        pruner=optuna.pruners.NopPruner() if own_pruner else optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    )
    for _ in range(2):
        trial = study.ask()
        cb = _callback(trial, EarlyStopping("val_loss", patience=10, tol=0.0), None)
        for epoch, loss in enumerate([1.0, 0.5], start=1):
            _epoch(cb, FakeTrainer, epoch, {"val_loss": loss})
        study.tell(trial, [0.5, 0.5] if own_pruner else 0.5)

    def run(max_epochs: int) -> int | None:
        trainer = type("Trainer", (), {"should_stop": False, "max_epochs": max_epochs})
        trial = study.ask()
        stopper = EarlyStopping("val_loss", patience=10, tol=0.0)
        cb = _callback(trial, stopper, EarlyStoppingPruner(n_startup_trials=1, n_warmup_epochs=0) if own_pruner else None)
        for epoch in range(1, max_epochs + 1):
            stopper.on_validation_end(trainer, epoch, {"val_loss": 5.0})
            try:
                _epoch(cb, trainer, epoch, {"val_loss": 5.0})
            except optuna.TrialPruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return epoch
        study.tell(trial, [0.5, 0.5] if own_pruner else 0.5)
        return None

    # A hopeless trial is pruned while epochs remain: at epoch 2 by ours (stale from then on), at
    # epoch 1 by the median pruner...
    prune_epoch = 2 if own_pruner else 1
    assert run(max_epochs=10) == prune_epoch
    # ...but not when that epoch is its last.
    assert run(max_epochs=prune_epoch) is None
    assert study.trials[-1].state.name == "COMPLETE"


def test_single_objective_feeds_optuna_pruners_with_aligned_values():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2))
    for losses in ([2.0, 1.0, 0.8], [2.0, 1.2, 0.9]):
        trial = study.ask()
        stopper = EarlyStopping("val_loss", patience=10, tol=0.0)
        cb = _callback(trial, stopper, pruner=None)
        for epoch, loss in enumerate(losses, start=1):
            _epoch(cb, FakeTrainer, epoch, {"val_loss": loss})
        study.tell(trial, 0.9)
    # val_loss is minimised but the study maximises accuracy: the reported value is -val_loss.
    assert study.trials[0].intermediate_values == {1: -2.0, 2: -1.0, 3: -0.8}
    trial = study.ask()
    cb = _callback(trial, EarlyStopping("val_loss", patience=10, tol=0.0), pruner=None)
    _epoch(cb, FakeTrainer, 1, {"val_loss": 5.0})  # warm-up: step 1 < 2
    with pytest.raises(optuna.TrialPruned, match="MedianPruner"):
        _epoch(cb, FakeTrainer, 2, {"val_loss": 5.0})


# Scripted trials (minimised values at epochs 1..8) that tell pruner settings apart: a warm-up off by
# one moves the step of a prune, a wrong startup count prunes the first new trial or spares the 5th,
# a wrong percentile or patience moves the 2nd or 6th new trial's prune.
SCRIPT_EPOCHS = 8
SCRIPT_COMPLETED = [  # added through optuna.trial.create_trial
    [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],
    [2.0, 1.8, 1.6, 1.4, 1.2, 1.0, 0.9, 0.8],
]
SCRIPT_NEW = [  # reported step by step, in this order; each completes unless pruned
    [5.0] * 8,  # hopeless, but only 2 trials have completed (startup)
    [1.5, 1.45, 1.4, 1.35, 1.3, 1.25, 1.2, 1.15],  # between the 25th percentile and the median
    [4.0, 4.1, 4.2, 4.3, 4.4, 4.5, 4.6, 4.7],  # hopeless and getting worse
    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2],  # the best
    [1.9, 1.7, 1.5, 1.3, 1.1, 0.9, 0.7, 0.5],
    [3.0, 2.8, 2.6, 2.5, 2.7, 2.9, 3.0, 3.0],  # stale from epoch 5 on
]
SCRIPT_CONFIG = dict(n_startup_trials=3, n_warmup_epochs=3, min_stale_epochs=1, percentile=25.0)
SCRIPT_OPTIONS = {"wilcoxon": {"p_threshold": 0.2}}  # options reach the pruner as given


def _script(pruner: optuna.pruners.BasePruner) -> list[str]:
    """Run the script in a fresh study holding `pruner`; per new trial, its should_prune() answers step
    by step ('.' no, 'P' pruned: the trial stops there)."""
    study = optuna.create_study(study_name="scripted", direction="minimize", pruner=pruner)
    for values in SCRIPT_COMPLETED:
        study.add_trial(optuna.trial.create_trial(value=values[-1], intermediate_values=dict(enumerate(values, 1))))
    decisions = []
    for values in SCRIPT_NEW:
        trial, answers = study.ask(), ""
        for step, value in enumerate(values, start=1):
            trial.report(value, step)
            answers += "P" if trial.should_prune() else "."
            if answers[-1] == "P":
                break
        if answers[-1] == "P":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, values[-1])
        decisions.append(answers)
    return decisions


def _by_hand(kind: str) -> optuna.pruners.BasePruner:
    """The Optuna pruner SCRIPT_CONFIG should give: steps are 1-based epochs, so 3 warm-up epochs are
    n_warmup_steps=4 (steps 1..3 are never pruned)."""
    p = optuna.pruners
    if kind == "median":
        return p.MedianPruner(n_startup_trials=3, n_warmup_steps=4)
    if kind == "percentile":
        return p.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=4)
    if kind == "hyperband":
        return p.HyperbandPruner(min_resource=1, max_resource=SCRIPT_EPOCHS)
    if kind == "successive_halving":
        return p.SuccessiveHalvingPruner()
    if kind == "patient":
        return p.PatientPruner(p.MedianPruner(n_startup_trials=3, n_warmup_steps=4), patience=1)
    if kind == "wilcoxon":
        return p.WilcoxonPruner(p_threshold=0.2)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["median", "percentile", "hyperband", "successive_halving", "patient", "wilcoxon"])
def test_optuna_pruners_build_by_name(kind):
    """Oracle: Optuna's own pruner built by hand with the intended arguments, prune for prune on a script."""
    cfg = PrunerConfig(type=kind, **SCRIPT_CONFIG, options=SCRIPT_OPTIONS.get(kind, {}))
    ours = build_optuna_pruner(cfg, max_epochs=SCRIPT_EPOCHS)
    assert type(ours) is type(_by_hand(kind))
    expected = _script(_by_hand(kind))
    assert _script(ours) == expected
    # The script makes the decision matter: it prunes some trial at some step and not at others.
    assert any("P" in answers for answers in expected) and any("." in answers for answers in expected)


def test_threshold_pruner_needs_a_bound_and_options_need_a_pruner_that_takes_them():
    with pytest.raises(ValueError, match="lower or options.upper"):
        build_optuna_pruner(PrunerConfig(type="threshold"), 10)
    assert isinstance(build_optuna_pruner(PrunerConfig(type="threshold", options={"upper": 5.0}), 10),
                      optuna.pruners.ThresholdPruner)
    with pytest.raises(ValueError, match="takes none"):
        build_optuna_pruner(PrunerConfig(type="early_stopping", options={"x": 1}), 10)
    with pytest.raises(TypeError):
        build_optuna_pruner(PrunerConfig(type="median", options={"nope": 1}), 10)


def test_constructor_checks():
    with pytest.raises(ValueError, match="percentile must be in \\[0, 100\\] but got 120"):
        EarlyStoppingPruner(percentile=120)
    with pytest.raises(ValueError, match="min_stale_epochs cannot be negative but got -1"):
        EarlyStoppingPruner(min_stale_epochs=-1)
    with pytest.raises(ValueError, match="compare_with must be"):
        EarlyStoppingPruner(compare_with="all")
    with pytest.raises(ValueError, match="rung_factor must be greater than 1"):
        EarlyStoppingPruner(rung_factor=1.0)
