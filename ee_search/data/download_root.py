"""`data.root` for a download (`data.download: true`): checked to be a directory that can be written,
or created, before torchvision tries; and left as it was found when the download fails.

torchvision makes its folders (`root/MNIST/raw/`, `root/` itself for SVHN) before the first request,
and leaves them behind when the request fails, offline for instance: a failed run would create
`/etc/MNIST/raw/` from `data.root: /etc`. The permission check cannot stop that for root, to whom
every directory is writable, so the directories the failed attempt made are removed as well. Only
empty ones: a file in them belongs to a download that got somewhere (another worker's, or a partial
one that torchvision's md5 check replaces next time), and removing files is not this module's call.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ee_search.errors import UserInputError


@contextmanager
def download_root(root: str) -> Iterator[None]:
    """Check `root` can take a download, run the body, and if the body raises, remove the empty
    directories it left in `root` (and `root` and its parents, when they did not exist before)."""
    path = Path(os.path.expanduser(root)).absolute()  # as torchvision reads it
    created = _topmost_missing(path)
    _check_writable(root, path, created)
    before = None if created is not None else set(os.listdir(path))
    try:
        yield
    except BaseException:
        if created is not None:
            _remove_empty_tree(created)
        else:
            for name in set(os.listdir(path)) - before:
                _remove_empty_tree(path / name)
        raise


def _topmost_missing(path: Path) -> Path | None:
    """The outermost of `path` and its parents that does not exist: what creating `path` creates."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            return missing
        missing = candidate
    return missing


def _check_writable(root: str, path: Path, created: Path | None) -> None:
    existing = path if created is None else created.parent
    if not existing.is_dir():
        raise UserInputError(root, "data.root", f"{existing} is not a directory: point data.root at a directory")
    if not os.access(existing, os.R_OK | os.W_OK | os.X_OK):
        what = f"create {path} in {existing}" if created is not None else f"write to {path}"
        raise UserInputError(root, "data.root", f"cannot {what} (permission denied), so the download has nowhere to "
                             "go: choose a data.root you can write to, or put the files there yourself and set "
                             "data.download: false")


def _remove_empty_tree(top: Path) -> None:
    """Remove `top` and the directories under it, deepest first, where they are empty."""
    if not top.is_dir() or top.is_symlink():
        return
    for directory, _, _ in os.walk(top, topdown=False):
        try:
            os.rmdir(directory)
        except OSError:  # not empty: it holds a file someone wrote, which stays
            pass
