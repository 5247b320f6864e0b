"""Checkpoint files are read safely: a file that is there but does not read back whole (garbage,
truncated, empty, a flipped byte in a tensor, or holding pickled objects) is a CorruptArtifact naming it, with one line of its
own words and nothing of torch's, which advises `weights_only=False`; a missing file stays an OSError."""

from __future__ import annotations

import pytest
import torch

from ee_search.errors import CorruptArtifact
from ee_search.train import load_checkpoint, write_atomically


class NotPlainData:
    """Pickled by torch.save as an object: weights_only loading refuses it."""


def test_a_file_that_does_not_read_back_is_a_corrupt_artifact_in_one_line(tmp_path):
    good = tmp_path / "good.pt"
    write_atomically({"weights": torch.arange(4096, dtype=torch.float32)}, good)
    assert torch.equal(load_checkpoint(good)["weights"], torch.arange(4096, dtype=torch.float32))
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file was renamed, not left behind
    whole = good.read_bytes()
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 0xFF  # inside the tensor's bytes: torch.load alone would not notice
    torch.save({"object": NotPlainData()}, tmp_path / "pickled.pt")
    broken = {"garbage": b"\x80\x02garbage" * 200, "truncated": whole[: len(whole) // 2], "empty": b"",
              "flipped": bytes(flipped), "pickled": (tmp_path / "pickled.pt").read_bytes()}
    for name, content in broken.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(content)
        with pytest.raises(CorruptArtifact) as caught:
            load_checkpoint(path)
        line = str(caught.value)
        assert line.startswith(f"{path} cannot be read: ") and "\n" not in line, name
        hidden = caught.value.__suppress_context__ or caught.value.__context__ is None  # not even in a traceback
        assert "weights_only" not in line and hidden, name
    assert "fails its checksum" in str(pytest.raises(CorruptArtifact, load_checkpoint, tmp_path / "flipped.pt").value)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_the_error_names_what_the_caller_knows():
    error = CorruptArtifact("/tmp/x/best.pt", "it is truncated").naming("checkpoints/best.pt", trial=4,
                                                                         fix="export another trial")
    assert str(error) == "trial 4: checkpoints/best.pt cannot be read: it is truncated; export another trial"
    assert error.exit_code == 2
