"""Training signals end to end through the CLI with --set overrides: the multi-objective pruner,
weight averaging, divergence. (Patience and tol are proved on the trainer in tests/train, and their
way into a trial's record by tests/test_tracking.py's study.)"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch

from ee_search.config import load_study_file
from ee_search.fit import train_network
from ee_search.models import build_model
from ee_search.train import Callback, WeightAveraging
from tests.conftest import best_model, mlflow_client, run_study

NO_SPACE = "search.space={}"
CPU = torch.device("cpu")


def run(study, *sets, n_trials=3):
    return run_study(study, *sets, n_trials=n_trials)


def client(workdir):
    return mlflow_client(workdir)


def test_multi_objective_pruner_prunes_some_trials_and_their_runs_are_killed(tiny_study, workdir):
    # What only a real study shows: a pruned trial's MLflow run ends KILLED and keeps its metrics and
    # best.pt. The rule itself (startup, warm-up, staleness, percentile) is proved on scripted trials
    # in tests/search/test_pruning.py, so here a strict setting prunes every trial at epoch 2 that is
    # worse than the first, completed one.
    study = run(
        tiny_study,
        "train.max_epochs=3",
        "data.train_subset=256",
        "search.pruner={type: early_stopping, n_startup_trials: 1, n_warmup_epochs: 1,"
        " min_stale_epochs: 0, percentile: 0}",
        "search.sampler={type: random, seed: 5}",
        "search.space={train.lr: {type: float, low: 1.0e-7, high: 3.0e-2, log: true}}",
        n_trials=4,
    )
    states = [t.state.name for t in study.trials]
    assert states[0] == "COMPLETE" and "PRUNED" in states and "FAIL" not in states, states
    mlflow = client(workdir)
    for t in study.trials:
        if t.state.name != "PRUNED":
            continue
        assert t.user_attrs["stop_reason"] == "pruned" and t.user_attrs["epochs_trained"] == 2
        run_ = mlflow.get_run(t.user_attrs["mlflow_run_id"])
        assert run_.info.status == "KILLED" and run_.data.tags["optuna.trial_state"] == "PRUNED"
        history = mlflow.get_metric_history(run_.info.run_id, "val_loss")
        assert len(history) == t.user_attrs["epochs_trained"]  # metrics kept
        assert [f.path for f in mlflow.list_artifacts(run_.info.run_id, "checkpoints")] == ["checkpoints/best.pt"]


class StepWeights(Callback):
    """The raw (trained) model's weights after every optimizer step, in float64."""

    def __init__(self) -> None:
        self.after_step: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, step: int) -> None:
        self.after_step[step] = weights(trainer.model)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().double().clone() for k, v in model.state_dict().items()}


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return math.sqrt(sum(float(((a[k] - b[k]) ** 2).sum()) for k in a))


def hand_average(after_step: dict[int, dict[str, torch.Tensor]], method: str, decay: float, update_every: int,
                 warmup: int = 10):
    """The averaging rules written out over the weights after every `update_every`-th step: the first
    update copies; then W <- d W + (1 - d) w with d = min(decay, (1 + n) / (warmup + n)) (ema, with
    the default `train.averaging.warmup`), decay * tanh(n) (t_adema) or n / (n + 1) (swa: the running
    mean), n = updates so far."""
    average, n = None, 0
    for step in sorted(after_step):
        if step % update_every:
            continue
        w = after_step[step]
        if n == 0:
            average = dict(w)
        else:
            d = {"ema": min(decay, (1 + n) / (warmup + n)), "t_adema": decay * math.tanh(n), "swa": n / (n + 1)}[method]
            average = {k: d * average[k] + (1 - d) * w[k] for k in average}
        n += 1
    assert n >= 4, "too few averaging updates for the test to mean anything"
    return average


