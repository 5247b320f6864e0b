"""Your own early-exit network (docs/design.md §11): `model.name: "package.module:function"`.

`function(in_channels, num_classes, config) -> nn.Module`, where `config` is the study file's `model`
section as a dict. The module has `stages` and `heads`, two `nn.ModuleList`s of equal length K, and
`forward(x)` returns K logits tensors [B, num_classes]: head k on the output of stages 1..k.

Everything downstream (the multi-exit loss, FLOPs per exit, compacted inference, export) runs the
stages and heads one at a time, never the user's `forward`. So the network is rebuilt as an
`EarlyExitNetwork` over the very same stage and head modules, and `check_user_model` runs the user's
`forward` once on a dummy batch and insists it equals that chain: a forward that does anything else
(a flatten between stage and head, a skip connection across stages) would train and export a network
other than the one the user wrote. Every mistake is a `UserModelError` with one line saying what is
wrong and how to fix it; the config layer adds the file and the field (`model.name`).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ee_search.models.base import EarlyExitNetwork
from ee_search.models.registry import default_loss_weights

_MAX_DETAIL = 300  # characters of a user exception's text quoted in the one-line message
_DUMMY_BATCH = 2


class UserModelError(Exception):
    """A user model that cannot be imported, built or run as the protocol says; `str()` is one line."""


def load_function(spec: str) -> Callable[..., nn.Module]:
    """Import `module:function`, from the working directory or the environment.

    The working directory goes at the *end* of sys.path and stays there (trials, checkpoint rebuilds
    and export import the same module again): a file in it can never shadow an installed package."""
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    importlib.invalidate_caches()  # a module file written moments ago (tests, notebooks) is seen
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise UserModelError(
                f"no module named '{missing}' in the working directory ({cwd}) or the environment: check "
                f"the spelling, run ee-search from the folder that holds {missing.replace('.', '/')}.py, "
                "or pip install the package"
            ) from None
        raise UserModelError(f"importing '{module_name}' failed: {_detail(exc)}: install what it imports") from None
    except Exception as exc:  # anything the module's own top-level code raises
        raise UserModelError(f"importing '{module_name}' raised {_detail(exc)}: fix the module") from None
    function = getattr(module, attr, None)
    if function is None:
        where = getattr(module, "__file__", None) or module_name
        raise UserModelError(f"module '{module_name}' ({where}) has no attribute '{attr}': name a function "
                             "defined there, as module:function")
    if not callable(function):
        raise UserModelError(f"'{spec}' is a {type(function).__name__}, not a function: name the function "
                             "that builds the network")
    return function


def build_user_network(spec: str, in_channels: int, num_classes: int, config: dict,
                       exit_loss_weights: Sequence[float] | None = None) -> EarlyExitNetwork:
    """Call the user's function and rebuild its stages and heads as an `EarlyExitNetwork` (the same
    module objects, so the weights the user initialised are the ones trained)."""
    return _as_network(spec, _call(spec, in_channels, num_classes, config), exit_loss_weights)


_checked: dict[tuple, int] = {}
_checked_lock = threading.Lock()


def check_user_model(spec: str, in_channels: int, num_classes: int, input_size: int, config: dict) -> int:
    """Build the user's network on the CPU, check it against the protocol on a dummy batch of the
    data's shape, and return its number of exits K. Cached per (function, config, shape): every trial
    re-validates its configuration, and the network is built once, not once per trial."""
    key = (spec, json.dumps(config, sort_keys=True, default=str), in_channels, num_classes, input_size)
    with _checked_lock:
        if key in _checked:
            return _checked[key]
    # Building draws initial weights from torch's global RNG: fork it, so that checking a file never
    # changes what a trial seeded later (or running in another thread) draws.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = _call(spec, in_channels, num_classes, config)
        network = _as_network(spec, module, None)
        _check_forward(spec, module, network, in_channels, num_classes, input_size)
    with _checked_lock:
        _checked[key] = network.num_exits
    return network.num_exits


def _call(spec: str, in_channels: int, num_classes: int, config: dict) -> nn.Module:
    function = load_function(spec)
    try:
        module = function(in_channels, num_classes, dict(config))
    except Exception as exc:
        raise UserModelError(f"{spec}(in_channels={in_channels}, num_classes={num_classes}, config) raised "
                             f"{_detail(exc)}: fix the function or the model section it reads") from None
    if not isinstance(module, nn.Module):
        raise UserModelError(f"{spec} returned a {type(module).__name__}, not a torch.nn.Module: return the "
                             "network (an nn.Module with stages and heads)")
    return module


def _as_network(spec: str, module: nn.Module, weights: Sequence[float] | None) -> EarlyExitNetwork:
    fix = "give the module `stages` and `heads`, two nn.ModuleLists of equal length (one entry per exit)"
    for name in ("stages", "heads"):
        value = getattr(module, name, None)
        if not isinstance(value, nn.ModuleList):
            got = "none" if value is None else f"a {type(value).__name__}"
            raise UserModelError(f"{spec} returned a {type(module).__name__} whose `{name}` is {got}, not an "
                                 f"nn.ModuleList: {fix}")
    stages, heads = module.stages, module.heads
    if len(stages) != len(heads):
        raise UserModelError(f"{spec} returned {len(stages)} stages but {len(heads)} heads: {fix}")
    if len(heads) < 2:
        raise UserModelError(f"{spec} returned {len(heads)} exit(s): an early-exit network needs at least 2 "
                             "(side exits plus the final classifier)")
    if weights is not None and len(weights) != len(heads):
        raise UserModelError(f"{spec} has {len(heads)} exits but {len(weights)} exit loss weights were given: "
                             f"give one per exit in model.exit_loss_weights")
    return EarlyExitNetwork(stages, heads, weights or default_loss_weights(len(heads)))


@torch.no_grad()
def _check_forward(spec: str, module: nn.Module, network: EarlyExitNetwork, in_channels: int,
                   num_classes: int, input_size: int) -> None:
    """forward(x) on a dummy batch must return K tensors [B, num_classes] equal to running the stages
    and heads in turn (eval mode, so dropout and batch statistics do not make them differ)."""
    k = network.num_exits
    shape = [_DUMMY_BATCH, in_channels, input_size, input_size]
    where = f"{spec}: forward on a batch of shape {shape} (the data's channels and input size)"
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    module.eval()
    try:
        outputs = module(x)
    except Exception as exc:
        raise UserModelError(f"{where} raised {_detail(exc)}: make the network accept the data's images "
                             "(see data.augment.crop and data.image_size)") from None
    if not isinstance(outputs, (list, tuple)) or len(outputs) != k:
        got = f"{len(outputs)} items" if isinstance(outputs, (list, tuple)) else f"a {type(outputs).__name__}"
        raise UserModelError(f"{where} returned {got}: return a list of {k} logits tensors, one per exit")
    for i, out in enumerate(outputs, start=1):
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (_DUMMY_BATCH, num_classes):
            got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UserModelError(f"{where} gave exit {i} logits of shape {got}: each exit must give "
                                 f"[batch, num_classes] = {[_DUMMY_BATCH, num_classes]}")
    try:
        chained = network(x)
    except Exception as exc:
        raise UserModelError(f"{spec}: running stages[k] then heads[k] in turn raised {_detail(exc)}: "
                             "head k must take the output of stages 1..k") from None
    for i, (mine, theirs) in enumerate(zip(chained, outputs), start=1):
        if not torch.allclose(mine.float(), theirs.float(), rtol=1e-4, atol=1e-5):
            raise UserModelError(
                f"{spec}: exit {i} of forward differs from heads[{i - 1}] applied to the output of stages "
                f"1..{i}: ee-search runs the stages and heads one at a time (training, FLOPs, early-exit "
                "inference), so put everything forward does inside them"
            )


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
