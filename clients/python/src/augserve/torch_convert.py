"""Batches as torch tensors (`Batch.to_torch`): no copy where the bytes allow it, pinned
staging for CUDA devices. Imports nothing else of augserve, so `batch.py` can load it lazily
without an import circle."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

def _images_tensor(arr: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():
        # The array views the immutable received message; torch has no read-only tensors. The
        # message belongs to this batch alone, so in-place ops on it harm nobody.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def batch_to_torch(batch: Any, device: Any = None, non_blocking: bool = True):
    """(images, targets) of `batch` (an `augserve.Batch`; not imported here, which would close
    an import circle) as tensors; see `Batch.to_torch`."""
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
