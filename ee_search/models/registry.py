"""What the rest of the package needs to know about each model before torch is imported.

`ee-search validate` must check list lengths (one loss weight per exit, one threshold per side exit)
and options without building a network, so each model declares here, once, its exit counts, its
default depth and whether it takes `model.side_head`; the builders live in their own modules and are
imported only when a trial builds a model. The default loss weights are declared here too, so the
schema (no torch) and the network (torch) read the same rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import import_module


@dataclass(frozen=True)
class BuildArgs:
    """Everything a builder gets, resolved by `models.build_model` (the one builder interface)."""

    in_channels: int
    num_classes: int
    width: int
    depth: int  # = number of exits, already checked against the family's `depths`
    exit_loss_weights: tuple[float, ...]
    side_head: str  # "conv" | "linear"; ignored by families that define their own side heads


@dataclass(frozen=True)
class ModelSpec:
    builder: str  # "module:function", imported lazily
    depths: tuple[int, ...]  # allowed values of model.depth = number of stages = number of exits
    default_depth: int
    side_heads: bool = True  # False: the family defines its own side heads (BranchyNet's)


MODELS: dict[str, ModelSpec] = {
    # MyResNet: stem + layer2 + layer3 (3 exits); depth 4 is MyResNet2 (adds layer4).
    "ee_resnet": ModelSpec("ee_search.models.ee_resnet:build_ee_resnet", (3, 4), 3),
    "ee_vgg": ModelSpec("ee_search.models.ee_vgg:build_ee_vgg", (3, 4), 3),
    "branchy_alexnet": ModelSpec("ee_search.models.branchy:build_branchy_alexnet", (3,), 3, side_heads=False),
    "branchy_lenet": ModelSpec("ee_search.models.branchy:build_branchy_lenet", (2,), 2, side_heads=False),
}


# A user's own network (models/user.py): "package.module:function". Its exit count is not declared:
# the config layer builds it once to learn it.
USER_MODEL_PATTERN = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$"


def is_user_model(name: str) -> bool:
    """`package.module:function` (the built-in names have no colon)."""
    return ":" in name


def valid_user_model_name(name: str) -> bool:
    return re.match(USER_MODEL_PATTERN, name) is not None


def num_exits(name: str, depth: int | None) -> int:
    """The number of exits of model `name` at `depth` (None = the family's default); ValueError names
    the allowed depths when `depth` is not one of them."""
    spec = MODELS[name]
    if depth is None:
        return spec.default_depth
    if depth not in spec.depths:
        allowed = ", ".join(map(str, spec.depths))
        raise ValueError(f"{name} supports depth {allowed}, got {depth}")
    return depth


def default_loss_weights(num_exits: int) -> list[float]:
    """The seed's weighting: 0.3 for each side exit, 1.0 for the final classifier."""
    return [0.3] * (num_exits - 1) + [1.0]


def builder(name: str):
    module, function = MODELS[name].builder.split(":")
    return getattr(import_module(module), function)
