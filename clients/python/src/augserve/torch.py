"""PyTorch integration: an IterableDataset of augmented batches for DataLoader(batch_size=None).

    ds = AugServeIterableDataset("unix:///run/augserve.sock", "imagenet", batch_size=256,
                                 device="cuda")
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for images, targets in DataLoader(ds, batch_size=None):
            ...

Each DDP process reads its own shard: the rank and world size come from torch.distributed when
it is initialised, else from the RANK / WORLD_SIZE environment variables torchrun sets. With
DataLoader workers, worker k of K streams its rank's batches k, k + K, ..., so the DataLoader's
round-robin hands the training loop the same batches, in the same order, as with no workers.

Checkpoints (the torchdata `StatefulDataLoader` convention): `ds.state_dict()` is a small dict
naming the epoch and the job's global position in it; loaded into every rank of a job of any
world size (`ds.load_state_dict(sd)`), it continues the epoch with every sample exactly once
(tail="uneven"). With `num_workers=0` the dataset counts the batches it hands out itself; with
workers the main process cannot see them, so iterate through `AugServeDataLoader`, which counts.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import warnings
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from augserve.batch import Batch
from augserve.client import Client, forked_after_grpc
from augserve.prefetch import Prefetcher
from augserve.spec import PipelineSpec
from augserve.torch_convert import batch_to_torch  # noqa: F401 (part of this module's API)


def distributed_rank() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed, else RANK / WORLD_SIZE, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


STATE_VERSION = 1


def shard_batches(samples: int, batch_size: int, rank: int, world_size: int, tail: str, drop_last: bool) -> int:
    """Batches one rank reads per epoch (or of the `samples` left in it), by the server's
    sharding rules."""
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
        # Where the next iteration starts in `epoch` (global samples), and the progress of the
        # iteration under way: batches handed to the training loop, and whether it finished.
        self._position = 0
        self._iter_position = 0
        self._consumed = 0
        self._finished = False
        self._samples: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration streams (as DistributedSampler.set_epoch). A loaded
        state's position is kept when `epoch` is its epoch."""
        if epoch != self.epoch:
            self._position = 0
        self.epoch = epoch
        self._begin()

    def shard(self) -> tuple[int, int]:
        """This rank's (rank, world_size) in the job. DataLoader workers do not change it:
        they split the rank's batches among themselves."""
        rank, world = distributed_rank()
        if self.rank is not None:
            rank = self.rank
        if self.world_size is not None:
            world = self.world_size
        return rank, world

    def dataset_samples(self) -> int:
        """The dataset's size, asked of the server once."""
        if self._samples is None:
            with Client(self.address, **self.client_options) as c:
                for d in c.datasets():
                    if d.name == self.dataset:
                        self._samples = d.samples
                        break
                else:
                    raise LookupError(f"the server at {self.address} has no dataset {self.dataset!r}")
        return self._samples

    def __len__(self) -> int:
        """Batches this rank reads in the next iteration (the rest of the epoch after a
        loaded state)."""
        rank, world = self.shard()
        left = self.dataset_samples() - self._position
        return shard_batches(left, self.batch_size, rank, world, self.tail, self.drop_last)

    def state_dict(self) -> dict:
        """Where the job is: the epoch and the samples of it the whole job has consumed. The
        same on every rank of a job that stepped in lockstep, so any rank's will do."""
        epoch, position = self.epoch, self._iter_position + self._consumed * self.batch_size * self.shard()[1]
        if self._finished or position >= self.dataset_samples():
            epoch, position = epoch + 1, 0
        return {
            "version": STATE_VERSION,
            "dataset": self.dataset,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "epoch": epoch,
            "position": position,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` (from `state_dict`, of a job of any world size): the next
        iteration streams the rest of its epoch."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"state version {state.get('version')!r}, expected {STATE_VERSION}")
        for key in ("dataset", "seed", "shuffle"):
            if state[key] != getattr(self, key):
                raise ValueError(f"state is for {key}={state[key]!r}, this dataset has {getattr(self, key)!r}")
        self.epoch, self._position = int(state["epoch"]), int(state["position"])
        self._iter_position, self._consumed, self._finished = self._position, 0, False

    def _begin(self) -> None:
        self._iter_position, self._consumed, self._finished = self._position, 0, False

    def _took_one(self) -> None:
        self._consumed += 1

    def _finish(self) -> None:
        self._finished = True
        self._position = 0  # the next iteration starts the epoch afresh

    def __iter__(self):
        rank, world = self.shard()
        info = get_worker_info()
        stride, offset = (info.num_workers, info.id) if info is not None else (1, 0)
        if info is not None and forked_after_grpc():
            warnings.warn(
                "augserve: this DataLoader worker was forked from a process that had made gRPC "
                "calls; gRPC is not fork-safe and the worker's stream may hang. Use "
                "AugServeDataLoader (forkserver workers) or multiprocessing_context='spawn'.",
                RuntimeWarning,
                stacklevel=2,
            )
        client = Client(self.address, **self.client_options)
        stream = client.stream(
            self.dataset,
            self.spec,
            self.batch_size,
            self.seed,
            epochs=1,
            start_epoch=self.epoch,
            start_position=self._position,
            batch_stride=stride,
            batch_offset=offset,
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
        # In a worker the main process counts (AugServeDataLoader); here, this process does.
        counting = info is None
        if counting:
            self._begin()
        try:
            for item in it:
                if counting:
                    self._took_one()
                yield item
            if counting:
                self._finish()
        finally:
            it.close()
            client.close()


class AugServeDataLoader(DataLoader):
    """A DataLoader (batch_size=None) over an `AugServeIterableDataset` that counts, in the
    main process, the batches it hands out, so that `state_dict()` is right with workers too.
    `state_dict` / `load_state_dict` are the dataset's."""

    def __init__(self, dataset: AugServeIterableDataset, num_workers: int = 0, **kwargs):
        kwargs.setdefault("batch_size", None)
        if num_workers > 0 and kwargs.get("multiprocessing_context") is None:
            # gRPC is not fork-safe: a worker forked from a process that has made calls (this
            # one counts, asks the dataset's size, may have streamed before) can hang in its
            # first channel. Workers fork from a clean server process instead, which has
            # imported torch and augserve once, so starting them stays cheap.
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["augserve.torch"])
            kwargs["multiprocessing_context"] = ctx
        super().__init__(dataset, num_workers=num_workers, **kwargs)

    def __iter__(self):
        it = super().__iter__()
        ds = self.dataset
        if self.num_workers == 0:
            yield from it  # the dataset counts in this process
            return
        ds._begin()
        for batch in it:
            ds._took_one()
            yield batch
        ds._finish()

    def state_dict(self) -> dict:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.dataset.load_state_dict(state)
