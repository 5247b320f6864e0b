"""Early-exit models: a registry of builders (registry.py) over one base class (base.py)."""

from __future__ import annotations

from ee_search.models.registry import MODELS, builder, default_loss_weights, num_exits

__all__ = ["MODELS", "build_model", "default_loss_weights", "num_exits"]


def build_model(model_cfg, in_channels: int, num_classes: int, exit_loss_weights=None):
    """Build the network a `ModelConfig` describes, for a dataset's channels and classes.

    Depth, loss weights and the side-head choice are resolved here, from the registry, so every
    builder receives concrete values and none of them repeats the rules."""
    spec = MODELS[model_cfg.name]
    depth = num_exits(model_cfg.name, model_cfg.depth)
    weights = exit_loss_weights or model_cfg.exit_loss_weights or default_loss_weights(depth)
    options = {"side_head_kind": model_cfg.side_head or "conv"} if spec.side_heads else {}
    return builder(model_cfg.name)(in_channels, num_classes, width=model_cfg.width, depth=depth,
                                   exit_loss_weights=weights, **options)
