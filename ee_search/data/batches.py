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
        # The epoch in progress (its order and the next batch), so a trial interrupted mid-epoch
        # resumes at exactly the batch it stopped before (the trainer files this state in last.pt).
        self._order: torch.Tensor | None = None
        self._next = 0
        self._restored = False  # only a restored epoch is continued; any other __iter__ starts afresh

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self) -> dict:
        """The data-order state: the generator (shuffles and augmentation draws) and, mid-epoch, the
        epoch's order and how many of its batches were handed out."""
        return {"generator": self.generator.get_state(),
                "order": None if self._order is None else self._order.cpu(), "next": self._next}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        order = state.get("order")
        self._order = None if order is None else order.to(self.device)
        self._next = int(state.get("next", 0))
        self._restored = self._order is not None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if not self._restored:  # a new epoch; a restored one goes on where it stopped
            if self.shuffle:
                self._order = torch.randperm(n, device=self.device, generator=self.generator)
            else:
                self._order = torch.arange(n, device=self.device)
            self._next = 0
        self._restored = False
        order = self._order
        stop = len(self) * self.batch_size if self.drop_last else n
        for start in range(self._next * self.batch_size, stop, self.batch_size):
            index = order[start : start + self.batch_size]
            batch = self.transform(self.images, index, self.generator), self.labels[index]
            self._next += 1
            yield batch
        self._order = None
