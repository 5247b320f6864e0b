"""The weight-averaging registry: the names `train.averaging.method` accepts, and how each averages.

Like the optimizer registry it sits below both the study file's schema (whose choices are this
table's keys) and the trainer (`train/averaging.py` builds from it), and holds names only, so the
schema loads without torch. Adding a method is one entry here (and its update function, if
torch.optim.swa_utils has none).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AveragingSpec:
    multi_avg_fn: str | None  # "module:factory" of AveragedModel's multi_avg_fn; None: no averaging
    takes_decay: bool = False  # the factory takes train.averaging.decay
    takes_warmup: bool = False  # ... and then train.averaging.warmup
    # BN buffers averaged with the weights; False recomputes them instead (swa_utils.update_bn), because
    # the BN statistics of an average of weights are not the average of BN statistics.
    use_buffers: bool = True


AVERAGING_METHODS: dict[str, AveragingSpec] = {
    "none": AveragingSpec(None),
    "ema": AveragingSpec("ee_search.train.averaging:get_ema_warmup_multi_avg_fn", takes_decay=True, takes_warmup=True),
    "swa": AveragingSpec("torch.optim.swa_utils:get_swa_multi_avg_fn", use_buffers=False),
    "t_adema": AveragingSpec("ee_search.train.averaging:get_t_adema_multi_avg_fn", takes_decay=True),
}
