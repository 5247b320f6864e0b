"""The study's moving parts end to end, one short run each: every sampler, a single-objective study
with one of Optuna's own pruners, trials run as threads (search.n_jobs), each optimizer, and bf16
autocast (the CPU takes the same code path CUDA does).

Where a test can, it checks the run against an oracle rather than "it completed": an independent
Optuna pruner replaying the recorded values, Optuna's own sampler replaying the draws, a second sink
written by the same trial, or the bare `train_network` at the trial's seed (deterministic on CPU)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import optuna
import pytest
import torch
from mlflow import MlflowClient

from ee_search.config import load_study_file
from ee_search.fit import train_network
from ee_search.models import build_model
from ee_search.search.space import sample
from ee_search.search.samplers import trial_seed
from tests.conftest import best_model, run_study
from tests.conftest import mlflow_client as conftest_mlflow_client

CPU = torch.device("cpu")


SMALL = ("data.train_subset=512", "train.batch_size=32")  # 16 steps an epoch: keeps the re-trainings cheap


def overrides(*sets) -> list[str]:
    return ["train.max_epochs=1", *sets]


def run(study, *sets, n_trials=2):
    return run_study(study, *overrides(*sets), n_trials=n_trials)


def config_of(study, *sets):
    """The config `run(study, *sets)` trains with (before a trial's sampled values)."""
    return load_study_file(study, overrides(*sets)).config


def mlflow_client(workdir: Path) -> MlflowClient:
    return conftest_mlflow_client(workdir)


def checkpoint_state(workdir: Path, trial) -> dict[str, torch.Tensor]:
    """The weights in the trial's MLflow `checkpoints/best.pt`, rebuilt into a model."""
    return best_model(mlflow_client(workdir), trial, workdir).state_dict()


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def l2_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return math.sqrt(sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in a))


def assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for k in got:
        assert torch.allclose(got[k], want[k], rtol=1e-5, atol=1e-7), (k, (got[k] - want[k]).abs().max().item())


# Each sampler past its random start-up by the last trial (TPE and GP after one trial, NSGA-II after its
# first generation of two), so the last trial's params are the sampler's own: (options, Optuna's own
# sampler, trials).
SAMPLERS = {
    "tpe": ({"n_startup_trials": 1}, lambda seed, o: optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                                                                 group=True, **o), 2),
    "nsga2": ({"population_size": 2}, lambda seed, o: optuna.samplers.NSGAIISampler(seed=seed, **o), 3),
    "gp": ({"n_startup_trials": 1}, lambda seed, o: optuna.samplers.GPSampler(seed=seed, **o), 2),
}


def replayed_params(make_sampler, config, trials) -> list[dict]:
    """The params Optuna's sampler `make_sampler(trial number)` draws for each trial in turn over the
    study's space, told the recorded values of the trials before it."""
    oracle = optuna.create_study(directions=["maximize", "minimize"])
    drawn = []
    for recorded in trials:
        oracle.sampler = make_sampler(recorded.number)
        trial = oracle.ask()
        sample(trial, config)
        drawn.append(trial.params)
        oracle.tell(trial, recorded.values)
    return drawn


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_each_sampler_draws_what_optunas_own_sampler_draws(tiny_study, workdir, sampler):
    """Oracle: Optuna's sampler of that type and options, seeded per trial and replayed over the same
    space and values, draws exactly the trials' params; a random sampler with the seed does not (so the check can fail)."""
    options, build, n_trials = SAMPLERS[sampler]
    sets = (f"search.sampler={{type: {sampler}, seed: 3, options: {options}}}", "data.train_subset=256")
    study = run(tiny_study, *sets, n_trials=n_trials)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE"] * n_trials
    config = config_of(tiny_study, *sets)
    # a seeded sampler is seeded per trial, trial_seed(3, n) (search/samplers.py)
    assert [t.params for t in trials] == replayed_params(lambda n: build(trial_seed(3, n), options), config, trials)
    random = optuna.samplers.RandomSampler(seed=3)
    assert trials[-1].params != replayed_params(lambda n: random, config, trials)[-1]
    parent = mlflow_client(workdir).get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.data.params["search.sampler.type"] == sampler


