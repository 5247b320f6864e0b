"""Early-exit models: a registry of builders (registry.py) over one base class (base.py), and the
user's own networks named `package.module:function` (user.py)."""

from __future__ import annotations

from ee_search.models.registry import MODELS, BuildArgs, builder, default_loss_weights, is_user_model, num_exits

__all__ = ["MODELS", "BuildArgs", "build_model", "default_loss_weights", "is_user_model", "num_exits"]


def build_model(model_cfg, in_channels: int, num_classes: int, exit_loss_weights=None):
    """Build the network a `ModelConfig` describes, for a dataset's channels and classes.

    Depth, loss weights and the side-head choice are resolved here, from the registry, so every
    builder receives concrete values and none of them repeats the rules. A user's function gets the
    whole model section as a dict; its number of exits is whatever it builds (checked at load time)."""
    weights = exit_loss_weights or model_cfg.exit_loss_weights
    if is_user_model(model_cfg.name):
        from ee_search.models.user import build_user_network  # imports torch: only when a network is built

        return build_user_network(model_cfg.name, in_channels, num_classes, model_cfg.model_dump(mode="json"),
                                  weights)
    depth = num_exits(model_cfg.name, model_cfg.depth)
    weights = weights or default_loss_weights(depth)
    args = BuildArgs(in_channels, num_classes, model_cfg.width, depth, tuple(weights), model_cfg.side_head or "conv")
    return builder(model_cfg.name)(args)
