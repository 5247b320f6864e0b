"""The study file: schema (pydantic models only), loading with `--set` overrides and the search-space
checks, YAML read within size, depth and alias limits (safe_yaml.py), the one-line messages for
mistakes, dotted paths, the storage/tracking URL checks, and the registries of named choices
(datasets.py, objectives.py, search_registry.py)."""

from ee_search.config.dotted import config_value, get_path, parse_override, set_path, split_path, walk_schema
from ee_search.config.load import (
    SEARCHABLE_ROOTS,
    LoadedStudy,
    check_space,
    field_annotation,
    load_config,
    load_study_file,
    sampling_order,
    validate_raw,
)
from ee_search.config.messages import format_loc, to_user_error
from ee_search.config.objectives import DIRECTIONS, OBJECTIVES, ObjectiveName, ObjectiveSpec
from ee_search.config.schema import (
    AugmentConfig,
    AveragingConfig,
    DataConfig,
    EarlyStoppingConfig,
    ExitsConfig,
    ResumeConfig,
    ModelConfig,
    StudyConfig,
    SyntheticConfig,
    TrackingConfig,
    TrainConfig,
)
from ee_search.config.search_schema import (
    CategoricalDimension,
    Dimension,
    FloatDimension,
    HeartbeatConfig,
    IntDimension,
    PrunerConfig,
    SamplerConfig,
    SearchConfig,
)
from ee_search.config.search_registry import OPTUNA_PRUNERS, PRUNERS, SAMPLERS, PrunerSpec, SamplerSpec
from ee_search.config.urls import absolute_sqlite, check_storage_url, check_tracking_uri, redact

__all__ = [
    "DIRECTIONS",
    "OBJECTIVES",
    "OPTUNA_PRUNERS",
    "PRUNERS",
    "SAMPLERS",
    "SEARCHABLE_ROOTS",
    "AugmentConfig",
    "AveragingConfig",
    "CategoricalDimension",
    "DataConfig",
    "Dimension",
    "EarlyStoppingConfig",
    "ExitsConfig",
    "FloatDimension",
    "HeartbeatConfig",
    "ResumeConfig",
    "IntDimension",
    "LoadedStudy",
    "ModelConfig",
    "ObjectiveName",
    "ObjectiveSpec",
    "PrunerConfig",
    "PrunerSpec",
    "SamplerConfig",
    "SamplerSpec",
    "SearchConfig",
    "StudyConfig",
    "SyntheticConfig",
    "TrackingConfig",
    "TrainConfig",
    "absolute_sqlite",
    "check_space",
    "check_storage_url",
    "check_tracking_uri",
    "config_value",
    "field_annotation",
    "format_loc",
    "get_path",
    "load_config",
    "load_study_file",
    "parse_override",
    "redact",
    "sampling_order",
    "set_path",
    "split_path",
    "to_user_error",
    "validate_raw",
    "walk_schema",
]