def replay_averaging(after_step, init_model: torch.nn.Module, method: str, decay: float, update_every: int):
    """`WeightAveraging` itself, fed the recorded weights step by step; returns its averaged weights."""
    trainer = SimpleNamespace(model=copy.deepcopy(init_model), eval_model=None)
    averaging = WeightAveraging(method, decay, update_every)
    averaging.on_fit_start(trainer)
    averaging.on_epoch_start(trainer, 1)
    for step in sorted(after_step):
        trainer.model.load_state_dict(after_step[step])
        averaging.on_train_batch_end(trainer, step)
    return weights(trainer.eval_model)


def averaging_set(method: str, decay: float, update_every: int, warmup: int = 10) -> str:
    return f"train.averaging={{method: {method}, decay: {decay}, update_every: {update_every}, warmup: {warmup}}}"


@pytest.mark.parametrize("method", ["ema", "swa", "t_adema"])
def test_each_averaging_method_completes_a_trial(tiny_study, workdir, method):
    """Oracle: the average computed by hand from an un-averaged run's per-step weights at the trial's seed."""
    base = [NO_SPACE, "train.max_epochs=1", "device=cpu", "data.train_subset=512", "train.batch_size=32"]
    # warmup 2: the EMA's warm-up (ema only) is on, yet short enough that 8 updates average for real
    decay, update_every, warmup = 0.9, 2, 2
    study = run(tiny_study, *base, averaging_set(method, decay, update_every, warmup), n_trials=1)
    t = study.trials[0]
    assert t.state.name == "COMPLETE" and 0.0 <= t.values[0] <= 1.0 and t.user_attrs["best_epoch"] == 1

    plain_config = load_study_file(tiny_study, base).config  # method: none
    seed = plain_config.seed + t.number
    steps = StepWeights()
    plain = train_network(plain_config, device=CPU, seed=seed, recorders=[steps])
    last = weights(plain.model)
    assert distance(last, steps.after_step[max(steps.after_step)]) == 0.0
    torch.manual_seed(seed)
    init_model = build_model(plain_config.model, plain.data.channels, plain.data.num_classes,
                             exit_loss_weights=plain_config.loss_weights)
    init = weights(init_model)
    trained_distance = distance(last, init)
    assert trained_distance > 0.1

    averaged = weights(best_model(client(workdir), t, workdir))
    expected = hand_average(steps.after_step, method, decay, update_every, warmup)
    for k in expected:
        gap = (averaged[k] - expected[k]).abs().max().item()
        assert torch.allclose(averaged[k], expected[k], rtol=1e-5, atol=1e-6), (k, gap)
    # Not the last weights (what skipping the average would keep), nor the initial ones.
    assert distance(averaged, last) > 0.2 * trained_distance
    assert distance(averaged, init) > 0.2 * trained_distance

    # The extremes, through the package's own callback fed the recorded steps (no re-training):
    if method in ("ema", "t_adema"):
        # a tiny decay (the schema wants decay > 0) follows the model: the last weights;
        follows = replay_averaging(steps.after_step, init_model, method, 1e-6, 1)
        assert distance(follows, last) < 1e-4 * trained_distance
    if method == "ema":
        # a decay near 1 barely leaves the first step's weights: far closer to the start than training went.
        slow = replay_averaging(steps.after_step, init_model, method, 0.999, 1)
        assert distance(slow, init) < 0.1 * trained_distance


def test_divergence_ends_pruned_with_non_finite_loss_and_the_study_finishes(tiny_study, workdir):
    study = run(tiny_study, NO_SPACE, "train.lr=1e12", "train.max_epochs=3", n_trials=2)
    mlflow = client(workdir)
    assert len(study.trials) == 2
    for t in study.trials:
        assert t.state.name == "PRUNED" and t.user_attrs["stop_reason"] == "non_finite_loss"
        run_ = mlflow.get_run(t.user_attrs["mlflow_run_id"])
        assert run_.info.status == "KILLED" and run_.data.tags["ee_search.stop_reason"] == "non_finite_loss"
