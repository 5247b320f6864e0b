"""Early-exit models: a registry of builders (registry.py) over one base class (base.py)."""

from __future__ import annotations

from ee_search.models.registry import MODELS, BuildArgs, builder, default_loss_weights, num_exits

__all__ = ["MODELS", "BuildArgs", "build_model", "default_loss_weights", "num_exits"]


def build_model(model_cfg, in_channels: int, num_classes: int, exit_loss_weights=None):
    """Build the network a `ModelConfig` describes, for a dataset's channels and classes.

    Depth, loss weights and the side-head choice are resolved here, from the registry, so every
    builder receives concrete values and none of them repeats the rules."""
    depth = num_exits(model_cfg.name, model_cfg.depth)
    weights = exit_loss_weights or model_cfg.exit_loss_weights or default_loss_weights(depth)
    args = BuildArgs(in_channels, num_classes, model_cfg.width, depth, tuple(weights), model_cfg.side_head or "conv")
    return builder(model_cfg.name)(args)