def median_pruner_replay(trials, *, n_startup_trials: int, n_warmup_epochs: int, max_epochs: int) -> list[int | None]:
    """For each trial (in order), the first epoch < max_epochs at which an independent MedianPruner,
    fed the trial's -val_loss per epoch in a study rebuilt from the trials before it, says prune."""
    oracle = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_epochs + 1),
    )
    decisions = []
    for t in trials:
        replayed = oracle.ask()
        prune_at = None
        for epoch, val_loss in enumerate(t.user_attrs["monitor_history"], start=1):
            replayed.report(-val_loss, epoch)  # lower val_loss is better; the study maximizes accuracy
            if epoch < max_epochs and replayed.should_prune():
                prune_at = epoch
                break
        decisions.append(prune_at)
        if t.state == optuna.trial.TrialState.PRUNED:
            oracle.tell(replayed, state=optuna.trial.TrialState.PRUNED)
        else:
            oracle.tell(replayed, t.values)
    return decisions


def test_single_objective_with_optuna_median_pruner(tiny_study):
    """Oracle: an independent MedianPruner(n_startup_trials, n_warmup_steps=n_warmup_epochs+1) replaying -val_loss."""
    max_epochs, n_startup, n_warmup = 3, 1, 1
    study = run(
        tiny_study,
        "search.objectives=[accuracy]",
        f"search.pruner={{type: median, n_startup_trials: {n_startup}, n_warmup_epochs: {n_warmup}}}",
        f"train.max_epochs={max_epochs}",
        "train.early_stopping.patience=10",  # only max_epochs or the pruner end a trial
        "data.train_subset=512",
        "search.space={train.lr: {type: float, low: 1.0e-4, high: 0.2, log: true}}",
        n_trials=4,
    )
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    trials = sorted(study.trials, key=lambda t: t.number)
    for t in trials:
        history = t.user_attrs["monitor_history"]
        assert len(history) == t.user_attrs["epochs_trained"] and all(math.isfinite(v) for v in history)
        # val_loss (minimized) against a maximized objective: reported negated, one value per epoch.
        assert t.intermediate_values == {e: pytest.approx(-v) for e, v in enumerate(history, start=1)}
    expected = median_pruner_replay(trials, n_startup_trials=n_startup, n_warmup_epochs=n_warmup,
                                    max_epochs=max_epochs)
    actual = [t.user_attrs["epochs_trained"] if t.state.name == "PRUNED" else None for t in trials]
    assert actual == expected, [(t.number, t.state.name, t.user_attrs["monitor_history"]) for t in trials]
    for t, prune_at in zip(trials, expected):
        if prune_at is None:
            assert t.state.name == "COMPLETE" and t.user_attrs["epochs_trained"] == max_epochs
        else:
            assert t.state.name == "PRUNED" and t.user_attrs["stop_reason"] == "pruned"
            assert n_warmup < prune_at < max_epochs
    states = [t.state.name for t in trials]
    assert "PRUNED" in states and "COMPLETE" in states


def test_trials_as_threads(tiny_study, workdir):
    """Oracle: each trial's two sinks agree (MLflow val_loss/lr/finals == its monitor_history/lr param/values)."""
    epochs = 2
    study = run(tiny_study, "search.n_jobs=2", f"train.max_epochs={epochs}", "train.early_stopping.patience=10",
                "data.train_subset=512", n_trials=4)
    assert len(study.trials) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert len({t.user_attrs["mlflow_run_id"] for t in study.trials}) == 4
    client = mlflow_client(workdir)
    val_loss_histories, per_epoch_names = [], []
    for t in study.trials:
        run_ = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run_.data.tags["ee_search.trial_number"] == str(t.number)
        n = t.user_attrs["epochs_trained"]
        assert n == epochs
        # MLflow's system metrics are stepped per sampling window, not per epoch: not this trial's sinks.
        histories = {name: client.get_metric_history(run_.info.run_id, name) for name in run_.data.metrics
                     if not name.startswith("system/")}
        per_epoch = {name for name, h in histories.items() if any(m.step >= 1 for m in h)}
        assert {"train_loss", "val_loss", "val_accuracy", "lr"} <= per_epoch
        per_epoch_names.append(per_epoch)
        for name in per_epoch:  # exactly one value for each epoch 1..n: no other thread's epochs in here
            assert sorted(m.step for m in histories[name]) == list(range(1, n + 1)), (t.number, name)
        for name in set(histories) - per_epoch:  # the final metrics: one value, at step 0
            assert [m.step for m in histories[name]] == [0], (t.number, name)
        val_loss = [m.value for m in sorted(histories["val_loss"], key=lambda m: m.step)]
        assert val_loss == pytest.approx(t.user_attrs["monitor_history"], rel=1e-6)
        assert [m.value for m in histories["lr"]] == pytest.approx([t.params["train.lr"]] * n, rel=1e-9)
        assert float(run_.data.params["train.lr"]) == pytest.approx(t.params["train.lr"], rel=1e-9)
        assert [histories["accuracy"][0].value, histories["avg_exit_depth"][0].value] == pytest.approx(t.values)
        val_loss_histories.append(tuple(val_loss))
    assert all(p == per_epoch_names[0] for p in per_epoch_names)
    # Every trial trained something different: copying one run's history everywhere would show here.
    assert len(set(val_loss_histories)) == len(val_loss_histories)
    for a, b in itertools.combinations(val_loss_histories, 2):
        assert a != pytest.approx(b, rel=1e-6)


