"""The search space against real Optuna trials: conditional (`when`) and per-item dimensions,
sampling order, and the inverse mapping from a trial's params back to dotted paths."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from ee_search.config import load_study_file
from ee_search.errors import UserInputError
from ee_search.search.space import dimensions, sample, values_from_params

SVHN_STUDY = Path(__file__).resolve().parents[2] / "studies" / "svhn_resnet.yaml"


def _study_file(*overrides):
    return load_study_file(SVHN_STUDY, list(overrides))


def test_when_dimension_is_sampled_only_when_its_condition_holds():
    loaded = _study_file()
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {"with_decay": 0, "without": 0}
    for _ in range(40):
        trial = study.ask()
        values = sample(trial, loaded.config)
        method = values["train.averaging.method"]
        if method in ("ema", "t_adema"):
            assert 0.9 <= values["train.averaging.decay"] <= 0.9999
            assert "train.averaging.decay" in trial.params
            seen["with_decay"] += 1
        else:
            assert "train.averaging.decay" not in values and "train.averaging.decay" not in trial.params
            seen["without"] += 1
        study.tell(trial, [0.5, 0.5])
    assert seen["with_decay"] and seen["without"]


def test_per_item_samples_one_value_per_list_element_and_round_trips():
    loaded = _study_file()
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    values = sample(trial, loaded.config)
    thresholds = values["exits.thresholds"]
    assert len(thresholds) == 2 and all(0.5 <= t <= 0.999 for t in thresholds)
    assert [trial.params["exits.thresholds.0"], trial.params["exits.thresholds.1"]] == thresholds
    config = loaded.with_values(values)
    assert config.exits.thresholds == thresholds
    assert values_from_params(loaded.config, trial.params) == values


def test_controller_is_sampled_before_the_dimension_that_depends_on_it():
    # Written in the "wrong" order on purpose: the decay's condition names a later dimension.
    loaded = _study_file(
        "search.space={train.averaging.decay: {type: float, low: 0.9, high: 0.99, when: {train.averaging.method: [ema]}},"
        " train.averaging.method: {type: categorical, choices: [none, ema]}}"
    )
    order = [d.path for d in dimensions(loaded.config)]
    assert order == ["train.averaging.method", "train.averaging.decay"]


def test_when_on_an_unsearched_field_uses_the_file_value():
    loaded = _study_file(
        "train.averaging.method=ema",
        "search.space={train.averaging.decay: {type: float, low: 0.9, high: 0.99, when: {train.averaging.method: [ema]}}}",
    )
    trial = optuna.create_study().ask()
    assert "train.averaging.decay" in sample(trial, loaded.config)


def test_when_cycle_is_a_user_error():
    with pytest.raises(UserInputError, match="cycle"):
        _study_file(
            "search.space={train.lr: {type: float, low: 0.1, high: 0.2, when: {train.momentum: [0.5]}},"
            " train.momentum: {type: float, low: 0.1, high: 0.9, when: {train.lr: [0.1]}}}"
        )


def test_int_and_categorical_dimensions_reach_the_config_with_their_types():
    loaded = _study_file(
        "search.space={train.early_stopping.patience: {type: int, low: 3, high: 3},"
        " train.batch_size: {type: categorical, choices: [128]}}"
    )
    trial = optuna.create_study().ask()
    config = loaded.with_values(sample(trial, loaded.config))
    assert config.train.early_stopping.patience == 3 and config.train.batch_size == 128
