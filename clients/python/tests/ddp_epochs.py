"""Run by torchrun from test_torch.py: each rank reads its shard of the demo dataset through
AugServeIterableDataset and a DataLoader with worker processes, for two epochs, as a DDP job
would; rank 0 writes every rank's sample ids per epoch as JSON.

    torchrun --standalone --nproc_per_node 2 ddp_epochs.py ADDR OUT.json WORKERS
"""

from __future__ import annotations

import json
import sys

import torch.distributed as dist
from torch.utils.data import DataLoader

import augserve
from augserve.torch import AugServeIterableDataset


def main(addr: str, out: str, workers: int) -> None:
    dist.init_process_group("gloo")
    spec = augserve.PipelineSpec(width=16, height=16, dtype="uint8")
    # rank and world size: from torch.distributed, as a trainer leaves them.
    ds = AugServeIterableDataset(addr, "demo", spec, batch_size=16, seed=7, yield_batches=True)
    epochs = {}
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=None, num_workers=workers)
        ids = [int(i) for b in loader for i in b.sample_ids]
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, {"rank": dist.get_rank(), "ids": ids})
        epochs[epoch] = gathered
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(epochs, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
