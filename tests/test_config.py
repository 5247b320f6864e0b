"""Study-file loading: the example of docs/design.md §2 loads; every kind of mistake becomes one UserInputError
that names the file and the field; `--set` overrides parse their value as YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from ee_search.config import load_config, load_study_file, parse_override, split_path
from ee_search.errors import UserInputError

ROOT = Path(__file__).resolve().parents[1]
SVHN_STUDY = ROOT / "studies" / "svhn_resnet.yaml"


def test_design_example_loads_with_raw_text_kept():
    config, raw_text = load_config(SVHN_STUDY)
    assert config.name == "svhn_resnet"
    assert config.model.name == "ee_resnet" and config.model.width == 64
    assert config.directions == ["maximize", "minimize"]
    assert raw_text == SVHN_STUDY.read_text()
    assert set(config.search.space) >= {"train.lr", "train.averaging.decay", "exits.thresholds"}


def test_quickstart_loads():
    config, _ = load_config(ROOT / "studies" / "quickstart.yaml")
    assert config.data.dataset == "synthetic_svhn"
    assert config.search.n_trials >= 8


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        (["train.lrr=1"], "train.lrr", "unknown key"),
        (["train.lr=abc"], "train.lr", "valid number"),
        (["train.lr=-1"], "train.lr", "greater than 0"),
        (["data.dataset=cifar"], "data.dataset", "synthetic_svhn"),
        (["model.name=resnet"], "model.name", "ee_resnet"),
        (["search.sampler.type=cmaes"], "search.sampler.type", "nsga2"),
        (["search.objectives=[accuracy, latency]"], "search.objectives[1]", "avg_exit_depth"),
        (["exits.thresholds=[0.9]"], "exits.thresholds", "give 2 thresholds"),
        (["model.exit_loss_weights=[1, 1]"], "model.exit_loss_weights", "give 3 weights"),
        (["model.depth=5"], "model.depth", "depth 3, 4"),
        (["model.name=branchy_lenet", "exits.thresholds=[0.9]", "model.side_head=conv"], "model.side_head", "remove it"),
        (["search.space.train.lr={type: float, low: 0.1, high: 0.2}", "search.sampler.type=random",
          "search.space.train.foo.bar={type: float, low: 0, high: 1}"], "search.space['train.foo.bar']", "no field 'foo'"),
        (["exits.thresholds=[0.9, 1.5]"], "exits.thresholds", "[0, 1]"),
        (["search.space.train.lr={type: float, low: 1, high: 0.1}"], "search.space['train.lr']", "low (1.0) > high (0.1)"),
        (["search.space.train.lr={type: float, low: 0, high: 0.1, log: true}"], "search.space['train.lr']", "low > 0"),
        (["search.space.train.batch_size={type: categorical, choices: []}"], "search.space['train.batch_size'].choices", "at least one choice"),
        (["search.space.train.foo={type: float, low: 0, high: 1}"], "search.space['train.foo']", "names nothing"),
        (["search.space.train.early_stopping={type: int, low: 1, high: 2}"], "search.space['train.early_stopping']", "group of fields"),
        (["search.space.exits.thresholds={type: float, low: 0.5, high: 0.9}"], "search.space['exits.thresholds']", "per_item"),
        (["search.space.train.lr={type: floaty, low: 1, high: 2}"], "search.space['train.lr']", "float, int, categorical"),
        (["search.space.model.name={type: categorical, choices: [ee_resnet, nope]}"], "search.space['model.name']", "'nope' is not a valid value"),
        (["search.space.train.lr={type: float, low: 0.1, high: 0.2, when: {train.averaging.method: [foo]}}"],
         "search.space['train.lr'].when", "never takes"),
        (["search.pruner.type=median"], "search.pruner.type", "single objective"),
        (["name=has space"], "name", "no spaces"),
        (["train.early_stopping.monitor=val_f1"], "train.early_stopping.monitor", "val_accuracy_exit_<k>"),
        (["train.early_stopping.monitor=val_accuracy_exit_4"], "train.early_stopping.monitor", "val_accuracy_exit_3"),
        (["device=gpu"], "device", "cuda:<index>"),
        (["search.storage=journal:o.journal", "search.retries=1"], "search.retries", "search.retries: 0"),
        (["search.space.seed={type: int, low: 0, high: 9}"], "search.space['seed']", "validation split"),
        (["search.space.data.val_fraction={type: float, low: 0.1, high: 0.2}"], "search.space['data.val_fraction']",
         "cannot be searched"),
        (["train.resume.every_epochs=0"], "train.resume.every_epochs", "greater than 0"),
    ],
)
def test_each_mistake_is_one_line_naming_file_and_field(overrides, field, words):
    with pytest.raises(UserInputError) as info:
        load_study_file(SVHN_STUDY, overrides)
    error = info.value
    assert error.source == str(SVHN_STUDY)
    assert error.field == field
    assert words in error.message
    line = str(error)
    assert "\n" not in line and line.startswith(f"{SVHN_STUDY}: {field}: ")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(UserInputError, match="no such file"):
        load_study_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain: {lr: [1, 2\n")
    with pytest.raises(UserInputError) as info:
        load_study_file(bad)
    assert info.value.field.startswith("line ")
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- a\n- b\n")
    with pytest.raises(UserInputError, match="mapping"):
        load_study_file(not_mapping)


def test_set_overrides_parse_yaml_values_including_flow_mappings():
    loaded = load_study_file(
        SVHN_STUDY,
        [
            "train.max_epochs=3",
            "search.space={}",
            "data.augment={crop: 24, rotation: 0}",
            "exits.thresholds=[0.5, 0.75]",
            "search.storage=sqlite:///other.db",
        ],
    )
    config = loaded.config
    assert config.train.max_epochs == 3
    assert config.search.space == {}
    assert (config.data.augment.crop, config.data.augment.rotation) == (24, 0)
    assert config.exits.thresholds == [0.5, 0.75]
    assert config.search.storage == "sqlite:///other.db"


def test_set_one_search_dimension_by_its_dotted_key():
    loaded = load_study_file(SVHN_STUDY, ["search.space.train.lr={type: float, low: 0.001, high: 0.01}"])
    dim = loaded.config.search.space["train.lr"]
    assert (dim.low, dim.high, dim.log) == (0.001, 0.01, False)


def test_split_path_keeps_mapping_keys_whole():
    assert split_path("train.early_stopping.patience") == ["train", "early_stopping", "patience"]
    assert split_path("search.space.train.lr") == ["search", "space", "train.lr"]
    assert split_path("search.sampler.options.n_startup_trials") == ["search", "sampler", "options", "n_startup_trials"]


def test_parse_override_errors():
    assert parse_override("a.b= [1, 2]") == ("a.b", [1, 2])
    with pytest.raises(UserInputError, match="PATH=VALUE"):
        parse_override("train.lr")
    with pytest.raises(UserInputError, match="--set"):
        parse_override("train.lr=[1, 2")


def test_with_values_writes_sampled_values_into_a_copy():
    loaded = load_study_file(SVHN_STUDY)
    config = loaded.with_values({"train.lr": 0.123, "exits.thresholds": [0.6, 0.7]})
    assert config.train.lr == 0.123 and config.exits.thresholds == [0.6, 0.7]
    assert loaded.config.train.lr == 0.01  # the base is untouched


def test_journal_storage_defaults_to_no_retries_and_augmentation_stays_searchable():
    loaded = load_study_file(SVHN_STUDY, ["search.storage=journal:o.journal",
                                          "search.space.data.augment.rotation={type: float, low: 0, high: 30}"])
    assert loaded.config.search.retries == 0 and "data.augment.rotation" in loaded.config.search.space
    assert load_study_file(SVHN_STUDY).config.search.retries == 2
