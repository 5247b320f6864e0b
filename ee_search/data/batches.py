"""Batches from a dataset held whole on the training device: no DataLoader, no worker processes,
no per-sample Python. Shuffling is one `randperm` per epoch and each batch is one gather (see
augment.py), so the host only launches kernels.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ee_search.data.augment import BatchTransform


class DeviceBatches:
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        transform: BatchTransform,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, H, W, C] but got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive but got {batch_size}")
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.transform = transform
        self.shuffle = shuffle
        # A last batch of one sample breaks BatchNorm in training; dropping it also keeps every
        # batch the same shape (what torch.compile and cudnn autotuning like best).
        self.drop_last = drop_last and len(labels) >= batch_size
        self.generator = torch.Generator(device=images.device)
        self.generator.manual_seed(seed)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, device=self.device, generator=self.generator)
        else:
            order = torch.arange(n, device=self.device)
        stop = len(self) * self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.transform(self.images, index, self.generator), self.labels[index]
