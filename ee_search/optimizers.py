"""The optimizer registry: the names `train.optimizer` accepts, the torch class each one is, and
which of the study file's train.* settings it takes besides lr and weight_decay.

It sits below both the study file's schema (whose choices are this table's keys) and the trainer
(`train/optim.py` builds from it), because the trainer may not import the config layer; it holds
names only, so the schema still loads without torch. Adding an optimizer is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OptimizerSpec:
    torch_class: str  # "module:Class", imported when a trial builds its optimizer
    settings: tuple[str, ...] = ()  # train.* fields passed as keyword arguments of the same name


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec("torch.optim:SGD", ("momentum",)),
    "rmsprop": OptimizerSpec("torch.optim:RMSprop", ("alpha", "momentum")),
    "adamw": OptimizerSpec("torch.optim:AdamW"),
}
