"""Elastic resume against the real server: a job checkpoints mid-epoch with one world size and
continues with another, through the dataset's state_dict / load_state_dict (with and without
DataLoader workers) and through the raw request's start_position. Every sample of the epoch
exactly once; byte-identical batches when the world size does not change."""

from __future__ import annotations

import os

import pytest

if os.environ.get("AUGSERVE_REQUIRE_PEERS") == "1":
    import torch  # noqa: F401
else:
    pytest.importorskip("torch", reason="torch not installed: elastic resume tests skipped")

import augserve  # noqa: E402
from augserve import PipelineSpec  # noqa: E402
from augserve.torch import AugServeDataLoader, AugServeIterableDataset  # noqa: E402

SPEC = PipelineSpec(width=32, height=32, dtype="uint8")
DEMO_SAMPLES = 320
BATCH = 16


def dataset(server, rank: int, world: int) -> AugServeIterableDataset:
    return AugServeIterableDataset(
        server.uds, "demo", SPEC, batch_size=BATCH, seed=11, rank=rank, world_size=world, tail="uneven", yield_batches=True
    )


def take(loader, k: int | None = None) -> list:
    """The first k batches (all when k is None), as (sample ids, image bytes, labels, lam)."""
    out = []
    it = iter(loader)
    try:
        for b in it:
            out.append(([int(i) for i in b.sample_ids], b.images.tobytes(), b.labels_a.tolist(), b.lam.tolist()))
            if k is not None and len(out) == k:
                break
    finally:
        # Ends the stream (and the workers) now: a later fork must not inherit a live gRPC call.
        it.close()
    return out


def loader(ds, workers: int):
    return AugServeDataLoader(ds, num_workers=workers)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("old,new", [(4, 3), (3, 5)])
def test_any_ranks_state_continues_the_epoch_on_another_world_size(server, old, new, workers):
    k = 3
    seen, states = [], []
    for rank in range(old):
        ds = dataset(server, rank, old)
        ds.set_epoch(2)
        lo = loader(ds, workers)
        seen += [i for ids, *_ in take(lo, k) for i in ids]
        states.append(lo.state_dict())
    assert all(s == states[0] for s in states), f"ranks disagree on the job's state: {states}"
    assert states[0]["epoch"] == 2 and states[0]["position"] == k * BATCH * old
    for rank in range(new):
        ds = dataset(server, rank, new)
        ds.load_state_dict(states[0])
        ds.set_epoch(2)  # the training loop's call keeps the loaded position
        lo = loader(ds, workers)
        left = len(lo)  # the rest of the epoch, for this rank
        got = take(lo)
        assert len(got) == left
        seen += [i for ids, *_ in got for i in ids]
        assert lo.state_dict()["epoch"] == 3 and lo.state_dict()["position"] == 0
    assert sorted(seen) == list(range(DEMO_SAMPLES)), f"{old} -> {new} ranks: a sample missing or repeated"
    print(f"\n{old} ranks x {k} batches, then {new} ranks (workers={workers}): every sample once")


@pytest.mark.parametrize("workers", [0, 2])
def test_the_same_world_size_resumes_byte_identically(server, workers):
    for rank in range(4):
        whole = take(loader(dataset(server, rank, 4), workers))
        first = dataset(server, rank, 4)
        take(loader(first, workers), 2)
        resumed = dataset(server, rank, 4)
        resumed.load_state_dict(first.state_dict())
        assert take(loader(resumed, workers)) == whole[2:], f"rank {rank}: resumed batches differ"


def test_workers_hand_out_the_ranks_batches_in_order(server):
    plain = take(loader(dataset(server, 1, 2), 0))
    assert take(loader(dataset(server, 1, 2), 2)) == plain


def test_the_raw_request_takes_a_position(server):
    with augserve.Client(server.uds) as c:
        seen = []
        for r in range(4):
            with c.stream("demo", SPEC, BATCH, seed=5, rank=r, world_size=4, tail="uneven") as s:
                seen += [int(i) for _, b in zip(range(2), s) for i in b.sample_ids]
        for r in range(3):
            seen += [int(i) for b in c.stream("demo", SPEC, BATCH, seed=5, rank=r, world_size=3, tail="uneven", start_position=2 * BATCH * 4) for i in b.sample_ids]
        with pytest.raises(augserve.InvalidArgumentError, match="start_position"):
            next(iter(c.stream("demo", SPEC, BATCH, start_position=DEMO_SAMPLES + 1)))
    assert sorted(seen) == list(range(DEMO_SAMPLES))


def test_a_state_for_another_seed_is_refused(server):
    ds = dataset(server, 0, 1)
    state = ds.state_dict()
    other = AugServeIterableDataset(server.uds, "demo", SPEC, batch_size=BATCH, seed=12)
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(state)
