"""What the config layer needs to know about each model before torch is imported.

`ee-search validate` must check list lengths (one loss weight per exit, one threshold per side exit)
without building a network, so each model declares its exit count here; the builders live in their
own modules and are imported only when a trial builds a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module


@dataclass(frozen=True)
class ModelSpec:
    builder: str  # "module:function", imported lazily
    depths: tuple[int, ...]  # allowed values of model.depth = number of stages = number of exits
    default_depth: int


MODELS: dict[str, ModelSpec] = {
    # MyResNet: stem + layer2 + layer3 (3 exits); depth 4 is MyResNet2 (adds layer4).
    "ee_resnet": ModelSpec("ee_search.models.ee_resnet:build_ee_resnet", (3, 4), 3),
    "ee_vgg": ModelSpec("ee_search.models.ee_vgg:build_ee_vgg", (3, 4), 3),
    "branchy_alexnet": ModelSpec("ee_search.models.branchy:build_branchy_alexnet", (3,), 3),
    "branchy_lenet": ModelSpec("ee_search.models.branchy:build_branchy_lenet", (2,), 2),
}


def num_exits(name: str, depth: int | None) -> int:
    spec = MODELS[name]
    return spec.default_depth if depth is None else depth


def builder(name: str):
    module, function = MODELS[name].builder.split(":")
    return getattr(import_module(module), function)
