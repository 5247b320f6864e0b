"""A user's model at load time: import and build it once to learn its exits (docs/design.md §11).

The checks themselves live with the models (`models/user.py`); here they are run on the data's real
shape (channels, input size after `data.augment.crop`, number of classes) and their failures become
errors on the field `model.name`, so the CLI prints file, field and fix before anything is created.
"""

from __future__ import annotations

from ee_search.config.datasets import DATASETS, image_size, num_classes
from ee_search.errors import FieldError


def user_model_exits(model_cfg, data_cfg) -> int:
    """K, the number of exits of the network `model_cfg.name` names, for the data `data_cfg` describes."""
    from ee_search.models.user import UserModelError, check_user_model  # torch: only for a user's model

    channels = DATASETS[data_cfg.dataset].channels
    size = data_cfg.augment.crop or image_size(data_cfg)  # what the network sees: the crop, if any
    classes = num_classes(data_cfg)
    try:
        return check_user_model(model_cfg.name, channels, classes, size, model_cfg.model_dump(mode="json"))
    except UserModelError as exc:
        raise FieldError("model.name", str(exc)) from None
