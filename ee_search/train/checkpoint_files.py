"""The one way a checkpoint file (best.pt, last.pt, val_logits.pt) is written and read.

Written atomically, so a reader (a resumed trial, an upload) sees the previous file or the new one,
never half of one; read with `weights_only=True`, so loading a file never runs pickled code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def write_atomically(payload: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a saved file safely: tensors and plain data only, onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)
