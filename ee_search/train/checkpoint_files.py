"""The one way a checkpoint file (best.pt, last.pt, val_logits.pt) is written and read.

Written atomically and durably (a temporary file, flushed to disk, then renamed over the old one,
and the rename itself flushed), so a reader (a resumed trial, an upload) sees the previous file or
the new one, never half of one, even after a power cut. Read with `weights_only=True`, so loading a
file never runs pickled code, and every part checked against its checksum; a file that does not
read back whole is a `CorruptArtifact`.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from ee_search.errors import CorruptArtifact

# Why a load failed, in words: torch's own message is never shown (it suggests weights_only=False).
UNREADABLE = "it is truncated, overwritten or not a torch file"


def write_atomically(payload: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as file:
        torch.save(payload, file)
        file.flush()
        os.fsync(file.fileno())  # the bytes are on disk before the name points at them
    os.replace(tmp, path)
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); where a directory cannot be opened for it, the rename stands."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a saved file safely: tensors and plain data only, onto the CPU. A file that is there but
    does not read back whole (truncated, garbage, a flipped byte, pickled objects) raises
    `CorruptArtifact` naming it; a file that cannot be opened keeps its OSError (torch's reader
    raises OSError for a torn file too, hence the file is opened here first)."""
    with open(path, "rb") as file:
        try:
            # torch.load does not check the CRC-32 it writes for each record: a flipped byte in a
            # tensor would load as a wrong weight. zipfile checks them all (one more read).
            damaged = zipfile.ZipFile(file).testzip()
            if damaged is None:
                file.seek(0)
                return torch.load(file, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - BadZipFile, RuntimeError, UnpicklingError, OSError, ... for a bad file
            raise CorruptArtifact(str(path), UNREADABLE) from None
    raise CorruptArtifact(str(path), f"its part {damaged.split('/', 1)[-1]!r} fails its checksum")
