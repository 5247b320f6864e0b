"""A download that fails leaves `data.root` as it was found (issue 19: `data.root: /etc` with
`download: true`, offline, created `/etc/MNIST/raw/`). Here the network refuses every request, and
data.root is a read-only directory (which root, like /etc, can write to all the same) or one that the
attempt would have had to create: `ee-search run` fails in one line on data.root, and neither
data.root nor the working directory holds anything new."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import TINY_STUDY, cli


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every urllib request (torchvision downloads with urllib) goes through a proxy on a closed port,
    so it is refused at once, whether or not this machine has a network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": closed, "https": closed}))
    monkeypatch.setattr(urllib.request, "_opener", opener)


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _run_mnist_download(workdir: Path, root: Path) -> str:
    study = workdir / "study.yaml"
    study.write_text(TINY_STUDY.replace("dataset: digits", f"dataset: mnist\n  root: {root}\n  download: true"))
    result = cli("run", study, catch_exceptions=True)
    message = result.output.strip()
    assert result.exit_code == 2, message
    assert "\n" not in message and "Traceback" not in message, message
    assert f"{study}: data.root: " in message, message
    return message


def test_a_failed_download_into_a_read_only_root_leaves_it_empty(workdir, offline, tmp_path_factory):
    root = tmp_path_factory.mktemp("read_only")
    root.chmod(0o555)
    try:
        _run_mnist_download(workdir, root)
        assert _tree(root) == []
    finally:
        root.chmod(0o755)
    assert _tree(workdir) == ["study.yaml"]


def test_a_failed_download_removes_the_root_it_had_to_create(workdir, offline, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    _run_mnist_download(workdir, outside / "fresh" / "data")
    assert _tree(outside) == []
    assert _tree(workdir) == ["study.yaml"]


def test_a_root_that_is_a_file_is_refused_before_any_download(workdir, offline, tmp_path_factory):
    root = tmp_path_factory.mktemp("outside") / "a_file"
    root.write_text("not a directory")
    message = _run_mnist_download(workdir, root)
    assert "is not a directory" in message
    assert root.read_text() == "not a directory"
