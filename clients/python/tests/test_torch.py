"""PyTorch integration. Skipped, with the reason shown, where torch is not installed (CI)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed: PyTorch integration tests skipped")

import augserve  # noqa: E402
from augserve import Mix, PipelineSpec  # noqa: E402
from augserve.torch import AugServeIterableDataset, shard_batches  # noqa: E402
from conftest import REPO  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

SMALL = PipelineSpec(width=32, height=32, dtype="uint8")


@pytest.mark.parametrize("dtype,tdtype", [("uint8", torch.uint8), ("float16", torch.float16), ("float32", torch.float32)])
def test_to_torch_shares_the_received_bytes(client, dtype, tdtype):
    with client.stream("demo", PipelineSpec(width=40, height=40, dtype=dtype), batch_size=8) as s:
        b = next(s)
    images, (la, lb, lam) = b.to_torch()
    assert images.dtype == tdtype and tuple(images.shape) == (8, 3, 40, 40)
    assert images.data_ptr() == b.images.ctypes.data  # no copy
    assert la.dtype == torch.int64 and lam.dtype == torch.float32 and la.shape == (8,)
    np.testing.assert_array_equal(images.numpy(), b.images)


def test_soft_targets_become_a_tensor(client):
    spec = PipelineSpec(width=32, height=32, mix=Mix(mixup_alpha=0.4, num_classes=10, label_smoothing=0.1))
    with client.stream("demo", spec, batch_size=16, seed=2) as s:
        b = next(s)
    images, targets = b.to_torch("cpu")
    assert targets.shape == (16, 10) and targets.dtype == torch.float32
    torch.testing.assert_close(targets.sum(1), torch.ones(16))


def test_four_ranks_from_the_dataset_partition_the_epoch(server):
    ids = []
    for rank in range(4):
        ds = AugServeIterableDataset(server.uds, "demo", SMALL, batch_size=24, rank=rank, world_size=4, yield_batches=True)
        batches = list(DataLoader(ds, batch_size=None))
        assert len(batches) == len(ds) == shard_batches(320, 24, rank, 4, "pad", False)
        ids.append([int(i) for b in batches for i in b.sample_ids])
    flat = [i for r in ids for i in r]
    assert sorted(flat) == list(range(320)), "ranks overlap or miss samples"


def test_rank_comes_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "5")
    ds = AugServeIterableDataset(server.uds, "demo", SMALL, batch_size=64, yield_batches=True)
    assert ds.shard() == (2, 5)
    with augserve.Client(server.uds) as c:
        want = [int(i) for b in c.stream("demo", SMALL, 64, rank=2, world_size=5) for i in b.sample_ids]
    got = [int(i) for b in DataLoader(ds, batch_size=None) for i in b.sample_ids]
    assert got == want and len(got) == 64


def test_set_epoch_changes_the_order_reproducibly(server):
    ds = AugServeIterableDataset(server.uds, "demo", SMALL, batch_size=320, seed=4, yield_batches=True)

    def order(epoch):
        ds.set_epoch(epoch)
        (b,) = list(DataLoader(ds, batch_size=None))
        assert b.epoch == epoch
        return [int(i) for i in b.sample_ids]

    assert order(0) == order(0)
    assert order(0) != order(1)


def test_dataloader_yields_ready_tensors(server):
    ds = AugServeIterableDataset(server.uds, "demo", PipelineSpec(width=48, height=48), batch_size=100, prefetch=3)
    shapes = [(tuple(x.shape), x.dtype) for x, (la, lb, lam) in DataLoader(ds, batch_size=None)]
    assert shapes == [((100, 3, 48, 48), torch.float32)] * 3 + [((20, 3, 48, 48), torch.float32)]


def test_dataloader_workers_split_the_shard(server):
    ds = AugServeIterableDataset(server.uds, "demo", SMALL, batch_size=32, rank=1, world_size=2, yield_batches=True)
    loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    ids = [int(i) for b in loader for i in b.sample_ids]
    with augserve.Client(server.uds) as c:
        want = [int(i) for b in c.stream("demo", SMALL, 32, rank=1, world_size=2) for i in b.sample_ids]
    assert sorted(ids) == sorted(want) and len(ids) == 160


def test_the_example_trains(server):
    r = subprocess.run(
        [sys.executable, str(REPO / "clients/python/examples/train_resnet_stub.py"), "--addr", server.uds,
         "--epochs", "2", "--max-steps", "3", "--batch-size", "32", "--size", "64", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and "3 steps" in lines[0], r.stdout
    print(r.stdout)
