"""PyTorch integration: an IterableDataset of augmented batches for DataLoader(batch_size=None).

    ds = AugServeIterableDataset("unix:///run/augserve.sock", "imagenet", batch_size=256,
                                 device="cuda")
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for images, targets in DataLoader(ds, batch_size=None):
            ...

Each DDP process reads its own shard: the rank and world size come from torch.distributed when
it is initialised, else from the RANK / WORLD_SIZE environment variables torchrun sets. With
DataLoader workers, each worker further splits its rank's shard.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from augserve.batch import Batch
from augserve.client import Client
from augserve.prefetch import Prefetcher
from augserve.spec import PipelineSpec


def _images_tensor(arr: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():
        # The array views the immutable received message; torch has no read-only tensors. The
        # message belongs to this batch alone, so in-place ops on it harm nobody.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def batch_to_torch(batch: Batch, device: Any = None, non_blocking: bool = True):
    """(images, targets) of `batch` as tensors; see `Batch.to_torch`."""
    if batch.slot is not None and not isinstance(batch.images, np.ndarray):
        # CUDA IPC: already a device array; DLPack hands it to torch without a copy.
        images = torch.from_dlpack(batch.images)
    elif batch.slot is not None and (device is None or torch.device(device).type == "cpu"):
        # A shared-memory slot is refilled once released: CPU tensors get their own copy.
        images = torch.from_numpy(np.array(batch.images))
    else:
        images = _images_tensor(batch.images)
    if batch.soft_targets is not None:
        targets: Any = torch.from_numpy(np.array(batch.soft_targets, dtype=np.float32))
    else:
        targets = (
            torch.from_numpy(np.array(batch.labels_a, dtype=np.int64)),
            torch.from_numpy(np.array(batch.labels_b, dtype=np.int64)),
            torch.from_numpy(np.array(batch.lam, dtype=np.float32)),
        )
    if device is None:
        return images, targets
    dev = torch.device(device)
    if dev.type == "cuda":
        # Pinned staging makes the copy asynchronous; torch's caching host allocator keeps the
        # pinned block alive until the copy has finished.
        def move(t: torch.Tensor) -> torch.Tensor:
            pinned = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            pinned.copy_(t)
            return pinned.to(dev, non_blocking=non_blocking)
    else:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(dev)
    images = move(images)
    targets = move(targets) if isinstance(targets, torch.Tensor) else tuple(move(t) for t in targets)
    return images, targets


def distributed_rank() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed, else RANK / WORLD_SIZE, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def shard_batches(samples: int, batch_size: int, rank: int, world_size: int, tail: str, drop_last: bool) -> int:
    """Batches one rank reads per epoch, by the server's sharding rules."""
    if tail == "pad":
        count = math.ceil(samples / world_size)
    elif tail == "drop":
        count = samples // world_size
    else:
        count = samples // world_size + (1 if rank < samples % world_size else 0)
    return count // batch_size if drop_last else math.ceil(count / batch_size)


class AugServeIterableDataset(IterableDataset):
    """Batches from an augserve server as (images, targets) tensors; use with
    `DataLoader(ds, batch_size=None)`. Each iteration streams one epoch (`set_epoch` picks which),
    receiving `prefetch` batches ahead in a background thread (and moving them to `device` there),
    so receiving overlaps the training step.

    Set `yield_batches=True` to get `augserve.Batch` objects instead (labels, stats, errors);
    with `transport="shm"` call `batch.release()` once done with each of them.
    """

    def __init__(
        self,
        address: str,
        dataset: str,
        spec: PipelineSpec | None = None,
        batch_size: int = 256,
        seed: int = 0,
        *,
        device: Any = None,
        prefetch: int = 2,
        rank: int | None = None,
        world_size: int | None = None,
        tail: str = "pad",
        drop_last: bool = False,
        shuffle: bool = True,
        yield_batches: bool = False,
        client_options: dict | None = None,
        transport: str = "inline",
    ):
        super().__init__()
        self.address = address
        self.dataset = dataset
        self.spec = spec or PipelineSpec()
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.prefetch = prefetch
        self.rank = rank
        self.world_size = world_size
        self.tail = tail
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.yield_batches = yield_batches
        self.client_options = client_options or {}
        self.transport = transport
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration streams (as DistributedSampler.set_epoch)."""
        self.epoch = epoch

    def shard(self) -> tuple[int, int]:
        """This reader's (rank, world_size), DataLoader workers included."""
        rank, world = distributed_rank()
        if self.rank is not None:
            rank = self.rank
        if self.world_size is not None:
            world = self.world_size
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            # Shards are strided (rank r reads positions r, r + W, ...), so worker k of K reading
            # rank r + W*k of W*K reads exactly its share of rank r's shard.
            rank, world = rank + world * info.id, world * info.num_workers
        return rank, world

    def __len__(self) -> int:
        rank, world = self.shard()
        with Client(self.address, **self.client_options) as c:
            for d in c.datasets():
                if d.name == self.dataset:
                    return shard_batches(d.samples, self.batch_size, rank, world, self.tail, self.drop_last)
        raise LookupError(f"the server at {self.address} has no dataset {self.dataset!r}")

    def __iter__(self):
        rank, world = self.shard()
        client = Client(self.address, **self.client_options)
        stream = client.stream(
            self.dataset,
            self.spec,
            self.batch_size,
            self.seed,
            epochs=1,
            start_epoch=self.epoch,
            rank=rank,
            world_size=world,
            tail=self.tail,
            drop_last=self.drop_last,
            shuffle=self.shuffle,
            transport=self.transport,
            # The prefetch thread runs ahead: each batch is released once converted (below),
            # or by the caller (yield_batches).
            auto_release=False,
        )

        def to_torch(b: Batch):
            out = b.to_torch(self.device)
            if self.device is not None and torch.device(self.device).type == "cuda":
                torch.cuda.current_stream().synchronize()  # the copy out of the slot is done
            b.release()
            return out

        transform = None if self.yield_batches else to_torch
        it = Prefetcher(stream, self.prefetch, transform)
        try:
            yield from it
        finally:
            it.close()
            client.close()
