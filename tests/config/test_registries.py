"""Each named choice of the study file comes from one registry: the schema accepts exactly the
registry's keys and names them, in the registry's order, in the same one-line error as before; every
entry points at something that exists and builds what it declares."""

from __future__ import annotations

from importlib import import_module

import optuna
import pytest
import torch

from ee_search.config import (
    DIRECTIONS,
    OBJECTIVES,
    OPTUNA_PRUNERS,
    PRUNERS,
    SAMPLERS,
    PrunerConfig,
    SamplerConfig,
    load_study_file,
)
from ee_search.config.datasets import DATASETS
from ee_search.errors import UserInputError
from ee_search.averaging_methods import AVERAGING_METHODS
from ee_search.optimizers import OPTIMIZERS
from ee_search.search.pruners import build_optuna_pruner
from ee_search.search.samplers import build_sampler, trial_seed
from tests.conftest import write_study


def _resolve(target: str):
    module, name = target.split(":")
    return getattr(import_module(module), name)


def _pydantic_choices(keys) -> str:
    """pydantic's literal_error wording: 'a', 'b' or 'c'."""
    quoted = [repr(k) for k in keys]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


@pytest.mark.parametrize(
    ("field", "yaml", "registry"),
    [
        ("data.dataset", "data: {dataset: imagenet}", DATASETS),
        ("search.sampler.type", "search: {sampler: {type: imagenet}}", SAMPLERS),
        ("search.pruner.type", "search: {pruner: {type: imagenet}}", PRUNERS),
        ("train.optimizer", "train: {optimizer: imagenet}", OPTIMIZERS),
        ("train.averaging.method", "train: {averaging: {method: imagenet}}", AVERAGING_METHODS),
        ("search.objectives[0]", "search: {objectives: [imagenet]}", OBJECTIVES),
    ],
)
def test_a_wrong_choice_is_one_line_naming_the_registry_keys(workdir, field, yaml, registry):
    study = write_study(workdir, f"name: s\n{yaml}\n")
    with pytest.raises(UserInputError) as info:
        load_study_file(study)
    assert str(info.value) == f"{study}: {field}: Input should be {_pydantic_choices(registry)} (got 'imagenet')"


def test_every_dataset_loader_exists():
    for name, spec in DATASETS.items():
        assert callable(_resolve(spec.loader)), name


def test_every_optimizer_is_a_torch_optimizer_taking_its_declared_settings():
    for name, spec in OPTIMIZERS.items():
        cls = _resolve(spec.torch_class)
        assert issubclass(cls, torch.optim.Optimizer), name
        opt = cls([torch.nn.Parameter(torch.zeros(1))], lr=0.1, weight_decay=0.0,
                  **{setting: 0.5 for setting in spec.settings})
        assert all(opt.defaults[s] == 0.5 for s in spec.settings)


@pytest.mark.parametrize("name", [m for m in AVERAGING_METHODS if m != "none"])
def test_each_averaging_method_updates_as_swa_utils_own_function_does(name):
    """Oracle: AveragedModel driven by the update function the method stands for, by hand."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, get_swa_multi_avg_fn

    from ee_search.train.averaging import averaged_model, get_t_adema_multi_avg_fn

    oracle_fn = {"ema": get_ema_multi_avg_fn(0.9), "swa": get_swa_multi_avg_fn(),
                 "t_adema": get_t_adema_multi_avg_fn(0.9)}[name]
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ours, oracle = averaged_model(model, name, 0.9), AveragedModel(model, multi_avg_fn=oracle_fn,
                                                                   use_buffers=name != "swa")
    assert ours.use_buffers == oracle.use_buffers
    for step in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.full_like(p, 0.5 * (step + 1)))
        ours.update_parameters(model)
        oracle.update_parameters(model)
    for a, b in zip(ours.parameters(), oracle.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(ours.parameters(), model.parameters()))  # it averaged


def test_ema_with_warmup_off_is_swa_utils_own_ema():
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    from ee_search.train.averaging import averaged_model

    model = torch.nn.Linear(3, 2)
    ours = averaged_model(model, "ema", 0.9, warmup=0)
    oracle = get_ema_multi_avg_fn(0.9)
    assert ours.multi_avg_fn.__code__ is oracle.__code__  # swa_utils' function itself, not a copy


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_each_sampler_is_its_declared_class_with_the_seed_and_our_defaults(name):
    """Unseeded: the declared class itself. Seeded: trial n draws what the declared class, seeded with
    `trial_seed(seed, n)`, draws (search/samplers.py)."""
    spec = SAMPLERS[name]
    declared = _resolve(spec.sampler)
    assert type(build_sampler(SamplerConfig(type=name))) is declared
    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    ours = optuna.create_study(sampler=build_sampler(SamplerConfig(type=name, seed=3)))
    oracle = optuna.create_study(sampler=declared(seed=trial_seed(3, 0), **spec.defaults))
    assert ours.ask(space).params == oracle.ask(space).params  # the seed reached the sampler


def test_tpe_models_the_joint_space_unless_the_options_say_otherwise():
    assert build_sampler(SamplerConfig(type="tpe"))._multivariate is True
    assert build_sampler(SamplerConfig(type="tpe"))._group is True
    assert build_sampler(SamplerConfig(type="tpe", options={"group": False}))._group is False


@pytest.mark.parametrize("name", list(PRUNERS))
def test_each_pruner_builds_and_only_optunas_own_need_one_objective(workdir, name):
    options = {"upper": 1.0} if name == "threshold" else {}
    pruner = build_optuna_pruner(PrunerConfig(type=name, options=options), max_epochs=10)
    assert isinstance(pruner, optuna.pruners.BasePruner)
    assert isinstance(pruner, optuna.pruners.NopPruner) == (name not in OPTUNA_PRUNERS)
    study = write_study(workdir, f"name: s\nsearch: {{pruner: {{type: {name}, options: {options}}}}}\n")
    if name in OPTUNA_PRUNERS:
        with pytest.raises(UserInputError, match="needs a single objective"):
            load_study_file(study)
    else:
        assert load_study_file(study).config.search.pruner.type == name


def test_objectives_declare_a_direction_and_a_meaning_and_studies_read_them(workdir):
    assert set(DIRECTIONS.values()) <= {"maximize", "minimize"}
    assert all(spec.meaning and "\n" not in spec.meaning for spec in OBJECTIVES.values())
    names = list(OBJECTIVES)
    study = write_study(workdir, f"name: s\nsearch: {{objectives: [{', '.join(names)}]}}\n")
    assert load_study_file(study).config.directions == [OBJECTIVES[n].direction for n in names]