OPTIMIZER_SETS = ("train.lr=0.001", "train.momentum=0.5", "train.alpha=0.9", "train.weight_decay=0.01",
                  "search.space={}", "device=cpu", *SMALL)


@pytest.mark.parametrize("optimizer", ["rmsprop", "adamw"])
def test_other_optimizers(tiny_study, workdir, optimizer):
    """Oracle: train_network at the trial's seed (and sgd at that seed, which must differ). That the
    optimizer steps as torch.optim's own is proved in tests/train/test_optim.py."""
    sets = (f"train.optimizer={optimizer}", *OPTIMIZER_SETS)
    study = run(tiny_study, *sets, n_trials=1)
    t = study.trials[0]
    assert t.state.name == "COMPLETE"
    config = config_of(tiny_study, *sets)
    seed = config.seed + t.number
    # The CLI trial trained exactly what the bare experiment trains at its seed, and not what sgd does.
    trained = checkpoint_state(workdir, t)
    assert_same_weights(trained, cpu_state(train_network(config, device=CPU, seed=seed).model))
    sgd = config_of(tiny_study, *sets, "train.optimizer=sgd")
    assert max_abs_diff(trained, cpu_state(train_network(sgd, device=CPU, seed=seed).model)) > 1e-3


def test_bf16_autocast_path(tiny_study, workdir):
    """Oracle: train_network in fp32 at the trial's seed: the bf16 trial must differ from it, yet stay close."""
    sets = ("train.precision=bf16", "train.max_epochs=2", "train.early_stopping.patience=10", "search.space={}",
            "device=cpu", *SMALL)
    study = run(tiny_study, *sets, n_trials=1)
    t = study.trials[0]
    assert t.state.name == "COMPLETE" and 0.0 <= t.values[0] <= 1.0
    seed = config_of(tiny_study, *sets).seed + t.number
    # fp32 on CPU is reproduced bit for bit (test_other_optimizers holds the CLI to that), so any
    # difference from it is autocast's.
    fp32 = train_network(config_of(tiny_study, *sets, "train.precision=fp32"), device=CPU, seed=seed)
    history = mlflow_client(workdir).get_metric_history(t.user_attrs["mlflow_run_id"], "val_loss")
    logged = [m.value for m in sorted(history, key=lambda m: m.step)]
    reference = [h["val_loss"] for h in fp32.fit.history]
    assert len(logged) == len(reference) == 2
    for got, ref in zip(logged, reference):
        assert got != pytest.approx(ref, rel=1e-6, abs=0)
        assert got == pytest.approx(ref, rel=0.05)
    assert reference[-1] < 0.9 * reference[0]  # it trained: "close" compares two trained models
    assert t.values[0] == pytest.approx(fp32.metrics["accuracy"], abs=0.1)
    # The weights too: apart from fp32's, but by far less than training moved them.
    trained, fp32_weights = checkpoint_state(workdir, t), cpu_state(fp32.model)
    torch.manual_seed(seed)
    config = config_of(tiny_study, *sets)
    initial = cpu_state(build_model(config.model, fp32.data.channels, fp32.data.num_classes,
                                    exit_loss_weights=config.loss_weights))
    assert max_abs_diff(trained, fp32_weights) > 1e-3
    assert l2_distance(trained, fp32_weights) < 0.25 * l2_distance(fp32_weights, initial)
