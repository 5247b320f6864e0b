"""Early-exit models: a registry of builders (registry.py) over one base class (base.py)."""

from __future__ import annotations

from ee_search.models.registry import MODELS, builder, num_exits

__all__ = ["MODELS", "build_model", "num_exits"]


def build_model(model_cfg, in_channels: int, num_classes: int, exit_loss_weights=None):
    """Build the network a `ModelConfig` describes, for a dataset's channels and classes."""
    build = builder(model_cfg.name)
    return build(
        in_channels,
        num_classes,
        width=model_cfg.width,
        depth=model_cfg.depth,
        exit_loss_weights=exit_loss_weights or model_cfg.exit_loss_weights,
        side_head_kind=model_cfg.side_head,
    )
