"""A received batch, viewed in place.

grpcio hands us each message as one `bytes` object. Instead of letting protobuf copy the tensor
out of it, `Batch.from_bytes` walks the top-level wire format, points numpy at the tensor bytes
(and at the packed float arrays) where they lie, and lets protobuf parse only the small rest. The
server pads the message so that the tensor starts at a multiple of 64 bytes (`Tensor.align` in
the proto), so the view is aligned as well as copy-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from augserve.v1 import augserve_pb2 as pb

_NP_DTYPES = {
    pb.DTYPE_UINT8: np.dtype(np.uint8),
    pb.DTYPE_FLOAT16: np.dtype("<f2"),
    pb.DTYPE_FLOAT32: np.dtype("<f4"),
}
_DTYPE_NAMES = {pb.DTYPE_UINT8: "uint8", pb.DTYPE_FLOAT16: "float16", pb.DTYPE_FLOAT32: "float32"}
_LAYOUT_NAMES = {pb.LAYOUT_NCHW: "nchw", pb.LAYOUT_NHWC: "nhwc"}

# Field numbers in the proto.
_BATCH_IMAGES = 3
_BATCH_LAM = 6
_BATCH_SOFT_TARGETS = 7
_TENSOR_DATA = 5
_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5


class WireError(ValueError):
    """The message is not a well-formed Batch."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes, start: int, end: int):
    """Yields (field number, wire type, field start, value start, value end) for each field."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == _WIRE_VARINT:
            _, value_end = _varint(buf, pos)
        elif wire == _WIRE_LEN:
            n, pos = _varint(buf, pos)
            value_end = pos + n
        elif wire == _WIRE_I32:
            value_end = pos + 4
        elif wire == _WIRE_I64:
            value_end = pos + 8
        else:
            raise WireError(f"unsupported wire type {wire}")
        if value_end > end:
            raise WireError("field runs past the end of the message")
        yield key >> 3, wire, field_start, pos, value_end
        pos = value_end


class SampleError(NamedTuple):
    """An image left out of its batch: its id, source (path or tar member), code and reason."""

    sample_id: int
    source: str
    code: str
    reason: str


class BatchStats(NamedTuple):
    """Per-channel statistics of the output tensor's values.

    `percentiles[k, c]` is channel c's value at level `percentile_levels[k]` (1, 5, 50, 95,
    99), estimated by the server from a sample of the output; both are None when the batch
    stayed in device memory (CUDA IPC).
    """

    mean: np.ndarray
    std: np.ndarray
    mad: np.ndarray
    clipped: np.ndarray
    percentile_levels: np.ndarray | None = None
    percentiles: np.ndarray | None = None


@dataclass(eq=False)
class Batch:
    """One batch of augmented images and its labels.

    `images` is a read-only numpy array viewing the received message (no copy), shaped
    (N, C, H, W) or (N, H, W, C) as `layout` says. `targets` gives the mixed soft targets (N,
    num_classes) when the spec asked for them, else (labels_a, labels_b, lam): the loss of a
    mixed batch is lam * loss(labels_a) + (1 - lam) * loss(labels_b).
    """

    epoch: int
    index: int
    images: np.ndarray
    layout: str
    labels_a: np.ndarray
    labels_b: np.ndarray
    lam: np.ndarray
    soft_targets: np.ndarray | None
    num_classes: int
    sample_ids: np.ndarray
    errors: list[SampleError]
    warnings: list[SampleError]
    """Damaged images kept in the batch (spec `on_damaged="accept"`), and what was wrong."""
    stats: BatchStats
    timings: dict[str, float]
    device: str
    raw: bytes
    """The received message; `images` is a view into it (inline transport)."""
    transport: Any = None
    """The stream's `TransportInfo` (first batch of a stream only), else None."""
    slot: Any = None
    """SHM / CUDA IPC: the `SlotRef` holding `images`; None for inline batches."""
    _release: Any = None

    def release(self) -> None:
        """Hands this batch's shared-memory slot back to the server (no-op for inline batches,
        and the second time). `images` must not be used afterwards: the server refills the
        slot. Streams opened with `auto_release=True` (the default) call this for you when you
        ask for the next batch; copy what you keep longer (or pass `auto_release=False`)."""
        release, self._release = self._release, None
        if release is not None:
            release()

    def __len__(self) -> int:
        return int(self.images.shape[0]) if self.images.ndim else 0

    @property
    def dtype(self) -> str:
        return self.images.dtype.name

    @property
    def targets(self) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.soft_targets is not None:
            return self.soft_targets
        return self.labels_a, self.labels_b, self.lam

    def to_torch(self, device: Any = None, non_blocking: bool = True):
        """(images, targets) as torch tensors.

        With no device, the images tensor shares memory with the received message (no copy).
        For a CUDA device, tensors go through pinned host memory so the host-to-device copy is
        asynchronous when `non_blocking`. Targets are a float32 (N, num_classes) tensor, or the
        tuple (labels_a int64, labels_b int64, lam float32).
        """
        from augserve.torch_convert import batch_to_torch

        return batch_to_torch(self, device, non_blocking)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Batch:
        """Parses a serialized `augserve.v1.Batch`, viewing its tensor in place."""
        if not isinstance(raw, bytes):
            raw = bytes(raw)
        view = memoryview(raw)
        keep: list[memoryview] = []  # the bytes protobuf parses: all but the big arrays
        tensor_span = soft_span = lam_span = None
        prev = 0
        for number, wire, fstart, vstart, vend in _fields(raw, 0, len(raw)):
            if wire == _WIRE_LEN and number in (_BATCH_IMAGES, _BATCH_SOFT_TARGETS, _BATCH_LAM):
                if number == _BATCH_IMAGES:
                    tensor_span = (vstart, vend)
                elif number == _BATCH_SOFT_TARGETS:
                    soft_span = (vstart, vend)
                else:
                    lam_span = (vstart, vend)
                keep.append(view[prev:fstart])
                prev = vend
        keep.append(view[prev:])
        msg = pb.Batch.FromString(b"".join(keep))

        slot = msg.slot if msg.HasField("slot") else None
        images, layout = cls._tensor(raw, view, tensor_span, in_slot=slot is not None)
        lam = _f32(raw, lam_span) if lam_span else np.asarray(msg.lam, dtype=np.float32)
        soft = _f32(raw, soft_span) if soft_span else np.asarray(msg.soft_targets, np.float32)
        num_classes = int(msg.num_classes)
        if num_classes > 0 and soft.size:
            if soft.size % num_classes:
                raise WireError(f"soft_targets has {soft.size} values, not a multiple of {num_classes}")
            soft_targets: np.ndarray | None = soft.reshape(-1, num_classes)
        else:
            soft_targets = None
        s = msg.stats
        return cls(
            epoch=msg.epoch,
            index=msg.index,
            images=images,
            layout=layout,
            labels_a=np.asarray(msg.labels_a, dtype=np.int64),
            labels_b=np.asarray(msg.labels_b, dtype=np.int64),
            lam=lam,
            soft_targets=soft_targets,
            num_classes=num_classes,
            sample_ids=np.asarray(msg.sample_ids, dtype=np.uint64),
            errors=[SampleError(e.sample_id, e.source, e.code, e.reason) for e in msg.errors],
            warnings=[SampleError(w.sample_id, w.source, w.code, w.reason) for w in msg.warnings],
            stats=BatchStats(
                np.asarray(s.mean, np.float32),
                np.asarray(s.std, np.float32),
                np.asarray(s.mad, np.float32),
                np.asarray(s.clipped, np.float32),
                np.asarray(s.percentile_levels, np.float32) if s.percentile_levels else None,
                np.asarray(s.percentiles, np.float32).reshape(-1, 3) if s.percentiles else None,
            ),
            timings={f.name: v for f, v in msg.timings.ListFields()},
            device=msg.device,
            raw=raw,
            transport=msg.transport if msg.HasField("transport") else None,
            slot=slot,
        )

    @staticmethod
    def _tensor(raw: bytes, view: memoryview, span, in_slot: bool = False) -> tuple[np.ndarray, str]:
        if span is None:
            return np.zeros((0,), np.uint8), "nchw"
        start, end = span
        meta: list[memoryview] = []
        data_span = None
        prev = start
        for number, wire, fstart, vstart, vend in _fields(raw, start, end):
            if number == _TENSOR_DATA and wire == _WIRE_LEN:
                data_span = (vstart, vend)
                meta.append(view[prev:fstart])
                prev = vend
        meta.append(view[prev:end])
        t = pb.Tensor.FromString(b"".join(meta))
        dtype = _NP_DTYPES.get(t.dtype)
        if dtype is None:
            raise WireError(f"unknown tensor dtype {t.dtype}")
        shape = tuple(int(d) for d in t.shape)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 0
        if in_slot:
            # The bytes are in a shared-memory slot: the stream fills in the view. Until then a
            # zero-strided placeholder carries the shape and dtype without allocating.
            return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape, [0] * len(shape)), _LAYOUT_NAMES.get(t.layout, "nchw")
        nbytes = data_span[1] - data_span[0] if data_span else 0
        if nbytes != count * dtype.itemsize:
            raise WireError(f"tensor of shape {shape} {dtype} needs {count * dtype.itemsize} bytes, got {nbytes}")
        if count == 0:
            return np.zeros(shape, dtype), _LAYOUT_NAMES.get(t.layout, "nchw")
        # Views the message bytes: no copy. numpy marks it read-only because bytes are immutable.
        arr = np.frombuffer(raw, dtype=dtype, count=count, offset=data_span[0]).reshape(shape)
        return arr, _LAYOUT_NAMES.get(t.layout, "nchw")


def _f32(raw: bytes, span: tuple[int, int]) -> np.ndarray:
    start, end = span
    if (end - start) % 4:
        raise WireError("packed float field length is not a multiple of 4")
    return np.frombuffer(raw, dtype="<f4", count=(end - start) // 4, offset=start)
