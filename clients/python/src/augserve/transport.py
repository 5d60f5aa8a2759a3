"""Zero-copy transports: shared memory (same host) and CUDA IPC (same GPU).

The server writes each batch into a slot of a ring and sends only a `SlotRef`; the client
maps the ring once per stream and views each slot in place, then releases it (`ReleaseSlots`)
so the server can refill it. See `Transport` in proto/augserve/v1/augserve.proto.
"""

from __future__ import annotations

import mmap
import os
from typing import Any

import numpy as np

from augserve.v1 import augserve_pb2 as pb

TRANSPORTS = {"inline": pb.TRANSPORT_INLINE, "shm": pb.TRANSPORT_SHM, "cuda_ipc": pb.TRANSPORT_CUDA_IPC}
TRANSPORT_NAMES = {v: k for k, v in TRANSPORTS.items()}


class ShmRing:
    """A stream's shared-memory ring, mapped read-only."""

    def __init__(self, info: pb.TransportInfo):
        self.stream_id = info.stream_id
        self.path = info.shm_path
        fd = os.open(info.shm_path, os.O_RDONLY)
        try:
            self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)  # the mapping keeps the memory; the server unlinks the name later

    def view(self, slot: pb.SlotRef, like: np.ndarray) -> np.ndarray:
        """The slot's tensor as a read-only array shaped and typed like `like` (no copy)."""
        count = int(np.prod(like.shape, dtype=np.int64))
        if count * like.dtype.itemsize != slot.length or slot.offset + slot.length > len(self._map):
            raise ValueError(f"slot {slot.slot} ({slot.offset}+{slot.length}) does not fit the ring or the shape {like.shape}")
        return np.frombuffer(self._map, dtype=like.dtype, count=count, offset=slot.offset).reshape(like.shape)


class CudaIpcRing:
    """A stream's device ring, opened from its CUDA IPC handle (CuPy, else torch).

    Unverified on a GPU: no device was available to this project when it was written; the
    server does not offer CUDA IPC yet either (it falls back to SHM and says why).
    """

    def __init__(self, info: pb.TransportInfo):
        import cupy  # noqa: PLC0415 - only GPU clients need it

        self.stream_id = info.stream_id
        self.device = info.cuda_device
        with cupy.cuda.Device(self.device):
            self._ptr = cupy.cuda.runtime.ipcOpenMemHandle(bytes(info.cuda_ipc_handle))
        self._size = int(info.slot_bytes) * int(info.slots)
        self._mem = cupy.cuda.UnownedMemory(self._ptr, self._size, self)

    def view(self, slot: pb.SlotRef, like: np.ndarray) -> Any:
        """The slot's tensor as a CuPy array on the device (no host copy); torch.from_dlpack
        turns it into a torch tensor without a copy either."""
        import cupy  # noqa: PLC0415

        ptr = cupy.cuda.MemoryPointer(self._mem, int(slot.offset))
        return cupy.ndarray(like.shape, dtype=like.dtype, memptr=ptr)
