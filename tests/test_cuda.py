"""The paths that only run on a GPU: bf16 autocast with channels_last, trials on their own CUDA streams
sharing one device-resident dataset, and torch.compile. Marked `cuda` and skipped where there is no
CUDA device; `benchmarks/gpu.sh` runs them first on a GPU machine (`pytest -m cuda`).

Each is checked against an oracle computed on the same device: the CPU cannot be one, since CUDA's
kernels reorder sums."""

from __future__ import annotations

import threading

import pytest
import torch

from tests.conftest import tiny_config

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda")
SMALL = {"train.max_epochs": 2,
         "train.early_stopping": {"monitor": "val_loss", "patience": 10, "tol": 0.0}}


def deterministic(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


def trained(**dotted):
    from ee_search.fit import train_network

    return train_network(tiny_config(**SMALL, **dotted), device=CUDA, seed=11)


def test_bf16_channels_last_trains_close_to_fp32_on_the_same_device(workdir, monkeypatch):
    deterministic(monkeypatch)
    fp32 = trained(**{"train.precision": "fp32"})
    bf16 = trained(**{"train.precision": "bf16"})
    ref = [h["val_loss"] for h in fp32.fit.history]
    got = [h["val_loss"] for h in bf16.fit.history]
    assert len(got) == len(ref) == 2 and ref[-1] < ref[0]
    assert got == pytest.approx(ref, rel=0.05) and got != pytest.approx(ref, rel=1e-7, abs=0)
    assert next(bf16.model.parameters()).is_cuda
    # The kept logits are what the kept model computes on the validation batches, in bf16 autocast.
    x, _ = next(iter(bf16.data.val))
    with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16):
        direct = torch.stack([o.float() for o in bf16.model(x)])
    first = bf16.val_logits.logits[:, : len(x)].float()
    assert torch.allclose(direct.to(first.device), first, atol=5e-2)


def test_trials_on_their_own_streams_train_what_they_train_one_at_a_time(workdir, monkeypatch):
    """Two trials in threads (each on its CUDA stream, one device-resident dataset) against the same two
    run one after the other: a tensor read on a stream before its producer finished would show here."""
    deterministic(monkeypatch)
    lrs = (0.02, 0.08)
    alone = [trained(**{"train.lr": lr, "train.precision": "fp32"}).fit.history for lr in lrs]
    together: dict[float, list] = {}

    def worker(lr: float) -> None:
        together[lr] = trained(**{"train.lr": lr, "train.precision": "fp32"}).fit.history

    threads = [threading.Thread(target=worker, args=(lr,)) for lr in lrs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for lr, history in zip(lrs, alone):
        assert [h["val_loss"] for h in together[lr]] == pytest.approx([h["val_loss"] for h in history], rel=1e-5)


def test_compiled_model_trains_as_the_eager_one(workdir, monkeypatch):
    deterministic(monkeypatch)
    eager = trained(**{"train.precision": "fp32"})
    compiled = trained(**{"train.precision": "fp32", "train.compile": True})
    assert [h["val_loss"] for h in compiled.fit.history] == pytest.approx(
        [h["val_loss"] for h in eager.fit.history], rel=1e-3)
